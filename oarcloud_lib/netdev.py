"""Network devices through iproute2 and ethtool (argv only, JSON output parsed)."""
import json

from oarcloud_lib.commands import LOCAL


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


def set_up(dev, runner=LOCAL):
    runner.run(["ip", "link", "set", "dev", dev, "up"])


def tx_offload_off(dev, runner=LOCAL):
    """Turn TX checksum offload off (needed on veths attached to a userspace datapath)."""
    runner.run(["ethtool", "-K", dev, "tx", "off"], check=False)


def tx_offload_on(dev, runner=LOCAL):
    out = runner.run(["ethtool", "-k", dev], check=False).out
    for line in out.splitlines():
        if line.startswith("tx-checksumming:"):
            return line.split(":", 1)[1].strip().startswith("on")
    return False


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
