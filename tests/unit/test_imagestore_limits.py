"""The store's ingest under hostile archives: sparse files, sizes, member counts and
extended headers are bounded while the stream is read (real tar, zstd and ingest)."""
import io
import subprocess
import tarfile
import time
import tracemalloc

import pytest

from oarcloud_lib.server import imagestore
from oarcloud_lib.errors import Refused

GIB = 1 << 30


def block(data):
    """data padded to whole 512-byte tar blocks."""
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def header(name, type=tarfile.REGTYPE, size=0, **fields):
    """One raw 512-byte ustar header block (valid checksum) that may lie about its size."""
    info = tarfile.TarInfo(name)
    info.type, info.size = type, size
    for key, value in fields.items():
        setattr(info, key, value)
    return info.tobuf(tarfile.USTAR_FORMAT)


def record(key, value):
    """One PAX record, b'LEN key=value\\n' (LEN counts itself)."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n += 1
    return b"%d" % n + body


def member(name, data=b"data"):
    return header(name, size=len(data)) + block(data)


END = b"\0" * 1024


def build(*members, fmt=tarfile.PAX_FORMAT, **kwargs):
    """A tar stream written by tarfile of (TarInfo, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kwargs) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def info(name, type=tarfile.REGTYPE, **fields):
    i = tarfile.TarInfo(name)
    i.type = type
    for key, value in fields.items():
        setattr(i, key, value)
    return i


def refused(src, store, match, limits=None):
    """ingest refuses src with a message matching match, and the store holds nothing."""
    with pytest.raises(Refused, match=match) as e:
        imagestore.ingest(src, store, **({"limits": limits} if limits else {}))
    assert "\n" not in str(e.value)
    assert list(store.iterdir()) == []
    return str(e.value)


def listing(store, digest):
    path = imagestore.path_of(digest, store)
    return subprocess.run(["tar", "-I", "zstd", "--numeric-owner", "-tvf", str(path)],
                          capture_output=True, text=True, check=True).stdout


class Endless:
    """A source: head, then NUL bytes without end; fails the test past `most` bytes read."""

    def __init__(self, head, most=64 << 20):
        self.head, self.most, self.done = head, most, 0

    def read(self, n=-1):
        assert 0 <= n and self.done + n <= self.most, "ingest read %d bytes" % (self.done + n)
        data = self.head[self.done:self.done + n]
        data += b"\0" * (n - len(data))
        self.done += n
        return data


# ---- what still goes in ------------------------------------------------------

def test_an_ordinary_archive_with_a_5mb_file_is_stored(tmp_path):
    data = bytes(range(256)) * (5 * 20480)  # 5 MiB, copied through in CHUNK reads
    src = build((info("./", tarfile.DIRTYPE), None), (info("big"), data),
                (info("lib/x86_64-linux-gnu/" + "n" * 300 + ".so"), b"elf"))
    digest, _, unpacked = imagestore.ingest(src, tmp_path)
    assert unpacked == len(data) + 3
    assert "%d 1970-01-01 00:00 big" % len(data) in listing(tmp_path, digest)


def test_small_limits_do_not_refuse_what_fits_them(tmp_path):
    data = b"x" * (5 << 20)
    src = build((info("big"), data), (info("a" * 200), b"long name: a PAX header"))
    limits = imagestore.Limits(unpacked=len(data) + 23, members=2, header=1024)
    assert imagestore.ingest(src, tmp_path, limits=limits)[2] == len(data) + 23


def test_default_limits():
    limits = imagestore.Limits()
    assert (limits.unpacked, limits.members, limits.header) == (64 * GIB, 2_000_000, 1 << 20)


def test_a_short_global_header_is_accepted(tmp_path):
    # git archive writes one: comment=<commit id>.
    src = build((info("f"), b"x"), pax_headers={"comment": "a" * 40})
    imagestore.ingest(src, tmp_path)


# ---- sparse files --------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--format=gnu"],                                   # old GNU 'S' headers
    ["--format=pax", "--sparse-version=0.0"],
    ["--format=pax", "--sparse-version=0.1"],
    ["--format=pax", "--sparse-version=1.0"],
])
def test_sparse_files_written_by_gnu_tar_are_refused(tmp_path, args):
    src_dir, store = tmp_path / "src", tmp_path / "store"
    src_dir.mkdir()
    with open(src_dir / "hole", "wb") as f:
        f.seek(GIB - 4)
        f.write(b"end\n")
    tar = subprocess.run(["tar", "--sparse", *args, "-C", str(src_dir), "-cf", "-", "hole"],
                         capture_output=True, check=True).stdout
    assert len(tar) <= 20480  # 10 KiB that would unpack to 1 GiB
    store.mkdir()
    started = time.monotonic()
    refused(io.BytesIO(tar), store, r"^refused: sparse file 'hole' in the archive: sparse files "
            r"are not accepted \(archive it without --sparse\)$")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("records", [
    record(b"GNU.sparse.major", b"1") + record(b"GNU.sparse.minor", b"0")
    + record(b"GNU.sparse.realsize", b"%d" % GIB) + record(b"GNU.sparse.name", b"hole"),
    record(b"GNU.sparse.major", b"1") + record(b"GNU.sparse.minor", b"0"),  # no map follows
    record(b"GNU.sparse.realsize", b"%d" % GIB),
    record(b"GNU.sparse.realsize", b"not a number"),
    record(b"GNU.sparse.size", b"%d" % GIB) + record(b"GNU.sparse.offset", b"0")
    + record(b"GNU.sparse.numbytes", b"4"),
    record(b"GNU.sparse.map", b"0,4,not,numbers"),
])
def test_sparse_pax_headers_crafted_by_hand_are_refused(tmp_path, records):
    # Sparse 1.0: the member's data starts with its map ("1\n0\n4\n": one 4-byte chunk at 0).
    data = block(b"1\n0\n4\n") + b"end\n"
    src = io.BytesIO(header("pax", tarfile.XHDTYPE, len(records)) + block(records)
                     + header("hole", size=len(data)) + block(data) + END)
    refused(src, tmp_path, r"^refused: sparse file '(hole|\S+)' in the archive: sparse files are "
            r"not accepted")


def test_an_old_gnu_sparse_header_with_endless_extension_blocks_is_refused_unread(tmp_path):
    raw = bytearray(header("hole", tarfile.GNUTYPE_SPARSE, 512))
    raw[482] = 1  # isextended: extension blocks of sparse maps follow
    raw[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(raw))[0]
    src = Endless(bytes(raw), most=1 << 20)
    refused(src, tmp_path, r"^refused: sparse file 'hole' in the archive")
    assert src.done <= 20480


# ---- member count and unpacked bytes ---------------------------------------------

def test_members_over_the_limit_are_refused(tmp_path):
    limits = imagestore.Limits(members=3)
    members = [(info("f%d" % i), b"x") for i in range(4)]
    message = refused(build(*members), tmp_path, r"more than 3 members", limits)
    assert message == "refused: the archive has more than 3 members (the limit of members)"
    assert imagestore.ingest(build(*members[:3]), tmp_path, limits=limits)


def test_unpacked_bytes_over_the_limit_are_refused(tmp_path):
    limits = imagestore.Limits(unpacked=1 << 20)
    src = build((info("a"), b"x" * 600_000), (info("b"), b"y" * 600_000))
    message = refused(src, tmp_path, "unpacked", limits)
    assert message == ("refused: 'b' in the archive takes it over the limit of 1048576 "
                       "unpacked bytes")


def test_a_declared_size_is_refused_before_its_data_is_read(tmp_path):
    # A PAX size of 1 TiB on a 4-byte member: refused from the header, with the default limits.
    records = record(b"size", b"%d" % (1 << 40))
    src = Endless(header("pax", tarfile.XHDTYPE, len(records)) + block(records)
                  + member("huge", b"data"), most=1 << 20)
    refused(src, tmp_path, r"^refused: 'huge' in the archive takes it over the limit of "
            r"68719476736 unpacked bytes$")


def test_a_negative_size_is_refused(tmp_path):
    records = record(b"size", b"-5")
    src = io.BytesIO(header("pax", tarfile.XHDTYPE, len(records)) + block(records)
                     + member("neg") + END)
    refused(src, tmp_path, r"^refused: 'neg' in the archive has a negative size$")


# ---- extended headers -----------------------------------------------------------

@pytest.mark.parametrize("type, kind", [
    (tarfile.XHDTYPE, "PAX header"),
    (tarfile.GNUTYPE_LONGNAME, "GNU long name"),
    (tarfile.GNUTYPE_LONGLINK, "GNU long link name"),
])
def test_a_1gib_extended_header_is_refused_unread(tmp_path, type, kind):
    src = Endless(header("././@LongLink", type, GIB) + b"9" * 4096)
    tracemalloc.start()
    try:
        started = time.monotonic()
        message = refused(src, tmp_path, "over the limit")
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == ("refused: %s of 1073741824 bytes in the archive: over the limit of "
                       "1048576 bytes of extended headers per member" % kind)
    assert src.done <= 20480  # the first records only, not the header's payload
    assert peak < 4 << 20
    assert elapsed < 5


def test_a_real_2mib_pax_header_is_refused(tmp_path):
    src = build((info("f", pax_headers={"SCHILY.xattr.user.big": "v" * (2 << 20)}), b"x"))
    refused(src, tmp_path, r"^refused: PAX header of \d+ bytes in the archive: over the limit "
            r"of 1048576 bytes of extended headers per member$")


def test_the_extended_headers_of_one_member_count_together(tmp_path):
    name = b"n" * 3000
    src = io.BytesIO(header("././@LongLink", tarfile.GNUTYPE_LONGNAME, len(name)) + block(name)
                     + header("././@LongLink", tarfile.GNUTYPE_LONGLINK, len(name)) + block(name)
                     + header("short", tarfile.SYMTYPE, linkname="t") + END)
    refused(src, tmp_path, r"^refused: GNU long link name of 6000 bytes in the archive: over the "
            r"limit of 4096 bytes", imagestore.Limits(header=4096))


def test_a_chain_of_extended_headers_is_refused(tmp_path):
    chain = header("pax", tarfile.XHDTYPE, 0) * 5
    refused(io.BytesIO(chain + member("f") + END), tmp_path,
            r"^refused: more than 4 extended headers before one member of the archive \(the "
            r"limit of extended headers per member\)$")
    assert imagestore.ingest(io.BytesIO(header("pax", tarfile.XHDTYPE, 0) * 4 + member("f")
                                        + END), tmp_path)


def test_global_headers_over_their_limit_are_refused(tmp_path):
    src = build((info("f"), b"x"), pax_headers={"comment": "a" * 5000})
    refused(src, tmp_path, r"^refused: PAX global headers of \d+ bytes in the archive: over the "
            r"limit of 4096 bytes$")


# ---- what the node's tar reads back ---------------------------------------------

@pytest.mark.parametrize("kind", [
    dict(type=tarfile.CHRTYPE, devmajor=1, devminor=3),
    dict(type=tarfile.FIFOTYPE),
    dict(type=tarfile.SYMTYPE, linkname="target"),
    dict(type=tarfile.DIRTYPE),
])
def test_a_size_on_a_member_without_data_is_dropped(tmp_path, kind):
    # Python's tarfile reads no data for these; GNU tar on the node would skip
    # `size` bytes, and read the next member's content as a header.
    smuggled = header("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0) + END
    src = io.BytesIO(header("node", size=512, **kind) + member("carrier", smuggled) + END)
    digest, _, _ = imagestore.ingest(src, tmp_path)
    text = listing(tmp_path, digest)
    assert "carrier" in text and "dev/sda" not in text


@pytest.mark.parametrize("mtime", [b"inf", b"nan", b"-1e30", b"1e300"])
def test_any_pax_mtime_is_stored_in_the_ustar_range(tmp_path, mtime):
    records = record(b"mtime", mtime)
    src = io.BytesIO(header("pax", tarfile.XHDTYPE, len(records)) + block(records)
                     + member("f") + END)
    digest, _, _ = imagestore.ingest(src, tmp_path)
    assert "1970-01-01 00:00 f" in listing(tmp_path, digest)


def test_an_xattr_name_that_is_not_text_is_dropped(tmp_path):
    records = record(b"SCHILY.xattr.user.\xff", b"v") + record(b"SCHILY.xattr.user.ok", b"v")
    src = io.BytesIO(header("pax", tarfile.XHDTYPE, len(records)) + block(records)
                     + member("f") + END)
    digest, _, _ = imagestore.ingest(src, tmp_path)
    with tarfile.open(fileobj=io.BytesIO(subprocess.run(
            ["zstd", "-dc", str(imagestore.path_of(digest, tmp_path))],
            capture_output=True, check=True).stdout)) as t:
        assert t.getmember("f").pax_headers == {"SCHILY.xattr.user.ok": "v"}


def test_deep_names_are_checked_in_linear_time():
    checker = imagestore.Checker()
    checker.check(info("a/b", tarfile.SYMTYPE, linkname="x"))
    deep = "/".join(["d"] * 2048)[:4095]
    started = time.monotonic()
    for _ in range(300):
        checker.check(info(deep, tarfile.DIRTYPE))
    assert time.monotonic() - started < 1.0  # quadratic: 12 ms a member
    with pytest.raises(Refused, match="through the symlink 'a/b'"):
        checker.check(info("a/b/c"))
    checker.check(info("a/b", tarfile.DIRTYPE))  # a directory replaces the symlink
    checker.check(info("a/b/c"))
