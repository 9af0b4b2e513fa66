"""VPN access to a private network (F.u.8), on the node: one OpenVPN endpoint per network.

The server makes endpoints and their clients (server/vpnca.py: certificates,
tls-crypt key, revocation list).  On the node (netnode.sync ->
ensure_endpoints), an endpoint is an OpenVPN server in TAP mode whose device
is a port of br-int: its clients are members of the network like instances
(anti-spoofing on their address and MAC, ARP from the flows, the network's
rules), and reach nothing else: not another network, not the gateway.

A client is refused unless its control packets carry the endpoint's tls-crypt
key, its certificate is the endpoint CA's and not in the CRL (re-read at each
connection), and it has a file in the client-config-dir (ccd-exclusive).  A
revoked client loses all three at once and its live session is ended through
the server's management socket (root only).
"""
import grp
import ipaddress
import logging
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from oarcloud_lib import paths, templating
from oarcloud_lib.tools import netdev, ovs
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.names import INTEGRATION_BRIDGE

LOG = logging.getLogger("oarcloud.vpn")
RUN = Path("/run/oarcloud/vpn")
# What an endpoint runs as once its TAP device is open (templates/vpn-server.conf.j2).
SERVER_USER, SERVER_GROUP = "nobody", "nogroup"
UDP_PORTS = (40000, 40999)


def tap_name(vni):
    return "vpn-%06x" % vni


# -- on the node: the OpenVPN servers --------------------------------------------------------

def endpoints(conn, node):
    """The VPN endpoints this node serves, with their clients."""
    cols = ("network", "vni", "cidr", "udp_port", "ca_cert", "server_cert", "server_key",
            "tls_crypt", "crl")
    rows = [dict(zip(cols, r)) for r in conn.execute(
        "SELECT v.network, n.vni, n.cidr, v.udp_port, v.ca_cert, v.server_cert, v.server_key,"
        " v.tls_crypt, v.crl FROM net_vpns v JOIN networks n ON n.id = v.network"
        " WHERE v.node = %s", (node,))]
    for ep in rows:
        ep["netmask"] = str(ipaddress.ip_network(str(ep["cidr"])).netmask)
        ep["clients"] = [dict(zip(("name", "ip"), r)) for r in conn.execute(
            "SELECT client, host(ip) FROM nics WHERE network = %s AND kind = 'vpn'"
            " ORDER BY id", (ep["network"],))]
    return rows


def _running(pidfile):
    try:
        pid = int(pidfile.read_text())
        cmd = Path("/proc/%d/cmdline" % pid).read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"openvpn" in cmd else None


def _write(path, text, mode=0o600, gid=0):
    """The server re-reads its CRL at each connection: written aside, renamed."""
    return paths.write_atomic(path, text, mode, 0, gid)


def _stop(d):
    pid = _running(d / "pid")
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _running(d / "pid") and time.monotonic() < deadline:
            time.sleep(0.1)


def end_sessions(d, names):
    """Ask the endpoint in d to end the sessions of these clients (revoked or
    removed: the CRL and ccd-exclusive refuse their next connection, this
    ends the one they have)."""
    if not names or not (d / "mgmt").exists():
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(d / "mgmt"))
            f = s.makefile("rw", newline="\n")
            f.readline()  # the greeting
            for name in names:
                f.write("kill %s\n" % name)
                f.flush()
                LOG.info("VPN %s: %s", d.name, f.readline().strip())
            f.write("quit\n")
            f.flush()
    except OSError as e:
        LOG.warning("VPN endpoint %s: could not end the sessions of %s: %s", d.name,
                    ", ".join(names), e)


def ensure_endpoints(wanted, runner=LOCAL):
    """Run the OpenVPN server of each wanted endpoint (its tap on br-int), with one
    client-config file per client and its CRL; restart it when its config
    changed (a renewed certificate); stop and remove every other one."""
    RUN.mkdir(parents=True, exist_ok=True)
    keep = set()
    nogroup = grp.getgrnam(SERVER_GROUP).gr_gid
    for ep in wanted:
        d = RUN / str(ep["vni"])
        keep.add(d.name)
        (d / "ccd").mkdir(parents=True, exist_ok=True)
        # The server drops root for nobody:nogroup and still reads ccd/ and the
        # CRL (not server.conf, 0600, which holds its keys and was read as root).
        for path, mode in ((d, 0o710), (d / "ccd", 0o750)):
            os.chown(path, 0, nogroup)
            os.chmod(path, mode)
        clients = {c["name"] for c in ep["clients"]}
        gone = []
        for f in (d / "ccd").iterdir():
            if f.name not in clients:
                f.unlink()  # refused from its next connection on
                gone.append(f.name)
        for c in ep["clients"]:
            _write(d / "ccd" / c["name"], "ifconfig-push %s %s\n" % (c["ip"], ep["netmask"]),
                   0o644)
        if ep["crl"]:
            _write(d / "crl.pem", ep["crl"], 0o640, nogroup)
        tap = tap_name(ep["vni"])
        changed = _write(d / "server.conf", templating.render(
            "vpn-server.conf.j2", ep=ep, dir=str(d), tap=tap, user=SERVER_USER,
            group=SERVER_GROUP))
        if changed and _running(d / "pid") is not None:
            LOG.info("VPN endpoint of vni %d: new config, restarting", ep["vni"])
            _stop(d)
        if _running(d / "pid") is None:
            (d / "mgmt").unlink(missing_ok=True)  # a stopped server's (it ran as nobody)
            # Its TAP device is a new one: Open vSwitch's userspace datapath
            # would keep reading the old one's, so the port is made again.
            ovs.delete_port(INTEGRATION_BRIDGE, tap, runner)
            runner.run(["openvpn", "--daemon", "oarcloud-vpn-%d" % ep["vni"], "--config",
                        str(d / "server.conf")])
            deadline = time.monotonic() + 10
            while not Path("/sys/class/net/%s" % tap).exists():
                if time.monotonic() > deadline:
                    raise OarcloudError("the VPN endpoint of network %d did not start (see "
                                        "/var/log/oarcloud/vpn-%d.log)" % (ep["vni"], ep["vni"]))
                time.sleep(0.1)
            LOG.info("VPN endpoint of vni %d started on UDP %d", ep["vni"], ep["udp_port"])
        else:
            end_sessions(d, gone)
        netdev.set_up(tap, runner, mtu=1450)
        netdev.tx_offload_off(tap, runner)
        ovs.ensure_port(INTEGRATION_BRIDGE, tap, runner)
    for d in RUN.iterdir():
        if d.name in keep or not d.name.isdigit():
            continue
        _stop(d)
        ovs.delete_port(INTEGRATION_BRIDGE, tap_name(int(d.name)), runner)
        shutil.rmtree(d, ignore_errors=True)
        LOG.info("VPN endpoint of vni %s stopped", d.name)
    for port in ovs.ports(INTEGRATION_BRIDGE, runner):  # a tap whose endpoint is gone
        if port.startswith("vpn-") and str(int(port[4:], 16)) not in keep:
            ovs.delete_port(INTEGRATION_BRIDGE, port, runner)
