"""Pure parsers of command output, tested on literal strings."""
import json

from oarcloud_lib import lab
from oarcloud_lib.tools import netdev, oar, ovs, postgres


def test_resources_by_host():
    text = json.dumps({"1": {"network_address": "n1", "state": "Alive"},
                       "2": {"network_address": "n1", "state": "Alive"},
                       "3": {"network_address": "n2", "state": "Suspected"}})
    hosts = oar.resources_by_host(text)
    assert sorted(hosts) == ["n1", "n2"] and len(hosts["n1"]) == 2


def test_resources_by_host_without_resources():
    assert oar.resources_by_host("/!\\ No nodes to display...\n") == {}


def test_admit_cloud_types_is_idempotent():
    rule = "# Check if job types are valid\nmy @types = (\n    qr/^besteffort$/,\n);\n"
    once = oar.admit_cloud_types(rule)
    assert oar.CLOUD_TYPES_PATTERN in once
    assert oar.admit_cloud_types(once) == once


def test_ovs_json_table():
    text = ('{"data":[[["uuid","u1"],"br-int",["map",[["k","v"]]],["set",[]]]],'
            '"headings":["_uuid","name","other_config","ports"]}')
    rows = ovs.parse_json_table(text)
    assert rows == [{"_uuid": "u1", "name": "br-int", "other_config": {"k": "v"}, "ports": []}]


def test_ipv4_of():
    text = json.dumps([{"ifname": "br-phy", "addr_info": [
        {"family": "inet", "local": "198.19.0.11", "prefixlen": 16},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]}])
    assert netdev.ipv4_of(text) == ["198.19.0.11/16"]


def test_hba_block_replaced_and_removed():
    text = "# header\nlocal all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
    one = postgres.set_block(text, ["host oar all 198.19.0.0/16 scram-sha-256"])
    assert one.index("198.19.0.0/16") < one.index("local all postgres")
    assert postgres.set_block(one, ["host oar all 198.19.0.0/16 scram-sha-256"]) == one
    assert postgres.set_block(one, []) == text


def test_hosts_block():
    text = "127.0.0.1 localhost\n"
    block = lab.set_hosts_block(text, lab.hosts_lines(2))
    assert "198.19.0.11 node-1" in block and "198.19.0.12 node-2" in block
    assert "198.19.0.1 oarcloud-server" in block
    assert lab.set_hosts_block(block, []) == text


def test_max_nodes():
    assert lab.max_nodes(available=0) == 0
    assert lab.max_nodes(available=(1 << 30) + 2 * lab.NODE_MEMORY) == 2
    assert lab.max_nodes(available=1 << 50) == lab.MAX_NODES


def test_tunnel_neighbour_cache_is_parsed():
    from oarcloud_lib.tools import ovs
    text = ("IP                                            MAC                 Bridge\n"
            "==========================================================================\n"
            "198.19.0.1                                    1a:62:23:f0:09:dd   br-phy\n"
            "198.19.0.12                                   BA:93:03:64:02:41   br-phy\n")
    assert ovs.parse_tunnel_neighbors(text) == {"198.19.0.1": ("1a:62:23:f0:09:dd", "br-phy"),
                                                "198.19.0.12": ("ba:93:03:64:02:41", "br-phy")}
    assert ovs.parse_tunnel_neighbors("") == {}
