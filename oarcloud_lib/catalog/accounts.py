"""Accounts (F.u.0, F.a.0): a Unix account OAR accepts, an SSH key, a role.

oarcloud creates the Unix account unless it exists (a site's LDAP user is
adopted as it is).  Instances are reached with the account's SSH key: the
public half is in the catalog (it goes into instances), the private half, when
oarcloud generated the pair, in ~/.ssh/id_oarcloud.
"""
import logging
import pwd
import re
from pathlib import Path

from psycopg import sql

from oarcloud_lib import daemons
from oarcloud_lib.catalog import db
from oarcloud_lib.server import imagestore, volumestore
from oarcloud_lib.tools import oar
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import CommandFailed, Conflict, NotFound, Refused
from oarcloud_lib.names import USER_RE as NAME_RE

LOG = logging.getLogger(__name__)
# System accounts and the catalog's own PostgreSQL roles (an account is also a
# login role of the catalog).
RESERVED = {"root", "oar", "oar_ro", "postgres", "oarcloud", "oarcloud_users", "nobody",
            "admin", "daemon", "libvirt-qemu", "public", "pg_signal_backend"}
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


def _unix_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _generate_key(pw, runner):
    ssh = Path(pw.pw_dir) / ".ssh"
    private = ssh / KEY_NAME
    if not private.exists():
        runner.run(["runuser", "-u", pw.pw_name, "--", "mkdir", "-p", "-m", "700", str(ssh)])
        runner.run(["runuser", "-u", pw.pw_name, "--", "ssh-keygen", "-q", "-t", "ed25519",
                    "-N", "", "-C", "%s@oarcloud" % pw.pw_name, "-f", str(private)])
    return Path(str(private) + ".pub").read_text().strip()


def _row(conn, name):
    row = conn.execute("SELECT name, uid, role, ssh_pubkey, unix_created, created FROM accounts"
                       " WHERE name = %s", (name,)).fetchone()
    if row is None:
        return None
    return dict(zip(("name", "uid", "role", "ssh_pubkey", "unix_created", "created"), row))


def _public(row, runner=LOCAL):
    out = {k: row[k] for k in ("name", "uid", "role", "created")}
    out["key_fingerprint"] = fingerprint(row["ssh_pubkey"], runner)
    return out


def add(name, key_file=None, admin=False, conn=None, runner=LOCAL):
    """Create or adopt the account; returns (account, changed).  Raises Refused."""
    check_name(name)
    pubkey = read_public_key(key_file, runner) if key_file else None
    role = "admin" if admin else "user"
    pw = _unix_user(name)
    if pw is not None and pw.pw_uid < FIRST_USER_UID:
        raise Refused(detail="%s is a system account (uid %d): not usable for oarcloud"
                      % (name, pw.pw_uid))
    with db.session(conn) as conn:
        row = _row(conn, name)
        if row is not None:
            changed = False
            if row["role"] != role and admin:
                conn.execute("UPDATE accounts SET role = %s WHERE name = %s", (role, name))
                changed = True
            if pubkey and pubkey != row["ssh_pubkey"]:
                conn.execute("UPDATE accounts SET ssh_pubkey = %s WHERE name = %s", (pubkey, name))
                changed = True
            return _public(_row(conn, name), runner), changed
        created = False
        if pw is None:
            runner.run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name])
            created = True
            pw = _unix_user(name)
        try:
            if pubkey is None:
                pubkey = _generate_key(pw, runner)
            with conn.transaction():
                conn.execute("INSERT INTO accounts (name, uid, role, ssh_pubkey, unix_created)"
                             " VALUES (%s, %s, %s, %s, %s)",
                             (name, pw.pw_uid, role, pubkey, created))
                _ensure_db_role(conn, name)
        except BaseException:
            if created:
                runner.run(["userdel", "--remove", name], check=False)
            raise
        return _public(_row(conn, name), runner), True


def _ensure_db_role(conn, name):
    """The account's own login role: `oarcloud` reads the catalog as the user
    (peer authentication on the server's socket, row-level security)."""
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE oarcloud_users").format(
            sql.Identifier(name)))
    else:
        conn.execute(sql.SQL("GRANT oarcloud_users TO {}").format(sql.Identifier(name)))


def list_accounts(conn=None, runner=LOCAL):
    with db.session(conn) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM accounts ORDER BY name")]
        return [_public(_row(conn, n), runner) for n in names]


def _user_jobs(name, runner):
    """Ids of the user's jobs that have not ended."""
    return sorted(int(j) for j in oar.current_jobs(runner, user=name, check=False))


def _end_jobs(name, runner, timeout=90):
    """Delete the user's OAR jobs and wait until they have ended (epilogues run).

    The Unix account must outlive its jobs: a job that starts after its
    owner is gone fails on the node and OAR marks the node Suspected.
    """
    jobs = _user_jobs(name, runner)
    if not jobs:
        return
    # Only the job owner or oar may delete a job.
    oar.delete(jobs, runner, user="oar", check=False)
    if not daemons.wait_for(lambda: not _user_jobs(name, runner), timeout=timeout, interval=0.5):
        raise Conflict(what="user %s" % name,
                       detail="jobs %s are still ending; nothing changed, try again"
                       % ", ".join(map(str, _user_jobs(name, runner))))


def _images_to_keep(conn, name):
    """Names of the account's images that others still need (public, shared,
    under another user's live instance or layer, or the parent of one of
    those): they go to the site instead of being deleted."""
    keep = {r[0] for r in conn.execute(
        "SELECT i.name FROM images i WHERE i.owner = %s AND (i.visibility = 'public'"
        " OR EXISTS (SELECT 1 FROM image_shares s WHERE s.image = i.name AND s.account <> %s)"
        " OR EXISTS (SELECT 1 FROM instances n WHERE n.image = i.name AND n.owner <> %s"
        "            AND n.state NOT IN ('deleted', 'failed'))"
        " OR EXISTS (SELECT 1 FROM images c WHERE c.parent = i.name"
        "            AND c.owner IS DISTINCT FROM %s))", (name, name, name, name))}
    own = dict(conn.execute("SELECT name, parent FROM images WHERE owner = %s", (name,)))
    todo = list(keep)
    while todo:  # a kept layer keeps the chain of the account's images it stands on
        parent = own.get(todo.pop())
        if parent in own and parent not in keep:
            keep.add(parent)
            todo.append(parent)
    return sorted(keep)


def _end_vpns(name, vpns):
    """The deleted account's VPN endpoints [(network id, node)]: their CA keys
    go, their nodes stop them now (not at their next change)."""
    if not vpns:
        return
    from oarcloud_lib.server import vpnca
    from oarcloud_lib.service import fanout
    for network_id, _ in vpns:
        vpnca.forget(network_id)
    errors = fanout.sync_nodes(sorted({node for _, node in vpns}))
    if errors:
        LOG.warning("user %s: VPN endpoints still run on %s until its next network sync",
                    name, ", ".join(sorted(errors)))


def delete(name, conn=None, runner=LOCAL):
    """Delete the account: its OAR jobs, its catalog rows, its Unix account if ours."""
    check_name(name)
    with db.session(conn) as conn:
        row = _row(conn, name)
        if row is None:
            raise NotFound(what="oarcloud user", name=name)
        from oarcloud_lib.service import groups
        groups.forget_owner(conn, name)   # nothing relaunches what ends below
        _end_jobs(name, runner)
        with conn.transaction():
            kept = _images_to_keep(conn, name)
            if kept:
                conn.execute("UPDATE images SET owner = NULL WHERE name = ANY(%s)", (kept,))
                LOG.warning("user %s: images %s go to the site (others use them)", name,
                            ", ".join(kept))
            theirs = [r[0] for r in conn.execute("SELECT sha256 FROM images WHERE owner = %s",
                                                 (name,))]
            vpns = conn.execute("SELECT v.network, v.node FROM net_vpns v JOIN networks n"
                                " ON n.id = v.network WHERE n.owner = %s", (name,)).fetchall()
            vols = [r[0] for r in conn.execute("SELECT id FROM volumes WHERE owner = %s",
                                               (name,))]
            # Its jobs ended: what their teardown did not release goes now.
            conn.execute("DELETE FROM volume_attachments WHERE volume = ANY(%s)", (vols,))
            conn.execute("DELETE FROM accounts WHERE name = %s", (name,))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            if row["unix_created"] and _unix_user(name) is not None:
                try:
                    runner.run(["userdel", "--remove", name])
                except CommandFailed as e:
                    raise Conflict(what="user %s" % name,
                                   detail="Unix account not removed (%s); nothing changed" % e) \
                        from None
        _end_vpns(name, vpns)
        for volume_id in vols:
            volumestore.delete(volume_id)
        for sha in theirs:  # the store files no image names any more
            if conn.execute("SELECT 1 FROM images WHERE sha256 = %s", (sha,)).fetchone() is None:
                imagestore.remove(sha)
