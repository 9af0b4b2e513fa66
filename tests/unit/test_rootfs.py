"""Root filesystem helpers on a temp dir (needs root for chown, as the nodes have)."""
import os

import pytest

from oarcloud_lib import rootfs
from oarcloud_lib.errors import NotReady

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_shift_ownership_keeps_setuid(tmp_path):
    f = tmp_path / "bin" / "su"
    f.parent.mkdir()
    f.write_text("x")
    os.chmod(f, 0o4755)
    (tmp_path / "link").symlink_to("/etc/passwd")
    rootfs.shift_ownership(tmp_path, base=rootfs.UID_BASE)
    st = os.stat(f)
    assert st.st_uid == rootfs.UID_BASE and st.st_mode & 0o7777 == 0o4755
    assert os.lstat(tmp_path / "link").st_uid == rootfs.UID_BASE
    assert os.stat("/etc/passwd").st_uid == 0  # the link was not followed


def test_write_file_refuses_to_leave_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "evil").symlink_to(outside)
    with pytest.raises(NotReady):
        rootfs.write_file(root, "/evil/authorized_keys", "key")
    assert not (outside / "authorized_keys").exists()
    (root / "etc" / "hostname").symlink_to("/etc/hostname")
    rootfs.write_file(root, "/etc/hostname", "vm\n")
    assert (root / "etc" / "hostname").read_text() == "vm\n"
    assert not (root / "etc" / "hostname").is_symlink()
    assert os.stat(root / "etc" / "hostname").st_uid == rootfs.UID_BASE
