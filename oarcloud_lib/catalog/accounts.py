"""Accounts (F.u.0, F.a.0) in the catalog: names, SSH keys, roles.

Instances are reached with the account's SSH key: the public half is in the
catalog (it goes into instances), the private half, when oarcloud generated
the pair, in ~/.ssh/id_oarcloud.  Creating and deleting an account (its Unix
account, its jobs, its stored files) is service.accounts.
"""
import logging
import re
from pathlib import Path

from oarcloud_lib.catalog import db
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, Refused
from oarcloud_lib.names import USER_RE as NAME_RE

LOG = logging.getLogger(__name__)
# System accounts and the catalog's own PostgreSQL roles (an account is also a
# login role of the catalog).
RESERVED = {"root", "oar", "oar_ro", "postgres", "oarcloud", "oarcloud_users", "nobody",
            "admin", "daemon", "libvirt-qemu", "public", "pg_signal_backend"}
# Roles: a user sees and changes their own objects; an operator also drains
# and operates nodes; a viewer sees everything and changes nothing; an admin
# does all.
ROLES = ("user", "admin", "operator", "viewer")
SEE_ALL = ("admin", "operator", "viewer")
OPERATE = ("admin", "operator")
FIRST_USER_UID = 1000
KEY_NAME = "id_oarcloud"
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com")


def check_name(name):
    """Refuse names that are not safe Unix user names or are reserved."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Refused(detail="bad user name %r: a Unix name is 1-32 of a-z, 0-9, '_' or '-', "
                             "starting with a letter or '_'" % (name,))
    if name in RESERVED:
        raise Refused(detail="user name %r is reserved" % name)
    return name


def read_public_key(path, runner=LOCAL):
    """The one public key in path, checked by ssh-keygen.  Raises Refused."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise Refused(detail="cannot read key file %s: %s" % (path, e)) from None
    try:
        return parse_public_key(text, runner)[0]
    except Refused as e:
        raise Refused(detail="%s: %s" % (path, e.kwargs.get("detail", e))) from None


def fingerprint(pubkey, runner=LOCAL):
    res = runner.run(["ssh-keygen", "-l", "-f", "-"], stdin=pubkey + "\n", check=False)
    return res.out.split()[1] if res.code == 0 and len(res.out.split()) > 1 else "?"


MAX_KEYS = 32  # keys an account may add (each goes into every new instance)
KEY_COMMENT_RE = re.compile(r"^[ -~]{0,200}\Z")


def parse_public_key(text, runner=LOCAL):
    """(key line, fingerprint, comment) of one OpenSSH public key given as text
    (no options such as command=, no private key), checked by ssh-keygen.
    Raises Refused."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if "PRIVATE KEY" in (text or ""):
        raise Refused(detail="that is a private key: give the public key (the .pub file)")
    if len(lines) != 1 or len(lines[0]) > 16384:
        raise Refused(detail="give exactly one SSH public key (one line of a .pub file)")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise Refused(detail="not an SSH public key: it must start with one of %s (key "
                             "options such as command= are not taken)" % ", ".join(KEY_TYPES))
    comment = parts[2] if len(parts) > 2 else ""
    if not KEY_COMMENT_RE.match(comment):
        raise Refused(detail="the key's comment has control or non-ASCII characters")
    line = " ".join(parts)
    res = runner.run(["ssh-keygen", "-l", "-f", "-"], stdin=line + "\n", check=False)
    if res.code != 0 or len(res.out.split()) < 2:
        raise Refused(detail="not a valid SSH public key (ssh-keygen rejects it)")
    return line, res.out.split()[1], comment


def keys(conn, owner):
    """The owner's keys: the account's own, then those added (oldest first)."""
    row = conn.execute("SELECT ssh_pubkey FROM accounts WHERE name = %s", (owner,)).fetchone()
    out = [{"fingerprint": fingerprint(row[0]), "comment": (row[0].split(None, 2) + [""])[2],
            "key": row[0], "account_key": True, "created": None}] if row else []
    out += [dict(zip(("fingerprint", "comment", "key", "created"), r), account_key=False)
            for r in conn.execute("SELECT fingerprint, comment, key, created FROM account_keys"
                                  " WHERE owner = %s ORDER BY id", (owner,))]
    return out


def authorized_keys(conn, owner):
    """What a new instance of owner's gets in authorized_keys (one key a line)."""
    own = [r[0] for r in conn.execute("SELECT ssh_pubkey FROM accounts WHERE name = %s",
                                      (owner,))]
    added = [r[0] for r in conn.execute("SELECT key FROM account_keys WHERE owner = %s"
                                        " ORDER BY id", (owner,))]
    return "\n".join(dict.fromkeys(own + added)) or None


def add_key(conn, owner, text, runner=LOCAL):
    """Add a public key to the owner's; returns (key row, added)."""
    line, fp, comment = parse_public_key(text, runner)
    with conn.transaction():
        conn.execute("SELECT 1 FROM accounts WHERE name = %s FOR UPDATE", (owner,))
        if any(k["fingerprint"] == fp for k in keys(conn, owner)):
            return {"fingerprint": fp, "comment": comment}, False
        n = conn.execute("SELECT count(*) FROM account_keys WHERE owner = %s",
                         (owner,)).fetchone()[0]
        if n >= MAX_KEYS:
            raise Refused(detail="you have %d keys, the most an account may add: delete one "
                                 "first (oarcloud key delete)" % n)
        conn.execute("INSERT INTO account_keys (owner, key, fingerprint, comment)"
                     " VALUES (%s, %s, %s, %s)", (owner, line, fp, comment))
    return {"fingerprint": fp, "comment": comment}, True


def del_key(conn, owner, ident):
    """Delete the owner's added key whose fingerprint or comment is ident;
    returns its row.  The account's own key stays (admins change it)."""
    rows = [k for k in keys(conn, owner) if ident in (k["fingerprint"], k["comment"])]
    if not rows or len(ident) > 300:
        raise NotFound(what="key", name=str(ident)[:60])
    if len(rows) > 1:
        raise Conflict(what="key", detail="%d keys have the comment %r: give the fingerprint "
                                          "(oarcloud key list)" % (len(rows), ident))
    if rows[0]["account_key"]:
        raise Refused(detail="that is your account's own key (oarcloud-admin user add --key "
                             "changes it): delete another")
    conn.execute("DELETE FROM account_keys WHERE owner = %s AND fingerprint = %s",
                 (owner, rows[0]["fingerprint"]))
    return rows[0]


def role(conn, name):
    """The account's role, or None when there is no such account."""
    row = conn.execute("SELECT role FROM accounts WHERE name = %s", (name,)).fetchone()
    return row[0] if row else None


def get(conn, name):
    row = conn.execute("SELECT name, uid, role, ssh_pubkey, unix_created, created FROM accounts"
                       " WHERE name = %s", (name,)).fetchone()
    if row is None:
        return None
    return dict(zip(("name", "uid", "role", "ssh_pubkey", "unix_created", "created"), row))


def public(row, runner=LOCAL):
    out = {k: row[k] for k in ("name", "uid", "role", "created")}
    out["key_fingerprint"] = fingerprint(row["ssh_pubkey"], runner)
    return out


def list_accounts(conn=None, runner=LOCAL):
    with db.session(conn) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM accounts ORDER BY name")]
        return [public(get(conn, n), runner) for n in names]

