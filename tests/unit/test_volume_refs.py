import pytest

from oarcloud_lib.catalog import jobspec, volumes
from oarcloud_lib.errors import Refused


def test_a_launch_s_volume_reference():
    assert volumes.parse_spec("data:/data") == (None, "data", "/data", False)
    assert volumes.parse_spec("alice/data:/srv/d:ro") == ("alice", "data", "/srv/d", True)
    spec = jobspec.parse_types(["cloud", "cloud.volume=a:/x", "cloud.volume=bob/b:/y:ro"])
    assert spec.volumes == ["a:/x", "bob/b:/y:ro"]
    assert "cloud.volume=bob/b:/y:ro" in spec.to_types()


@pytest.mark.parametrize("text", [
    "data", "data:", "data:/", "data:rel", "Data:/x", "data:/x:rw", "data:/x y", "../d:/x",
    "a/b/c:/x", "data:/a/../etc", "data:/etc", "data:/proc/1", "data:/usr", "data:/x//y",
    "data:/" + "a" * 300])
def test_bad_volume_references_are_refused(text):
    with pytest.raises(Refused):
        volumes.parse_spec(text)


@pytest.mark.parametrize("path, ok", [
    ("/data", True), ("/srv/www", True), ("/home/alice/v", True), ("/var", False),
    ("/var/lib/x", True), ("/run/x", False), ("/dev/shm", False), ("/", False),
    ("/./x", False), ("relative", False)])
def test_volume_paths(path, ok):
    if ok:
        assert volumes.check_path(path) == path
    else:
        with pytest.raises(Refused):
            volumes.check_path(path)


def test_volume_names_and_sizes():
    for bad in ("", "A", "-a", "a" * 40, "a_b", None):
        with pytest.raises(Refused):
            volumes.check_name(bad)
    with pytest.raises(Refused):
        volumes.check_size(1 << 20)
    assert volumes.check_size(32 << 20) == 32 << 20
