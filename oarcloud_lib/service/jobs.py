"""A user's cloud jobs: submitting them with oarsub, following and ending them.

Runs as the calling user: OAR identifies the user, and the catalog is read
through PostgreSQL peer authentication, where row-level security shows each
user only their own instances.
"""
import os
import pwd
import re
import time

import psycopg

from oarcloud_lib.catalog import instances
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotReady, Refused
from oarcloud_lib.tools import oar
from oarcloud_lib.tools.oar import get_job, job_reason

WALLTIME_RE = re.compile(r"^([0-9]{1,4}):([0-5][0-9])(?::([0-5][0-9]))?\Z")
ENDED = oar.ENDED
CATALOG_DB = os.environ.get("OARCLOUD_DB", "oarcloud")


def current_user():
    """The calling Unix user's name (the catalog's row-level security agrees)."""
    return pwd.getpwuid(os.getuid()).pw_name


def connect_as_user():
    """The catalog, as the calling Unix user.  Raises NotReady."""
    try:
        return psycopg.connect(dbname=CATALOG_DB, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise NotReady(detail="cannot reach the oarcloud catalog as you (%s); is your account "
                              "registered (oarcloud-admin user add)?" % str(e).strip()) from None


def check_walltime(text):
    m = WALLTIME_RE.match(text or "")
    if not m or (int(m.group(1)) == 0 and int(m.group(2)) == 0 and not int(m.group(3) or 0)):
        raise Refused(detail="bad walltime %r: use H:MM or H:MM:SS, more than zero" % (text,))
    return text if m.group(3) else text + ":00"


QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")
PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
# A condition on OAR's resource properties (oarsub -p), e.g. "cluster='a' AND
# mem >= 64": names, numbers, quoted words, comparisons, AND/OR/NOT, LIKE.
PROPERTY_RE = re.compile(r"^[A-Za-z0-9_ .,'=<>!()%+-]{1,400}\Z")
STATEMENT_RE = re.compile(r"\b(select|insert|update|delete|drop|union|alter|create|grant|"
                          r"revoke|copy|truncate|into|from)\b|--", re.I)


def oar_options(prop=None, queue=None, project=None, besteffort=False):
    """oarsub's switches for launch --property, --queue, --project and
    --besteffort, checked ({switch: value}); the type list's extra for
    besteffort is `besteffort` (see lifecycle.launch).  Raises Refused."""
    out = {}
    if prop is not None:
        if not PROPERTY_RE.match(prop) or STATEMENT_RE.search(prop) \
                or prop.count("'") % 2 or prop.count("(") != prop.count(")"):
            raise Refused(detail="bad --property %r: a condition on resource properties such "
                                 "as \"cluster='a' AND memnode >= 4096\" (names, numbers, "
                                 "quoted words, comparisons, AND/OR/NOT)" % prop[:60])
        out["-p"] = prop
    if queue is not None:
        if besteffort:
            raise Refused(detail="--besteffort runs in OAR's besteffort queue: drop --queue")
        if not QUEUE_RE.match(queue):
            raise Refused(detail="bad --queue %r: a queue name (oarstat shows them)" % queue[:40])
        out["-q"] = queue
    if project is not None:
        if not PROJECT_RE.match(project):
            raise Refused(detail="bad --project %r: letters, digits, '.', '_' and '-', 64 at "
                                 "most" % project[:40])
        out["--project"] = project
    return out


def check_start(text, now=None):
    """'YYYY-MM-DD HH:MM[:SS]' in the future (the server's local time, as
    oarsub -r takes it) -> OAR's form.  Raises Refused."""
    import datetime
    try:
        at = datetime.datetime.strptime(str(text).strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        try:
            at = datetime.datetime.strptime(str(text).strip(), "%Y-%m-%d %H:%M")
        except ValueError:
            raise Refused(detail="bad start %r: YYYY-MM-DD HH:MM (the server's time)"
                          % str(text)[:40]) from None
    ahead = at.timestamp() - (time.time() if now is None else now)
    if not 0 < ahead <= 365 * 86400:
        raise Refused(detail="start %s is not in the coming year" % at.strftime("%Y-%m-%d %H:%M"))
    return at.strftime("%Y-%m-%d %H:%M:%S")


def submit(spec, nodes=1, walltime="1:00:00", runner=LOCAL, user=None, at=None, options=None,
           besteffort=False):
    """oarsub the cloud job (as user when root submits it for them; at: an
    advance reservation, check_start's form; options: oar_options' switches;
    besteffort: OAR may kill it for other jobs); returns its id.  Raises
    Refused (admission rule, reservation refused)."""
    if not 1 <= nodes <= 1000:
        raise Refused(detail="--nodes must be between 1 and 1000")
    # Whole nodes, unless the instances say how many cores they need: then only
    # those cores of each node (other jobs may share the nodes).
    resources = "nodes=%d" % nodes
    if spec.cores:
        per_node = -(-(spec.count or nodes) // nodes) * spec.cores
        resources = "/nodes=%d/core=%d" % (nodes, per_node)
    # The job's own command keeps it alive until its walltime or `delete`; a
    # job submitted for a user starts in their home, as theirs would.
    home = pwd.getpwnam(user).pw_dir if user and os.geteuid() == 0 else None
    types = spec.to_types() + (["besteffort"] if besteffort else [])
    return oar.submit(types, "%s,walltime=%s" % (resources, check_walltime(walltime)),
                      "sleep infinity", runner, user=user, directory=home,
                      at=check_start(at) if at else None, options=options)


def mine(conn, include_deleted=False):
    where = "" if include_deleted else " WHERE state NOT IN ('deleted')"
    cur = conn.execute("SELECT %s FROM instances%s ORDER BY job_id, idx"
                       % (", ".join(instances.COLUMNS), where))
    return instances.rows_of(cur)


def wait_running(conn, job_id, timeout=300, progress=None, runner=LOCAL):
    """Wait until every instance of the job runs; returns the rows.  Raises NotReady.

    The catalog is read often (cheap); OAR (oarstat, a Perl start-up) once a second."""
    deadline = time.monotonic() + timeout
    last, job, asked, event = None, {"state": "Waiting"}, 0.0, 0
    while time.monotonic() < deadline:
        if progress:  # what the nodes say (first fetch of an image, ...)
            for event, node, message in conn.execute(
                    "SELECT id, node, message FROM job_events WHERE job_id = %s AND id > %s"
                    " ORDER BY id", (job_id, event)).fetchall():
                progress("  %s: %s" % (node, message))
        rows = [r for r in mine(conn, include_deleted=True) if r["job_id"] == job_id]
        failed = [r for r in rows if r["state"] == "failed"]
        if failed:
            raise NotReady(detail="job %s failed: %s" % (job_id, failed[0]["error"]))
        if rows and all(r["state"] == "running" for r in rows):
            if progress:
                progress("job %s: %d instance(s) running" % (job_id, len(rows)))
            return rows
        if time.monotonic() - asked >= 1.0:
            job, asked = get_job(job_id, runner), time.monotonic()
            if job["state"] in ENDED:
                raise NotReady(detail="job %s ended (%s) before its instances ran: %s"
                               % (job_id, job["state"], job_reason(job)))
        states = sorted(r["state"] for r in rows)
        seen = (job["state"], tuple(states))
        if progress and seen != last:
            progress("job %s %s; instances: %s" % (job_id, job["state"],
                                                   ", ".join(states) or "not yet allocated"))
            last = seen
        time.sleep(0.1)
    raise NotReady(detail="job %s: instances not running after %ss; the job goes on (oarcloud "
                          "list shows it, oarcloud delete NAME ends it)" % (job_id, timeout))


def delete(job_id, runner=LOCAL, user=None):
    """oardel the job (as user when root deletes it for them)."""
    oar.delete([job_id], runner, user=user)


def wait_ended(conn, job_id, timeout=120, runner=LOCAL):
    """Wait until the job has ended and its instances are torn down.  Raises NotReady."""
    def gone():
        live = [r for r in mine(conn) if r["job_id"] == job_id]
        return not live and get_job(job_id, runner)["state"] in ENDED
    deadline = time.monotonic() + timeout
    while not gone():
        if time.monotonic() > deadline:
            raise NotReady(detail="job %s still ending after %ss" % (job_id, timeout))
        time.sleep(0.3)


def walltime_left(job, now=None):
    """Seconds before a running job's walltime ends, or None."""
    start, wall = job.get("startTime") or job.get("start_time"), job.get("walltime")
    if not (start and wall) or job.get("state") != "Running":
        return None
    return max(0, int(start) + int(wall) - int(now if now is not None else time.time()))
