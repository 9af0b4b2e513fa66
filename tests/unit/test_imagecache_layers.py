"""Node cache and layers with real tar, zstd, overlayfs (mounted in a private
mount namespace): fetch, corruption, eviction, a save's layer round trip."""
import io
import os
import subprocess
import tarfile
import time

import pytest

from oarcloud_lib.node import idmap, imagecache, layer
from oarcloud_lib.server import imagestore
from oarcloud_lib.errors import NotReady

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)")


def make_image(tmp_path, name, files):
    root = tmp_path / name
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return imagestore.pack(root, tmp_path / "store")[0]


def test_fetch_verifies_and_a_corrupt_entry_is_fetched_again(tmp_path, caplog):
    sha = make_image(tmp_path, "base", {"etc/motd": b"hello\n", "bin/tool": b"x" * 5000})
    cache, store = tmp_path / "cache", tmp_path / "store"
    lower = imagecache.ensure(sha, "base", cache, store)
    assert (lower / "etc/motd").read_text() == "hello\n"
    assert os.stat(lower / "etc/motd").st_uid == imagecache.UID_BASE
    # Tampering with a cached file (even keeping its size) is seen at next use.
    with open(lower / "etc/motd", "r+") as f:
        f.write("HELLO\n")
    lower = imagecache.ensure(sha, "base", cache, store)
    assert (lower / "etc/motd").read_text() == "hello\n"
    assert "corrupt" in caplog.text and len(list(cache.glob(".corrupt-*"))) == 1
    # The aside copy goes once nothing uses it.
    imagecache.evict(1 << 40, cache, holders=[tmp_path / "none"])
    assert not list(cache.glob(".corrupt-*")) and (cache / sha / "rootfs").is_dir()


def test_a_corrupt_store_file_is_refused_and_leaves_no_entry(tmp_path):
    sha = make_image(tmp_path, "base", {"etc/motd": b"hello\n"})
    path = imagestore.path_of(sha, tmp_path / "store")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xff
    path.write_bytes(bytes(data))
    with pytest.raises(Exception):  # zstd's own checksum or ours
        imagecache.ensure(sha, "base", tmp_path / "cache", tmp_path / "store")
    assert not list((tmp_path / "cache").glob("[0-9a-f]*"))


def test_checksum_mismatch_is_refused(tmp_path):
    sha = make_image(tmp_path, "base", {"etc/motd": b"hello\n"})
    other = "0" * 64
    os.rename(imagestore.path_of(sha, tmp_path / "store"), imagestore.path_of(other, tmp_path / "store"))
    with pytest.raises(NotReady, match="corrupt"):
        imagecache.ensure(other, "x", tmp_path / "cache", tmp_path / "store")
    assert not list((tmp_path / "cache").glob("[0-9a-f]*"))


def test_eviction_is_lru_within_budget_and_skips_used_entries(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store"
    shas = [make_image(tmp_path, "i%d" % i, {"f": bytes([i]) * (1 << 20)}) for i in range(3)]
    for i, sha in enumerate(shas):
        imagecache.ensure(sha, "i%d" % i, cache, store)
        os.utime(cache / sha / "entry.json", (time.time() - 100 + i, time.time() - 100 + i))
    holder = tmp_path / "instances" / "oc1-0"
    holder.mkdir(parents=True)
    (holder / "layers").write_text(shas[0] + "\n")  # the oldest is in use
    removed = imagecache.evict(3 << 20, cache, holders=[tmp_path / "instances"])
    assert removed == [shas[1]]
    assert {e["sha256"] for e in imagecache.entries(cache, [tmp_path / "x"])} == {shas[0], shas[2]}


def test_a_saved_layer_round_trips_through_store_cache_and_overlay(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store"
    base = make_image(tmp_path, "base", {"a/file": b"old", "d/x": b"x", "keep": b"k"})
    # An overlay upper directory as the kernel leaves it (ids shifted).
    upper = tmp_path / "upper"
    (upper / "a").mkdir(parents=True)
    (upper / "a/new").write_text("new")
    os.mknod(upper / "a/file", 0o600 | 0o020000, os.makedev(0, 0))  # whiteout: deleted
    (upper / "d").mkdir()
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"y")  # replaced directory
    (upper / "d/y").write_text("y")
    (upper / "etc").mkdir()
    (upper / "etc/hostname").write_text("vm\n")  # oarcloud's, not the user's
    for p in [upper] + list(upper.rglob("*")):
        os.lchown(p, imagecache.UID_BASE + 5, imagecache.UID_BASE + 5)
    buf = io.BytesIO()
    layer.export(upper, buf, layer.injected("alice"))
    buf.seek(0)
    sha, size, unpacked = imagestore.ingest(buf, store)
    top = imagecache.ensure(sha, "layer", cache, store)
    bottom = imagecache.ensure(base, "base", cache, store)
    assert not (top / "etc/hostname").exists()
    assert os.stat(top / "a/new").st_uid == imagecache.UID_BASE + 5
    merged = tmp_path / "merged"
    merged.mkdir()
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          "mount -t overlay overlay -o ro,lowerdir=%s:%s %s && cd %s && find . | sort"
                          % (top, bottom, merged, merged)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [".", "./a", "./a/new", "./d", "./d/y", "./etc", "./keep"]


def test_export_keeps_symlinks_to_directories_and_hard_links(tmp_path):
    """A flattened save of a Debian root keeps /bin -> usr/bin (it used to drop
    every symlink to a directory: the image no longer booted)."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("x")
    os.link(root / "usr/bin/tool", root / "usr/bin/same")
    (root / "bin").symlink_to("usr/bin")
    (root / "out").symlink_to("/etc")  # a link out is only a link, never followed
    base = idmap.tenant_base(7)
    for p in [root] + list(root.rglob("*")):
        os.lchown(p, base, base)
    buf = io.BytesIO()
    layer.export(root, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as t:
        members = {m.name: m for m in t.getmembers()}
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["out"].issym() and members["out"].linkname == "/etc"
    assert "out/passwd" not in members and "bin/tool" not in members
    assert members["usr/bin/same"].isreg()  # the first name of the inode, then links to it
    assert members["usr/bin/tool"].islnk() and members["usr/bin/tool"].linkname == "usr/bin/same"
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}  # the tenant's range, unshifted
