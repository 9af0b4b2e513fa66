"""Private networks (F.u.8): what a network, an address and a rule may be.

Pure checks and allocation plans, used by the user's command and again on the
server side before anything is written; the catalog tables, the Open vSwitch
flows and the tunnels build on them (issue 5, in progress: networks cannot be
created or attached yet).
"""
import ipaddress
import re

from oarcloud_lib.errors import Refused

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?\Z")
# Smallest and largest private network a user may create.
MIN_PREFIX, MAX_PREFIX = 16, 29
# VXLAN network identifiers of private networks (24 bits; the flat instance
# network of the lab uses key 1).
VNI_FIRST, VNI_LAST = 4096, (1 << 24) - 1
PROTOCOLS = ("tcp", "udp", "icmp", "any")
DIRECTIONS = ("ingress", "egress")
PORT_RE = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")


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
