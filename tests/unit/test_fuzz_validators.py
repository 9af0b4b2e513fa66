"""Fuzz tests (hypothesis) of what checks user input: the store's tar ingest, the cloud
job types and the CLI's names.  Each either accepts, with a result that is safe, or
raises Refused; never another exception."""
import io
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, configuration, event, given, reject, settings
from hypothesis import strategies as st

from oarcloud_lib.catalog import accounts, alarms, images, instances, jobspec, networks
from oarcloud_lib.server import imagestore
from oarcloud_lib.service import lifecycle
from oarcloud_lib.errors import Refused

# No example database, and hypothesis' other files (its Unicode table) out of the tree.
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
configuration.set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "oarcloud-hypothesis"))
UNSAFE = re.compile(r"[/\s;&|$`<>()\\'\"*?\[\]{}!#~%^=,:@+\x00-\x1f\x7f]|\.\.|^-")


def safe(text):
    """text is usable as a path component and a shell word as it is."""
    return isinstance(text, str) and text.isascii() and text != "" and not UNSAFE.search(text)


# ---- tar ingest --------------------------------------------------------------------

GOOD_NAMES = st.from_regex(r"(\./)?[ab]{1,2}(/[ab]{1,2}){0,2}/?", fullmatch=True)  # often equal
NAMES = st.one_of(
    GOOD_NAMES, GOOD_NAMES, GOOD_NAMES,
    st.sampled_from(["", ".", "./", "..", "../x", "a/../../b", "a/..", "/etc/passwd", "//x",
                     "a//b/", "./a/./b", "x\0y", "etc", "etc/passwd", "bin", "bin/sh",
                     "dev/null", "n" * 150, "a/" * 2100, "é/ü", "a\nb", "-rf"]),
    st.text(max_size=20),
)
TYPES = [tarfile.REGTYPE] * 4 + [tarfile.DIRTYPE] * 3 + [
    tarfile.AREGTYPE, tarfile.LNKTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.SYMTYPE,
    tarfile.CHRTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.BLKTYPE,
    tarfile.GNUTYPE_SPARSE, b"V", b"M", b"Z"]
EXTENDED = [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK, tarfile.GNUTYPE_SPARSE, tarfile.SOLARIS_XHDTYPE]
PAX_KEYS = ["path", "linkpath", "size", "uid", "gid", "mtime", "uname", "comment", "atime",
            "SCHILY.xattr.user.a", "SCHILY.xattr.user.\udcff", "SCHILY.xattr.user.b",
            "SCHILY.xattr.trusted.overlay.opaque", "SCHILY.xattr.security.capability",
            "hdrcharset", "GNU.sparse.map", "GNU.sparse.realsize"]
PAX_VALUES = st.one_of(st.text(alphabet="0123456789-.,aex", max_size=12),
                       st.sampled_from(["inf", "nan", "-1", "1e400", "9" * 40, "1", "0"]),
                       NAMES)


def block(data):
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


@st.composite
def tar_member(draw, fmt):
    """The bytes of one member: tarfile-encoded (any fields), or a raw header that may lie."""
    if draw(st.integers(0, 9)) == 0:
        info = tarfile.TarInfo(draw(NAMES))
        info.type = draw(st.sampled_from(EXTENDED + TYPES))
        info.size = draw(st.sampled_from([0, 1, 511, 512, 4096, 1 << 20, 1 << 30, 1 << 40]))
        try:
            raw = info.tobuf(tarfile.USTAR_FORMAT)
        except ValueError:
            reject()
        return raw + block(draw(st.binary(max_size=1024)))
    info = tarfile.TarInfo(draw(NAMES))
    info.type = draw(st.sampled_from(TYPES))
    info.linkname = draw(NAMES) if info.type in (tarfile.LNKTYPE, tarfile.SYMTYPE) else ""
    info.uid = draw(st.sampled_from([0] * 30 + [1000, 65535, 65536, -1, 1 << 40]))
    info.gid = draw(st.sampled_from([0] * 30 + [100, 65535, 70000]))
    info.mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o7777, 0o170777]))
    info.mtime = draw(st.sampled_from([0, 1700000000, -5, 1 << 40]))
    info.devmajor, info.devminor = draw(st.sampled_from([(1, 3), (1, 3), (0, 0), (5, 2), (1, 1),
                                                         (8, 0), (300, 300)]))
    if fmt == tarfile.PAX_FORMAT:
        info.pax_headers = draw(st.one_of(st.just({}), st.dictionaries(
            st.sampled_from(PAX_KEYS), PAX_VALUES, max_size=3)))
    data = draw(st.binary(max_size=3000)) if info.isreg() else b""
    info.size = len(data) if info.isreg() else draw(st.sampled_from([0, 0, 512, 1024]))
    try:
        raw = info.tobuf(fmt, "utf-8", "surrogateescape")
    except (ValueError, UnicodeError):
        reject()
    return raw + block(data)


@st.composite
def tar_stream(draw):
    """A tar stream of random members, maybe cut short or followed by junk."""
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
    data = b"".join(draw(st.lists(tar_member(fmt), min_size=1, max_size=6)))
    if draw(st.integers(0, 3)):
        data += b"\0" * 1024
    cut = draw(st.sampled_from(["none"] * 5 + ["truncate", "append", "flip"]))
    if cut == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif cut == "append":
        data += draw(st.binary(min_size=1, max_size=2048))
    elif cut == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    return data


LIMITS = st.one_of(st.none(), st.builds(imagestore.Limits, unpacked=st.integers(0, 8000),
                                        members=st.integers(1, 6),
                                        header=st.integers(0, 5000)))
GNU_TYPES = {"-": tarfile.REGTYPE, "h": tarfile.LNKTYPE, "l": tarfile.SYMTYPE,
             "c": tarfile.CHRTYPE, "d": tarfile.DIRTYPE, "p": tarfile.FIFOTYPE}


def stored_members(path):
    """The members of a store file as Python's tarfile reads them."""
    raw = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as t:
        return raw, t.getmembers()


def gnu_tar_types(raw):
    """The member types as GNU tar (what nodes unpack with) reads the plain archive."""
    out = subprocess.run(["tar", "--numeric-owner", "--quoting-style=escape", "-tvf", "-"],
                         input=raw, capture_output=True, check=True).stdout
    return [GNU_TYPES[line[0]] for line in out.decode().splitlines()]


@settings(FUZZ, max_examples=1500)
@given(data=tar_stream(), limits=LIMITS)
def test_fuzz_ingest_accepts_a_clean_root_or_refuses_and_stores_nothing(data, limits):
    with tempfile.TemporaryDirectory() as store:
        try:
            digest, _, unpacked = imagestore.ingest(io.BytesIO(data), store, limits=limits)
        except Refused as e:
            assert "\n" not in str(e)
            assert list(Path(store).iterdir()) == []
            event("refused: %s" % re.sub(r"'[^']*'|\"[^\"]*\"|[0-9]+", "", str(e))[9:50])
            return
        path = imagestore.path_of(digest, store)
        assert [p.name for p in Path(store).iterdir()] == [path.name]
        raw, members = stored_members(path)
        event("stored: %s members" % min(len(members), 3))
        regular = 0
        for m in members:
            assert m.name == "." or not (m.name.startswith("/") or ".." in m.name.split("/")
                                         or "\0" in m.name or m.name.startswith("./"))
            assert m.type in (tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE,
                              tarfile.CHRTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE)
            assert 0 <= m.uid <= 65535 and 0 <= m.gid <= 65535 and m.sparse is None
            if m.islnk():
                assert not m.linkname.startswith("/") and ".." not in m.linkname.split("/")
            if m.ischr():
                assert (m.devmajor, m.devminor) in imagestore.ALLOWED_CHAR_DEVICES
            if m.isreg():
                regular += m.size
            else:
                assert m.size == 0
        assert regular == unpacked
        assert limits is None or (len(members) <= limits.members
                                  and unpacked <= limits.unpacked)
        # GNU tar on a node reads the same members, and the store takes its own output back.
        assert gnu_tar_types(raw) == [m.type for m in members]
        with tempfile.TemporaryDirectory() as again:
            assert imagestore.ingest(io.BytesIO(raw), again)[2] == unpacked


# ---- cloud job types -----------------------------------------------------------------

NASTY = st.sampled_from(["", "../x", "a/b", "a;b", "$(id)", "`id`", "a b", "a\nb", "-rf", "x..y",
                         "0", "9" * 9, "1e3", "1X", "512M", "16G", "10.0.0.1", "1.2.3.4.5",
                         "web-1", "tiny", "A_1-b", "é", "a\0b", "*", "~root"])
VALID = {key: st.from_regex(pattern, fullmatch=True) for key, pattern in jobspec.KEYS.items()}
VALUES = st.one_of(NASTY, st.text(max_size=12), st.one_of(*VALID.values()))
KEY_NAMES = st.sampled_from(sorted(jobspec.KEYS) + ["foo", "", "IMAGE", "name "])
JOB_TYPE = st.one_of(
    st.just("cloud"),
    st.builds("cloud.{}={}".format, KEY_NAMES, VALUES),
    st.builds("cloud={}".format, VALUES),
    st.builds(lambda k: "cloud.%s=%s" % (k[0], k[1]),
              st.sampled_from(sorted(VALID)).flatmap(lambda k: st.tuples(st.just(k), VALID[k]))),
    st.sampled_from(["besteffort", "cloud.", "cloud.=x", "cloud.name", "cloudy", "cloud=",
                     "container=x", "cloud.cloud=x"]),
    st.text(max_size=16),
)


@settings(FUZZ, max_examples=3000)
@given(types=st.lists(JOB_TYPE, max_size=8))
def test_fuzz_job_types_give_a_safe_spec_or_refused(types):
    try:
        spec = jobspec.parse_types(types)
    except Refused as e:
        assert "\n" not in str(e)
        return
    if spec is None:
        assert not any(jobspec.is_cloud_type(t) for t in types)
        return
    for key in ("image", "name", "save", "ip"):
        value = getattr(spec, key)
        assert value is None or (safe(value) and re.fullmatch(jobspec.KEYS[key], value))
    # NAME or OWNER/NAME: never a path (node-side names come from job ids)
    assert all(all(map(safe, n.split("/"))) and re.fullmatch(jobspec.KEYS["network"], n)
               for n in spec.networks)
    for key in ("count", "cores"):
        assert getattr(spec, key) is None or 1 <= getattr(spec, key) <= jobspec.MAX_COUNT
    assert spec.memory is None or (spec.memory > 0 and spec.memory % 1024 == 0)
    assert jobspec.parse_types(spec.to_types()) == spec


def test_a_large_memory_spec_round_trips():
    spec = jobspec.parse_types(["cloud", "cloud.memory=16G"])
    assert jobspec.parse_types(spec.to_types()) == spec


# ---- CLI names ---------------------------------------------------------------------------

USER_RE = r"[a-z_][a-z0-9_-]{0,31}"                        # accounts: a Unix user name
IMAGE_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"             # images: and no '..'
SHORT_RE = r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?"       # networks, alarms, instances


class NoRows:
    """A catalog connection with no instances (lifecycle.find's query)."""

    def execute(self, *args):
        return self

    def fetchall(self):
        return []


def find_instance(name):
    """The instance name check (lifecycle.find): Refused, or NotFound once accepted."""
    from oarcloud_lib.errors import NotFound
    try:
        lifecycle.find(NoRows(), "alice", name)
    except NotFound:
        return name


CHECKERS = [
    (accounts.check_name, USER_RE),
    (images.check_name, IMAGE_RE),
    (networks.check_name, SHORT_RE),
    (alarms.check_name, SHORT_RE),
    (find_instance, SHORT_RE),
]
NAME_INPUTS = st.one_of(
    st.text(max_size=70),
    st.text(alphabet="abzAZ09_-.", max_size=70),
    NASTY,
    st.sampled_from(["root", "oar", "a" * 32, "a" * 33, "a" * 64, "a" * 65, "a.", "a-", "_a",
                     "a\n", "a\r", "ａ", "١", "İ"]),
    st.one_of(st.from_regex(USER_RE, fullmatch=True), st.from_regex(IMAGE_RE, fullmatch=True),
              st.from_regex(SHORT_RE, fullmatch=True)),
    st.builds("{}{}{}".format, st.from_regex(SHORT_RE, fullmatch=True),
              st.sampled_from(["/", "..", " ", ";", "\n", "$", "\0", "é"]),
              st.from_regex(SHORT_RE, fullmatch=True)),
    st.one_of(st.none(), st.integers(), st.binary(max_size=8), st.lists(st.text(), max_size=2)),
)


@settings(FUZZ, max_examples=1500)
@pytest.mark.parametrize("check, pattern", CHECKERS,
                         ids=["accounts", "images", "networks", "alarms", "instances"])
@given(name=NAME_INPUTS)
def test_fuzz_names_are_accepted_as_documented_or_refused(check, pattern, name):
    if check is find_instance and not isinstance(name, str) and name is not None:
        return  # the CLI passes text (or nothing)
    try:
        result = check(name)
    except Refused as e:
        assert "\n" not in str(e)
        documented = isinstance(name, str) and re.fullmatch(pattern, name)
        assert not documented or (check is accounts.check_name and name in accounts.RESERVED) \
            or (check is images.check_name and ".." in name)
        return
    assert result == name and safe(name) and re.fullmatch(pattern, name)


def test_the_names_a_job_gives_its_instances_are_valid_instance_names():
    with pytest.raises(Refused, match="too long for 2 instances"):
        jobspec.parse_types(["cloud", "cloud.name=" + "a" * 32, "cloud.count=2"])
    spec = jobspec.parse_types(["cloud", "cloud.name=" + "a" * 30, "cloud.count=10"])
    for row in instances.plan(1, "alice", spec, {"node1": 10}, "tiny"):
        assert find_instance(row["name"]) == row["name"]
