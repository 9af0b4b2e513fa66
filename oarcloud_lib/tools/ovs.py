"""Open vSwitch through ovs-vsctl and ovs-ofctl: the one module that runs them.

Creation uses --may-exist and deletion --if-exists, so callers are idempotent.
"""
import json
import os

from oarcloud_lib import daemons
from oarcloud_lib.commands import LOCAL

TIMEOUT = 10
RUN_DIR = "/run/openvswitch"
DB = "/etc/openvswitch/conf.db"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
LOG_DIR = "/var/log/openvswitch"
PIDFILES = {"ovsdb-server": RUN_DIR + "/ovsdb-server.pid",
            "ovs-vswitchd": RUN_DIR + "/ovs-vswitchd.pid"}


def ensure_daemons(runner=LOCAL):
    """ovsdb-server (with its database) and ovs-vswitchd running, ours by their
    pidfiles.  True if anything was created or started (a started vswitchd has
    no flows yet).  Raises NotReady."""
    changed = False
    os.makedirs(RUN_DIR, exist_ok=True)
    os.makedirs(LOG_DIR, exist_ok=True)
    if not os.path.exists(DB):
        os.makedirs(os.path.dirname(DB), exist_ok=True)
        runner.run(["ovsdb-tool", "create", DB, SCHEMA])
        changed = True
    if not daemons.read_pid(PIDFILES["ovsdb-server"]):
        daemons.spawn_and_wait(runner, [
            "ovsdb-server", DB, "--remote=punix:%s/db.sock" % RUN_DIR,
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            "--pidfile=%s" % PIDFILES["ovsdb-server"], "--detach",
            "--log-file=%s/ovsdb-server.log" % LOG_DIR], PIDFILES["ovsdb-server"], "ovsdb-server")
        vsctl(["init"], runner, no_wait=True)
        changed = True
    if not daemons.read_pid(PIDFILES["ovs-vswitchd"]):
        daemons.spawn_and_wait(runner, [
            "ovs-vswitchd", "unix:%s/db.sock" % RUN_DIR,
            "--pidfile=%s" % PIDFILES["ovs-vswitchd"], "--detach",
            "--log-file=%s/ovs-vswitchd.log" % LOG_DIR], PIDFILES["ovs-vswitchd"], "ovs-vswitchd")
        changed = True
    return changed


def datapath():
    """'system' where the kernel has the openvswitch module, else 'netdev' (userspace)."""
    return "system" if os.path.isdir("/sys/module/openvswitch") else "netdev"


def vsctl(args, runner=LOCAL, no_wait=False):
    argv = ["ovs-vsctl", "--timeout=%d" % TIMEOUT] + (["--no-wait"] if no_wait else []) + list(args)
    return runner.out(argv, timeout=TIMEOUT + 5)


def bridge_exists(bridge, runner=LOCAL):
    argv = ["ovs-vsctl", "--timeout=5", "br-exists", bridge]
    return runner.run(argv, check=False, timeout=TIMEOUT).code == 0


def replace_flows(bridge, text, runner=LOCAL, protocol=None):
    """Replace every flow of bridge by text's (ovs-ofctl's format), atomically."""
    argv = ["ovs-ofctl"] + (["-O", protocol] if protocol else []) + [
        "--bundle", "replace-flows", bridge, "-"]
    runner.run(argv, stdin=text)


def parse_json_table(text):
    """Rows of `ovs-vsctl --format=json list TABLE` as dicts (atoms unwrapped)."""
    data = json.loads(text or '{"headings": [], "data": []}')
    rows = []
    for values in data["data"]:
        row = {}
        for head, value in zip(data["headings"], values):
            row[head] = _atom(value)
        rows.append(row)
    return rows


def _atom(value):
    if isinstance(value, list) and len(value) == 2 and value[0] in ("set", "map", "uuid"):
        kind, inner = value
        if kind == "set":
            return [_atom(v) for v in inner]
        if kind == "map":
            return {k: _atom(v) for k, v in inner}
        return inner
    return value


def bridges(runner=LOCAL):
    return vsctl(["list-br"], runner).split()


def ports(bridge, runner=LOCAL):
    return vsctl(["list-ports", bridge], runner).split()


def bridge_datapath(bridge, runner=LOCAL):
    rows = parse_json_table(vsctl(["--format=json", "--columns=datapath_type", "list",
                                   "Bridge", bridge], runner))
    return rows[0]["datapath_type"] if rows else None


def ensure_bridge(bridge, datapath, runner=LOCAL):
    """Create bridge with datapath ('system' or 'netdev'); True if anything changed."""
    if bridge in bridges(runner):
        if bridge_datapath(bridge, runner) in (datapath, "" if datapath == "system" else None):
            return False
        vsctl(["set", "Bridge", bridge, "datapath_type=%s" % datapath], runner)
        return True
    vsctl(["--may-exist", "add-br", bridge, "--", "set", "Bridge", bridge,
           "datapath_type=%s" % datapath], runner)
    return True


def ensure_port(bridge, port, runner=LOCAL):
    if port in ports(bridge, runner):
        return False
    vsctl(["--may-exist", "add-port", bridge, port], runner)
    return True


def delete_port(bridge, port, runner=LOCAL):
    vsctl(["--if-exists", "del-port", bridge, port], runner)


def tunnel_port_name(remote_ip):
    """vx-<address in hex>: unique per peer, within the 15 characters of an ifname."""
    return "vx-" + "".join("%02x" % int(o) for o in remote_ip.split("."))


def ensure_flow_tunnel(bridge, port, remote_ip, runner=LOCAL):
    """A VXLAN port to remote_ip whose key (VNI) the flows set per packet
    (options:key=flow): one tunnel per peer node carries every network."""
    if port in ports(bridge, runner):
        return False
    vsctl(["--may-exist", "add-port", bridge, port, "--", "set", "Interface", port, "type=vxlan",
           "options:remote_ip=%s" % remote_ip, "options:key=flow"], runner)
    return True


# -- the userspace datapath's tunnel neighbours ---------------------------------------

def parse_tunnel_neighbors(text):
    """`ovs-appctl tnl/neigh/show` -> {ip: (mac, bridge)}."""
    out = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1].count(":") == 5 and fields[0][:1].isdigit():
            out[fields[0]] = (fields[1].lower(), fields[2])
    return out


def tunnel_neighbors(runner=LOCAL):
    """{ip: (mac, bridge)} of the userspace datapath's tunnel neighbour cache."""
    return parse_tunnel_neighbors(runner.out(["ovs-appctl", "-t", "ovs-vswitchd",
                                              "tnl/neigh/show"], timeout=TIMEOUT))


def set_tunnel_neighbor(bridge, ip, mac, runner=LOCAL):
    """Tell the userspace datapath the MAC of a tunnel peer's address (its
    entry then ages like a learnt one: tnl/neigh/aging)."""
    runner.run(["ovs-appctl", "-t", "ovs-vswitchd", "tnl/neigh/set", bridge, ip, mac],
               timeout=TIMEOUT)
