"""Every name oarcloud gives to things, and the patterns that recognise them.

Node-side names (libvirt domains, Open vSwitch ports, gateway namespaces,
instance directories) come from job ids and numbers only, never from user
text: a user's names live in the catalog.  Whatever reads a name back from a
node (the sweep, destroy, the broker) parses it with the patterns here.
"""
import re

from oarcloud_lib.errors import Refused

# A Unix account oarcloud accepts (OAR's own user names are the same shape).
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
# A node as OAR names it (its network_address).
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}\Z")
# An OAR resource property an admin sets, and its value: plain enough to go
# into an OAR property expression as they are (a column, a quoted literal).
OAR_PROPERTY_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}\Z")
OAR_VALUE_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
# An instance's libvirt domain, its first port and its directory on a node.
DOMAIN_RE = re.compile(r"^oc[0-9]{1,9}-[0-9]{1,3}\Z")
DOMAIN_PREFIX = "oc"
JOB_OF_NAME = re.compile(r"^oc([0-9]{1,9})-")
NIC_SUFFIX = re.compile(r"n[0-9]$")  # the ports of an instance's NICs after the first
MAX_IFNAME = 15  # Linux's interface names
# A node's Open vSwitch bridges: the instances' ports and tunnels, and the one
# that holds the underlay interface (its addresses, VXLAN's source).
INTEGRATION_BRIDGE = "br-int"
UNDERLAY_BRIDGE = "br-phy"


def domain_name(job_id, idx):
    """Node-side name of an instance: from the job id only, never from user text."""
    return "oc%d-%d" % (job_id, idx)


def job_prefix(job_id):
    """What every node-side name of the job's instances starts with (all of
    oarcloud's instances when job_id is None)."""
    return DOMAIN_PREFIX if job_id is None else "oc%d-" % job_id


def job_of(name):
    """The job id in an oarcloud name (domain, port, instance directory), or None."""
    m = JOB_OF_NAME.match(name)
    return int(m.group(1)) if m else None


def instance_name(base, count, idx):
    """What the user calls instance idx of a job of count instances named base."""
    return base if count == 1 else "%s-%d" % (base, idx)


def port_name(domain, idx):
    """The node-side port of NIC idx of an instance: its domain name, then
    <domain>n<idx> (15 characters at most, as every interface name)."""
    name = domain if idx == 0 else "%sn%d" % (domain, idx)
    if len(name) > MAX_IFNAME:
        raise Refused(detail="instance %s cannot have more than one network" % domain)
    return name


def domain_of_port(port):
    """The instance a port of br-int belongs to."""
    return NIC_SUFFIX.sub("", port)


def gw_port(vni):
    """A network's gateway port on br-int (its namespace's end)."""
    return "gw-%06x" % vni


def link_port(vni):
    """A network's link between its gateway namespace and the node."""
    return "gx-%06x" % vni
