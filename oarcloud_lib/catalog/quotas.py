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

A group of users' limits (`quota set @GROUP`) hold for what its members hold
together, on top of each member's own: require() takes the account's lock,
then each of its groups' locks in name order (one order for everyone, so two
members never wait on each other in a cycle), and counts the members' use.
"""
import re

from oarcloud_lib.errors import NotFound, OverQuota, Refused

# resource -> (what it counts, the account's use, a size in bytes?)
RESOURCES = {
    "instances": ("live instances", "SELECT count(*) FROM instances WHERE owner = ANY(%s)"
                  " AND state NOT IN ('deleted', 'failed')", False),
    "cores": ("cores of live instances", "SELECT coalesce(sum(cores), 0) FROM instances"
              " WHERE owner = ANY(%s) AND state NOT IN ('deleted', 'failed')", False),
    "memory": ("memory of live instances", "SELECT coalesce(sum(memory), 0) FROM instances"
               " WHERE owner = ANY(%s) AND state NOT IN ('deleted', 'failed')", True),
    "disk": ("disk of live instances", "SELECT coalesce(sum(disk), 0) FROM instances"
             " WHERE owner = ANY(%s) AND state NOT IN ('deleted', 'failed')", True),
    "images-bytes": ("bytes of images in the store",
                     "SELECT coalesce(sum(size), 0) FROM images WHERE owner = ANY(%s)", True),
    "volumes-bytes": ("sizes of volumes", "SELECT coalesce(sum(size), 0) FROM volumes"
                      " WHERE owner = ANY(%s)", True),
    "networks": ("private networks", "SELECT count(*) FROM networks WHERE owner = ANY(%s)", False),
    "published-ports": ("published ports", "SELECT count(*) FROM exposures e"
                        " JOIN nics n ON n.id = e.nic JOIN networks w ON w.id = n.network"
                        " WHERE w.owner = ANY(%s)", False),
    "vpn-clients": ("VPN clients", "SELECT count(*) FROM nics n JOIN networks w"
                    " ON w.id = n.network WHERE n.kind = 'vpn' AND w.owner = ANY(%s)", False),
    "alarms": ("alarms", "SELECT count(*) FROM alarms WHERE owner = ANY(%s)", False),
    "targets": ("notification targets",
                "SELECT count(*) FROM notify_targets WHERE owner = ANY(%s)", False),
    # Not a sum: the largest group's --max, checked against each group's own
    # (service.groups); a group's members count in instances and cores too.
    "group-size": ("members of one scaling group (its --max)",
                   "SELECT coalesce(max(max_size), 0) FROM scaling_groups WHERE owner = ANY(%s)",
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
        "SELECT account, resource, max FROM quotas WHERE usergroup IS NULL"
        " AND (account IS NULL OR account = %s)", (account,)).fetchall()}


def group_limits(conn, account):
    """{group: {resource: max}} of the groups account is in that set limits."""
    out = {}
    for g, r, m in conn.execute(
            "SELECT usergroup, resource, max FROM quotas WHERE usergroup IN"
            " (SELECT usergroups_of(%s)) ORDER BY usergroup", (account,)).fetchall():
        out.setdefault(g, {})[r] = m
    return out


def _members(conn, group):
    return [r[0] for r in conn.execute("SELECT account FROM usergroup_members"
                                       " WHERE usergroup = %s", (group,))]


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


def usage(conn, account, resources=RESOURCES, owners=None):
    """{resource: what account (or the accounts owners, together) uses}."""
    owners = owners if owners is not None else [account]
    return {r: int(conn.execute(RESOURCES[r][1], (owners,)).fetchone()[0]) for r in resources}


def _line(resource, used, limit, source):
    return {"resource": resource, "counts": RESOURCES[resource][0], "used": used,
            "limit": limit, "source": source, "used_h": shown(resource, used),
            "limit_h": shown(resource, limit)}


def report(conn, account):
    """[{resource, counts, used, limit, source, used_h, limit_h}] of the account,
    then one line per limit of its groups (source @GROUP, used: the members' together)."""
    have, used = limits(conn, account), usage(conn, account)
    out = [_line(r, used[r], have[r][0], have[r][1]) for r in RESOURCES]
    for group, capped in group_limits(conn, account).items():
        together = usage(conn, None, list(capped), _members(conn, group))
        out += [_line(r, together[r], m, "@" + group) for r, m in capped.items()]
    return out


def group_report(conn, group):
    """report() of a group of users: what its members use together next to
    each limit the group sets (source @GROUP, else None).  Raises NotFound."""
    from oarcloud_lib.catalog import usergroups
    usergroups.check_name(group)
    if not usergroups.exists(conn, group):
        raise NotFound(what="group of users", name="@" + group)
    theirs = dict(conn.execute("SELECT resource, max FROM quotas WHERE usergroup = %s",
                               (group,)).fetchall())
    used = usage(conn, None, RESOURCES, _members(conn, group))
    return [_line(r, used[r], theirs.get(r), "@" + group if r in theirs else None)
            for r in RESOURCES]


def lock(conn, account, group=None):
    """The account's (or the group's) quota lock, held to the end of the caller's
    transaction (account None: the site's objects, no quota, no lock)."""
    if account is None and group is None:
        return
    key = "oarcloud.quota:%s" % account if group is None else "oarcloud.quota:@%s" % group
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


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
    for group, theirs in group_limits(conn, account).items():  # sorted: one lock order
        capped = [r for r in wanted if r in theirs]
        if not capped:
            continue
        lock(conn, None, group)
        used = usage(conn, None, capped, _members(conn, group))
        for r in capped:
            if used[r] + wanted[r] > theirs[r]:
                raise _over(r, used[r], theirs[r], wanted[r], group)


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
    for group, theirs in group_limits(conn, account).items():
        if resource in theirs:
            used = usage(conn, None, [resource], _members(conn, group))[resource]
            if used >= theirs[resource]:
                raise _over(resource, used, theirs[resource], group=group)


def _over(resource, used, limit, more=None, group=None):
    asks = ", this asks %s more" % shown(resource, more) if more is not None else ""
    whose = " by group @%s together" % group if group else ""
    return OverQuota(detail="%s: %s used of %s%s%s (%s): free some, or ask the site's admins "
                            "to raise it" % (resource, shown(resource, used),
                                             shown(resource, limit), whose, asks,
                                             RESOURCES[resource][0]))


def _scope(target):
    """(account, usergroup) of a quota's target: None (the site's defaults),
    USER or @GROUP."""
    if target is None:
        return None, None
    from oarcloud_lib.catalog import usergroups
    kind, name = usergroups.grantee(target)
    return (None, name) if kind == "usergroup" else (name, None)


def set_limits(conn, target, changes):
    """Set (a value) or clear (None) limits of target: USER, @GROUP (what its
    members hold together) or None (the site's defaults); returns
    [(resource, old, new)] of what changed.  Raises NotFound (no such account
    or group), Refused."""
    from oarcloud_lib.catalog import usergroups
    account, group = _scope(target)
    changes = {check_resource(r): v for r, v in changes.items()}
    for r, v in changes.items():
        if v is not None and (not isinstance(v, int) or v < 0):
            raise Refused(detail="bad %s quota %r: a whole number >= 0" % (r, v))
    with conn.transaction():
        if target is not None:
            usergroups.require_grantee(conn, target)
        old = dict(conn.execute("SELECT resource, max FROM quotas WHERE account IS NOT DISTINCT"
                                " FROM %s AND usergroup IS NOT DISTINCT FROM %s",
                                (account, group)).fetchall())
        done = []
        for r, v in changes.items():
            if old.get(r) == v:
                continue
            if v is None:
                conn.execute("DELETE FROM quotas WHERE account IS NOT DISTINCT FROM %s"
                             " AND usergroup IS NOT DISTINCT FROM %s AND resource = %s",
                             (account, group, r))
            else:
                conn.execute("INSERT INTO quotas (account, usergroup, resource, max)"
                             " VALUES (%s, %s, %s, %s) ON CONFLICT (account, usergroup, resource)"
                             " DO UPDATE SET max = excluded.max, updated = now()",
                             (account, group, r, v))
            done.append((r, old.get(r), v))
    return done


def tightest(conn, account, resource):
    """(limit, where it comes from) of resource for account: the smallest of its
    own (or the site's) and its groups' (a per-object limit such as group-size)."""
    limit, source = limits(conn, account)[check_resource(resource)]
    for group, theirs in group_limits(conn, account).items():
        if resource in theirs and (limit is None or theirs[resource] < limit):
            limit, source = theirs[resource], "@" + group
    return limit, source


def listing(conn):
    """[{account ('*' for the site, @GROUP for a group's), resource, max}] of every limit set."""
    return [{"account": "@" + g if g else a or "*", "resource": r, "max": m,
             "max_h": shown(r, m)}
            for a, g, r, m in conn.execute(
                "SELECT account, usergroup, resource, max FROM quotas"
                " ORDER BY account NULLS FIRST, usergroup NULLS FIRST, resource").fetchall()]
