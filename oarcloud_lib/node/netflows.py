"""The OpenFlow program of a node's integration bridge, from what the node hosts.

Pure: netnode gathers the view (local ports, networks, their members on every
node, rules, tunnels) and this module renders templates/flows.j2 for
`ovs-ofctl replace-flows`.  Tables:

    0   classify: an instance (or VPN) port passes only its own MAC + IPv4
        address (anti-spoofing, ARP included); tunnels by VNI; gateways
    10  ARP: answered here from the catalog, never flooded
    20  egress conntrack (zone of the sending port)
    21  egress rules: established/related pass, new ones by the network's rules
    30  delivery by destination MAC within the network: a local port (through
        ingress), the node's gateway, or the tunnel to the member's node
    40  ingress conntrack (zone of the receiving port)
    41  ingress rules, then output

Registers: reg6 the network's local tag, reg5 the conntrack zone (the port's
OpenFlow number), reg7 the output port, reg4 = 1 for frames from a tunnel
(delivered locally only: nodes never relay for each other), reg3 = 1 for
frames from VPN clients (never to the gateway: they reach the network only).
"""
import ipaddress

from oarcloud_lib import templating

PROTO_MATCH = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "any": "ip"}


def port_masks(low, high):
    """[(value, mask)] of aligned blocks that exactly cover ports low..high."""
    out = []
    while low <= high:
        size = low & -low if low else 1 << 16
        while size > high - low + 1:
            size >>= 1
        out.append((low, 0xffff & ~(size - 1)))
        low += size
    return out


def rule_matches(rule):
    """The OpenFlow matches of one rule (a dict of the catalog's net_rules)."""
    base = [PROTO_MATCH[rule["proto"]]]
    if rule["remote"]:
        net = ipaddress.ip_network(rule["remote"])
        if net.prefixlen:
            base.append("%s=%s" % ("nw_src" if rule["direction"] == "ingress" else "nw_dst", net))
    if not rule.get("port_low"):
        return [",".join(base)]
    out = []
    for value, mask in port_masks(rule["port_low"], rule["port_high"]):
        tp = "tp_dst=%d" % value if mask == 0xffff else "tp_dst=0x%x/0x%x" % (value, mask)
        out.append(",".join(base + [tp]))
    return out


def render(ports, networks):
    """The flows text.

    ports: [{"ofport", "tag", "pairs": [(mac, ip)], "vpn"}] local instance/VPN ports;
    networks: [{"tag", "vni", "gateway", "gateway_mac", "gw_ofport",
                "members": [{"mac", "ip", "ofport", "tunnel"}],
                "rules": [rule dicts]}] where a member has ofport (local) or
    tunnel (the ofport of the tunnel to its node).  A tunnel delivers only its
    node's members of the network, by their MAC and address, with the
    network's VNI: nothing from another node, network or identity.
    """
    for n in networks:
        n["egress"] = [m for r in n["rules"] if r["direction"] == "egress"
                       for m in rule_matches(r)]
        n["ingress"] = [m for r in n["rules"] if r["direction"] == "ingress"
                        for m in rule_matches(r)]
    return templating.render("flows.j2", ports=ports, networks=networks)


def count(text):
    return sum(1 for line in text.splitlines() if line.strip() and not line.startswith("#"))
