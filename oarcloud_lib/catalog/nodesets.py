"""Node sets (F.a.3): nodes kept for some users and groups of users.

A node set is the nodes whose OAR property PROPERTY is VALUE (`node add
--property`, or `oarnodesetting -p`).  Only the users granted a set, by
name or through a group (@GROUP), may have cloud jobs there; nodes in no
set are everyone's.  It holds twice:

- OAR's admission rule adds to the job's properties a clause that keeps it
  off every set its submitter is not granted (clause()), so OAR never
  schedules it there;
- the prologue checks the nodes OAR gave the job (refused_nodes()), so a
  job that got there anyway (an admin's manual change, a property set
  after the submission) is refused before anything is created.
"""
from oarcloud_lib.catalog import jobspec, usergroups
from oarcloud_lib.errors import NotFound, Refused
from oarcloud_lib.names import OAR_PROPERTY_RE, OAR_VALUE_RE

COLUMNS = ("name", "property", "value", "created")


def check_name(name):
    if not isinstance(name, str) or not jobspec.NAME_PATTERN.match(name):
        raise Refused(detail="bad node set name %r: 1-32 of a-z, 0-9 and '-'" % str(name)[:40])
    return name


def _checked(prop, value):
    if not OAR_PROPERTY_RE.match(prop) or not OAR_VALUE_RE.match(value):
        raise Refused(detail="bad node set property %s=%s" % (prop[:40], value[:70]))
    return prop, value


def get(conn, name):
    row = conn.execute("SELECT %s FROM node_sets WHERE name = %%s" % ", ".join(COLUMNS),
                       (check_name(name),)).fetchone()
    if row is None:
        raise NotFound(what="node set", name=name)
    return dict(zip(COLUMNS, row))


def grants(conn, name):
    """Who may use the set: users, then @GROUPs."""
    return [r[0] for r in conn.execute(
        "SELECT coalesce(account, '@' || usergroup) FROM node_set_grants WHERE node_set = %s"
        " ORDER BY usergroup NULLS FIRST, account", (name,))]


def create(conn, name, prop, value):
    """A set of the nodes whose prop is value; returns (row, created?).
    Idempotent for the same definition.  Raises Refused (a name or a
    property=value taken by another set)."""
    check_name(name)
    _checked(prop, value)
    with conn.transaction():
        conn.execute("LOCK TABLE node_sets IN SHARE ROW EXCLUSIVE MODE")
        found = conn.execute("SELECT name, property, value FROM node_sets WHERE name = %s"
                             " OR (property = %s AND value = %s)", (name, prop, value)).fetchall()
        if (name, prop, value) in [tuple(r) for r in found]:
            return get(conn, name), False
        if found:
            raise Refused(detail="node set %s is %s=%s already: delete it first, or pick "
                                 "another name" % tuple(found[0]))
        conn.execute("INSERT INTO node_sets (name, property, value) VALUES (%s, %s, %s)",
                     (name, prop, value))
    return get(conn, name), True


def delete(conn, name):
    """Delete the set (its nodes are everyone's again); False if it was not there."""
    return conn.execute("DELETE FROM node_sets WHERE name = %s",
                        (check_name(name),)).rowcount == 1


def grant(conn, name, grantee, on=True):
    """Let grantee (a user or @GROUP) use the set, or stop it (what runs keeps
    running); returns changed?.  Raises NotFound, Refused."""
    get(conn, name)
    with conn.transaction():
        kind, who = usergroups.require_grantee(conn, grantee)
        if on:
            return conn.execute("INSERT INTO node_set_grants (node_set, %s) VALUES (%%s, %%s)"
                                " ON CONFLICT DO NOTHING" % kind, (name, who)).rowcount == 1
        return conn.execute("DELETE FROM node_set_grants WHERE node_set = %%s AND %s = %%s"
                            % kind, (name, who)).rowcount == 1


def listing(conn):
    rows = [dict(zip(COLUMNS, r)) for r in conn.execute(
        "SELECT %s FROM node_sets ORDER BY name" % ", ".join(COLUMNS))]
    for r in rows:
        r["granted"] = grants(conn, r["name"])
    return rows


def barred(conn, user):
    """[(name, property, value)] of the sets user is not granted."""
    return [tuple(r) for r in conn.execute(
        "SELECT name, property, value FROM node_sets n WHERE NOT EXISTS (SELECT 1 FROM"
        " node_set_grants s WHERE s.node_set = n.name AND %s) ORDER BY name"
        % usergroups.granted("s"), (user, user))]


def clause(sets):
    """The OAR property expression that keeps a job off the sets
    [(name, property, value)], or '' when there are none.  The property and
    value were checked as plain words: they go in as a column and a quoted
    literal."""
    return " AND ".join("(%s IS NULL OR %s <> '%s')" % (p, p, v)
                        for _, p, v in (s[:1] + _checked(*s[1:]) for s in sets))


def refused_nodes(sets, node_properties):
    """{node: set name} of the nodes (node_properties: {node: {property:
    value}}) that are in one of the sets (those barred to the job's owner)."""
    out = {}
    for node, props in sorted(node_properties.items()):
        for name, prop, value in sets:
            if props.get(prop) == value:
                out[node] = name
                break
    return out
