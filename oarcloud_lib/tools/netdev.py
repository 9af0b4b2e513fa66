"""Network devices through iproute2 and ethtool (argv only, JSON output parsed)."""
import json

from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError


def links(runner=LOCAL):
    """name -> link dict from `ip -j link`."""
    return {l["ifname"]: l for l in json.loads(runner.out(["ip", "-j", "link", "show"]) or "[]")}


def addresses(dev, runner=LOCAL):
    """['198.19.0.11/16', ...] IPv4 addresses of dev."""
    return ipv4_of(runner.out(["ip", "-j", "-4", "addr", "show", "dev", dev]))


def ipv4_of(ip_json):
    out = []
    for link in json.loads(ip_json or "[]"):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                out.append("%s/%s" % (a["local"], a["prefixlen"]))
    return out


def routes_via(dev, runner=LOCAL):
    """IPv4 routes through dev that were not made by the kernel for its addresses."""
    routes = json.loads(runner.out(["ip", "-j", "-4", "route", "show", "dev", dev]) or "[]")
    return [r for r in routes if r.get("protocol") != "kernel"]


def _in(netns_pid=None, netns=None):
    """The argv prefix that runs a command in the network namespace of process
    netns_pid or in the named one netns (with this node's own tools), or none."""
    if netns:
        return ["ip", "netns", "exec", netns]
    return ["nsenter", "-t", str(netns_pid), "-n", "--"] if netns_pid else []


def routes_matching(address, runner=LOCAL):
    """The IPv4 routes of this namespace that cover address (`ip route show match`)."""
    return json.loads(runner.out(["ip", "-j", "route", "show", "match", address]) or "[]")


def add_bridge(name, runner=LOCAL):
    runner.run(["ip", "link", "add", name, "type", "bridge"])


def replace_address(dev, cidr, runner=LOCAL):
    """dev has address cidr (added, or its prefix replaced)."""
    runner.run(["ip", "addr", "replace", cidr, "dev", dev])


def add_veth_into(dev, netns_pid, peer, runner=LOCAL):
    """A veth pair: dev here, peer in the network namespace of netns_pid."""
    runner.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", peer,
                "netns", str(netns_pid)])


def attach(dev, bridge, runner=LOCAL):
    """dev is a port of the Linux bridge bridge, and up."""
    runner.run(["ip", "link", "set", dev, "master", bridge, "up"])


def route_interface(address, runner=LOCAL):
    """The interface this namespace reaches address through, or None."""
    try:
        routes = json.loads(runner.out(["ip", "-j", "route", "get", address]) or "[]")
    except (OarcloudError, ValueError):
        return None
    return routes[0].get("dev") if routes else None


def set_up(dev, runner=LOCAL, mtu=None, netns_pid=None):
    runner.run(_in(netns_pid) + ["ip", "link", "set", "dev", dev, "up"]
               + (["mtu", str(mtu)] if mtu else []))


def set_mtu(dev, mtu, runner=LOCAL, netns_pid=None):
    runner.run(_in(netns_pid) + ["ip", "link", "set", "dev", dev, "mtu", str(mtu)])


def tx_offload_off(dev, runner=LOCAL, netns_pid=None, check=False, netns=None):
    """Turn TX checksum offload off (needed on veths attached to a userspace
    datapath, which does not complete checksums)."""
    runner.run(_in(netns_pid, netns) + ["ethtool", "-K", dev, "tx", "off"], check=check)


def names(runner=LOCAL):
    """The names of this network namespace's interfaces."""
    return set(links(runner))


def netns_exec(netns, argv):
    """argv run in the named network namespace netns."""
    return _in(netns=netns) + list(argv)


def delete_netns(netns, runner=LOCAL):
    runner.run(["ip", "netns", "del", netns], check=False)


def delete(dev, runner=LOCAL):
    """Delete a link if it is there."""
    runner.run(["ip", "link", "del", dev], check=False)


def batch(lines, runner=LOCAL, netns=None):
    """Run iproute2 commands (one per line, without `ip`) in one `ip -batch`,
    in the named network namespace netns if given."""
    runner.run(["ip"] + (["-netns", netns] if netns else []) + ["-batch", "-"],
               stdin="\n".join(lines) + "\n")


def tx_offload_on(dev, runner=LOCAL):
    out = runner.run(["ethtool", "-k", dev], check=False).out
    for line in out.splitlines():
        if line.startswith("tx-checksumming:"):
            return line.split(":", 1)[1].strip().startswith("on")
    return False


def ensure_sysctl(key, value, runner=LOCAL):
    """key = value in this network namespace's sysctls; True if it changed."""
    if runner.out(["sysctl", "-n", key]).strip() == value:
        return False
    runner.run(["sysctl", "-qw", "%s=%s" % (key, value)])
    return True


def move_addresses(src, dst, runner=LOCAL):
    """Move src's IPv4 addresses and routes to dst; True if anything moved."""
    addrs = addresses(src, runner)
    routes = routes_via(src, runner)
    for a in addrs:
        runner.run(["ip", "addr", "del", a, "dev", src])
        runner.run(["ip", "addr", "replace", a, "dev", dst])
    set_up(dst, runner)
    for r in routes:
        argv = ["ip", "route", "replace", r["dst"]]
        if r.get("gateway"):
            argv += ["via", r["gateway"]]
        runner.run(argv + ["dev", dst])
    return bool(addrs or routes)


def neighbor_mac(address, dev, runner=LOCAL):
    """The MAC the kernel has for address on dev (any state that has one:
    reachable, stale, delay...), or None."""
    entries = json.loads(runner.out(["ip", "-j", "-4", "neigh", "show", "to", address, "dev",
                                     dev]) or "[]")
    return next((e["lladdr"].lower() for e in entries
                 if e.get("lladdr") and "FAILED" not in e.get("state", [])), None)


def resolve_neighbor(address, dev, runner=LOCAL):
    """Have the kernel resolve address on dev (one echo request, 1 s at
    most); returns its MAC or None."""
    mac = neighbor_mac(address, dev, runner)
    if mac is None:
        runner.run(["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", dev, address], check=False,
                   timeout=5)
        mac = neighbor_mac(address, dev, runner)
    return mac
