"""What the dashboard and the API show, read as who asks.

Each function takes the request's catalog connection and its Viewer.  A
user's connection runs as the user's own catalog role (SET ROLE): the same
row-level security as `oarcloud` on the command line hides every other
account's rows, and each query also names the owner.  Admins, operators and
viewers read everything.
"""
import threading
import time

from oarcloud_lib import metrics
from oarcloud_lib.catalog import accounts, alarms, groups, images, instances, quotas
from oarcloud_lib.catalog.db import dicts
from oarcloud_lib.errors import Forbidden, NotFound, Refused
from oarcloud_lib.names import DOMAIN_RE, HOST_RE

STATES = ("queued", "starting", "running", "stopped", "saving", "deleting", "failed", "deleted")
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
# OAR's node list is read at most this often by a web worker (oarnodes is a
# Perl start-up): every page polls.  A drain or undrain (web, CLI, monitor)
# changes node_drains, which makes every worker read OAR again at once.
NODES_TTL = 5.0
_nodes_cache = {"at": 0.0, "rows": None, "drains": None}
_nodes_lock = threading.Lock()


class Viewer:
    """Who asks: an account, its role, the token that logged them in."""

    def __init__(self, account, role, token=None):
        self.account, self.role, self.token = account, role, token

    @property
    def sees_all(self):
        return self.role in accounts.SEE_ALL

    @property
    def operates(self):
        return self.role in accounts.OPERATE

    @property
    def owner(self):
        """The owner every query is limited to (None: everything)."""
        return None if self.sees_all else self.account

    def public(self):
        return {"account": self.account, "role": self.role, "sees_all": self.sees_all,
                "operates": self.operates}


def _where(who, column="owner", first=True):
    if who.owner is None:
        return "", ()
    return (" WHERE " if first else " AND ") + "%s = %%s" % column, (who.owner,)


def _iso(row, *keys):
    """row with its times (those of keys, or all) as ISO 8601 text."""
    for k in keys or list(row):
        if row.get(k) is not None and hasattr(row[k], "isoformat"):
            row[k] = row[k].isoformat(timespec="seconds")
    return row


# -- nodes (admins, operators, viewers) ------------------------------------------------

def require_all(who):
    if not who.sees_all:
        raise Forbidden(detail="nodes are shown to admins, operators and viewers only")


def nodes(conn, who, runner=None):
    """The inventory of every node (OAR's state, drain, cores, instances,
    memory), OAR read at most every NODES_TTL seconds."""
    from oarcloud_lib.server import nodeops
    from oarcloud_lib.tools import oar
    require_all(who)
    drains = conn.execute("SELECT string_agg(node || ' ' || coalesce(deadline::text, '-'), ','"
                          " ORDER BY node) FROM node_drains").fetchone()[0]
    with _nodes_lock:
        if _nodes_cache["rows"] is None or drains != _nodes_cache["drains"] \
                or time.monotonic() - _nodes_cache["at"] > NODES_TTL:
            _nodes_cache.update(rows=oar.OarServer().nodes(), at=time.monotonic(),
                                drains=drains)
        hosts = _nodes_cache["rows"]
    rows = nodeops.inventory(conn, hosts, with_cache=False)
    return rows


def forget_nodes():
    """The next read asks OAR again (after a drain)."""
    with _nodes_lock:
        _nodes_cache["rows"] = None


def node(conn, who, host):
    if not isinstance(host, str) or not HOST_RE.match(host):
        raise Refused(detail="bad node name %r" % str(host)[:60])
    for row in nodes(conn, who):
        if row["node"] == host:
            return row
    raise NotFound(what="node", name=host)


# -- instances -----------------------------------------------------------------------

def instance_list(conn, who, state=None, owner=None, text=None):
    """Instances not deleted, newest job first; filtered by state, owner (for
    those who see every account) and a text in the name, node or image."""
    sql = "SELECT %s FROM instances WHERE state <> 'deleted'" % ", ".join(instances.COLUMNS)
    args = []
    if who.owner is not None:
        sql += " AND owner = %s"
        args.append(who.owner)
    if state:
        if state not in STATES:
            raise Refused(detail="bad state %r: one of %s" % (state[:20], ", ".join(STATES)))
        sql += " AND state = %s"
        args.append(state)
    if owner and who.owner is None:
        sql += " AND owner = %s"
        args.append(owner)
    if text:
        sql += " AND (name ILIKE %s OR coalesce(node, '') ILIKE %s OR image ILIKE %s)"
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")[:64] + "%"
        args += [like, like, like]
    rows = instances.rows_of(conn.execute(sql + " ORDER BY job_id DESC, idx LIMIT 5000", args))
    return [_public_instance(r) for r in rows]


def _public_instance(r):
    out = {k: r[k] for k in ("name", "domain", "owner", "state", "node", "ip", "image", "cores",
                             "memory", "disk", "job_id", "error") if k in r}
    return _iso(out)


def instance(conn, who, ref):
    """One instance by its domain (oc<job>-<n>) or, for its owner, its name
    (the live one, else the last).  Another account's is not found, alike."""
    if not isinstance(ref, str) or len(ref) > 64:
        raise Refused(detail="bad instance %r" % str(ref)[:64])
    if DOMAIN_RE.match(ref):
        sql, args = "domain = %s", [ref]
    else:
        from oarcloud_lib.catalog import jobspec
        if not jobspec.NAME_PATTERN.match(ref):
            raise Refused(detail="bad instance name %r" % ref)
        sql, args = "name = %s AND owner = %s", [ref, who.account]
    if who.owner is not None:
        sql += " AND owner = %s"
        args.append(who.owner)
    rows = instances.rows_of(conn.execute(
        "SELECT %s FROM instances WHERE %s ORDER BY state IN ('deleted', 'failed'),"
        " created DESC LIMIT 1" % (", ".join(instances.COLUMNS), sql), args))
    if not rows:
        raise NotFound(what="instance", name=ref)
    out = _public_instance(rows[0])
    out["events"] = [_iso(e, "at") for e in dicts(conn.execute(
        "SELECT at, node, level, message FROM job_events WHERE job_id = %s"
        " ORDER BY id DESC LIMIT 200", (rows[0]["job_id"],)))]
    return out


# -- the rest of a tenant's objects ---------------------------------------------------

def pick(rows, who, ref, what, key="id"):
    """The row of rows ref names: its id (digits), else the viewer's own one
    of that name (or, with key "name", the one of that name).  Raises NotFound."""
    ref = str(ref)[:64]
    for r in rows:
        if ref.isdigit() and str(r.get("id")) == ref:
            return r
        if r.get("name") == ref and (key == "name" or r.get("owner") == who.account):
            return r
    raise NotFound(what=what, name=ref)


def network_list(conn, who):
    w, a = _where(who, "n.owner")
    return [_iso(dict(r, cidr=str(r["cidr"]))) for r in dicts(conn.execute(
        "SELECT n.id, n.owner, n.name, n.cidr, n.vni, (SELECT count(*) FROM nics c"
        " WHERE c.network = n.id) AS in_use, n.created FROM networks n" + w
        + " ORDER BY n.owner, n.name", a))]


def image_list(conn, who):
    rows = images.list_usable(conn, who.owner)
    return [_iso({k: r.get(k) for k in ("name", "owner", "visibility", "size", "parent",
                                          "description", "created")}) for r in rows]


def _group_summary(conn, g):
    members = groups.members(conn, g["id"])
    return _iso({"id": g["id"], "owner": g["owner"], "name": g["name"], "size": len(members),
                 "running": sum(1 for m in members if m["state"] == "running"),
                 "desired": g["desired"], "min": g["min_size"], "max": g["max_size"],
                 "target": "%s=%g" % (g["target_metric"], g["target_value"])
                 if g["target_metric"] else None, "alloc": g["alloc"]}), members


def group_list(conn, who):
    return [_group_summary(conn, g)[0] for g in groups.owned(conn, who.owner)]


def group(conn, who, group_id):
    """One group by its id: its members, its scaling history, its balancer."""
    if not str(group_id).isdigit():
        raise Refused(detail="bad group id %r" % str(group_id)[:20])
    rows = [g for g in groups.owned(conn, who.owner) if g["id"] == int(group_id)]
    if not rows:
        raise NotFound(what="group", name=str(group_id))
    out, members = _group_summary(conn, rows[0])
    out["members"] = [_iso({k: m[k] for k in ("name", "state", "node", "ip", "added")})
                      for m in members]
    out["history"] = [_iso(h, "at") for h in dicts(conn.execute(
        "SELECT at, action, before, after, reason FROM group_history WHERE group_id = %s"
        " ORDER BY id DESC LIMIT 100", (out["id"],)))]
    lb = conn.execute("SELECT id, name FROM balancers WHERE group_id = %s",
                      (out["id"],)).fetchone()
    out["balancer"] = {"id": lb[0], "name": lb[1]} if lb else None
    return out


def balancer_list(conn, who):
    from oarcloud_lib.server import balancers
    w, a = _where(who, "b.owner")
    out = []
    for r in dicts(conn.execute(
            "SELECT b.id, b.owner, b.name, b.port, b.listen_port, b.algorithm, b.check_kind,"
            " b.group_id, g.name AS group_name, b.created FROM balancers b JOIN scaling_groups g"
            " ON g.id = b.group_id" + w + " ORDER BY b.owner, b.name", a)):
        r["address"] = balancers.address(r)
        r["members"] = balancers.health(r)
        r["metrics"] = metrics.last_values(conn, "lb", r["id"])
        out.append(_iso(r))
    return out


def alarm_list(conn, who):
    if who.owner is None:
        rows = alarms.every(conn)
    else:
        rows = alarms.owned(conn, who.owner)
    keep = ("id", "owner", "name", "kind", "subject", "metric", "op", "threshold", "period",
            "periods", "state")
    return [_iso({k: r.get(k) for k in keep}) for r in rows]


def notification_list(conn, who, limit=200):
    w, a = _where(who)
    if who.owner is None:
        w = ""
    return [_iso(r) for r in dicts(conn.execute(
        "SELECT id, owner, event, title, state, attempts, last_error, created, sent"
        " FROM notifications" + w + " ORDER BY id DESC LIMIT %s", a + (limit,)))]


def events(conn, who, since_id=0, limit=100):
    """Recent job events (of the viewer's own jobs for a user), newest first."""
    sql = ("SELECT e.id, e.at, e.job_id, e.node, e.level, e.message FROM job_events e"
           " WHERE e.id > %s")
    args = [int(since_id)]
    if who.owner is not None:
        sql += " AND EXISTS (SELECT 1 FROM instances i WHERE i.job_id = e.job_id AND i.owner = %s)"
        args.append(who.owner)
    return [_iso(r, "at") for r in dicts(conn.execute(sql + " ORDER BY e.id DESC LIMIT %s",
                                                      args + [limit]))]


def quota(conn, who):
    """who's quota report.  Their groups' lines count the other members'
    objects, which who's own role may not read: counted as the site (as the
    broker's `quota` is), about who alone, then back to who's role."""
    if who.owner is None:
        return []
    from psycopg import sql
    role = conn.execute("SELECT current_user").fetchone()[0]
    conn.execute("RESET ROLE")
    try:
        return quotas.report(conn, who.owner)
    finally:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


def overview(conn, who):
    """The landing page: nodes by state and capacity (for those who see all),
    instances by state, alarms firing, recent events, quota use."""
    w, a = _where(who)
    by_state = dict(conn.execute("SELECT state, count(*) FROM instances"
                                 + (w + " AND" if w else " WHERE")
                                 + " state <> 'deleted' GROUP BY state", a).fetchall())
    firing = [r for r in alarm_list(conn, who) if r["state"] == "alarm"]
    out = {"viewer": who.public(), "instances": by_state, "alarms_firing": firing,
           "instances_live": sum(n for st, n in by_state.items() if st != "failed"),
           "events": events(conn, who, limit=15), "quota": quota(conn, who)}
    if who.sees_all:
        rows = nodes(conn, who)
        states = {}
        now_iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        for r in rows:
            key = "drained" if r["drain"] == "yes" else "maintenance" if any(
                w["starts"] <= now_iso < w["ends"] for w in r.get("maintenance", ())) \
                else r["state"]
            states[key] = states.get(key, 0) + 1
        out["nodes"] = {"count": len(rows), "by_state": states,
                        "cores": sum(r["cores"] for r in rows),
                        "cores_used": sum(r["cores_used"] for r in rows),
                        "cores_free": sum(r["cores_free"] for r in rows),
                        "list": [{"node": r["node"], "state": r["state"], "drain": r["drain"],
                                  "cores_used": r["cores_used"], "cores": r["cores"],
                                  "instances": len(r["instances"])} for r in rows]}
    return out


# -- metrics ------------------------------------------------------------------------------

def series(conn, who, kind, subject, metric, range_="1h", now=None):
    """[(epoch, value)] of a subject's metric over a range (1h, 24h, 7d), at
    the finest step kept that long; a subject the viewer may not see is not
    found.  Raises Refused, NotFound."""
    if kind not in metrics.METRICS:
        raise Refused(detail="bad kind %r: one of %s" % (str(kind)[:20], ", ".join(metrics.METRICS)))
    metrics.check_metric(metric, kind)
    if range_ not in RANGES:
        raise Refused(detail="bad range %r: one of %s" % (str(range_)[:20], ", ".join(RANGES)))
    if not isinstance(subject, str) or len(subject) > 255:
        raise Refused(detail="bad subject")
    if kind == "node":
        require_all(who)
    elif kind == "instance":
        instance(conn, who, subject)   # the viewer's, or NotFound
    elif who.owner is not None and conn.execute(
            "SELECT 1 FROM balancers WHERE id::text = %s AND owner = %s",
            (subject, who.owner)).fetchone() is None:
        raise NotFound(what="balancer", name=subject)
    now = time.time() if now is None else now
    points = metrics.series(conn, kind, subject, metric, RANGES[range_], now)
    unit = metrics.METRICS[kind][metric].unit
    return {"kind": kind, "subject": subject, "metric": metric, "range": range_, "unit": unit,
            "points": [[round(t), v] for t, v in points]}
