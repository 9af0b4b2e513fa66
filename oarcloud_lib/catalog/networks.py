"""Private networks (F.u.8): networks, their addresses and rules in the catalog.

A network belongs to one user, has a CIDR (two users may use the same one) and
a VXLAN segment id (VNI) unique on the site.  Every instance NIC and VPN client
gets an address of its network (table nics) from allocation until teardown.
Rules are a stateful security group per network.  The checks here run before
anything is written; the node side (oarcloud_lib.node.netnode) turns the catalog
into Open vSwitch flows, tunnels and gateways.
"""
import ipaddress
import re

from oarcloud_lib.catalog import quotas, usergroups
from oarcloud_lib.errors import Conflict, NotFound, Refused
from oarcloud_lib.names import USER_RE, port_name

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?\Z")
# Smallest and largest private network a user may create.
MIN_PREFIX, MAX_PREFIX = 16, 29
# The ranges a private network may be carved from: RFC 1918, shared address
# space (RFC 6598) and the benchmarking range (RFC 2544, the default network's).
PRIVATE_RANGES = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15"))
# VXLAN network identifiers of private networks (24 bits; the flat instance
# network of the lab uses key 1).
VNI_FIRST, VNI_LAST = 4096, (1 << 24) - 1
PROTOCOLS = ("tcp", "udp", "icmp", "any")
DIRECTIONS = ("ingress", "egress")
PORT_RE = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")
DEFAULT_NAME = "default"
MAX_NICS = 8  # per instance
NETWORK_COLUMNS = ("id", "owner", "name", "cidr", "gateway", "vni", "created")


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Refused(detail="bad network name %r: 1-32 lowercase letters, digits or '-', "
                             "not starting or ending with '-'" % (name,))
    return name


def _ipv4_network(text, what):
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise Refused(detail="bad %s %r: %s" % (what, text, e)) from None
    if net.version != 4:
        raise Refused(detail="bad %s %s: IPv4 only" % (what, text))
    return net


def check_cidr(text, reserved=()):
    """An IPv4 network a user may create: a /16 to a /29, private use, written as
    its network address, overlapping none of reserved (the underlay, the site's
    own ranges).  Raises Refused."""
    net = _ipv4_network(text, "CIDR")
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise Refused(detail="bad CIDR %s: the prefix must be between /%d and /%d"
                      % (text, MIN_PREFIX, MAX_PREFIX))
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified \
            or net.is_reserved:
        raise Refused(detail="bad CIDR %s: not a usable unicast range" % text)
    if not any(net.subnet_of(r) for r in PRIVATE_RANGES):
        # A public range would hide the real hosts of that range from the instances.
        raise Refused(detail="bad CIDR %s: a private network uses a private range (%s)"
                      % (text, ", ".join(map(str, PRIVATE_RANGES))))
    for r in reserved:
        r = ipaddress.ip_network(r)
        if net.overlaps(r):
            raise Refused(detail="CIDR %s overlaps %s, which the site uses" % (text, r))
    return net


def check_address(text, net, what="address"):
    """A host address of net (not its network or broadcast address).  Raises Refused."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise Refused(detail="bad %s %r" % (what, text)) from None
    if ip not in net or ip in (net.network_address, net.broadcast_address):
        raise Refused(detail="%s %s is not a host address of %s" % (what, ip, net))
    return ip


def default_gateway(net):
    return net.network_address + 1


def check_port(text):
    """'P' or 'P-Q' with 1 <= P <= Q <= 65535 -> (P, Q).  Raises Refused."""
    m = PORT_RE.match(text or "")
    if not m:
        raise Refused(detail="bad port %r: use P or P-Q" % (text,))
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 1 <= low <= high <= 65535:
        raise Refused(detail="bad port %r: ports go from 1 to 65535, low to high" % text)
    return low, high


# What instances may never open a connection to unless the admin allows it
# (egress_allow): besides the site's own ranges (the nodes' underlay, the
# server), link-local (cloud metadata services, the nodes' gateway links).
EGRESS_DENIED = ("169.254.0.0/16",)


def check_egress_allow(text):
    """An admin's egress exception 'CIDR', 'CIDR:PORT' or 'CIDR:PORT/PROTO' (tcp or
    udp) -> {cidr, port, proto}.  Raises Refused."""
    cidr, _, rest = str(text).partition(":")
    port, _, proto = rest.partition("/")
    net = ipaddress.ip_network(cidr, strict=False) if _valid_net(cidr) else None
    if net is None or net.version != 4:
        raise Refused(detail="bad egress_allow entry %r: CIDR[:PORT[/tcp|udp]]" % (text,))
    low = high = None
    if port:
        low, high = check_port(port)
    if proto and proto not in ("tcp", "udp"):
        raise Refused(detail="bad egress_allow entry %r: the protocol is tcp or udp" % (text,))
    return {"cidr": str(net), "port": None if low is None else
            ("%d" % low if low == high else "%d:%d" % (low, high)),
            "proto": proto or ("tcp" if port else None)}


def _valid_net(text):
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def egress_policy(conf):
    """{deny: [CIDR], allow: [{cidr, port, proto}]}: where instances may not open
    connections (the nodes' underlay, the server, link-local, the admin's
    egress_deny) and the exceptions (the nodes' published ports, the admin's
    egress_allow).  Raises Refused."""
    deny = [str(ipaddress.ip_network(c, strict=False)) for c in
            [conf.nodes_cidr, conf.server_address] + list(EGRESS_DENIED)
            + list(getattr(conf, "egress_deny", []) or []) if c and _valid_net(c)]
    # Published ports (net expose) are open to all: instances may reach them too.
    published = ["%s:%d-%d/%s" % (conf.nodes_cidr, NODE_PORTS[0], NODE_PORTS[1], proto)
                 for proto in ("tcp", "udp") if conf.nodes_cidr]
    return {"deny": sorted(set(deny)),
            "allow": [check_egress_allow(a) for a in published + list(conf.egress_allow or [])]}


def check_rule(direction, proto, port=None, remote=None):
    """A security-group rule, checked: (direction, proto, (P, Q) or None, network or None)."""
    if direction not in DIRECTIONS:
        raise Refused(detail="bad direction %r: %s" % (direction, " or ".join(DIRECTIONS)))
    if proto not in PROTOCOLS:
        raise Refused(detail="bad protocol %r: one of %s" % (proto, ", ".join(PROTOCOLS)))
    ports = None
    if port is not None:
        if proto not in ("tcp", "udp"):
            raise Refused(detail="--port goes with tcp or udp only")
        ports = check_port(port)
    net = None
    if remote is not None:
        net = _ipv4_network(remote, "remote CIDR")
    return direction, proto, ports, net


def next_vni(used):
    """The lowest free VXLAN network identifier.  Raises Refused when none is left."""
    used = set(used)
    for vni in range(VNI_FIRST, VNI_LAST + 1):
        if vni not in used:
            return vni
    raise Refused(detail="no VXLAN network identifier left")


def free_addresses(net, used, n, gateway=None):
    """n free host addresses of net, lowest first, never the gateway nor one in used."""
    taken = {ipaddress.ip_address(u) for u in used}
    if gateway is not None:
        taken.add(ipaddress.ip_address(gateway))
    out = []
    for ip in net.hosts():
        if ip not in taken:
            out.append(ip)
            if len(out) == n:
                return out
    raise Refused(detail="network %s has no %d free address(es) left" % (net, n))


def mac_for(vni, net, ip):
    """A NIC's MAC: locally administered, from the network's VNI and the address's
    offset in it (networks are /16 at most), so unique on the whole site."""
    offset = int(ipaddress.ip_address(ip)) - int(net.network_address)
    return "0a:%02x:%02x:%02x:%02x:%02x" % ((vni >> 16) & 255, (vni >> 8) & 255, vni & 255,
                                            (offset >> 8) & 255, offset & 255)


def reserved_ranges(conf):
    """What a user network must not overlap: the nodes' underlay, the server."""
    out = [conf.nodes_cidr] if conf.nodes_cidr else []
    try:
        out.append(str(ipaddress.ip_network(conf.server_address)))
    except ValueError:
        pass
    return out


# -- the catalog -----------------------------------------------------------------

def _row(values):
    row = dict(zip(NETWORK_COLUMNS, values))
    row["cidr"], row["gateway"] = str(row["cidr"]), str(row["gateway"])
    return row


def _select(where):
    return "SELECT %s FROM networks WHERE %s" % (", ".join(NETWORK_COLUMNS), where)


def get(conn, owner, name):
    """The owner's network called name.  Another user's network is not found."""
    if isinstance(name, str) and "/" in name and not name.startswith(owner + "/"):
        raise Refused(detail="%s is another user's network: only its owner changes it (you "
                             "may attach instances to it if it is shared with you)" % name[:80])
    name = name.rpartition("/")[2] if isinstance(name, str) else name
    check_name(name)
    row = conn.execute(_select("owner = %s AND name = %s"), (owner, name)).fetchone()
    if row is None:
        raise NotFound(what="network", name=name)
    return _row(row)


def attachable(conn, user, ref):
    """The network ref names for an instance of user's: NAME (user's own) or
    OWNER/NAME, one shared with user or a group of theirs.  Anything else is
    not found, exactly like a missing one.  Raises NotFound, Refused."""
    owner, _, name = ref.rpartition("/")
    if not owner or owner == user:
        return get(conn, user, ref)
    if not USER_RE.match(owner):
        raise Refused(detail="bad network %r: NAME, or OWNER/NAME for one shared with you"
                      % ref[:80])
    check_name(name)
    row = conn.execute(_select("owner = %%s AND name = %%s AND id IN (SELECT network FROM"
                               " network_shares s WHERE %s)" % usergroups.granted("s")),
                       (owner, name, user, user)).fetchone()
    if row is None:
        raise NotFound(what="network", name=ref)
    return _row(row)


def ref(row, user):
    """How user names the network row: NAME if theirs, else OWNER/NAME."""
    return row["name"] if row["owner"] == user else "%s/%s" % (row["owner"], row["name"])


def shared_with(conn, user):
    """Networks of others that user may attach to, with ref OWNER/NAME."""
    rows = [_row(r) for r in conn.execute(_select(
        "owner <> %%s AND id IN (SELECT network FROM network_shares s WHERE %s)"
        " ORDER BY owner, name" % usergroups.granted("s")), (user, user, user))]
    for r in rows:
        r["ref"] = ref(r, user)
    return rows


def shares(conn, network_id):
    """Whom the network is shared with: users, then @GROUPs."""
    return [r[0] for r in conn.execute(
        "SELECT coalesce(account, '@' || usergroup) FROM network_shares WHERE network = %s"
        " ORDER BY usergroup NULLS FIRST, account", (network_id,))]


def share(conn, owner, name, grantee, on=True):
    """Let grantee (a user or @GROUP) attach instances to the owner's network,
    or stop it (on False: what runs keeps its address until it ends); returns
    (network row, changed?).  Raises NotFound, Refused."""
    row = get(conn, owner, name)
    with conn.transaction():
        kind, who = usergroups.require_grantee(conn, grantee)
        if kind == "account" and who == owner:
            raise Refused(detail="network %s is yours already" % name)
        if on:
            changed = conn.execute("INSERT INTO network_shares (network, %s) VALUES (%%s, %%s)"
                                   " ON CONFLICT DO NOTHING" % kind, (row["id"], who)).rowcount
        else:
            changed = conn.execute("DELETE FROM network_shares WHERE network = %%s AND %s = %%s"
                                   % kind, (row["id"], who)).rowcount
    return row, changed == 1


def exists(conn, owner, name):
    return conn.execute("SELECT 1 FROM networks WHERE owner = %s AND name = %s",
                        (owner, name)).fetchone() is not None


def owned(conn, owner):
    """The owner's networks, with the count of addresses in use in each."""
    rows = [_row(r) for r in conn.execute(_select("owner = %s ORDER BY name"), (owner,))]
    counts = dict(conn.execute(
        "SELECT network, count(*) FROM nics WHERE network = ANY(%s) GROUP BY network",
        ([r["id"] for r in rows],)).fetchall())
    for r in rows:
        r["in_use"] = counts.get(r["id"], 0)
    return rows


def create(conn, owner, name, cidr, gateway=None, reserved=(), default_rules=True):
    """A new network of owner's (with the default rules); returns its row.  Raises
    Refused (bad input), Conflict (the name is taken)."""
    check_name(name)
    net = check_cidr(cidr, reserved)
    gw = check_address(gateway, net, "gateway") if gateway else default_gateway(net)
    with conn.transaction():
        # One VNI allocator at a time.
        conn.execute("LOCK TABLE networks IN SHARE ROW EXCLUSIVE MODE")
        if exists(conn, owner, name):
            raise Conflict(what="network", detail="you already have a network named %s" % name)
        quotas.require(conn, owner, {"networks": 1})
        vni = next_vni(r[0] for r in conn.execute("SELECT vni FROM networks"))
        row = _row(conn.execute(
            "INSERT INTO networks (owner, name, cidr, gateway, vni) VALUES (%s, %s, %s, %s, %s)"
            " RETURNING " + ", ".join(NETWORK_COLUMNS),
            (owner, name, str(net), str(gw), vni)).fetchone())
        if default_rules:
            # Inside the network: allowed both ways; from outside: denied; out: allowed.
            conn.execute("INSERT INTO net_rules (network, direction, proto, remote)"
                         " VALUES (%s, 'ingress', 'any', %s), (%s, 'egress', 'any', NULL)",
                         (row["id"], str(net), row["id"]))
    return row


def ensure_default(conn, owner, cidr, reserved=()):
    """The owner's default network, created on first use."""
    try:
        return get(conn, owner, DEFAULT_NAME)
    except NotFound:
        pass
    try:
        return create(conn, owner, DEFAULT_NAME, cidr, reserved=reserved)
    except Conflict:  # created meanwhile by another launch
        return get(conn, owner, DEFAULT_NAME)


def delete(conn, owner, name):
    """Delete the owner's network (its rules and VPN with it); refused while an
    instance uses it.  Returns the node of its VPN endpoint, if it had one."""
    row = get(conn, owner, name)
    with conn.transaction():
        conn.execute("SELECT 1 FROM networks WHERE id = %s FOR UPDATE", (row["id"],))
        users = [r[0] if r[1] in (owner, None) else "an instance of %s's" % r[1]
                 for r in conn.execute(
                     "SELECT DISTINCT coalesce(i.name, c.domain), i.owner FROM nics c LEFT JOIN"
                     " instances i ON i.domain = c.domain WHERE c.network = %s"
                     " AND c.kind = 'instance'", (row["id"],))]
        if users:
            raise Conflict(what="network", detail="%s is in use by %s" % (
                name, ", ".join(sorted(set(users)))))
        vpn = conn.execute("SELECT node FROM net_vpns WHERE network = %s",
                           (row["id"],)).fetchone()
        conn.execute("DELETE FROM nics WHERE network = %s", (row["id"],))
        conn.execute("DELETE FROM networks WHERE id = %s", (row["id"],))
    return vpn[0] if vpn else None


RULE_COLUMNS = ("id", "direction", "proto", "port_low", "port_high", "remote")


def rules(conn, network_ids):
    """{network id: [rule dicts]}, oldest first."""
    out = {n: [] for n in network_ids}
    for r in conn.execute("SELECT network, %s FROM net_rules WHERE network = ANY(%%s)"
                          " ORDER BY id" % ", ".join(RULE_COLUMNS), (list(network_ids),)):
        rule = dict(zip(RULE_COLUMNS, r[1:]))
        rule["remote"] = str(rule["remote"]) if rule["remote"] is not None else None
        out[r[0]].append(rule)
    return out


def add_rule(conn, owner, name, direction, proto, port=None, remote=None):
    """Add a rule to the owner's network; returns (network row, rule id, added?)."""
    row = get(conn, owner, name)
    direction, proto, ports, remote_net = check_rule(direction, proto, port, remote)
    low, high = ports if ports else (None, None)
    remote = str(remote_net) if remote_net is not None else None
    found = conn.execute(
        "INSERT INTO net_rules (network, direction, proto, port_low, port_high, remote)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
        (row["id"], direction, proto, low, high, remote)).fetchone()
    if found:
        return row, found[0], True
    same = conn.execute(
        "SELECT id FROM net_rules WHERE network = %s AND direction = %s AND proto = %s"
        " AND port_low IS NOT DISTINCT FROM %s AND port_high IS NOT DISTINCT FROM %s"
        " AND remote IS NOT DISTINCT FROM %s::cidr",
        (row["id"], direction, proto, low, high, remote)).fetchone()
    return row, same[0], False


def delete_rule(conn, owner, name, rule_id):
    """Delete rule rule_id of the owner's network; returns the network row."""
    row = get(conn, owner, name)
    if not str(rule_id).isdigit():
        raise Refused(detail="bad rule id %r: see `oarcloud net rule list %s`"
                      % (str(rule_id)[:20], name))
    if conn.execute("DELETE FROM net_rules WHERE network = %s AND id = %s RETURNING id",
                    (row["id"], int(rule_id))).fetchone() is None:
        raise NotFound(what="rule", name="%s in network %s" % (rule_id, name))
    return row


def describe_rule(rule):
    ports = ""
    if rule["port_low"]:
        ports = " port %d" % rule["port_low"] if rule["port_low"] == rule["port_high"] \
            else " ports %d-%d" % (rule["port_low"], rule["port_high"])
    remote = rule["remote"] or "anywhere"
    return "%s %s%s %s %s" % (rule["direction"], rule["proto"], ports,
                              "from" if rule["direction"] == "ingress" else "to", remote)


# -- addresses ------------------------------------------------------------------------

def attach(conn, rows, nets, fixed_ip=None):
    """Allocate one NIC per network in nets (network rows, in order) for every
    instance row; fixed_ip is the first network's address of a lone instance.
    Sets each row's ip and mac (its first NIC's) and returns the NIC dicts.
    Must run in the caller's transaction.  Raises Refused."""
    if not nets:
        raise Refused(detail="an instance needs at least one network")
    if len(nets) > MAX_NICS:
        raise Refused(detail="at most %d networks per instance" % MAX_NICS)
    if len({n["id"] for n in nets}) != len(nets):
        raise Refused(detail="a network is named twice")
    if fixed_ip is not None and len(rows) != 1:
        raise Refused(detail="--ip gives one address: launch one instance (--count 1)")
    conn.execute("LOCK TABLE nics IN SHARE ROW EXCLUSIVE MODE")
    nics = []
    for idx, net_row in enumerate(nets):
        net = ipaddress.ip_network(net_row["cidr"])
        used = {str(r[0]) for r in conn.execute(
            "SELECT host(ip) FROM nics WHERE network = %s", (net_row["id"],))}
        if idx == 0 and fixed_ip is not None:
            addresses = [check_fixed_address(net_row, fixed_ip, used)]
        else:
            addresses = free_addresses(net, used, len(rows), gateway=net_row["gateway"])
        for row, ip in zip(rows, addresses):
            nic = {"network": net_row["id"], "domain": row["domain"], "idx": idx, "ip": str(ip),
                   "mac": mac_for(net_row["vni"], net, ip), "node": row["node"],
                   "port": port_name(row["domain"], idx), "prefix": net.prefixlen,
                   "gateway": net_row["gateway"] if idx == 0 else None}
            conn.execute("INSERT INTO nics (network, kind, domain, idx, ip, mac, port, node)"
                         " VALUES (%(network)s, 'instance', %(domain)s, %(idx)s, %(ip)s,"
                         " %(mac)s, %(port)s, %(node)s)", nic)
            if idx == 0:
                row.update(ip=nic["ip"], mac=nic["mac"])
            nics.append(nic)
    return nics


def nics_of(conn, domains):
    """{domain: [NIC dicts, by index]} with their network's prefix and gateway."""
    out = {d: [] for d in domains}
    for r in conn.execute(
            "SELECT c.domain, c.idx, host(c.ip), c.mac, c.port, masklen(n.cidr), host(n.gateway),"
            " n.name, n.vni, n.owner FROM nics c JOIN networks n ON n.id = c.network"
            " WHERE c.domain = ANY(%s) ORDER BY c.domain, c.idx", (list(domains),)):
        out[r[0]].append({"idx": r[1], "ip": r[2], "mac": r[3], "port": r[4], "prefix": r[5],
                          "gateway": r[6] if r[1] == 0 else None, "network": r[7],
                          "vni": r[8], "network_owner": r[9]})
    return out


def release(conn, domains):
    """Give the instances' addresses back; returns the networks they were in."""
    rows = conn.execute("DELETE FROM nics WHERE domain = ANY(%s) RETURNING network",
                        (list(domains),)).fetchall()
    return sorted({r[0] for r in rows})


def hosting_nodes(conn, network_ids):
    """The nodes that hold an address of any of these networks (instances, VPN)."""
    return sorted(r[0] for r in conn.execute(
        "SELECT DISTINCT node FROM nics WHERE network = ANY(%s) AND node IS NOT NULL",
        (list(network_ids),)))


# -- published ports ----------------------------------------------------------------------

NODE_PORTS = (30000, 32767)


def expose(conn, instance, port, proto="tcp", network=None):
    """Publish port of the instance (a live row of its owner's) on its node:
    returns (exposure dict, added?).  network picks the NIC (default: the first)."""
    if proto not in ("tcp", "udp"):
        raise Refused(detail="bad protocol %r: tcp or udp" % (proto,))
    low, high = check_port(str(port))
    if low != high:
        raise Refused(detail="publish one port at a time")
    nics = nics_of(conn, [instance["domain"]])[instance["domain"]]
    if network is not None:
        nics = [n for n in nics if n["network"] == check_name(network)]
        if not nics:
            raise NotFound(what="network", name="%s on instance %s" % (network, instance["name"]))
    nic = nics[0]
    if nic["network_owner"] != instance["owner"]:
        raise Refused(detail="network %s/%s is shared with you: publish ports from a network "
                             "of your own" % (nic["network_owner"], nic["network"]))
    with conn.transaction():
        conn.execute("LOCK TABLE exposures IN SHARE ROW EXCLUSIVE MODE")
        nic_id = conn.execute("SELECT id FROM nics WHERE domain = %s AND idx = %s",
                              (instance["domain"], nic["idx"])).fetchone()[0]
        found = conn.execute("SELECT node_port FROM exposures WHERE nic = %s AND proto = %s"
                             " AND port = %s", (nic_id, proto, low)).fetchone()
        out = {"instance": instance["name"], "node": instance["node"], "proto": proto,
               "port": low, "ip": nic["ip"], "network": nic["network"]}
        if found:
            return dict(out, node_port=found[0]), False
        quotas.require(conn, instance["owner"], {"published-ports": 1})
        used = {r[0] for r in conn.execute("SELECT node_port FROM exposures WHERE node = %s"
                                           " AND proto = %s", (instance["node"], proto))}
        free = next((p for p in range(NODE_PORTS[0], NODE_PORTS[1] + 1) if p not in used), None)
        if free is None:
            raise Conflict(what="port", detail="no port left on %s" % instance["node"])
        conn.execute("INSERT INTO exposures (nic, proto, port, node, node_port)"
                     " VALUES (%s, %s, %s, %s, %s)", (nic_id, proto, low, instance["node"], free))
    return dict(out, node_port=free), True


def unexpose(conn, instance, port, proto="tcp"):
    low, _ = check_port(str(port))
    if conn.execute("DELETE FROM exposures WHERE proto = %s AND port = %s AND nic IN"
                    " (SELECT id FROM nics WHERE domain = %s) RETURNING id",
                    (proto, low, instance["domain"])).fetchone() is None:
        raise NotFound(what="published port", name="%s %s/%s" % (instance["name"], low, proto))


def exposures(conn, network_id):
    return [dict(zip(("instance", "ip", "proto", "port", "node", "node_port"), r))
            for r in conn.execute(
                "SELECT coalesce(i.name, c.domain), host(c.ip), e.proto, e.port, e.node,"
                " e.node_port FROM exposures e JOIN nics c ON c.id = e.nic LEFT JOIN instances i"
                " ON i.domain = c.domain WHERE c.network = %s ORDER BY e.node_port",
                (network_id,))]


def allows_ingress(rule_list, proto, port):
    """Whether some ingress rule lets new connections from anywhere reach port."""
    for r in rule_list:
        if r["direction"] != "ingress" or r["proto"] not in (proto, "any"):
            continue
        if r["remote"] not in (None, "0.0.0.0/0"):
            continue
        if r["port_low"] is None or r["port_low"] <= port <= r["port_high"]:
            return True
    return False


def members(conn, network_id):
    """The addresses in use in a network: instances and VPN clients."""
    return [dict(zip(("kind", "name", "ip", "mac", "node"), r)) for r in conn.execute(
        "SELECT c.kind, coalesce(i.name, c.client, c.domain), host(c.ip), c.mac, c.node"
        " FROM nics c LEFT JOIN instances i ON i.domain = c.domain WHERE c.network = %s"
        " ORDER BY c.ip", (network_id,))]


def vpn(conn, network_id):
    """A network's VPN as its owner sees it: the endpoint (None before its first
    client), its clients and those revoked."""
    row = conn.execute("SELECT node, udp_port, ca_expires, server_expires FROM net_vpns"
                       " WHERE network = %s", (network_id,)).fetchone()
    clients = [dict(zip(("name", "ip", "mac", "serial", "expires"), r)) for r in conn.execute(
        "SELECT client, host(ip), mac, cert_serial, cert_expires FROM nics WHERE network = %s"
        " AND kind = 'vpn' ORDER BY client", (network_id,))]
    revoked = [dict(zip(("name", "serial", "revoked"), r)) for r in conn.execute(
        "SELECT client, serial, revoked FROM vpn_revoked WHERE network = %s ORDER BY id",
        (network_id,))]
    endpoint = dict(zip(("node", "udp_port", "ca_expires", "server_expires"), row)) if row \
        else None
    return {"endpoint": endpoint, "clients": clients, "revoked": revoked}


def named(conn, owner, names):
    """The owner's networks called names, checked before a launch: `default` may
    not exist yet (the job's prologue creates it), so it is skipped then."""
    out = []
    for name in names:
        try:
            out.append(attachable(conn, owner, name))
        except NotFound:
            if name != DEFAULT_NAME:
                raise
            if not out:
                return []  # what --ip is checked against is not known yet
    return out


def check_fixed_address(net_row, text, used):
    """text as the fixed address of a NIC in the network: a host address of it,
    neither its gateway nor one in used.  Raises Refused."""
    ip = check_address(text, ipaddress.ip_network(net_row["cidr"]), "address")
    if str(ip) == net_row["gateway"]:
        raise Refused(detail="%s is the gateway of network %s" % (ip, net_row["name"]))
    if str(ip) in used:
        raise Refused(detail="address %s is in use in network %s" % (ip, net_row["name"]))
    return ip


def check_fixed_ip(conn, spec, nets, nodes):
    """What the user's command can tell before submitting a launch with --ip
    (spec.ip has the job type's syntax already)."""
    if (spec.count or nodes) != 1:
        raise Refused(detail="--ip gives one address: launch one instance (--count 1)")
    if nets:  # else the default network may not exist yet: the job's prologue checks
        used = {r[0] for r in conn.execute("SELECT host(ip) FROM nics WHERE network = %s",
                                           (nets[0]["id"],))}
        check_fixed_address(nets[0], spec.ip, used)
