"""Private networks: what a user may ask for (pure checks)."""
import ipaddress

import pytest

from oarcloud_lib import networks
from oarcloud_lib.errors import Refused

UNDERLAY = "198.19.0.0/16"


@pytest.mark.parametrize("cidr", ["10.1.0.0/24", "192.168.0.0/16", "172.16.5.0/29"])
def test_good_cidrs(cidr):
    assert str(networks.check_cidr(cidr, [UNDERLAY])) == cidr


@pytest.mark.parametrize("cidr, why", [
    ("198.19.4.0/24", "overlaps"), ("198.0.0.0/8", "prefix"), ("10.0.0.0/31", "prefix"),
    ("10.0.0.0/32", "prefix"), ("10.0.0.1/24", "bad CIDR"), ("10.0.0.0/33", "bad CIDR"),
    ("300.1.2.0/24", "bad CIDR"), ("fd00::/64", "IPv4 only"), ("127.0.0.0/16", "usable"),
    ("224.0.0.0/24", "usable"), ("169.254.0.0/16", "usable"), ("", "bad CIDR"),
    ("10.0.0.0/24; rm -rf /", "bad CIDR"),
])
def test_bad_cidrs_are_refused(cidr, why):
    with pytest.raises(Refused, match=why):
        networks.check_cidr(cidr, [UNDERLAY])


def test_addresses_and_gateway():
    net = networks.check_cidr("10.2.0.0/29")
    assert networks.default_gateway(net) == ipaddress.ip_address("10.2.0.1")
    assert str(networks.check_address("10.2.0.6", net)) == "10.2.0.6"
    for bad in ("10.2.0.0", "10.2.0.7", "10.2.0.8", "10.2.0", "x"):
        with pytest.raises(Refused):
            networks.check_address(bad, net)
    got = networks.free_addresses(net, ["10.2.0.2"], 3, gateway="10.2.0.1")
    assert [str(a) for a in got] == ["10.2.0.3", "10.2.0.4", "10.2.0.5"]
    with pytest.raises(Refused, match="no 6 free"):
        networks.free_addresses(net, [], 6, gateway="10.2.0.1")


@pytest.mark.parametrize("port, ok", [("22", (22, 22)), ("1-65535", (1, 65535)), ("0", None),
                                      ("70000", None), ("10-5", None), ("-1", None), ("", None),
                                      ("22,80", None)])
def test_ports(port, ok):
    if ok:
        assert networks.check_port(port) == ok
    else:
        with pytest.raises(Refused):
            networks.check_port(port)


def test_rules():
    assert networks.check_rule("ingress", "tcp", "80", "10.0.0.0/8")[2] == (80, 80)
    for args in (("inbound", "tcp"), ("ingress", "sctp"), ("ingress", "icmp", "22"),
                 ("egress", "udp", None, "10.0.0.1/8")):
        with pytest.raises(Refused):
            networks.check_rule(*args)


def test_vni_allocation():
    assert networks.next_vni([]) == networks.VNI_FIRST
    assert networks.next_vni([4096, 4097, 4099]) == 4098


@pytest.mark.parametrize("name", ["net", "a", "dev-1"])
def test_good_names(name):
    assert networks.check_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a/b", "..", "x" * 33, "a b"])
def test_bad_names(name):
    with pytest.raises(Refused):
        networks.check_name(name)
