"""The domain template, rendered and parsed as XML (not compared as text)."""
import xml.etree.ElementTree as ET

from oarcloud_lib.node.driver import DomainSpec


def spec(**kw):
    base = dict(name="oc12-0", job_id=12, owner="alice", cores=2, memory=256 << 20,
                rootfs="/var/lib/oarcloud/instances/oc12-0/root",
                nics=[dict(bridge="br-int", mac="52:54:00:00:00:01", port="oc12-0-0",
                           ip="198.18.0.5", prefix=16, gateway=None, mtu=1450)],
                uid_base=200000)
    base.update(kw)
    return DomainSpec(**base)


def test_domain_fields():
    root = ET.fromstring(spec().xml())
    assert root.get("type") == "lxc"
    assert root.findtext("name") == "oc12-0"
    assert int(root.findtext("memory")) == 256 << 20 and root.find("memory").get("unit") == "b"
    assert root.findtext("vcpu") == "2"
    assert root.findtext("cputune/quota") == "200000"
    uid = root.find("idmap/uid")
    assert (uid.get("start"), uid.get("target"), uid.get("count")) == ("0", "200000", "65536")
    fs = root.find("devices/filesystem")
    assert fs.find("source").get("dir").endswith("/root") and fs.find("target").get("dir") == "/"
    nic = root.find("devices/interface")
    assert nic.find("virtualport").get("type") == "openvswitch"
    assert nic.find("source").get("bridge") == "br-int"
    assert nic.find("ip").get("address") == "198.18.0.5"
    assert nic.find("guest").get("dev") == "eth0"
    assert nic.find("route") is None
    assert nic.find("mtu").get("size") == "1450"


def test_gateway_and_escaping():
    nics = [dict(bridge="br-int", mac="52:54:00:00:00:01", port="p0", ip="198.18.0.5",
                 prefix=16, gateway="198.18.0.1", mtu=None)]
    root = ET.fromstring(spec(nics=nics, owner="a<b").xml())
    assert root.find("devices/interface/route").get("gateway") == "198.18.0.1"
    assert "a<b" in ET.tostring(root, encoding="unicode").replace("&lt;", "<")


def test_io_throttles():
    assert spec().xml().count("blkiotune") == 0
    io = {"path": "/dev/vda", "read_bytes_sec": 30, "write_iops_sec": 21}
    dev = ET.fromstring(spec(io=io).xml()).find("blkiotune/device")
    assert dev.findtext("path") == "/dev/vda" and dev.findtext("read_bytes_sec") == "30"
    assert dev.findtext("write_iops_sec") == "21" and dev.find("write_bytes_sec") is None
