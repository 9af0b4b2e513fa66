import pytest

from oarcloud_lib.catalog import jobspec
from oarcloud_lib.errors import Refused


def test_not_a_cloud_job():
    assert jobspec.parse_types(["besteffort", "container=x"]) is None


def test_plain_cloud():
    spec = jobspec.parse_types(["cloud"])
    assert spec == jobspec.CloudSpec()


def test_full_spec_and_round_trip():
    types = ["cloud=tiny", "cloud.name=web-1", "cloud.count=3", "cloud.cores=2",
             "cloud.memory=512M", "cloud.network=a", "cloud.network=b", "cloud.save=tiny.v2"]
    spec = jobspec.parse_types(types)
    assert (spec.image, spec.name, spec.count, spec.cores) == ("tiny", "web-1", 3, 2)
    assert spec.memory == 512 << 20
    assert spec.networks == ["a", "b"]
    assert jobspec.parse_types(spec.to_types()) == spec


@pytest.mark.parametrize("types", [
    ["cloud=../x"], ["cloud", "cloud.image=a/b"], ["cloud", "cloud.foo=1"],
    ["cloud", "cloud.name=a;rm -rf /"], ["cloud", "cloud.name=$(id)"], ["cloud", "cloud.name=A B"],
    ["cloud", "cloud.count=0"], ["cloud", "cloud.cores=-1"], ["cloud", "cloud.memory=0"],
    ["cloud", "cloud.memory=1X"], ["cloud", "cloud.cores=1", "cloud.cores=2"],
    ["cloud.image=tiny"], ["cloud", "cloud.name"], ["cloud", "cloud.image=" + "a" * 65],
    ["cloud", "cloud.name=x\n"], ["cloudy"] * 0 + ["cloud", "cloud.image=.."],
])
def test_malformed_types_are_refused(types):
    with pytest.raises(Refused):
        jobspec.parse_types(types)


def test_cloudy_is_not_ours():
    assert jobspec.parse_types(["cloudy"]) is None


@pytest.mark.parametrize("text,size", [("1", 1 << 20), ("512M", 512 << 20), ("2G", 2 << 30),
                                       ("64K", 64 << 10)])
def test_parse_size(text, size):
    assert jobspec.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1.5G", "G", "12Q"])
def test_parse_size_refuses(text):
    with pytest.raises(Refused):
        jobspec.parse_size(text)
