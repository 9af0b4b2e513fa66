"""Rolling OS updates of the nodes (F.a.1, docs/nodes.md "Rolling updates").

    start(conn, nodes, command, ...)   a run: its nodes queued in order
    drive(conn, run_id, say)           the run carried on until done or stopped
    resume(conn)                       the stopped run, again from where it stopped
    status(conn)                       the last run, its nodes, its capacity

Each node goes through a state kept in the catalog, so that a run cut off
(Ctrl-C, a lost server) resumes where it was:

    queued -> draining -> waiting -> updating -> checking -> done
                                         |            |
                                         +-> failed <-+   (left drained)

or, with reserve (seconds), instead of a drain and a wait:

    queued -> reserving -> reserved -> updating -> checking -> done

- reserving: an advance reservation of the whole node (oarmaint's, as a
  maintenance window) at the earliest time OAR can give it for `reserve`
  seconds: now, else the end of each job OAR runs or plans there, in turn;
  until then OAR keeps starting jobs there that end before it (nothing is
  drained, no job waits longer);
- reserved: until the reservation runs; the update follows, and once the
  node is healthy the reservation ends at once (a failed node is drained,
  then its reservation ends);

- draining: the node is drained (nodeops.drain; the scaler replaces group
  members there elsewhere first; owners are told), with the run's drain
  deadline if it has one;
- waiting: until no job of OAR's runs there (the drain deadline ends them);
- updating: the node agent runs the admin's command (`os-update`, sh -e),
  then restarts libvirtd;
- checking: the node agent's `health` (a container starts, the bridge, the
  image cache, the underlay to the other nodes and the server, OAR's node
  check); then the node is undrained (unless it was drained before).

At most max_unavailable nodes are out at once, and never so many that the
cores in service (nodes Alive and not drained) fall below min_capacity % of
all cores.  Once max_failures nodes have failed the run starts no other node
and stops; the failed stay drained, the rest untouched.
"""
import logging
import math
import time

from oarcloud_lib.catalog import nodes as catalog_nodes
from oarcloud_lib.catalog.db import dicts
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
from oarcloud_lib.server import healing, nodeops
from oarcloud_lib.tools import oar, oarssh

LOG = logging.getLogger("oarcloud.updates")
ACTIVE = ("reserving", "reserved", "draining", "waiting", "updating", "checking")
# How many of OAR's predicted job ends on a node a reservation is tried at.
GAP_TRIES = 8
MAX_COMMAND = 64 << 10
POLL = 1.0


def _run(conn, run_id=None):
    sql = "SELECT * FROM update_runs " + ("WHERE id = %s" if run_id else
                                          "ORDER BY id DESC LIMIT 1")
    rows = dicts(conn.execute(sql, (run_id,) if run_id else ()))
    if not rows:
        raise NotFound(what="update run", name=str(run_id or "(none yet)"))
    return rows[0]


def _nodes(conn, run_id):
    return dicts(conn.execute("SELECT * FROM update_nodes WHERE run_id = %s ORDER BY position",
                              (run_id,)))


def start(conn, nodes, command, max_unavailable=1, min_capacity=50, max_failures=1,
          drain_deadline=None, runner=LOCAL, reserve=None):
    """A new run over nodes (OAR's names, in this order; None: every node);
    reserve: seconds of each node's earliest gap to reserve instead of a
    drain.  Refused while another run is not over (resume it or cancel it)."""
    if not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND:
        raise Refused(detail="--command must be 1 byte to 64 KiB")
    if reserve is not None and (drain_deadline is not None or not 60 <= reserve <= 86400):
        raise Refused(detail="--reserve takes 1 minute to a day, and no --drain-deadline")
    if not 1 <= max_unavailable <= 1024 or not 0 <= min_capacity <= 100 \
            or not 1 <= max_failures <= 1024:
        raise Refused(detail="bad bounds: --max-unavailable 1.., --min-capacity 0..100%, "
                             "--max-failures 1..")
    hosts = oar.OarServer(runner).nodes()
    nodes = sorted(hosts) if nodes is None else list(nodes)
    if not nodes or len(set(nodes)) != len(nodes):
        raise Refused(detail="give each node once (--nodes A,B) or --all")
    for n in nodes:
        nodeops.check_host(n, hosts)
    with conn.transaction():
        conn.execute("LOCK TABLE update_runs IN EXCLUSIVE MODE")
        busy = conn.execute("SELECT id, state FROM update_runs WHERE state IN"
                            " ('running', 'stopped') ORDER BY id DESC LIMIT 1").fetchone()
        if busy:
            raise Conflict(what="node update", detail="run %d is %s: `node update resume` or "
                                                      "`node update cancel` first" % busy)
        run_id = conn.execute(
            "INSERT INTO update_runs (command, max_unavailable, min_capacity, max_failures,"
            " drain_deadline, reserve) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (command, max_unavailable, min_capacity, max_failures, drain_deadline,
             reserve)).fetchone()[0]
        for i, n in enumerate(nodes):
            conn.execute("INSERT INTO update_nodes (run_id, node, position) VALUES (%s, %s, %s)",
                         (run_id, n, i))
    return run_id


def resume(conn):
    """The last run, stopped, set running again (its failures so far no longer
    count against max_failures).  Returns its id."""
    run = _run(conn)
    if run["state"] != "stopped":
        raise Conflict(what="node update", detail="run %d is %s, not stopped" % (
            run["id"], run["state"]))
    failed = sum(1 for n in _nodes(conn, run["id"]) if n["step"] == "failed")
    conn.execute("UPDATE update_runs SET state = 'running', reason = NULL, failures_before = %s,"
                 " updated = now() WHERE id = %s", (failed, run["id"]))
    return run["id"]


def cancel(conn):
    """The last run, not over, cancelled: nothing more is started; nodes it
    drained that are not failed are undrained.  Returns its id."""
    run = _run(conn)
    if run["state"] not in ("running", "stopped"):
        raise Conflict(what="node update", detail="run %d is %s" % (run["id"], run["state"]))
    for n in _nodes(conn, run["id"]):
        if n["step"] in ACTIVE and n["reservation"]:
            nodeops.cancel_maintenance(conn, n["node"], job_id=n["reservation"])
        if n["step"] in ACTIVE and not n["was_drained"]:
            nodeops.undrain(conn, n["node"])
    conn.execute("UPDATE update_runs SET state = 'cancelled', reason = 'cancelled by an admin',"
                 " updated = now() WHERE id = %s", (run["id"],))
    return run["id"]


def status(conn, run_id=None):
    run = _run(conn, run_id)
    nodes = _nodes(conn, run["id"])
    cap = dicts(conn.execute("SELECT at, in_service, total, out_of_service FROM update_capacity"
                             " WHERE run_id = %s ORDER BY at", (run["id"],)))
    return dict(run, nodes=nodes, capacity=cap,
                lowest=min((c["in_service"] for c in cap), default=None))


# -- the run ------------------------------------------------------------------------

def capacity(hosts, drains, out=()):
    """(cores in service, all cores) of OAR's hosts: Alive, not drained, not in out."""
    total = sum(len(res) for res in hosts.values())
    serving = sum(len(res) for h, res in hosts.items()
                  if h not in out and h not in drains and oar.host_state(res) == "Alive"
                  and not any(r.get("drain") == "YES" for r in res))
    return serving, total


def next_wave(queued, active, hosts, drains, run):
    """The queued nodes that may go out now: up to max_unavailable out at
    once, cores in service never below the floor.  Returns (nodes, why not
    more: None or a sentence)."""
    out, wave = set(active), []
    floor = math.ceil(run["min_capacity"] * capacity(hosts, {})[1] / 100.0)
    for node in queued:
        if len(out) >= run["max_unavailable"]:
            break
        serving, total = capacity(hosts, drains, out | {node})
        if serving < floor:
            return wave, ("taking %s out would leave %d of %d cores in service, below the "
                          "floor of %d%% (%d)" % (node, serving, total, run["min_capacity"],
                                                  floor))
        out.add(node)
        wave.append(node)
    return wave, None


def _set(conn, run_id, node, step, error=None):
    conn.execute("UPDATE update_nodes SET step = %s, error = %s,"
                 " started = CASE WHEN started IS NULL THEN now() ELSE started END,"
                 " finished = CASE WHEN %s IN ('done', 'failed') THEN now() END"
                 " WHERE run_id = %s AND node = %s", (step, error, step, run_id, node))


def _agent(node, verb, *args, stdin=None, timeout=1900):
    import json
    res = LOCAL.run(oarssh.agent_argv(node, verb, *args), stdin=stdin, check=False,
                    timeout=timeout)
    try:
        return json.loads(res.out.strip().splitlines()[-1]), res
    except (ValueError, IndexError):
        return None, res


def _advance(conn, run, n, hosts, say, runner):
    """One step of node n's state, as far as it can go now; returns its step."""
    node, step = n["node"], n["step"]
    if step == "reserving":
        window = _reserve_gap(conn, node, run["reserve"], runner)
        conn.execute("UPDATE update_nodes SET step = 'reserved', reservation = %s,"
                     " started = now() WHERE run_id = %s AND node = %s",
                     (window["job_id"], run["id"], node))
        say("%s: reserved from %s for %d s (OAR job %d); jobs that end before run there "
            "meanwhile" % (node, window["starts"], run["reserve"], window["job_id"]))
        return "reserved"
    if step == "reserved":
        state = oar.job_state(n["reservation"])
        if state in ("Terminated", "Error"):
            raise Refused(detail="its reservation %d ended (%s) before the update"
                          % (n["reservation"], state))
        if state != "Running":
            return "reserved"
        _set(conn, run["id"], node, "updating")
        say("%s: its reservation runs; updating" % node)
        return "updating"
    if step == "draining":
        import datetime
        deadline = datetime.datetime.fromtimestamp(time.time() + run["drain_deadline"],
                                                   datetime.timezone.utc).replace(microsecond=0) \
            if run["drain_deadline"] else None
        nodeops.drain(conn, node, deadline, runner=runner)
        _set(conn, run["id"], node, "waiting")
        say("%s: drained%s; waiting for its jobs to end" % (
            node, " (they end by %s)" % deadline.isoformat() if deadline else ""))
        return "waiting"
    if step == "waiting":
        maint = set(nodeops._maintenance_jobs(conn, node))
        if [j for j in healing.jobs_on(node, runner) if j not in maint]:
            return "waiting"
        _set(conn, run["id"], node, "updating")
        say("%s: no job left; updating" % node)
        return "updating"
    if step == "updating":
        out, res = _agent(node, "os-update", stdin=run["command"])
        if out is None or out.get("exit") != 0:
            why = ("the command exited with %s: %s" % (out["exit"], out["output"][-300:].strip())
                   if out else "the node agent failed: %s" % (res.err or res.out).strip()[-300:])
            _fail(conn, run, n, why, say, runner)
            return "failed"
        _set(conn, run["id"], node, "checking")
        say("%s: updated (%s restarted); checking" % (node, ", ".join(out["restarted"])))
        return "checking"
    if step == "checking":
        peers = [h for h in sorted(hosts) if h != node and oar.host_state(hosts[h]) == "Alive"]
        out, res = _agent(node, "health", *peers, timeout=300)
        if out is None or not out.get("ok"):
            bad = [c["check"] + (": " + c["detail"] if c["detail"] else "")
                   for c in (out or {}).get("checks", []) if not c["ok"]] or \
                [(res.err or res.out).strip()[-300:]]
            why = "health check failed: %s" % "; ".join(bad)
            _fail(conn, run, n, why, say, runner)
            return "failed"
        if n["reservation"]:   # the window ends now
            nodeops.cancel_maintenance(conn, node, runner=runner, job_id=n["reservation"])
        if not n["was_drained"]:
            nodeops.undrain(conn, node, runner=runner)
        _set(conn, run["id"], node, "done")
        say("%s: healthy (%d checks), back in service" % (node, len(out["checks"])))
        return "done"
    return step


def _reserve_gap(conn, node, seconds, runner):
    """The maintenance window (nodeops.maintenance) of node for seconds at the
    earliest time OAR gives it: now, else at the end of each job OAR runs or
    plans there, in turn (GAP_TRIES at most).  Raises Refused."""
    import datetime
    now = int(time.time()) + 5
    tried = []
    for t in sorted({now} | {end + 2 for end in oar.predicted_ends(node) if end + 2 > now}):
        if len(tried) >= GAP_TRIES:
            break
        at = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        try:
            return nodeops.maintenance(conn, node, at, seconds, runner)
        except Refused as e:
            tried.append("%s: %s" % (at.isoformat(), e))
    raise Refused(detail="no gap of %d s on %s at the %d times tried (%s)" % (
        seconds, node, len(tried), "; ".join(tried)[-300:]))


def _fail(conn, run, n, why, say, runner):
    """Node n failed: left out of service (drained, its reservation ended)."""
    _set(conn, run["id"], n["node"], "failed", why[:500])
    job_id = n.get("reservation") or conn.execute(
        "SELECT reservation FROM update_nodes WHERE run_id = %s AND node = %s",
        (run["id"], n["node"])).fetchone()[0]
    if job_id:
        nodeops.drain(conn, n["node"], runner=runner)
        nodeops.cancel_maintenance(conn, n["node"], runner=runner, job_id=job_id)
    say("%s: FAILED: %s (left drained)" % (n["node"], why))


def _record(conn, run_id, hosts, drains, last):
    serving, total = capacity(hosts, drains)
    out = sorted(h for h in hosts if h in drains or oar.host_state(hosts[h]) != "Alive"
                 or any(r.get("drain") == "YES" for r in hosts[h]))
    if (serving, total, out) != last:
        conn.execute("INSERT INTO update_capacity (run_id, in_service, total, out_of_service)"
                     " VALUES (%s, %s, %s, %s)", (run_id, serving, total, out))
    return serving, total, out


def drive(conn, run_id=None, say=print, runner=LOCAL, poll=POLL):
    """Carry the run on until it is done or stops; returns its status."""
    run = _run(conn, run_id)
    if run["state"] != "running":
        raise Conflict(what="node update", detail="run %d is %s" % (run["id"], run["state"]))
    last, stop_reason = None, None
    while True:
        run = _run(conn, run["id"])
        if run["state"] != "running":   # cancelled meanwhile
            return status(conn, run["id"])
        hosts = oar.resource_states(runner=runner)   # OAR's database, not oarnodes, each poll
        drains = catalog_nodes.drained(conn)
        last = _record(conn, run["id"], hosts, drains, last)
        nodes = _nodes(conn, run["id"])
        failed = [n for n in nodes if n["step"] == "failed"]
        active = [n for n in nodes if n["step"] in ACTIVE]
        queued = [n["node"] for n in nodes if n["step"] == "queued"]
        if len(failed) - run["failures_before"] >= run["max_failures"]:
            stop_reason = "%d node(s) failed (%s); the rest is untouched: fix them, then " \
                          "`node update resume`" % (len(failed), ", ".join(
                              n["node"] for n in failed))
            queued = []
        if queued and stop_reason is None:
            wave, why = next_wave(queued, [n["node"] for n in active], hosts, drains, run)
            for node in wave:
                was = node in drains
                conn.execute("UPDATE update_nodes SET step = %s, was_drained = %s"
                             " WHERE run_id = %s AND node = %s",
                             ("reserving" if run["reserve"] else "draining", was, run["id"],
                              node))
            if not wave and not active:
                stop_reason = why or "no node can go out now"
            if wave:
                continue
        if not active:
            state = "stopped" if stop_reason else "done"
            conn.execute("UPDATE update_runs SET state = %s, reason = %s, updated = now()"
                         " WHERE id = %s", (state, stop_reason, run["id"]))
            if stop_reason:
                say("run %d stopped: %s" % (run["id"], stop_reason))
            else:
                say("run %d done: %d node(s) updated" % (run["id"], len(nodes)))
            return status(conn, run["id"])
        moved = False
        for n in active:
            try:
                step = _advance(conn, run, n, hosts, say, runner)
            except OarcloudError as e:
                _fail(conn, run, n, str(e), say, runner)
                step = "failed"
            moved |= step != n["step"]
        if not moved:
            time.sleep(poll)
