"""Root filesystem helpers on a temp dir (needs root for chown, as the nodes have)."""
import os

import pytest

from oarcloud_lib.node import idmap, imagecache, rootfs
from oarcloud_lib.errors import NotReady

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
TENANT = idmap.tenant_base(3)


def tenant_root(path):
    """path as the root of an instance of the tenant of slot 3 (owned by its root)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, TENANT, TENANT)
    return path


def test_shift_ownership_keeps_setuid(tmp_path):
    f = tmp_path / "bin" / "su"
    f.parent.mkdir()
    f.write_text("x")
    os.chmod(f, 0o4755)
    (tmp_path / "link").symlink_to("/etc/passwd")
    imagecache.shift_ownership(tmp_path, base=imagecache.UID_BASE)
    st = os.stat(f)
    assert st.st_uid == imagecache.UID_BASE and st.st_mode & 0o7777 == 0o4755
    assert os.lstat(tmp_path / "link").st_uid == imagecache.UID_BASE
    assert os.stat("/etc/passwd").st_uid == 0  # the link was not followed


def test_write_file_refuses_to_leave_the_root(tmp_path):
    root = tenant_root(tmp_path / "root")
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
    assert os.stat(root / "etc" / "hostname").st_uid == TENANT  # the tenant's root


def test_add_account_writes_owner_account_and_key(tmp_path):
    tenant_root(tmp_path)
    (tmp_path / "etc" / "sudoers.d").mkdir(parents=True)
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n")
    (tmp_path / "etc" / "shells").write_text("/bin/sh\n/bin/bash\n")
    rootfs.add_account(tmp_path, "alice", "ssh-ed25519 AAAA alice@x")
    rootfs.add_account(tmp_path, "alice", "ssh-ed25519 AAAA alice@x")  # idempotent
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    assert passwd == ["root:x:0:0:root:/root:/bin/bash", "alice:x:1000:1000::/home/alice:/bin/bash"]
    assert (tmp_path / "etc" / "shadow").read_text() == "alice:*:19000:0:99999:7:::\n"
    keys = tmp_path / "home" / "alice" / ".ssh" / "authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAA alice@x\n"
    for p, mode in ((keys, 0o600), (keys.parent, 0o700), (keys.parent.parent, 0o755)):
        st = os.stat(p)
        assert st.st_uid == TENANT + 1000 and st.st_mode & 0o777 == mode, p
    assert "alice ALL=(ALL) NOPASSWD:ALL" in (tmp_path / "etc/sudoers.d/oarcloud").read_text()


def test_add_account_refuses_a_home_leading_out(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    (tmp_path / "home").symlink_to(outside)
    with pytest.raises(NotReady):
        rootfs.add_account(tmp_path, "alice", "ssh-ed25519 AAAA")
    assert list(outside.iterdir()) == []
