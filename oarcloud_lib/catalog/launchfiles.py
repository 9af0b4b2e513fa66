"""Files of a launch (`oarcloud launch --file SRC:DEST`, repeatable): copied
into every instance of the launch before it starts, as its root's.

The user's `oarcloud launch` reads the files (as the user) and hands them to
the broker as one bundle, which is checked and stored here; the launch names
it with `-t cloud.files=ID`; each instance's node writes them into the
instance's root before it starts (node/lifecycle.py), through rootfs's
writer, which never follows a link the image holds.

A bundle: at most MAX_FILES files, MAX_FILE bytes each, MAX_TOTAL in all;
paths absolute, in the user-data path alphabet, no `..`, nowhere under
/proc, /sys or /dev; modes 0 to 0777 (no set-uid, set-gid or sticky bit).
"""
import base64
import binascii
import json

from oarcloud_lib.catalog.userdata import PATH_RE
from oarcloud_lib.errors import NotFound, Refused

MAX_FILES = 16
MAX_FILE = 1 << 20
MAX_TOTAL = 4 << 20
KERNEL_DIRS = ("/proc", "/sys", "/dev")


def _refuse(why):
    raise Refused(detail="--file: %s" % why)


def check_path(path):
    if not isinstance(path, str) or not PATH_RE.match(path) or ".." in path.split("/") \
            or path.endswith("/"):
        _refuse("bad destination %r: an absolute file path (letters, digits, . _ - + /)"
                % (str(path)[:80],))
    if any(path == d or path.startswith(d + "/") for d in KERNEL_DIRS):
        _refuse("%s is the kernel's, not the instance's" % path)
    return path


def _items(files):
    return [{"path": p, "mode": m, "data": base64.b64encode(d).decode()} for p, m, d in files]


def encode(files):
    """The broker's stdin for [(dest, mode, bytes)]."""
    return json.dumps({"files": _items(files)})


def parse(text):
    """[(path, mode, bytes)] from a bundle (encode's JSON).  Raises Refused."""
    try:
        doc = json.loads(text)
        items = doc["files"]
    except (ValueError, KeyError, TypeError):
        _refuse("the broker reads {\"files\": [{path, mode, data}]}")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_FILES:
        _refuse("1 to %d files" % MAX_FILES)
    out, total, seen = [], 0, set()
    for item in items:
        if not isinstance(item, dict):
            _refuse("a file is {path, mode, data}")
        path, mode = check_path(item.get("path")), item.get("mode")
        if path in seen:
            _refuse("%s given twice" % path)
        seen.add(path)
        if not isinstance(mode, int) or not 0 <= mode <= 0o777:
            _refuse("%s: mode %r is not 0 to 0777" % (path, mode))
        try:
            data = base64.b64decode(item.get("data") or "", validate=True)
        except (binascii.Error, TypeError):
            _refuse("%s: data is not base64" % path)
        if len(data) > MAX_FILE:
            _refuse("%s: %d bytes, more than %d" % (path, len(data), MAX_FILE))
        total += len(data)
        out.append((path, mode, data))
    if total > MAX_TOTAL:
        _refuse("%d bytes in all, more than %d" % (total, MAX_TOTAL))
    return out


def store(conn, owner, text):
    """Store the owner's bundle; returns its id."""
    files = parse(text)
    # What no live instance has and no launch can still start (--at: within a year).
    conn.execute("DELETE FROM launch_files f WHERE owner = %s AND created < now() - interval"
                 " '366 days' AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.files ="
                 " f.id AND i.state NOT IN ('deleted', 'failed'))", (owner,))
    return conn.execute("INSERT INTO launch_files (owner, files, bytes) VALUES (%s, %s, %s)"
                        " RETURNING id", (owner, json.dumps(_items(files)),
                                          sum(len(d) for _, _, d in files))).fetchone()[0]


def get(conn, owner, bundle_id):
    """[(path, mode, bytes)] of the owner's bundle (another user's is not found)."""
    row = conn.execute("SELECT files FROM launch_files WHERE id = %s AND owner = %s",
                       (bundle_id, owner)).fetchone()
    if row is None:
        raise NotFound(what="launch files", name=str(bundle_id))
    return [(f["path"], f["mode"], base64.b64decode(f["data"])) for f in row[0]]
