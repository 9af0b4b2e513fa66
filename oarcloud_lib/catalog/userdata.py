"""First-boot user data (`oarcloud launch --user-data FILE`): a script, or a
cloud-config subset turned into one when it is stored.

The broker stores it (users only read the catalog) and answers its id; the
launch names it with `-t cloud.userdata=ID`; the job's nodes run it once in
each instance of the launch (node/userdata.py).

cloud-config keys taken (anything else is refused, never ignored):

- `write_files`: [{path, content, permissions (octal, default 0644)}]
- `packages`: [name...], installed with apt-get (or apk) when the image has it
- `users`: [{name, ssh_authorized_keys: [key...]}]
- `runcmd`: [command...]: a string runs with sh -c, a list as its words
"""
import re
import shlex

from oarcloud_lib.errors import NotFound, Refused

MAX_BYTES = 64 << 10
PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]{0,255}\Z")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}\Z")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh"
                    r"\.com) [A-Za-z0-9+/=]{16,16384}( [ -~]{0,200})?\Z")
KNOWN = ("write_files", "packages", "users", "runcmd")


def _refuse(why):
    raise Refused(detail="user data: %s (see docs/jobs.md, `--user-data`)" % why)


def parse(data):
    """(kind, script) for the bytes of a user-data file.  Raises Refused."""
    if len(data) > MAX_BYTES:
        _refuse("%d bytes, more than %d" % (len(data), MAX_BYTES))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _refuse("not UTF-8 text")
    if "\x00" in text:
        _refuse("a NUL byte")
    first = text.split("\n", 1)[0].strip()
    if first.startswith("#!"):
        return "script", text
    if first == "#cloud-config":
        return "cloud-config", cloud_config_script(text)
    _refuse("the first line must be #! (a script) or #cloud-config")


def cloud_config_script(text):
    """The shell script that does what a cloud-config subset asks."""
    import yaml
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        _refuse("not YAML: %s" % str(e).splitlines()[0])
    if not isinstance(doc, dict):
        _refuse("a cloud-config is a mapping of keys")
    unknown = sorted(set(doc) - set(KNOWN))
    if unknown:
        _refuse("cloud-config key %s is not supported (supported: %s)"
                % (", ".join(map(str, unknown)), ", ".join(KNOWN)))
    out = ["#!/bin/sh", "# made by oarcloud from a #cloud-config", "set -e"]
    for f in _items(doc, "write_files", dict):
        path, content = f.get("path"), f.get("content", "")
        mode = str(f.get("permissions", "0644"))
        if not isinstance(path, str) or not PATH_RE.match(path) or ".." in path.split("/"):
            _refuse("write_files: bad path %r" % (path,))
        if not isinstance(content, str) or not re.fullmatch(r"0?[0-7]{3,4}", mode):
            _refuse("write_files %s: content must be text, permissions octal" % path)
        out += ["mkdir -p %s" % shlex.quote(path.rsplit("/", 1)[0] or "/"),
                "printf '%%s' %s > %s" % (shlex.quote(content), shlex.quote(path)),
                "chmod %s %s" % (mode, shlex.quote(path))]
    packages = _items(doc, "packages", str)
    for p in packages:
        if not PACKAGE_RE.match(p):
            _refuse("packages: bad package name %r" % p)
    if packages:
        names = " ".join(packages)
        out.append("if command -v apt-get >/dev/null; then apt-get update -q && "
                   "DEBIAN_FRONTEND=noninteractive apt-get install -y -q %s; "
                   "elif command -v apk >/dev/null; then apk add %s; "
                   "else echo 'no package manager for: %s' >&2; exit 1; fi" % (names, names, names))
    for u in _items(doc, "users", dict):
        name, keys = u.get("name"), u.get("ssh_authorized_keys", [])
        if not isinstance(name, str) or not USER_RE.match(name) or name == "root":
            _refuse("users: bad user name %r" % (name,))
        if not isinstance(keys, list) or not all(isinstance(k, str) and KEY_RE.match(k.strip())
                                                 for k in keys):
            _refuse("users %s: ssh_authorized_keys must be SSH public key lines" % name)
        home = "/home/%s" % name
        out += ["id %s >/dev/null 2>&1 || useradd -m -s /bin/sh %s 2>/dev/null || "
                "adduser -D %s" % (name, name, name),
                "mkdir -p %s/.ssh" % home,
                "printf '%%s\\n' %s >> %s/.ssh/authorized_keys" % (
                    " ".join(shlex.quote(k.strip()) for k in keys) or "''", home),
                "chown -R %s %s/.ssh && chmod 700 %s/.ssh && chmod 600 %s/.ssh/authorized_keys"
                % (name, home, home, home)]
    for cmd in _items(doc, "runcmd", (str, list)):
        if isinstance(cmd, list):
            if not cmd or not all(isinstance(w, (str, int, float)) for w in cmd):
                _refuse("runcmd: a command list holds words")
            out.append(" ".join(shlex.quote(str(w)) for w in cmd))
        else:
            out.append("sh -c %s" % shlex.quote(cmd))
    return "\n".join(out) + "\n"


def _items(doc, key, kind):
    items = doc.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, kind) for i in items):
        _refuse("%s must be a list" % key)
    return items


def store(conn, owner, data):
    """Store the owner's user data; returns its id."""
    kind, script = parse(data)
    # What no live instance runs and no launch can still start (--at: within a year).
    conn.execute("DELETE FROM user_data u WHERE owner = %s AND created < now() - interval"
                 " '366 days' AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.user_data ="
                 " u.id AND i.state NOT IN ('deleted', 'failed'))", (owner,))
    return conn.execute("INSERT INTO user_data (owner, kind, script) VALUES (%s, %s, %s)"
                        " RETURNING id", (owner, kind, script)).fetchone()[0]


def get(conn, owner, data_id):
    """The owner's user data row data_id (another user's is not found)."""
    row = conn.execute("SELECT id, kind, script FROM user_data WHERE id = %s AND owner = %s",
                       (data_id, owner)).fetchone()
    if row is None:
        raise NotFound(what="user data", name=str(data_id))
    return dict(zip(("id", "kind", "script"), row))
