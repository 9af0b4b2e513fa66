"""First-boot user data: what a file may be, and the script a cloud-config becomes
(run by the real sh)."""
import subprocess

import pytest

from oarcloud_lib.catalog import userdata
from oarcloud_lib.errors import Refused


def test_a_script_is_kept_as_it_is():
    assert userdata.parse(b"#!/bin/sh\necho hi\n") == ("script", "#!/bin/sh\necho hi\n")


@pytest.mark.parametrize("data,why", [
    (b"echo hi\n", "first line must be"), (b"\xff\xfe", "not UTF-8"),
    (b"#!/bin/sh\n\x00", "NUL"), (b"#!/bin/sh\n" + b"x" * (64 << 10), "more than"),
    (b"#cloud-config\nbootcmd: [ls]\n", "bootcmd is not supported"),
    (b"#cloud-config\n- a\n", "mapping"), (b"#cloud-config\nruncmd: ls\n", "must be a list"),
    (b"#cloud-config\nwrite_files: [{path: ../etc/x}]\n", "bad path"),
    (b"#cloud-config\nwrite_files: [{path: /a/../etc/x}]\n", "bad path"),
    (b"#cloud-config\npackages: ['x; rm -rf /']\n", "bad package name"),
    (b"#cloud-config\nusers: [{name: root}]\n", "bad user name"),
    (b"#cloud-config\nusers: [{name: bob, ssh_authorized_keys: ['rm -rf /']}]\n", "public key"),
    (b"#cloud-config\n{a: [\n", "not YAML")])
def test_bad_user_data_is_refused(data, why):
    with pytest.raises(Refused, match=why):
        userdata.parse(data)


def test_cloud_config_becomes_a_script_that_does_it(tmp_path):
    target = tmp_path / "etc" / "motd"
    doc = ("#cloud-config\nwrite_files:\n  - path: %s\n    content: \"hello $USER `id`\\n\"\n"
           "    permissions: '0600'\nruncmd:\n  - echo one > %s/one\n  - [touch, '%s/two; x']\n"
           % (target, tmp_path, tmp_path))
    kind, script = userdata.parse(doc.encode())
    assert kind == "cloud-config" and script.startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-c", script], check=True)
    assert target.read_text() == "hello $USER `id`\n"  # written as is, never expanded
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "one").read_text() == "one\n" and (tmp_path / "two; x").exists()
