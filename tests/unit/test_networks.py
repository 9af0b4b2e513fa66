"""Private networks: what a user may ask for (pure checks)."""
import ipaddress

import pytest

from oarcloud_lib.catalog import networks
from oarcloud_lib.errors import Refused
from oarcloud_lib.config import SiteConfig

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


def test_mac_is_unique_per_network_and_address():
    net = ipaddress.ip_network("10.0.0.0/16")
    assert networks.mac_for(4096, net, "10.0.1.2") == "0a:00:10:00:01:02"
    assert networks.mac_for(4097, net, "10.0.1.2") != networks.mac_for(4096, net, "10.0.1.2")


def test_port_names_of_nics():
    assert networks.port_name("oc12-3", 0) == "oc12-3"
    assert networks.port_name("oc12-3", 1) == "oc12-3n1"
    with pytest.raises(Refused):
        networks.port_name("oc123456789-999", 1)


@pytest.mark.parametrize("low, high", [(1, 1), (22, 22), (80, 88), (1, 65535), (1000, 2000),
                                       (65535, 65535), (1024, 65535), (3, 17)])
def test_port_masks_cover_exactly_the_range(low, high):
    from oarcloud_lib.node.netflows import port_masks
    covered = set()
    for value, mask in port_masks(low, high):
        block = {p for p in range(value, value + ((~mask) & 0xffff) + 1)}
        assert value & ~mask & 0xffff == 0 and not covered & block
        covered |= block
    assert covered == set(range(low, high + 1))


def test_rule_matches():
    from oarcloud_lib.node.netflows import rule_matches
    rule = {"direction": "ingress", "proto": "tcp", "port_low": 80, "port_high": 81,
            "remote": "10.0.0.0/8"}
    assert rule_matches(rule) == ["tcp,nw_src=10.0.0.0/8,tp_dst=0x50/0xfffe"]
    rule = {"direction": "egress", "proto": "any", "port_low": None, "port_high": None,
            "remote": None}
    assert rule_matches(rule) == ["ip"]
    rule = {"direction": "egress", "proto": "udp", "port_low": 53, "port_high": 53,
            "remote": "0.0.0.0/0"}
    assert rule_matches(rule) == ["udp,tp_dst=53"]


def test_flows_isolate_and_guard_ports():
    from oarcloud_lib.node import netflows
    text = netflows.render(
        [{"ofport": 5, "tag": 1, "pairs": [("0a:00:10:00:00:02", "10.0.0.2")], "vpn": False}],
        [{"tag": 1, "vni": 4096, "gateway": "10.0.0.1", "gateway_mac": "0a:00:10:00:00:01",
          "gw_ofport": 3,
          "members": [{"mac": "0a:00:10:00:00:02", "ip": "10.0.0.2", "ofport": 5},
                      {"mac": "0a:00:10:00:00:03", "ip": "10.0.0.3", "ofport": None,
                       "tunnel": 7}],
          "rules": [{"direction": "ingress", "proto": "tcp", "port_low": 22, "port_high": 22,
                     "remote": None}]}])
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    # The port may send only from its own MAC and address.
    assert "table=0,priority=100,in_port=5,dl_src=0a:00:10:00:00:02,ip,nw_src=10.0.0.2," \
           "actions=load:1->NXM_NX_REG6[],load:5->NXM_NX_REG5[],goto_table:20" in lines
    # The remote member goes through the tunnel with the network's VNI, never from a tunnel.
    assert any("reg4=0,dl_dst=0a:00:10:00:00:03,actions=set_field:4096->tun_id,output:7" in l
               for l in lines)
    # From the tunnel: only the remote member's own MAC and address, with the VNI.
    from_tunnel = [l for l in lines if l.startswith("table=0,priority=100,in_port=7,")]
    assert from_tunnel == [
        "table=0,priority=100,in_port=7,tun_id=4096,dl_src=0a:00:10:00:00:03,ip,"
        "nw_src=10.0.0.3,actions=load:1->NXM_NX_REG6[],load:1->NXM_NX_REG4[],goto_table:30",
        "table=0,priority=100,in_port=7,tun_id=4096,dl_src=0a:00:10:00:00:03,arp,"
        "arp_spa=10.0.0.3,arp_sha=0a:00:10:00:00:03,actions=load:1->NXM_NX_REG6[],"
        "load:1->NXM_NX_REG4[],goto_table:30"]
    assert any("table=41" in l and "tcp,tp_dst=22" in l for l in lines)
    assert sum("priority=0,actions=drop" in l for l in lines) == 7
    assert netflows.count(text) == len(lines)


def test_egress_policy_denies_the_sites_ranges_and_keeps_the_admins_exceptions():
    conf = SiteConfig(server_address="10.0.0.1", nodes_cidr="10.1.0.0/16",
                      egress_deny=["10.2.0.0/16"], egress_allow=["10.1.0.5/32:53/udp",
                                                                 "10.2.3.0/24:443"])
    policy = networks.egress_policy(conf)
    assert policy["deny"] == ["10.0.0.1/32", "10.1.0.0/16", "10.2.0.0/16", "169.254.0.0/16"]
    assert policy["allow"] == [
        {"cidr": "10.1.0.0/16", "port": "30000:32767", "proto": "tcp"},   # published ports
        {"cidr": "10.1.0.0/16", "port": "30000:32767", "proto": "udp"},
        {"cidr": "10.1.0.5/32", "port": "53", "proto": "udp"},
        {"cidr": "10.2.3.0/24", "port": "443", "proto": "tcp"}]
    for bad in ("nowhere", "10.0.0.0/33", "10.0.0.0/8:0", "10.0.0.0/8:80/sctp", "::1/128"):
        with pytest.raises(Refused):
            networks.check_egress_allow(bad)


def test_a_private_network_uses_a_private_range():
    for public in ("8.8.0.0/16", "1.2.3.0/24", "203.0.112.0/24"):
        with pytest.raises(Refused, match="private range"):
            networks.check_cidr(public)
    for private in ("10.3.0.0/16", "172.16.4.0/24", "192.168.1.0/24", "100.64.0.0/16"):
        assert str(networks.check_cidr(private)) == private
