"""launch --file bundles (catalog.launchfiles): what the broker stores, and
what it refuses before anything is stored."""
import base64
import json

import pytest

from oarcloud_lib.catalog import launchfiles
from oarcloud_lib.errors import Refused


def test_a_bundle_round_trips():
    files = [("/etc/app.conf", 0o640, b"a=1\n"), ("/opt/bin/run", 0o755, bytes(range(256)))]
    assert launchfiles.parse(launchfiles.encode(files)) == files


def _one(path="/etc/x", mode=0o644, data="eA=="):
    return json.dumps({"files": [{"path": path, "mode": mode, "data": data}]})


@pytest.mark.parametrize("text, says", [
    ("not json", "the broker reads"),
    (json.dumps({"files": []}), "1 to 16 files"),
    (launchfiles.encode([("/f%d" % i, 0o644, b"") for i in range(17)]), "1 to 16 files"),
    (_one(path="etc/x"), "bad destination"),
    (_one(path="/etc/../root/.ssh/authorized_keys"), "bad destination"),
    (_one(path="/etc/"), "bad destination"),
    (_one(path="/proc/sys/kernel/x"), "the kernel's"),
    (_one(path="/dev/sda"), "the kernel's"),
    (_one(path="/etc/a b"), "bad destination"),
    (_one(mode=0o4755), "not 0 to 0777"),
    (_one(mode="644"), "not 0 to 0777"),
    (_one(data="!!!"), "not base64"),
    (launchfiles.encode([("/big", 0o644, b"x" * (launchfiles.MAX_FILE + 1))]), "more than"),
    (launchfiles.encode([("/b%d" % i, 0o644, b"x" * launchfiles.MAX_FILE) for i in range(5)]),
     "in all"),
    (launchfiles.encode([("/same", 0o644, b""), ("/same", 0o600, b"")]), "twice"),
])
def test_bad_bundles_are_refused(text, says):
    with pytest.raises(Refused, match=says):
        launchfiles.parse(text)


def test_data_is_base64_of_the_bytes():
    text = _one(data=base64.b64encode(b"\x00\xff").decode())
    assert launchfiles.parse(text) == [("/etc/x", 0o644, b"\x00\xff")]
