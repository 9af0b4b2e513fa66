"""API tokens (F.a.2): what a browser's login and an HTTP API client present.

A token is `oct_` and 32 random bytes (base64url); it is shown once, when it
is made.  The catalog keeps its SHA-256 only, so that a copy of the catalog
gives no token, and the first characters as a hint to tell tokens apart.
Revoking deletes the row: the token is refused from the next request on.

    create(conn, account, name)  -> (row, token)   (the broker, for account)
    listing(conn, account)       -> [row]          (no digest)
    revoke(conn, account, name)  -> row            (Raises NotFound)
    check(conn, token)           -> {account, role, token} or None
"""
import hashlib
import re
import secrets

from oarcloud_lib.catalog.db import dicts
from oarcloud_lib.errors import Conflict, NotFound, OverQuota, Refused

PREFIX = "oct_"
TOKEN_RE = re.compile(r"^oct_[A-Za-z0-9_-]{43}\Z")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")
MAX_PER_ACCOUNT = 20


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Refused(detail="bad token name %r: 1 to 63 of a-z 0-9 . _ -, starting with a "
                             "letter or digit" % (str(name)[:64],))
    return name


def digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn, account, name):
    """A new token of account called name: (its row, the token itself, shown
    once).  Raises Refused, Conflict (the name is taken), OverQuota."""
    check_name(name)
    token = PREFIX + secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute("SELECT 1 FROM accounts WHERE name = %s FOR UPDATE", (account,))
        have = conn.execute("SELECT count(*) FROM api_tokens WHERE account = %s",
                            (account,)).fetchone()[0]
        if have >= MAX_PER_ACCOUNT:
            raise OverQuota(detail="%d API tokens of %d: revoke one first" % (have, MAX_PER_ACCOUNT))
        if conn.execute("SELECT 1 FROM api_tokens WHERE account = %s AND name = %s",
                        (account, name)).fetchone():
            raise Conflict(what="token %s" % name,
                           detail="you have one of that name (revoke it or pick another)")
        row = dicts(conn.execute(
            "INSERT INTO api_tokens (account, name, digest, hint) VALUES (%s, %s, %s, %s)"
            " RETURNING id, account, name, hint, created, last_used",
            (account, name, digest(token), token[:len(PREFIX) + 4])))[0]
    return row, token


def listing(conn, account):
    return dicts(conn.execute("SELECT id, account, name, hint, created, last_used FROM api_tokens"
                              " WHERE account = %s ORDER BY name", (account,)))


def revoke(conn, account, name):
    check_name(name)
    rows = dicts(conn.execute("DELETE FROM api_tokens WHERE account = %s AND name = %s"
                              " RETURNING id, account, name, hint, created, last_used",
                              (account, name)))
    if not rows:
        raise NotFound(what="token", name=name)
    return rows[0]


def check(conn, token):
    """{account, role, token: its id} of a valid token, else None (malformed,
    unknown or revoked: all alike).  Records when it was last used (to the
    minute, so that a page's polling does not write each time)."""
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        return None
    row = conn.execute(
        "UPDATE api_tokens t SET last_used = now() FROM accounts a"
        " WHERE t.digest = %s AND a.name = t.account"
        " AND (t.last_used IS NULL OR t.last_used < now() - interval '1 minute')"
        " RETURNING t.account, a.role, t.id", (digest(token),)).fetchone()
    if row is None:
        row = conn.execute("SELECT t.account, a.role, t.id FROM api_tokens t JOIN accounts a"
                           " ON a.name = t.account WHERE t.digest = %s",
                           (digest(token),)).fetchone()
    if row is None:
        return None
    return {"account": row[0], "role": row[1], "token": row[2]}
