"""The store's ingest: what a root filesystem archive may hold (real tar and zstd)."""
import io
import subprocess
import tarfile

import pytest

from oarcloud_lib.server import imagestore
from oarcloud_lib.errors import Refused


def archive(*members):
    """A tar stream of (name, kind, extra) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "file":
                data = extra or b"data"
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind in ("chr", "blk"):
                info.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
                info.devmajor, info.devminor = extra
            elif kind == "uid":
                info.uid = extra
                data, info.size = b"", 0
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def listing(store, digest):
    path = imagestore.path_of(digest, store)
    return subprocess.run(["tar", "-I", "zstd", "--numeric-owner", "-tvf", str(path)],
                          capture_output=True, text=True, check=True).stdout


def test_a_clean_archive_is_normalized_and_stored(tmp_path):
    src = archive(("./", "dir", None), ("./etc", "dir", None), ("./etc/motd", "file", b"hi\n"),
                  ("bin/sh", "symlink", "/bin/busybox"), ("etc/hard", "hardlink", "./etc/motd"),
                  ("dev/null", "chr", (1, 3)), ("etc/gone", "chr", (0, 0)))
    digest, size, unpacked = imagestore.ingest(src, tmp_path)
    assert unpacked == 3 and imagestore.sha256_file(imagestore.path_of(digest, tmp_path)) == digest
    text = listing(tmp_path, digest)
    assert "etc/motd" in text and "etc/hard link to etc/motd" in text and "./etc" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["%s.tar.zst" % digest]  # no temp left


@pytest.mark.parametrize("members, why", [
    ([("/etc/passwd", "file", None)], "absolute path"),
    ([("../../etc/passwd", "file", None)], "leaves the image root"),
    ([("a/../../x", "file", None)], "leaves the image root"),
    ([("dev/sda", "blk", (8, 0))], "block device"),
    ([("dev/mem", "chr", (1, 1))], "device node"),
    ([("dev/kmsg", "chr", (1, 11))], "device node"),
    ([("etc", "symlink", "/etc"), ("etc/passwd", "file", None)], "through the symlink"),
    ([("x", "hardlink", "/etc/shadow")], "absolute path"),
    ([("x", "hardlink", "y")], "not an earlier file"),
    ([("x", "uid", 70000)], "outside 0-65535"),
])
def test_hostile_archives_are_refused_and_nothing_is_stored(tmp_path, members, why):
    with pytest.raises(Refused, match=why):
        imagestore.ingest(archive(*members), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_not_a_tar_is_refused(tmp_path):
    with pytest.raises(Refused, match="not a valid tar archive|empty"):
        imagestore.ingest(io.BytesIO(b"hello, this is not tar" * 100), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_member_name_normalization():
    assert imagestore.member_name("./a/./b") == "a/b"
    assert imagestore.member_name("./") == "."
    with pytest.raises(Refused):
        imagestore.member_name("a/../../b")
