"""Private networks on a node: make br-int, the tunnels, the gateways and the NAT
rules match the catalog.  Run as root on the node (by the node agent).

`sync()` is declarative and idempotent: it reads what the catalog says about
the networks this node hosts (a network is hosted while one of its instance
ports or its VPN endpoint is on br-int here), then

- gives each hosted network a local tag (kept on its gateway port, reused),
- makes one gateway per hosted network: a namespace `ocgw-<vni>` holding the
  network's gateway address (same address and MAC on every node: traffic out
  of an instance never crosses nodes to reach it), NAT to a link address,
  which the node NATs again to its own underlay address,
- keeps one VXLAN tunnel (key=flow) to each node hosting a same network and
  removes the others,
- replaces the bridge's flows at once (netflows: anti-spoofing, ARP, rules),
- rewrites its own iptables chains (OC-*) for NAT and published ports,
- starts or stops the networks' OpenVPN endpoints (oarcloud_lib.node.vpn).

When nothing is hosted, all of that is removed: no gateway, tunnel, flow
beyond the default drop, chain or VPN process is left.
"""
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import socket
from pathlib import Path

from oarcloud_lib import config, paths, templating
from oarcloud_lib.catalog import db, networks
from oarcloud_lib.node import netflows, vpn
from oarcloud_lib.tools import iptables, netdev, ovs
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.names import INTEGRATION_BRIDGE, UNDERLAY_BRIDGE
from oarcloud_lib.tools.oarssh import this_node
from oarcloud_lib.names import gw_port, link_port

LOG = logging.getLogger("oarcloud.netnode")
RUN_DIR = Path("/run/oarcloud")
NETNS_DIR = Path("/run/netns")
# The digest of the OC-* chains last restored on this node (skipped when unchanged).
NODE_RULES_DIGEST = Path("/run/oarcloud/net/node-iptables.digest")
# Per-network link between a gateway namespace and the node: a /30 of this range.
LINK_RANGE = ipaddress.ip_network("169.254.0.0/18")
MTU = 1450
CHAINS = {"nat": ("PREROUTING", "OUTPUT", "POSTROUTING"),
          "filter": ("INPUT", "FORWARD", "OUTPUT")}
VXLAN_PORT = 4789  # the IANA port, Open vSwitch's default for type=vxlan


def gw_netns(vni):
    return "ocgw-%d" % vni


def link_addresses(tag):
    """(node side, gateway side) of a network's /30 link, from its local tag."""
    base = LINK_RANGE.network_address + 4 * tag
    return base + 1, base + 2


@contextlib.contextmanager
def _locked():
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / "netsync.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# -- what the catalog says ---------------------------------------------------------

def catalog_view(conn, node):
    """(nics of the networks with an address on node, {network: row}, rules,
    exposures on node, VPN endpoints on node)."""
    nics = [dict(zip(("network", "kind", "ip", "mac", "port", "node", "id"), r))
            for r in conn.execute(
                "SELECT network, kind, host(ip), mac, port, node, id FROM nics WHERE network IN"
                " (SELECT network FROM nics WHERE node = %s)", (node,))]
    ids = sorted({n["network"] for n in nics})
    nets = {r[0]: {"id": r[0], "vni": r[1], "cidr": str(r[2]), "gateway": r[3]}
            for r in conn.execute("SELECT id, vni, cidr, host(gateway) FROM networks"
                                  " WHERE id = ANY(%s)", (ids,))}
    rules = networks.rules(conn, ids)
    exposures = [dict(zip(("proto", "port", "node_port", "ip", "network"), r))
                 for r in conn.execute(
                     "SELECT e.proto, e.port, e.node_port, host(c.ip), c.network FROM exposures e"
                     " JOIN nics c ON c.id = e.nic WHERE e.node = %s ORDER BY e.node_port",
                     (node,))]
    vpns = vpn.endpoints(conn, node)
    return nics, nets, rules, exposures, vpns


# -- Open vSwitch ---------------------------------------------------------------------

def interfaces(runner=LOCAL):
    """{name: {"ofport", "external_ids", "tag"}} of every interface of the switch
    (and the VLAN tag of its port), in one ovs-vsctl call."""
    out = ovs.vsctl(["--format=json", "--columns=name,ofport,external_ids", "list", "Interface",
                     "--", "--columns=name,tag", "list", "Port"], runner)
    lines = (out or "").splitlines()
    ifaces, ports = (ovs.parse_json_table(line) for line in (lines + ["", ""])[:2])
    tags = {r["name"]: r["tag"] for r in ports if isinstance(r["tag"], int)}
    return {r["name"]: {"ofport": r["ofport"] if isinstance(r["ofport"], int) else -1,
                        "external_ids": r["external_ids"] or {}, "tag": tags.get(r["name"])}
            for r in ifaces}


def _tags(ifaces):
    """{vni: local tag} recorded on the gateway ports."""
    out = {}
    for name, i in ifaces.items():
        ids = i["external_ids"]
        if name.startswith("gw-") and "oc-vni" in ids and "oc-tag" in ids:
            out[int(ids["oc-vni"])] = int(ids["oc-tag"])
    return out


def _allocate_tags(hosted_vnis, known):
    tags = {v: t for v, t in known.items() if v in hosted_vnis}
    free = (t for t in range(1, 4095) if t not in set(tags.values()))
    for vni in sorted(hosted_vnis - set(tags)):
        tags[vni] = next(free)
    return tags


# -- gateways ---------------------------------------------------------------------------

def _digest(*parts):
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def ensure_gateway(net, tag, links, exposures, recorded=None, runner=LOCAL):
    """The gateway namespace of net on this node (created or brought up to date);
    True if anything was done.  A gateway whose port records the digest of
    this very configuration (external_ids:oc-gw, set last) is left as it is:
    most syncs (a new instance, a rule) change nothing of it."""
    vni = net["vni"]
    ns, port, link = gw_netns(vni), gw_port(vni), link_port(vni)
    cidr = ipaddress.ip_network(net["cidr"])
    node_side, gw_side = link_addresses(tag)
    mac = networks.mac_for(vni, cidr, net["gateway"])
    rules = templating.render("gateway-iptables.j2", exposures=exposures)
    digest = _digest(vni, tag, cidr, net["gateway"], mac, node_side, gw_side, MTU, rules)
    if recorded == digest and port in links and link in links and (NETNS_DIR / ns).exists():
        return False
    # Two `ip -batch` runs (the node's side, then the namespace's) instead of a
    # dozen ip commands: the namespace's own forwarding and checksums after.
    outside = [] if (NETNS_DIR / ns).exists() else ["netns add %s" % ns]
    if port not in links:
        outside.append("link add %s mtu %d type veth peer name gw0 mtu %d netns %s"
                       % (port, MTU, MTU, ns))
    if link not in links:
        outside += ["link add %s type veth peer name up0 netns %s" % (link, ns),
                    "address add %s/30 dev %s" % (node_side, link)]
    outside += ["link set %s up" % port, "link set %s up" % link]
    netdev.batch(outside, runner)
    netdev.batch([
        "link set gw0 address %s" % mac,
        "address replace %s/%d dev gw0" % (net["gateway"], cidr.prefixlen),
        "link set gw0 up", "link set lo up",
        "address replace %s/30 dev up0" % gw_side, "link set up0 up",
        "route replace default via %s" % node_side], runner, netns=ns)
    runner.run(netdev.netns_exec(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
    netdev.tx_offload_off("gw0", runner, netns=ns, check=True)
    netdev.tx_offload_off(port, runner, check=True)
    iptables.restore(rules, runner, netns=ns)
    ovs.vsctl(["--may-exist", "add-port", INTEGRATION_BRIDGE, port, "--", "set", "Interface",
               port, "external_ids:oc-vni=%d" % vni, "external_ids:oc-tag=%d" % tag,
               "external_ids:oc-gw=%s" % digest, "--", "set", "Port", port, "tag=%d" % tag],
              runner)
    return True


def remove_gateway(vni, runner=LOCAL):
    ovs.delete_port(INTEGRATION_BRIDGE, gw_port(vni), runner)
    for link in (gw_port(vni), link_port(vni)):
        netdev.delete(link, runner)
    netdev.delete_netns(gw_netns(vni), runner)
    LOG.info("network vni %d: gateway removed from %s", vni, this_node())


def _forwarding():
    """IPv4 forwarding on (this network namespace's /proc/sys)."""
    knob = Path("/proc/sys/net/ipv4/ip_forward")
    if knob.read_text().strip() != "1":
        knob.write_text("1\n")


def _node_iptables(gateways, exposures, peers, runner):
    """This node's OC-* chains: NAT of the gateways' links, published ports,
    VXLAN from peers (addresses) only and never from a user's socket; or, when
    there is nothing to serve, no chain at all."""
    listed = {table: iptables.rules(table, runner) for table in CHAINS}
    have = "-N OC-POSTROUTING" in listed["nat"]
    if not gateways:
        if have:
            for table, chains in CHAINS.items():
                for chain in chains:
                    iptables.remove_chain(table, chain, "OC-" + chain, runner)
        return
    _forwarding()
    text = templating.render("node-iptables.j2", gateways=gateways, exposures=exposures,
                             link_range=str(LINK_RANGE),
                             egress=networks.egress_policy(config.load()),
                             peers=sorted(set(peers)), vxlan_port=VXLAN_PORT)
    digest = _digest(text)
    try:
        same = have and NODE_RULES_DIGEST.read_text() == digest
    except OSError:
        same = False
    if not same:  # our chains are replaced whole (--noflush keeps everything else)
        NODE_RULES_DIGEST.unlink(missing_ok=True)
        iptables.restore(text, runner, noflush=True)
        NODE_RULES_DIGEST.parent.mkdir(parents=True, exist_ok=True)
        NODE_RULES_DIGEST.write_text(digest)
    for table, chains in CHAINS.items():
        for chain in chains:
            iptables.ensure_jump(table, chain, "OC-" + chain, listed[table], runner)


# -- the whole node -----------------------------------------------------------------------

def sync(conn=None, runner=LOCAL):
    """Make this node's networking match the catalog; returns a summary dict."""
    with _locked(), db.session(conn) as conn:
        return _apply(catalog_view(conn, this_node()), runner)


def prepare(conn=None, runner=LOCAL):
    """The gateways (and node NAT) of the networks of this node's instances that
    are still starting, made while their domains start: the sync that follows
    then finds them in place and only writes flows.  Removes nothing."""
    with _locked(), db.session(conn) as conn:
        nics, nets, _, exposures, _ = catalog_view(conn, this_node())
        hosted = {n["network"] for n in nics if n["node"] == this_node()}
        _gateways(nets, hosted, exposures, interfaces(runner),
                  _peers(nics, hosted, this_node()), runner)


def clear(runner=LOCAL):
    """Remove all of oarcloud's networking from this node (nothing to serve)."""
    with _locked():
        return _apply(([], {}, {}, [], []), runner)


def _peers(nics, hosted, node):
    """{node: underlay address} of the other nodes that host networks hosted here."""
    others = {n["node"] for n in nics
              if n["network"] in hosted and n["node"] and n["node"] != node}
    return {other: socket.gethostbyname(other) for other in sorted(others)}


def _underlay_flows(peers, runner):
    """On a userspace datapath, the underlay bridge takes VXLAN from peers
    (addresses) only (the kernel datapath's tunnels are guarded by OC-INPUT)."""
    if ovs.datapath() != "netdev" or UNDERLAY_BRIDGE not in ovs.bridges(runner):
        return
    text = templating.render("underlay-flows.j2", ports=ovs.ports(UNDERLAY_BRIDGE, runner),
                             peers=sorted(set(peers)), vxlan_port=VXLAN_PORT)
    digest = _digest(text)
    try:
        if paths.UNDERLAY_FLOWS_DIGEST.read_text() == digest:
            return
    except OSError:
        pass
    paths.UNDERLAY_FLOWS_DIGEST.unlink(missing_ok=True)
    ovs.replace_flows(UNDERLAY_BRIDGE, text, runner)
    paths.UNDERLAY_FLOWS_DIGEST.parent.mkdir(parents=True, exist_ok=True)
    paths.UNDERLAY_FLOWS_DIGEST.write_text(digest)


def pin_tunnel_neighbors(peers, runner=LOCAL):
    """On a userspace datapath, put the peers' underlay MACs in its tunnel
    neighbour cache, from the kernel's (which resolves them if need be).

    Left to itself, the datapath learns a peer's MAC only by snooping an ARP
    reply while it translates one, and an ARP reply that matches a cached
    datapath flow is never translated: the first packets of a new network's
    instances to another node were dropped for seconds (a cold lab's first
    cross-node ping, test_allocations).  Entries age (tnl/neigh/aging, 900 s
    idle): the node's probe pins them again (PIN_EVERY).  Best effort: a
    peer that does not answer is only logged."""
    peers = sorted(set(peers))
    if not peers or ovs.datapath() != "netdev":
        return []
    try:
        known = ovs.tunnel_neighbors(runner)
        pinned = []
        for ip in peers:
            if ip in known:
                continue
            mac = netdev.resolve_neighbor(ip, UNDERLAY_BRIDGE, runner)
            if mac is None:
                LOG.warning("tunnel peer %s does not answer ARP on %s", ip, UNDERLAY_BRIDGE)
                continue
            ovs.set_tunnel_neighbor(UNDERLAY_BRIDGE, ip, mac, runner)
            pinned.append(ip)
        return pinned
    except OarcloudError as e:
        LOG.warning("tunnel neighbours not pinned: %s", e)
        return []


def tunnel_peers(runner=LOCAL):
    """The remote addresses of this node's VXLAN ports."""
    out = ovs.vsctl(["--format=json", "--columns=name,options", "list", "Interface"], runner)
    return sorted(r["options"]["remote_ip"] for r in ovs.parse_json_table(out)
                  if r["name"].startswith("vx-") and isinstance(r["options"], dict)
                  and "remote_ip" in r["options"])


def _gateways(nets, hosted, exposures, ifaces, peers, runner):
    """Tags, gateways and node NAT chains for the hosted networks; returns
    ({vni: tag}, whether a gateway port was made or changed)."""
    tags = _allocate_tags({nets[i]["vni"] for i in hosted}, _tags(ifaces))
    links = netdev.names(runner)
    by_vni = {nets[i]["vni"]: nets[i] for i in hosted}
    changed = False
    for vni, tag in sorted(tags.items()):
        recorded = ifaces.get(gw_port(vni), {}).get("external_ids", {}).get("oc-gw")
        changed |= ensure_gateway(by_vni[vni], tag, links,
                                  [e for e in exposures if nets[e["network"]]["vni"] == vni],
                                  recorded, runner)
    gateways = [{"vni": v, "link": link_port(v), "address": str(link_addresses(t)[1])}
                for v, t in sorted(tags.items())]
    _node_iptables(gateways, [dict(e, gw=str(link_addresses(tags[nets[e["network"]]["vni"]])[1]))
                              for e in exposures if nets[e["network"]]["vni"] in tags],
                   peers.values(), runner)
    return tags, changed


def _apply(view, runner):
    node = this_node()
    nics, nets, rules, exposures, vpns = view
    vpn.ensure_endpoints(vpns, runner)  # their tap ports must exist before we look
    ifaces = interfaces(runner)
    local = [n for n in nics if n["node"] == node and n["port"] in ifaces]
    hosted = {n["network"] for n in local}
    # changed: a port added or removed, ofports to read again
    peers = _peers(nics, hosted, node)
    tags, changed = _gateways(nets, hosted, exposures, ifaces, peers, runner)
    _underlay_flows(peers.values(), runner)
    pin_tunnel_neighbors(peers.values(), runner)
    for name, i in ifaces.items():
        vni = i["external_ids"].get("oc-vni")
        if name.startswith("gw-") and vni and int(vni) not in tags:
            remove_gateway(int(vni), runner)
            changed = True
    for ns in NETNS_DIR.glob("ocgw-*"):  # a gateway whose port is gone
        vni = ns.name[len("ocgw-"):]
        if vni.isdigit() and int(vni) not in tags:
            remove_gateway(int(vni), runner)
    # Tunnels to the nodes hosting the same networks.
    wanted = {ovs.tunnel_port_name(ip): ip for ip in peers.values()}
    for port, ip in wanted.items():
        if port not in ifaces:
            changed |= ovs.ensure_flow_tunnel(INTEGRATION_BRIDGE, port, ip, runner)
    for name in ifaces:
        if name.startswith("vx-") and name not in wanted:
            ovs.delete_port(INTEGRATION_BRIDGE, name, runner)
            changed = True
    if changed:
        ifaces = interfaces(runner)
    text = _flows(nics, nets, rules, hosted, tags, ifaces, node, peers)
    ovs.replace_flows(INTEGRATION_BRIDGE, text, runner, protocol="OpenFlow15")
    tag_ports = []
    for n in local:
        tag = tags[nets[n["network"]]["vni"]]
        if ifaces[n["port"]]["tag"] != tag:
            tag_ports += ["--", "set", "Port", n["port"], "tag=%d" % tag]
    if tag_ports:
        ovs.vsctl(tag_ports[1:], runner)
    summary = {"node": node, "networks": len(hosted), "ports": len(local),
               "tunnels": len(wanted), "flows": netflows.count(text)}
    LOG.info("network sync on %s: %s", node, summary)
    return summary


def _flows(nics, nets, rules, hosted, tags, ifaces, node, peers):
    ports, out = {}, []
    for n in nics:
        if n["network"] in hosted and n["node"] == node and n["port"] in ifaces:
            vni = nets[n["network"]]["vni"]
            p = ports.setdefault(n["port"], {"ofport": ifaces[n["port"]]["ofport"],
                                             "tag": tags[vni], "pairs": [],
                                             "vpn": n["kind"] == "vpn"})
            p["pairs"].append((n["mac"], n["ip"]))
    for net_id in sorted(hosted):
        net = nets[net_id]
        vni, cidr = net["vni"], ipaddress.ip_network(net["cidr"])
        gw = ifaces.get(gw_port(vni), {}).get("ofport", -1)
        tunnel_of = {node_name: ifaces.get(ovs.tunnel_port_name(ip), {}).get("ofport", -1)
                     for node_name, ip in peers.items()}
        members = []
        for n in nics:
            if n["network"] != net_id or not n["node"]:
                continue
            if n["node"] == node:
                if n["port"] not in ifaces:
                    continue  # not created yet, or gone
                members.append({"mac": n["mac"], "ip": n["ip"],
                                "ofport": ifaces[n["port"]]["ofport"]})
            elif tunnel_of.get(n["node"], -1) > 0:
                members.append({"mac": n["mac"], "ip": n["ip"], "ofport": None,
                                "tunnel": tunnel_of[n["node"]]})
        out.append({"tag": tags[vni], "vni": vni, "gateway": net["gateway"],
                         "gateway_mac": networks.mac_for(vni, cidr, net["gateway"]),
                         "gw_ofport": gw if gw > 0 else None,
                         "members": members, "rules": rules.get(net_id, [])})
    return netflows.render(sorted(ports.values(), key=lambda p: p["ofport"]), out)


def sync_quietly(conn=None, runner=LOCAL):
    """sync, logging instead of raising: for teardown paths that must go on."""
    try:
        return sync(conn, runner)
    except OarcloudError as e:
        LOG.error("network sync on %s failed: %s", this_node(), e)
        return None
