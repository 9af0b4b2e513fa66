"""Quotas (F.a.4): limits on what an account holds at once.

What is used is counted from the catalog's live objects at the moment of the
check, never from a stored counter or from configured sizes, so that nothing
drifts and nothing is counted twice.  Every creation path calls require() in
the transaction that inserts the object, after the path's own table locks:
require() then takes the account's quota lock, counts, and refuses with what
is used and what the limit is.  Two concurrent creations of one account count
one after the other, so a limit of one lets exactly one pass.

    limit(s)    the account's own row, else the site's default (account NULL),
                else the built-in cap (alarms, targets), else none
    set_limits  what `oarcloud-admin quota set` changes
    report      used next to the limit, for `oarcloud quota`
"""
import re

from oarcloud_lib.errors import NotFound, OverQuota, Refused

# resource -> (what it counts, the account's use, a size in bytes?)
RESOURCES = {
    "instances": ("live instances", "SELECT count(*) FROM instances WHERE owner = %s"
                  " AND state NOT IN ('deleted', 'failed')", False),
    "cores": ("cores of live instances", "SELECT coalesce(sum(cores), 0) FROM instances"
              " WHERE owner = %s AND state NOT IN ('deleted', 'failed')", False),
    "memory": ("memory of live instances", "SELECT coalesce(sum(memory), 0) FROM instances"
               " WHERE owner = %s AND state NOT IN ('deleted', 'failed')", True),
    "disk": ("disk of live instances", "SELECT coalesce(sum(disk), 0) FROM instances"
             " WHERE owner = %s AND state NOT IN ('deleted', 'failed')", True),
    "images-bytes": ("bytes of images in the store",
                     "SELECT coalesce(sum(size), 0) FROM images WHERE owner = %s", True),
    "volumes-bytes": ("sizes of volumes", "SELECT coalesce(sum(size), 0) FROM volumes"
                      " WHERE owner = %s", True),
    "networks": ("private networks", "SELECT count(*) FROM networks WHERE owner = %s", False),
    "published-ports": ("published ports", "SELECT count(*) FROM exposures e"
                        " JOIN nics n ON n.id = e.nic JOIN networks w ON w.id = n.network"
                        " WHERE w.owner = %s", False),
    "vpn-clients": ("VPN clients", "SELECT count(*) FROM nics n JOIN networks w"
                    " ON w.id = n.network WHERE n.kind = 'vpn' AND w.owner = %s", False),
    "alarms": ("alarms", "SELECT count(*) FROM alarms WHERE owner = %s", False),
    "targets": ("notification targets",
                "SELECT count(*) FROM notify_targets WHERE owner = %s", False),
    # Not a sum: the largest group's --max, checked against each group's own
    # (service.groups); a group's members count in instances and cores too.
    "group-size": ("members of one scaling group (its --max)",
                   "SELECT coalesce(max(max_size), 0) FROM scaling_groups WHERE owner = %s",
                   False),
}
# Caps that hold when neither the account nor the site sets a limit: each
# alarm and target is work for the monitor.  An admin may raise them.
BUILTIN = {"alarms": 100, "targets": 20}
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"([0-9]{1,15})([KMGT]?)(?:I?B)?")
_COUNT_RE = re.compile(r"[0-9]{1,15}")


def check_resource(resource):
    if resource not in RESOURCES:
        raise Refused(detail="unknown quota %r: one of %s" % (str(resource)[:40],
                                                               ", ".join(RESOURCES)))
    return resource


def parse_limit(resource, text):
    """'none' -> None (no limit of the account's own); a whole number >= 0; sizes
    (memory, images-bytes) take K, M, G or T (powers of 1024; bare: bytes).
    Raises Refused."""
    check_resource(resource)
    text = str(text).strip()
    if text.lower() == "none":
        return None
    size = RESOURCES[resource][2]
    m = (_SIZE_RE if size else _COUNT_RE).fullmatch(text.upper())
    if not m:
        raise Refused(detail="bad %s quota %r: %s, or none to clear it" % (
            resource, text[:40], "a size such as 512M or 20G" if size else "a whole number >= 0"))
    return int(m.group(1)) * _UNITS[m.group(2)] if size else int(text)


def shown(resource, value):
    """A value of resource for people: sizes in the largest exact-enough unit."""
    if value is None:
        return "none"
    if not RESOURCES[resource][2]:
        return str(value)
    for unit in "TGMK":
        if value >= _UNITS[unit]:
            v = value / _UNITS[unit]
            return ("%d %siB" if v == int(v) else "%.1f %siB") % (v, unit)
    return "%d B" % value


def _rows(conn, account):
    """{(account or None, resource): max} of the account's and the site's rows."""
    return {(a, r): m for a, r, m in conn.execute(
        "SELECT account, resource, max FROM quotas WHERE account IS NULL OR account = %s",
        (account,)).fetchall()}


def limits(conn, account):
    """{resource: (max or None, where it comes from: account, site, built-in or None)}."""
    rows = _rows(conn, account)
    out = {}
    for resource in RESOURCES:
        if (account, resource) in rows and account is not None:
            out[resource] = (rows[(account, resource)], "account")
        elif (None, resource) in rows:
            out[resource] = (rows[(None, resource)], "site")
        elif resource in BUILTIN:
            out[resource] = (BUILTIN[resource], "built-in")
        else:
            out[resource] = (None, None)
    return out


def usage(conn, account, resources=RESOURCES):
    return {r: int(conn.execute(RESOURCES[r][1], (account,)).fetchone()[0]) for r in resources}


def report(conn, account):
    """[{resource, counts, used, limit, source, used_h, limit_h}] of the account."""
    have, used = limits(conn, account), usage(conn, account)
    return [{"resource": r, "counts": RESOURCES[r][0], "used": used[r], "limit": have[r][0],
             "source": have[r][1], "used_h": shown(r, used[r]), "limit_h": shown(r, have[r][0])}
            for r in RESOURCES]


def lock(conn, account):
    """The account's quota lock, held to the end of the caller's transaction
    (account None: the site's objects, no quota, no lock)."""
    if account is None:
        return
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("oarcloud.quota:%s" % account,))


def require(conn, account, more):
    """Refuse (OverQuota) when account would pass a limit with `more`
    ({resource: amount}) on top of what it uses.  Must run inside the caller's
    transaction, after the path's own table locks and before its insert.
    account None (the site's or the admins' objects) has no quota."""
    if account is None:
        return
    wanted = {check_resource(r): int(n) for r, n in more.items() if n}
    if not wanted:
        return
    lock(conn, account)
    have = limits(conn, account)
    capped = [r for r in wanted if have[r][0] is not None]
    used = usage(conn, account, capped)
    for r in capped:
        if used[r] + wanted[r] > have[r][0]:
            raise _over(r, used[r], have[r][0], wanted[r])


def require_room(conn, account, resource):
    """Refuse (OverQuota) when account has nothing left of resource: the early
    check of work whose size is known only at its end (an image upload)."""
    if account is None:
        return
    limit = limits(conn, account)[check_resource(resource)][0]
    if limit is not None:
        used = usage(conn, account, [resource])[resource]
        if used >= limit:
            raise _over(resource, used, limit)


def _over(resource, used, limit, more=None):
    asks = ", this asks %s more" % shown(resource, more) if more is not None else ""
    return OverQuota(detail="%s: %s used of %s%s (%s): free some, or ask the site's admins "
                            "to raise it" % (resource, shown(resource, used),
                                             shown(resource, limit), asks,
                                             RESOURCES[resource][0]))


def set_limits(conn, account, changes):
    """Set (a value) or clear (None) limits of account (None: the site's
    defaults); returns [(resource, old, new)] of what changed.  Raises
    NotFound (no such account), Refused."""
    changes = {check_resource(r): v for r, v in changes.items()}
    for r, v in changes.items():
        if v is not None and (not isinstance(v, int) or v < 0):
            raise Refused(detail="bad %s quota %r: a whole number >= 0" % (r, v))
    with conn.transaction():
        if account is not None and conn.execute("SELECT 1 FROM accounts WHERE name = %s",
                                                (account,)).fetchone() is None:
            raise NotFound(what="oarcloud user", name=account)
        old = {r: m for (a, r), m in _rows(conn, account).items() if a == account}
        done = []
        for r, v in changes.items():
            if old.get(r) == v:
                continue
            if v is None:
                conn.execute("DELETE FROM quotas WHERE account IS NOT DISTINCT FROM %s"
                             " AND resource = %s", (account, r))
            else:
                conn.execute("INSERT INTO quotas (account, resource, max) VALUES (%s, %s, %s)"
                             " ON CONFLICT (account, resource) DO UPDATE SET max = excluded.max,"
                             " updated = now()", (account, r, v))
            done.append((r, old.get(r), v))
    return done


def listing(conn):
    """[{account ('*' for the site), resource, max}] of every limit set."""
    return [{"account": a or "*", "resource": r, "max": m, "max_h": shown(r, m)}
            for a, r, m in conn.execute("SELECT account, resource, max FROM quotas"
                                        " ORDER BY account NULLS FIRST, resource").fetchall()]
