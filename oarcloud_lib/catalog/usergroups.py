"""Groups of users (F.a.3): named sets of accounts that an admin keeps.

A group is written @NAME wherever a user may be given: an image or a network
shared with @NAME is shared with each of its members (today's and
tomorrow's), and `quota set @NAME` limits what its members hold together
(catalog.quotas).  Groups do not nest.  A user sees the groups they are in
and who else is in them; only admins change them.

    grantee(text)          'alice' -> ('account', 'alice'); '@devs' -> ('usergroup', 'devs')
    GRANTED_SQL            the SQL test "this share row reaches user %s"
"""
from oarcloud_lib.errors import Conflict, NotFound, Refused
from oarcloud_lib.names import USER_RE

# A share row (columns account, usergroup) reaches the user given twice as
# parameters: named, or through one of their groups.
GRANTED_SQL = "(%(t)s.account = %%s OR %(t)s.usergroup IN (SELECT usergroups_of(%%s)))"
MAX_MEMBERS = 10000


def granted(table):
    """GRANTED_SQL for the share table (or alias) `table`: two %s, the user twice."""
    return GRANTED_SQL % {"t": table}


def check_name(name):
    """A group's name: the shape of a Unix name (without its @).  Raises Refused."""
    if not isinstance(name, str) or not USER_RE.match(name):
        raise Refused(detail="bad group name %r: 1-32 of a-z, 0-9, '_' or '-', starting "
                             "with a letter or '_' (written @NAME where a user may be given)"
                      % (str(name)[:40],))
    return name


def grantee(text):
    """('account', NAME) for a user, ('usergroup', NAME) for @NAME.  Raises Refused."""
    text = str(text)
    if text.startswith("@"):
        return "usergroup", check_name(text[1:])
    if not USER_RE.match(text):
        raise Refused(detail="bad user %r: a user name, or @GROUP for a group of users"
                      % text[:40])
    return "account", text


def shown(kind, name):
    return "@" + name if kind == "usergroup" else name


def require_grantee(conn, text):
    """grantee(text) of an existing account or group.  Raises Refused, NotFound."""
    kind, name = grantee(text)
    table = "usergroups" if kind == "usergroup" else "accounts"
    if conn.execute("SELECT 1 FROM %s WHERE name = %%s" % table, (name,)).fetchone() is None:
        raise NotFound(what="group of users" if kind == "usergroup" else "oarcloud user",
                       name=shown(kind, name))
    return kind, name


def exists(conn, name):
    return conn.execute("SELECT 1 FROM usergroups WHERE name = %s",
                        (check_name(name),)).fetchone() is not None


def _require(conn, name):
    if not exists(conn, name):
        raise NotFound(what="group of users", name="@" + name)


def members(conn, name):
    return [r[0] for r in conn.execute("SELECT account FROM usergroup_members WHERE usergroup = %s"
                                       " ORDER BY account", (name,))]


def of_account(conn, account):
    """The groups account is in, sorted."""
    return [r[0] for r in conn.execute("SELECT usergroup FROM usergroup_members"
                                       " WHERE account = %s ORDER BY usergroup", (account,))]


def _accounts(conn, users):
    users = list(dict.fromkeys(users))
    for u in users:
        if not isinstance(u, str) or not USER_RE.match(u):
            raise Refused(detail="bad user name %r" % (str(u)[:40],))
    known = {r[0] for r in conn.execute("SELECT name FROM accounts WHERE name = ANY(%s)",
                                        (users,))}
    missing = [u for u in users if u not in known]
    if missing:
        raise NotFound(what="oarcloud user", name=", ".join(missing))
    return users


def create(conn, name, users=()):
    """A new group with users in it; returns (row, created?).  Idempotent: an
    existing group gets the users it lacks.  Raises Refused, NotFound."""
    check_name(name)
    with conn.transaction():
        users = _accounts(conn, users)
        if conn.execute("SELECT 1 FROM accounts WHERE name = %s", (name,)).fetchone():
            # Not a rule of the catalog, but @alice and alice would read as one.
            raise Conflict(what="group of users", detail="%s is a user's name: pick another"
                           % name)
        created = conn.execute("INSERT INTO usergroups (name) VALUES (%s) ON CONFLICT DO NOTHING",
                               (name,)).rowcount == 1
        added = _add(conn, name, users)
    return show(conn, name), created, added


def _add(conn, name, users):
    return [u for u in users if conn.execute(
        "INSERT INTO usergroup_members (usergroup, account) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING", (name, u)).rowcount == 1]


def add(conn, name, users):
    """Put users in the group; returns those who were not in it."""
    check_name(name)
    with conn.transaction():
        _require(conn, name)
        users = _accounts(conn, users)
        if len(members(conn, name)) + len(users) > MAX_MEMBERS:
            raise Refused(detail="a group holds at most %d users" % MAX_MEMBERS)
        return _add(conn, name, users)


def remove(conn, name, users):
    """Take users out of the group; returns those who were in it.  What they
    run keeps running; what the group gives them (shares, its quota) stops
    for new creations."""
    check_name(name)
    with conn.transaction():
        _require(conn, name)
        return [r[0] for r in conn.execute(
            "DELETE FROM usergroup_members WHERE usergroup = %s AND account = ANY(%s)"
            " RETURNING account", (name, list(users)))]


def delete(conn, name):
    """Delete the group: its shares and quotas go with it.  False if it was not there."""
    check_name(name)
    return conn.execute("DELETE FROM usergroups WHERE name = %s", (name,)).rowcount == 1


def show(conn, name):
    """{name, members, created, images (shared with it), networks (OWNER/NAME), quotas}."""
    check_name(name)
    row = conn.execute("SELECT name, created FROM usergroups WHERE name = %s",
                       (name,)).fetchone()
    if row is None:
        raise NotFound(what="group of users", name="@" + name)
    return {"name": row[0], "members": members(conn, name), "created": row[1],
            "images": [r[0] for r in conn.execute(
                "SELECT image FROM image_shares WHERE usergroup = %s ORDER BY image", (name,))],
            "networks": [r[0] for r in conn.execute(
                "SELECT n.owner || '/' || n.name FROM network_shares s JOIN networks n"
                " ON n.id = s.network WHERE s.usergroup = %s ORDER BY 1", (name,))],
            "quotas": {r: m for r, m in conn.execute(
                "SELECT resource, max FROM quotas WHERE usergroup = %s ORDER BY resource",
                (name,))}}


def listing(conn, account=None):
    """[{name, members, created}] of every group (account: of the groups it is in)."""
    sql = ("SELECT g.name, g.created, coalesce(array_agg(m.account ORDER BY m.account)"
           " FILTER (WHERE m.account IS NOT NULL), '{}') FROM usergroups g"
           " LEFT JOIN usergroup_members m ON m.usergroup = g.name")
    args = []
    if account is not None:
        sql += " WHERE g.name IN (SELECT usergroups_of(%s))"
        args.append(account)
    return [{"name": n, "members": list(m), "created": c}
            for n, c, m in conn.execute(sql + " GROUP BY g.name ORDER BY g.name", args)]
