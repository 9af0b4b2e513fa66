"""Live resize of an instance: more or fewer cores, more or less memory,
within what its OAR job holds on its node (docs/resize.md).

    resize(conn, owner, name, cores=None, memory=None) -> {...}

OAR owns the reservation: an instance may take the cores its job holds on
its node that the job's other instances there do not, never more (OAR
cannot grow a running job's resources).  Its memory stays within the site's
memory_per_core for its cores, and the owner's quotas count what it adds.
The node applies it (node.resize, through the node agent) and reads it
back; a memory shrink the instance cannot follow is `infeasible` and
changes nothing.  Each resize is one event of the instance's job, with the
values before and after.  Called by the broker (as root, for the owner), and
by the scaler to come.
"""
import json
import logging

from oarcloud_lib import config
from oarcloud_lib.catalog import instances, jobspec, joblog, quotas
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, Refused
from oarcloud_lib.service import lifecycle
from oarcloud_lib.tools import oarssh

LOG = logging.getLogger("oarcloud.resize")
MIN_MEMORY = 32 << 20


def parse_cores(text):
    """'4' -> 4 (1..1024).  Raises Refused."""
    if not (text or "").isdigit() or not 1 <= int(text) <= 1024:
        raise Refused(detail="bad --cores %r: a whole number from 1 to 1024" % str(text)[:20])
    return int(text)


def parse_memory(text):
    """'512M', '2G' -> bytes, at least 32 MiB.  Raises Refused."""
    size = jobspec.parse_size(text)
    if size < MIN_MEMORY:
        raise Refused(detail="--memory %s is below %d MiB" % (text, MIN_MEMORY >> 20))
    if size > instances.MAX_MEMORY:
        raise Refused(detail="--memory %s is above %d GiB per instance"
                      % (text, instances.MAX_MEMORY >> 30))
    return size


def bounds(conn, row):
    """(The cores row may have at most: its job's on its node less its
    siblings' there, the cores of those siblings)."""
    held = instances.job_cores(conn, row["job_id"], row["node"])
    siblings = [r for r in instances.for_job(conn, row["job_id"], row["node"])
                if r["domain"] != row["domain"] and r["state"] not in ("deleted", "failed")]
    if held is None:  # started before the catalog kept it: what they have now
        held = row["cores"] + sum(r["cores"] for r in siblings)
    others = sum(r["cores"] for r in siblings)
    return held - others, others


def check(conn, owner, row, cores, memory, conf):
    """Refuse a resize that does not fit the job, the site or the quotas,
    before the node is asked.  Raises Refused (OverQuota among them)."""
    top, others = bounds(conn, row)
    if cores > top:
        raise Refused(detail="%d cores do not fit: the job %d holds %d for %s on %s%s; "
                             "launch it with more cores" % (
                                 cores, row["job_id"], top, row["name"], row["node"],
                                 " (its other instances there hold %d more)" % others
                                 if others else ""))
    per_core = conf.memory_per_core
    if per_core and memory > cores * per_core:
        raise Refused(detail="%d MiB of memory for %d core(s): at most %d MiB per core "
                             "(memory_per_core)" % (memory >> 20, cores, per_core >> 20))
    quotas.require(conn, owner, {"cores": max(0, cores - row["cores"]),
                                 "memory": max(0, memory - row["memory"])})


def resize(conn, owner, name, cores=None, memory=None, runner=LOCAL, conf=None):
    """Resize owner's instance name (cores, memory: the new values, None:
    unchanged).  Returns {instance, status (resized, unchanged, infeasible,
    or applied at next start for a stopped one), before: {cores, memory},
    after: {cores, memory}, cpus, reason}.  Raises Refused, NotFound,
    Conflict."""
    if cores is None and memory is None:
        raise Refused(detail="nothing to change: give --cores, --memory or both")
    conf = conf or config.load()
    with conn.transaction():
        row = lifecycle.reachable(conn, owner, name)
        # One resize of a job's instances at a time (they share its cores).
        conn.execute("SELECT domain FROM instances WHERE job_id = %s ORDER BY idx FOR UPDATE",
                     (row["job_id"],))
        row = instances.of_domain(conn, row["domain"])
        want = {"cores": row["cores"] if cores is None else cores,
                "memory": row["memory"] if memory is None else memory}
        before = {"cores": row["cores"], "memory": row["memory"]}
        out = {"instance": name, "before": before, "after": before, "cpus": None,
               "reason": None}
        if want == before:
            return dict(out, status="unchanged")
        check(conn, owner, row, want["cores"], want["memory"], conf)
        argv = oarssh.agent_argv(row["node"], "resize", row["domain"], str(want["cores"]),
                                 str(want["memory"]))
        got = json.loads(runner.out(argv, timeout=60))
        if got["status"] == "infeasible":
            joblog.add_event(conn, row["job_id"], "WARNING", "resize of %s infeasible: %s"
                             % (name, got["reason"]), row["node"])
            return dict(out, status="infeasible", reason=got["reason"], cpus=got["cpus"])
        if got["status"] == "resized" and (got["memory"] is None or
                                           abs(got["memory"] - want["memory"]) >= 1 << 20):
            raise Conflict(what="instance", detail="%s reads %s bytes of memory after the "
                           "resize" % (name, got["memory"]))
        instances.set_size(conn, row["domain"], want["cores"], want["memory"])
        joblog.add_event(conn, row["job_id"], "INFO", "%s resized: %s" % (
            name, describe(before, want)), row["node"])
    LOG.info("%s of %s resized: %s", name, owner, describe(before, want))
    status = "resized" if got["status"] == "resized" else "at next start"
    return dict(out, status=status, after=want, cpus=got["cpus"])


def describe(before, after):
    """'cores 1 -> 2, memory 256 MiB -> 512 MiB' (what changed)."""
    parts = []
    if before["cores"] != after["cores"]:
        parts.append("cores %d -> %d" % (before["cores"], after["cores"]))
    if before["memory"] != after["memory"]:
        parts.append("memory %d MiB -> %d MiB" % (before["memory"] >> 20, after["memory"] >> 20))
    return ", ".join(parts)
