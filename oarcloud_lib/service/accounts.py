"""Accounts' lifecycle (F.a.0): create or adopt one, delete one with all it holds.

oarcloud creates the Unix account unless it exists (a site's LDAP user is
adopted as it is), and a login role of the catalog of the same name.
Deleting an account ends its jobs first (the Unix account must outlive
them), hands to the site what other accounts still use, and removes its
stored files once no row names them.
"""
import logging
import pwd
from pathlib import Path

from psycopg import sql

from oarcloud_lib import daemons
from oarcloud_lib.catalog import db
from oarcloud_lib.catalog.accounts import (FIRST_USER_UID, KEY_NAME, ROLES, check_name, get,
                                           public, read_public_key)
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import CommandFailed, Conflict, NotFound, Refused
from oarcloud_lib.server import imagestore, volumestore, vpnca
from oarcloud_lib.service import fanout, groups
from oarcloud_lib.tools import oar

LOG = logging.getLogger(__name__)


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


def add(name, key_file=None, admin=False, conn=None, runner=LOCAL, role=None):
    """Create or adopt the account (role: user by default; an existing
    account's changes only when one is given); returns (account, changed).
    Raises Refused."""
    check_name(name)
    if role is not None and role not in ROLES:
        raise Refused(detail="unknown role %r: one of %s" % (str(role)[:20], ", ".join(ROLES)))
    pubkey = read_public_key(key_file, runner) if key_file else None
    asked = "admin" if admin else role
    role = asked or "user"
    pw = _unix_user(name)
    if pw is not None and pw.pw_uid < FIRST_USER_UID:
        raise Refused(detail="%s is a system account (uid %d): not usable for oarcloud"
                      % (name, pw.pw_uid))
    with db.session(conn) as conn:
        row = get(conn, name)
        if row is not None:
            changed = False
            if asked and row["role"] != asked:
                conn.execute("UPDATE accounts SET role = %s WHERE name = %s", (role, name))
                changed = True
            if pubkey and pubkey != row["ssh_pubkey"]:
                conn.execute("UPDATE accounts SET ssh_pubkey = %s WHERE name = %s", (pubkey, name))
                changed = True
            return public(get(conn, name), runner), changed
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
        return public(get(conn, name), runner), True


def _ensure_db_role(conn, name):
    """The account's own login role: `oarcloud` reads the catalog as the user
    (peer authentication on the server's socket, row-level security)."""
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE oarcloud_users").format(
            sql.Identifier(name)))
    else:
        conn.execute(sql.SQL("GRANT oarcloud_users TO {}").format(sql.Identifier(name)))


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
        " OR EXISTS (SELECT 1 FROM image_shares s WHERE s.image = i.name"
        "            AND s.account IS DISTINCT FROM %s)"
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
    for network_id, _ in vpns:
        vpnca.forget(network_id)
    errors = fanout.sync_nodes(sorted({node for _, node in vpns}))
    if errors:
        LOG.warning("user %s: VPN endpoints still run on %s until its next network sync",
                    name, ", ".join(sorted(errors)))


def _refuse_shared_networks_in_use(conn, name):
    """A network goes with its owner: refuse while another user's instance is
    on one of the account's networks (their instance would lose its network)."""
    used = conn.execute(
        "SELECT n.name, string_agg(DISTINCT i.owner, ', ' ORDER BY i.owner) FROM nics c"
        " JOIN networks n ON n.id = c.network JOIN instances i ON i.domain = c.domain"
        " WHERE n.owner = %s AND i.owner <> %s AND i.state NOT IN ('deleted', 'failed')"
        " GROUP BY n.name ORDER BY n.name", (name, name)).fetchall()
    if used:
        others = sorted({u for _, us in used for u in us.split(", ")})
        raise Conflict(what="user %s" % name, detail="instances of %s are on its %s; nothing "
                       "changed: they must end first, then delete the user" % (
                           ", ".join(others), ", ".join("network " + n for n, _ in used)))


def delete(name, conn=None, runner=LOCAL):
    """Delete the account: its OAR jobs, its catalog rows, its Unix account if ours."""
    check_name(name)
    with db.session(conn) as conn:
        row = get(conn, name)
        if row is None:
            raise NotFound(what="oarcloud user", name=name)
        _refuse_shared_networks_in_use(conn, name)
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
