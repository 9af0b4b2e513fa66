"""Building and packing the tiny image: real busybox, tar and zstd, in a temp dir."""
import os
import subprocess

import pytest

from oarcloud_lib.catalog import images
from oarcloud_lib.server import imagestore

pytestmark = pytest.mark.skipif(not os.path.exists(images.BUSYBOX), reason="needs busybox-static")


def test_tiny_rootfs_and_pack(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    images.build_busybox_rootfs(root)
    assert os.access(root / "bin/busybox", os.X_OK)
    assert os.readlink(root / "sbin/init") == "../bin/busybox"
    digest, size, unpacked = imagestore.pack(root, tmp_path / "store")
    path = imagestore.path_of(digest, tmp_path / "store")
    assert path.stat().st_size == size and unpacked > 1 << 20  # busybox itself
    assert imagestore.sha256_file(path) == digest
    listing = subprocess.run(["tar", "-I", "zstd", "-tf", str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert "sbin/init" in listing and listing[0] == "./"
    assert not any(n.startswith("/") or n.startswith("./") and n != "./" for n in listing)
    assert not list((tmp_path / "store").glob(".incoming-*"))


def test_apt_mirror_from_deb822(tmp_path):
    src = tmp_path / "debian.sources"
    src.write_text("Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n")
    assert images.apt_mirror((str(src),)) == "http://mirror.invalid/debian"
