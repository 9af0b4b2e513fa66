"""VPN access to a private network (F.u.8): one OpenVPN endpoint per network.

`oarcloud net vpn NAME --client C` (through the broker, on the server) gives the
network an endpoint the first time: a node that hosts the network, a UDP port
of that node, and a certificate authority of its own (openssl).  Each client is
a certificate that authority signs, an address of the network (a row of nics,
kind vpn) and a client file: the key is in it, shown once, never stored.

On the node (netnode.sync -> ensure_endpoints), the endpoint is an OpenVPN
server in TAP mode whose device is a port of br-int: its clients are members
of the network like instances (anti-spoofing on their address and MAC, ARP
from the flows, the network's rules), and reach nothing else: not another
network, not the gateway.  A client without its file in the endpoint's
client-config-dir is refused (ccd-exclusive), which is how deleting the
network or the client locks it out.
"""
import grp
import ipaddress
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from oarcloud_lib import templating
from oarcloud_lib.catalog import networks, quotas
from oarcloud_lib.tools import netdev, ovs
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, OarcloudError, Refused
from oarcloud_lib.names import INTEGRATION_BRIDGE

LOG = logging.getLogger("oarcloud.vpn")
RUN = Path("/run/oarcloud/vpn")
# What an endpoint runs as once its TAP device is open (templates/vpn-server.conf.j2).
SERVER_USER, SERVER_GROUP = "nobody", "nogroup"
UDP_PORTS = (40000, 40999)
DAYS = 3650


def tap_name(vni):
    return "vpn-%06x" % vni


# -- on the server: endpoints, clients, their files ---------------------------------------

def _openssl(*argv):
    LOCAL.run(["openssl", *argv], timeout=60)


def _new_ca_and_server(vni):
    """(ca cert, ca key, server cert, server key) in PEM, made with openssl."""
    with tempfile.TemporaryDirectory(prefix="oc-vpn-") as tmp:
        t = Path(tmp)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", str(DAYS), "-subj", "/CN=oarcloud-vpn-%d-ca" % vni,
                 "-keyout", str(t / "ca.key"), "-out", str(t / "ca.crt"))
        _sign(t, "server", "oarcloud-vpn-%d" % vni, "serverAuth")
        return tuple((t / f).read_text() for f in ("ca.crt", "ca.key", "server.crt",
                                                    "server.key"))


def _sign(t, stem, cn, usage):
    """stem.key and stem.crt in t, signed by t/ca.* for usage (serverAuth, clientAuth)."""
    (t / (stem + ".ext")).write_text("extendedKeyUsage=%s\nkeyUsage=digitalSignature\n" % usage)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", "/CN=%s" % cn, "-keyout", str(t / (stem + ".key")),
             "-out", str(t / (stem + ".csr")))
    _openssl("x509", "-req", "-in", str(t / (stem + ".csr")), "-CA", str(t / "ca.crt"),
             "-CAkey", str(t / "ca.key"), "-CAcreateserial", "-days", str(DAYS),
             "-extfile", str(t / (stem + ".ext")), "-out", str(t / (stem + ".crt")))


def _endpoint(conn, net):
    """The network's endpoint row, made on first use on a node that hosts it."""
    cols = ("node", "udp_port", "ca_cert", "ca_key", "server_cert", "server_key")
    row = conn.execute("SELECT %s FROM net_vpns WHERE network = %%s" % ", ".join(cols),
                       (net["id"],)).fetchone()
    if row:
        return dict(zip(cols, row))
    nodes = [r[0] for r in conn.execute(
        "SELECT node FROM nics WHERE network = %s AND kind = 'instance' AND node IS NOT NULL"
        " ORDER BY id LIMIT 1", (net["id"],))]
    if not nodes:
        raise Refused(detail="network %s has no instance yet: its VPN endpoint runs on a node "
                             "that hosts it (launch one with --network %s)"
                      % (net["name"], net["name"]))
    ca_cert, ca_key, cert, key = _new_ca_and_server(net["vni"])
    with conn.transaction():
        conn.execute("LOCK TABLE net_vpns IN SHARE ROW EXCLUSIVE MODE")
        used = {r[0] for r in conn.execute("SELECT udp_port FROM net_vpns WHERE node = %s",
                                           (nodes[0],))}
        port = next((p for p in range(UDP_PORTS[0], UDP_PORTS[1] + 1) if p not in used), None)
        if port is None:
            raise Conflict(what="vpn", detail="no UDP port left on %s" % nodes[0])
        conn.execute("INSERT INTO net_vpns (network, node, udp_port, ca_cert, ca_key,"
                     " server_cert, server_key) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                     " ON CONFLICT (network) DO NOTHING",
                     (net["id"], nodes[0], port, ca_cert, ca_key, cert, key))
    return _endpoint(conn, net)


def client_file(conn, owner, name, client, apply):
    """A new client of the owner's network: its address, certificate and the
    OpenVPN file (returned); apply(conn, network ids) makes the nodes follow."""
    net = networks.get(conn, owner, name)
    networks.check_name(client)
    ep = _endpoint(conn, net)
    cidr = ipaddress.ip_network(net["cidr"])
    with tempfile.TemporaryDirectory(prefix="oc-vpn-") as tmp:
        t = Path(tmp)
        (t / "ca.crt").write_text(ep["ca_cert"])
        fd = os.open(t / "ca.key", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ep["ca_key"])
        _sign(t, "client", client, "clientAuth")
        cert, key = (t / "client.crt").read_text(), (t / "client.key").read_text()
    with conn.transaction():
        conn.execute("LOCK TABLE nics IN SHARE ROW EXCLUSIVE MODE")
        if conn.execute("SELECT 1 FROM nics WHERE network = %s AND kind = 'vpn' AND client = %s",
                        (net["id"], client)).fetchone():
            raise Conflict(what="vpn client", detail="network %s already has a client %s (its "
                           "file was shown once): pick another --client name" % (name, client))
        quotas.require(conn, owner, {"vpn-clients": 1})
        used = [r[0] for r in conn.execute("SELECT host(ip) FROM nics WHERE network = %s",
                                           (net["id"],))]
        ip = networks.free_addresses(cidr, used, 1, gateway=net["gateway"])[0]
        mac = networks.mac_for(net["vni"], cidr, ip)
        conn.execute("INSERT INTO nics (network, kind, client, ip, mac, port, node)"
                     " VALUES (%s, 'vpn', %s, %s, %s, %s, %s)",
                     (net["id"], client, str(ip), mac, tap_name(net["vni"]), ep["node"]))
    apply(conn, [net["id"]])
    return templating.render("vpn-client.ovpn.j2", network=net, client=client,
                             remote=socket.gethostbyname(ep["node"]), port=ep["udp_port"],
                             ca=ep["ca_cert"], cert=cert, key=key, mac=mac, ip=str(ip),
                             netmask=str(cidr.netmask)).rstrip("\n")


# -- on the node: the OpenVPN servers --------------------------------------------------------

def endpoints(conn, node):
    """The VPN endpoints this node serves, with their clients."""
    cols = ("network", "vni", "cidr", "udp_port", "ca_cert", "server_cert", "server_key")
    rows = [dict(zip(cols, r)) for r in conn.execute(
        "SELECT v.network, n.vni, n.cidr, v.udp_port, v.ca_cert, v.server_cert, v.server_key"
        " FROM net_vpns v JOIN networks n ON n.id = v.network WHERE v.node = %s", (node,))]
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


def _write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def ensure_endpoints(wanted, runner=LOCAL):
    """Run the OpenVPN server of each wanted endpoint (its tap on br-int), with one
    client-config file per client; stop and remove every other one."""
    RUN.mkdir(parents=True, exist_ok=True)
    keep = set()
    for ep in wanted:
        d = RUN / str(ep["vni"])
        keep.add(d.name)
        (d / "ccd").mkdir(parents=True, exist_ok=True)
        # The server drops root for nobody:nogroup and still reads ccd/ (not
        # server.conf, 0600, which holds its key and was read as root).
        nogroup = grp.getgrnam(SERVER_GROUP).gr_gid
        for path, mode in ((d, 0o710), (d / "ccd", 0o750)):
            os.chown(path, 0, nogroup)
            os.chmod(path, mode)
        clients = {c["name"] for c in ep["clients"]}
        for f in (d / "ccd").iterdir():
            if f.name not in clients:
                f.unlink()  # refused from its next connection on
        for c in ep["clients"]:
            _write(d / "ccd" / c["name"], "ifconfig-push %s %s\n" % (c["ip"], ep["netmask"]),
                   0o644)
        tap = tap_name(ep["vni"])
        _write(d / "server.conf", templating.render("vpn-server.conf.j2", ep=ep, dir=str(d),
                                                    tap=tap, user=SERVER_USER,
                                                    group=SERVER_GROUP))
        if _running(d / "pid") is None:
            runner.run(["openvpn", "--daemon", "oarcloud-vpn-%d" % ep["vni"], "--config",
                        str(d / "server.conf")])
            deadline = time.monotonic() + 10
            while not Path("/sys/class/net/%s" % tap).exists():
                if time.monotonic() > deadline:
                    raise OarcloudError("the VPN endpoint of network %d did not start (see "
                                        "/var/log/oarcloud/vpn-%d.log)" % (ep["vni"], ep["vni"]))
                time.sleep(0.1)
            LOG.info("VPN endpoint of vni %d started on UDP %d", ep["vni"], ep["udp_port"])
        netdev.set_up(tap, runner, mtu=1450)
        netdev.tx_offload_off(tap, runner)
        ovs.ensure_port(INTEGRATION_BRIDGE, tap, runner)
    for d in RUN.iterdir():
        if d.name in keep or not d.name.isdigit():
            continue
        pid = _running(d / "pid")
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _running(d / "pid") and time.monotonic() < deadline:
                time.sleep(0.1)
        ovs.delete_port(INTEGRATION_BRIDGE, tap_name(int(d.name)), runner)
        shutil.rmtree(d, ignore_errors=True)
        LOG.info("VPN endpoint of vni %s stopped", d.name)
    for port in ovs.ports(INTEGRATION_BRIDGE, runner):  # a tap whose endpoint is gone
        if port.startswith("vpn-") and str(int(port[4:], 16)) not in keep:
            ovs.delete_port(INTEGRATION_BRIDGE, port, runner)
