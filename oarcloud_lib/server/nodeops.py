"""Node operations (F.a.1): the site's nodes as OAR and oarcloud see them,
and taking one out of service without killing anyone's job early.

    inventory(conn)            every node: OAR state, drain, cores, instances, memory, cache
    drain(conn, host, deadline)   no new job on any of its resources; owners told
    undrain(conn, host)
    enforce(conn, now)         (the monitor) jobs still on a node past its drain deadline end

A drain is OAR's own (`oarnodesetting -d on` on every resource of the host:
the whole host, never some of its cores), recorded in the catalog with its
deadline so that the monitor ends what still runs there once it passes.
Before the deadline nothing is ended; without one, jobs run to their walltime.
"""
import datetime
import json
import logging
import re

from oarcloud_lib.catalog import instances
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotFound, OarcloudError, Refused
from oarcloud_lib.names import HOST_RE
from oarcloud_lib.server import notify
from oarcloud_lib.service import fanout
from oarcloud_lib.tools import oar, oarssh

LOG = logging.getLogger("oarcloud.nodes")
DURATION_RE = re.compile(r"([0-9]{1,6})([smhd])\Z")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DEADLINE = 365 * 86400


def check_host(host, hosts):
    """host as one of OAR's nodes (hosts: host -> resources).  Raises Refused, NotFound."""
    if not isinstance(host, str) or not HOST_RE.match(host):
        raise Refused(detail="bad host name %r" % str(host)[:60])
    if host not in hosts:
        raise NotFound(what="node", name="%s (not in OAR: oarcloud-admin node list)" % host)
    return host


def parse_deadline(text, now):
    """'30m', '2h', '1d' from now, or an ISO 8601 time (UTC unless it says) ->
    a timezone-aware datetime in the future.  Raises Refused."""
    text = str(text).strip()
    m = DURATION_RE.match(text)
    if m:
        seconds = int(m.group(1)) * UNITS[m.group(2)]
    else:
        try:
            at = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise Refused(detail="bad deadline %r: a duration (30m, 2h, 1d) or a time "
                                 "(2026-12-24T08:00)" % text[:40]) from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=datetime.timezone.utc)
        seconds = at.timestamp() - now
    if not 0 < seconds <= MAX_DEADLINE:
        raise Refused(detail="deadline %r is not in the coming year" % text[:40])
    return datetime.datetime.fromtimestamp(now + seconds, datetime.timezone.utc).replace(
        microsecond=0)


def _job_ids(value):
    """The job ids of an `oarnodes -J` resource's `jobs` (a number, "1,2" or a list)."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [int(j) for j in map(str, items) if j.strip().isdigit()]


def _drains(conn):
    return {n: {"deadline": d, "since": c, "enforced": e} for n, d, c, e in conn.execute(
        "SELECT node, deadline, created, enforced FROM node_drains").fetchall()}


def _cache(host):
    """{bytes, entries} of the node's image cache, from its agent (None if unreachable)."""
    try:
        return json.loads(LOCAL.out(oarssh.agent_argv(host, "facts"), timeout=30))["cache"]
    except (OarcloudError, ValueError, KeyError):
        return None


def _memory(conn, host):
    row = conn.execute("SELECT value FROM samples WHERE kind = 'node' AND subject = %s AND"
                       " metric = 'memory' AND step = 0 ORDER BY t DESC LIMIT 1",
                       (host,)).fetchone()
    return int(row[0]) if row else None


def inventory(conn, hosts=None, with_cache=True, runner=LOCAL):
    """[{node, state, drain, deadline, cores, cores_used, cores_free, jobs,
    instances, memory_used, cache_bytes}] of every node OAR has."""
    hosts = oar.OarServer(runner).nodes() if hosts is None else hosts
    drains = _drains(conn)
    live = instances.live(conn)
    caches = {}
    if with_cache and hosts:
        fanout.parallel(sorted(hosts), lambda h: caches.__setitem__(h, _cache(h)))
    out = []
    for host, res in sorted(hosts.items()):
        drained = {r.get("drain") == "YES" for r in res}
        used = [r for r in res if r.get("jobs")]
        jobs = sorted({int(j) for r in used for j in _job_ids(r["jobs"])})
        mine = [i for i in live if i["node"] == host]
        d = drains.get(host, {})
        cache = caches.get(host)
        out.append({
            "node": host, "state": oar.host_state(res),
            "drain": "yes" if drained == {True} else "partly" if True in drained else "no",
            "deadline": d["deadline"].isoformat() if d.get("deadline") else None,
            "cloud": sorted({r.get("cloud", "?") for r in res}),
            "cores": len(res), "cores_used": len(used), "cores_free": len(res) - len(used),
            "jobs": jobs, "instances": [i["name"] for i in mine],
            "instance_owners": sorted({i["owner"] for i in mine}),
            "memory_used": _memory(conn, host),
            "cache_bytes": cache["bytes"] if cache else None,
            "cache_entries": cache["entries"] if cache else None})
    return out


def drain(conn, host, deadline=None, now=None, runner=LOCAL):
    """Drain host (with a deadline, a datetime, or None); idempotent.  Owners of
    instances there are told when the drain or its deadline is new.  Returns
    {node, changed, deadline, instances, told}."""
    import time
    now = time.time() if now is None else now
    server = oar.OarServer(runner)
    hosts = server.nodes()
    check_host(host, hosts)
    had = _drains(conn).get(host)
    oar_drained = all(r.get("drain") == "YES" for r in hosts[host])
    if not oar_drained:
        server.set_drain(host, True)
    with conn.transaction():
        conn.execute("INSERT INTO node_drains (node, deadline) VALUES (%s, %s)"
                     " ON CONFLICT (node) DO UPDATE SET deadline = excluded.deadline,"
                     " enforced = NULL", (host, deadline))
    changed = not oar_drained or had is None or had["deadline"] != deadline
    live = instances.live(conn, node=host)
    told = 0
    if changed:
        when = ("it is ended at %s unless it ends before" % deadline.strftime("%Y-%m-%d %H:%M UTC")
                if deadline else "it runs until its walltime ends")
        for row in live:
            told += len(notify.enqueue_event(conn, row["owner"], "node_drain",
                                             instance=row["name"], node=host, when=when))
    LOG.info("node %s drained (deadline %s): %d instance(s) there, %d told", host,
             deadline, len(live), told)
    return {"node": host, "changed": changed,
            "deadline": deadline.isoformat() if deadline else None,
            "instances": [r["name"] for r in live], "told": told}


def undrain(conn, host, runner=LOCAL):
    """Put host back in service; True if it was drained."""
    server = oar.OarServer(runner)
    hosts = server.nodes()
    check_host(host, hosts)
    was = any(r.get("drain") == "YES" for r in hosts[host])
    if was:
        server.set_drain(host, False)
    gone = conn.execute("DELETE FROM node_drains WHERE node = %s", (host,)).rowcount
    return was or bool(gone)


def enforce(conn, now, runner=LOCAL):
    """End the jobs still on nodes whose drain deadline passed (once per drain);
    returns {node: [job ids ended]}."""
    from oarcloud_lib.server import healing
    due = conn.execute("SELECT node FROM node_drains WHERE deadline <= to_timestamp(%s)"
                       " AND enforced IS NULL", (now,)).fetchall()
    ended = {}
    for (host,) in due:
        jobs = sorted(healing.jobs_on(host, runner))
        if jobs:
            # Only the owner or OAR's user may delete a job.
            oar.delete(jobs, runner, user="oar", check=False)
            LOG.warning("node %s: drain deadline passed, jobs %s ended", host,
                        ", ".join(map(str, jobs)))
            notify.enqueue_event(conn, None, "drain_deadline", node=host,
                                 jobs=", ".join(map(str, jobs)))
        conn.execute("UPDATE node_drains SET enforced = now() WHERE node = %s", (host,))
        ended[host] = jobs
    return ended
