"""Bringing Suspected nodes back into service, once they are clean and sound.

When a cloud job's prologue or epilogue fails, OAR sets the job's nodes
Suspected and leaves them so (finaud only repairs what its ping checker
suspected).  OAR runs SUSPECTED_HEALING_EXEC_FILE with "resource_id host"
lines on stdin; ours (hooks/heal-nodes) starts a detached worker as root and
returns at once, since OAR waits for it in its main loop.  For each host the
worker repeats, until the node is Alive again or HEAL_WINDOW has passed:

1. ask the node to sweep: remove the instances of every job not running
   there, then check libvirt and Open vSwitch answer (nodeagent sweep);
2. if it is sound, record the ended jobs' instances in the catalog and set
   the node Alive.

`oarcloud-admin node heal HOST...` runs one pass of the same, on demand.
"""
import fcntl
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from oarcloud_lib import commands, paths
from oarcloud_lib.catalog import db, instances, joblog
from oarcloud_lib.service import hooks, lifecycle
from oarcloud_lib.tools import oar, oarssh
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.names import HOST_RE

LOG = logging.getLogger("oarcloud.healing")
HEAL_WINDOW = 3600
RETRY_EVERY = 5
HOST_OK = HOST_RE
LIVE_JOB_STATES = ("Launching", "Running", "Finishing", "Suspended", "Resuming", "toLaunch")


def hosts_from_stdin(text):
    """OAR's "resource_id host" lines -> the hosts, once each, validated."""
    hosts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and HOST_OK.match(parts[1]) and parts[1] not in hosts:
            hosts.append(parts[1])
    return hosts


def jobs_on(host, runner=LOCAL):
    """{job_id: state} of the jobs OAR has on host (not ended)."""
    data = oar.current_jobs(runner)
    return {int(j): job["state"] for j, job in data.items()
            if host in (job.get("assigned_network_address") or [])}


def node_state(host, runner=LOCAL):
    return oar.host_state(oar.resource_states(runner=runner).get(host, []))


def forget_ended_jobs(conn, host, live_jobs, runner=LOCAL):
    """Catalog rows of instances on host whose job OAR no longer runs: failed
    (with OAR's reason) if the job ended in Error, deleted otherwise."""
    ended = []
    for job_id in sorted({r["job_id"] for r in instances.live(conn, node=host)} - set(live_jobs)):
        job = oar.get_job(job_id, runner)
        if job.get("state") == "Error":
            ended.append((job_id, "failed", "the job ended in Error (%s)" % oar.job_reason(job)))
        else:
            ended.append((job_id, "deleted", None))
    lifecycle.end_jobs(conn, ended)


def heal_once(host, runner=LOCAL):
    """One pass on host; returns the problems left (empty: the node is Alive)."""
    live = {j for j, s in jobs_on(host, runner).items() if s in LIVE_JOB_STATES}
    res = runner.run(oarssh.agent_argv(host, "sweep", *sorted(live)), check=False, timeout=180)
    if res.code != 0:
        return [l for l in (res.err or res.out).splitlines() if l.strip()][-3:] or \
            ["sweep failed (%s)" % res.code]
    with db.connect() as conn:
        forget_ended_jobs(conn, host, live, runner)
    if node_state(host, runner) != "Alive":
        oar.OarServer(runner).set_state(host, "Alive")
        LOG.info("%s: clean and sound, back to Alive", host)
    return []


def heal(host, window=HEAL_WINDOW, runner=LOCAL):
    """Retry heal_once until it succeeds or window seconds pass; one worker per host."""
    paths.HEAL_LOCKS.mkdir(parents=True, exist_ok=True)
    with open(paths.HEAL_LOCKS / ("%s.lock" % host), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another worker is on it
        deadline = time.monotonic() + window
        while True:
            try:
                problems = heal_once(host, runner)
            except OarcloudError as e:
                problems = [str(e)]
            if not problems:
                return
            LOG.warning("%s: not healed yet: %s", host, "; ".join(problems))
            if time.monotonic() > deadline or node_state(host, runner) == "Alive":
                return
            time.sleep(RETRY_EVERY)


def cancel_resubmitted(runner=LOCAL):
    """Delete the cloud jobs OAR resubmitted by itself after a failed prologue.

    A cloud job whose instances could not be created ends in Error with the
    reason for its owner; OAR's automatic resubmission would create them later
    behind the owner's back (and again and again if the cause persists)."""
    cancelled = []
    for job_id, job in oar.current_jobs(runner).items():
        original = int(job.get("resubmit_job_id") or 0)
        if original and "cloud" in (job.get("types") or []) and \
                job.get("state") not in ("Terminated", "Error", "Finishing", "toError"):
            oar.delete([job_id], runner, check=False)
            LOG.warning("cancelled job %s: OAR resubmitted failed cloud job %s", job_id, original)
            with db.connect() as conn:
                joblog.add_event(conn, original, "WARNING",
                                 "OAR resubmitted this job as job %s; oarcloud cancelled it: cloud"
                                 " jobs are not retried behind their owner's back" % job_id)
            cancelled.append(int(job_id))
    return cancelled


def worker(hosts):
    try:
        cancel_resubmitted()
    except OarcloudError as e:
        LOG.error("could not check for resubmitted jobs: %s", e)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as pool:
        list(pool.map(heal, hosts))


def main(argv):
    """heal-nodes (from OAR, hosts on stdin) or heal-nodes --worker HOST..."""
    commands.root_entry(paths.ROOT_PATH)
    if argv[:1] == ["--worker"]:
        hooks.log_to_file("healing.log")
        worker([h for h in argv[1:] if HOST_OK.match(h)])
        return 0
    hosts = hosts_from_stdin(sys.stdin.read())
    if not hosts:
        return 0
    # Detached: OAR's main loop waits for this script, not for the worker.
    oarssh.spawn_root_worker("oarcloud_lib.server.healing", "--worker", *hosts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
