"""Node operations (F.a.1): the site's nodes as OAR and oarcloud see them,
and taking one out of service without killing anyone's job early.

    inventory(conn)            every node: OAR state, drain, cores, instances, memory, cache
    drain(conn, host, deadline)   no new job on any of its resources; owners told
    undrain(conn, host)
    enforce(conn, now)         (the monitor) jobs still on a node past its drain deadline end
    add(conn, host, cores, props)      its resources in OAR; Alive once its agent answers
    remove(conn, host, force)          its resources out of OAR (--force: drained first)
    maintenance(conn, host, at, span)  an advance reservation of the whole host in OAR

A drain is OAR's own (`oarnodesetting -d on` on every resource of the host:
the whole host, never some of its cores), recorded in the catalog with its
deadline so that the monitor ends what still runs there once it passes.
Before the deadline nothing is ended; without one, jobs run to their walltime.
"""
import datetime
import json
import logging

from oarcloud_lib import metrics
from oarcloud_lib.catalog import instances
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
from oarcloud_lib.names import HOST_RE, OAR_PROPERTY_RE, OAR_VALUE_RE
from oarcloud_lib.server import notify
from oarcloud_lib.service import fanout
from oarcloud_lib.tools import oar, oarssh

LOG = logging.getLogger("oarcloud.nodes")
MAX_DEADLINE = 365 * 86400
MAINT_JOB_NAME = "oarcloud-maintenance"
MAINT_MAX = 30 * 86400
# Properties an admin may set with `node add --property` (OAR's own and
# oarcloud's are not theirs to set there).
OWN_PROPERTIES = {"host", "cpu", "core", "cloud", "state", "network_address", "resource_id",
                  "drain", "available_upto", "last_available_upto", "besteffort", "deploy",
                  "desktop_computing", "expiry_date", "type", "cpuset", "state_num",
                  "suspended_jobs", "scheduler_priority", "next_state", "finaud_decision",
                  "next_finaud_decision", "last_job_date"}


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
    m = metrics.DURATION_RE.match(text)
    if m:
        seconds = int(m.group(1)) * metrics.UNIT_SECONDS[m.group(2)]
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
    maint = windows(conn)
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
            "cache_entries": cache["entries"] if cache else None,
            "maintenance": [{"starts": w["starts"], "ends": w["ends"], "job_id": w["job_id"]}
                            for w in maint if w["node"] == host]})
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


# -- adding and removing nodes ------------------------------------------------------------

def parse_properties(items, known):
    """['K=V', ...] -> {K: V}: names OAR has (known) and an admin may set,
    plain values.  Raises Refused."""
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not OAR_PROPERTY_RE.match(key) or not OAR_VALUE_RE.match(value):
            raise Refused(detail="bad --property %r: NAME=VALUE, a lower-case name and a value "
                                 "of letters, digits, . _ -" % str(item)[:80])
        if key in OWN_PROPERTIES:
            raise Refused(detail="--property %s is OAR's or oarcloud's own, not set here" % key)
        if key not in known:
            raise Refused(detail="OAR has no property %r: create it first (oarproperty -a %s)"
                                 % (key, key))
        out[key] = value
    return out


def _agent_answers(host):
    return _cache(host) is not None


def add(conn, host, cores, props=(), runner=LOCAL, answers=_agent_answers):
    """host's resources in OAR (one per core, cloud=YES, props), idempotent;
    Alive once its node agent answers through OAR's ssh (a node not set up
    yet stays as OAR has it: `oarcloud-admin setup node` on it, then again).
    Returns {node, cores, added, properties, reachable, state, changed}."""
    if not isinstance(host, str) or not HOST_RE.match(host):
        raise Refused(detail="bad host name %r" % str(host)[:60])
    if not isinstance(cores, int) or not 1 <= cores <= 1024:
        raise Refused(detail="--cores must be between 1 and 1024")
    server = oar.OarServer(runner)
    props = parse_properties(props, server.properties())
    have = server.nodes().get(host, [])
    cores_have = {int(r.get("core") or 0) for r in have}
    added = [c for c in range(1, cores + 1) if c not in cores_have]
    for core in added:   # Absent until its agent answers: no job lands on it before
        server.add_resource(host, dict({"host": host, "cpu": 1, "core": core, "cloud": "YES"},
                                       **props), state="Absent")
    changed = bool(added)
    if have and any(r.get("cloud") != "YES" or any(str(r.get(k)) != v for k, v in props.items())
                    for r in have):
        server.set_properties(host, dict({"cloud": "YES"}, **props))
        changed = True
    reachable = answers(host)
    have = server.nodes().get(host, [])
    if reachable and any(r.get("state") != "Alive" for r in have):
        server.set_state(host, "Alive")
        changed = True
    LOG.info("node %s added (%d cores, %d new)%s", host, cores, len(added),
             "" if reachable else ": its agent does not answer yet")
    return {"node": host, "cores": len(have), "added": len(added), "properties": props,
            "reachable": reachable, "state": oar.host_state(server.nodes().get(host, [])),
            "changed": changed}


def remove(conn, host, force=False, timeout=120, runner=LOCAL):
    """host's resources out of OAR, with its drain and maintenance windows.
    Refused (Conflict) while jobs run there, unless force: then it is
    drained with a deadline of now, what runs there is ended, and it goes
    once they have.  Returns {node, resources, ended, changed}."""
    import time
    from oarcloud_lib import daemons
    from oarcloud_lib.server import healing
    server = oar.OarServer(runner)
    hosts = server.nodes()
    check_host(host, hosts)
    jobs = sorted(j for j in healing.jobs_on(host, runner)
                  if j not in _maintenance_jobs(conn, host))
    if jobs and not force:
        raise Conflict(what="node %s" % host,
                       detail="jobs %s run there: drain it and wait, or --force (drained, "
                              "their jobs ended now)" % ", ".join(map(str, jobs)))
    ended = []
    if jobs:
        drain(conn, host, datetime.datetime.now(datetime.timezone.utc), runner=runner)
        ended = enforce(conn, time.time() + 1, runner).get(host, [])
        if not daemons.wait_for(lambda: not healing.jobs_on(host, runner), timeout=timeout,
                                interval=0.5):
            raise Conflict(what="node %s" % host, detail="its jobs are still ending; it stays "
                                                          "drained: try again")
    for job_id in _maintenance_jobs(conn, host):
        oar.delete([job_id], runner, user="oar", check=False)
    ids = [str(r["resource_id"]) for r in hosts[host]]
    server.set_state(host, "Dead")   # OAR removes only Dead resources
    if not daemons.wait_for(lambda: all(
            r.get("state") == "Dead" for r in oar.resource_states(runner=runner).get(host, [])),
            timeout=60, interval=0.3):
        raise Conflict(what="node %s" % host, detail="OAR did not set it Dead; try again")
    for rid in ids:
        server.remove_resource(rid)
    conn.execute("DELETE FROM node_drains WHERE node = %s", (host,))
    conn.execute("DELETE FROM node_maintenance WHERE node = %s", (host,))
    conn.execute("DELETE FROM node_states WHERE node = %s", (host,))
    LOG.info("node %s removed (%d resources, jobs ended: %s)", host, len(ids), ended or "-")
    return {"node": host, "resources": len(ids), "ended": ended, "changed": True}


# -- maintenance windows ---------------------------------------------------------------

def parse_span(text):
    """'30m', '4h', '2d' -> seconds, from 1 minute to 30 days.  Raises Refused."""
    try:
        seconds = metrics.parse_duration(str(text).strip())
    except Refused:
        seconds = 0
    if not 60 <= seconds <= MAINT_MAX:
        raise Refused(detail="bad --for %r: a duration from 1m to 30d (30m, 4h, 2d)"
                             % str(text)[:40])
    return seconds


def _maintenance_jobs(conn, host):
    return [r[0] for r in conn.execute("SELECT job_id FROM node_maintenance WHERE node = %s",
                                       (host,))]


def windows(conn, host=None):
    """[{job_id, node, starts, ends}] of the maintenance windows not over."""
    sql = "SELECT job_id, node, starts, ends FROM node_maintenance WHERE ends > now()"
    args = ()
    if host is not None:
        sql += " AND node = %s"
        args = (host,)
    return [{"job_id": j, "node": n, "starts": s.isoformat(), "ends": e.isoformat()}
            for j, n, s, e in conn.execute(sql + " ORDER BY starts", args).fetchall()]


def maintenance(conn, host, at, seconds, runner=LOCAL):
    """A maintenance window on host from at (a datetime) for seconds: an
    advance reservation of every core of the host in OAR, so that OAR
    schedules no job there that would still run then.  The same window
    again changes nothing.  Returns {node, job_id, starts, ends, changed}.
    Raises Refused (OAR cannot reserve the host then: jobs already hold
    it), NotFound."""
    server = oar.OarServer(runner)
    hosts = server.nodes()
    check_host(host, hosts)
    ends = at + datetime.timedelta(seconds=seconds)
    for w in windows(conn, host):
        if datetime.datetime.fromisoformat(w["starts"]) == at \
                and datetime.datetime.fromisoformat(w["ends"]) == ends:
            return dict(w, changed=False)
    local = at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    job_id = oar.submit([], "host=1,walltime=%d:%02d:00" % (seconds // 3600,
                                                           seconds % 3600 // 60),
                        "sleep %d" % (seconds + 60), runner, user=oar.MAINT_USER, at=local,
                        directory=oar.MAINT_HOME,
                        options={"-p": "host='%s'" % host, "-n": MAINT_JOB_NAME,
                                 "-O": "/dev/null", "-E": "/dev/null"})
    conn.execute("INSERT INTO node_maintenance (job_id, node, starts, ends) VALUES"
                 " (%s, %s, %s, %s)", (job_id, host, at, ends))
    LOG.info("node %s: maintenance from %s for %d s (OAR reservation %d)", host, at, seconds,
             job_id)
    return {"node": host, "job_id": job_id, "starts": at.isoformat(), "ends": ends.isoformat(),
            "changed": True}


def cancel_maintenance(conn, host, runner=LOCAL, job_id=None):
    """Cancel host's maintenance windows (their reservations deleted), or only
    the one of OAR job job_id; returns their job ids."""
    if not isinstance(host, str) or not HOST_RE.match(host):
        raise Refused(detail="bad host name %r" % str(host)[:60])
    jobs = [j for j in _maintenance_jobs(conn, host) if job_id is None or j == job_id]
    if jobs:
        oar.delete(jobs, runner, user="oar", check=False)
        conn.execute("DELETE FROM node_maintenance WHERE node = %s AND job_id = ANY(%s)",
                     (host, jobs))
    return jobs
