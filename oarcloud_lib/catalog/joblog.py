"""What the node side says about a job, kept in the catalog for its owner.

Node-side code logs with the standard logging module; while it works on a
job, a JobLog handler copies its records into the catalog's job_events table,
where the job's owner reads them (`oarcloud logs NAME`, row-level security).
Writing an event never fails the work that logs it.
"""
import contextlib
import logging
import select
import socket

LEVELS = ("INFO", "WARNING", "ERROR", "CRITICAL")


def add_event(conn, job_id, level, message, node=None):
    conn.execute("INSERT INTO job_events (job_id, node, level, message) VALUES (%s, %s, %s, %s)",
                 (job_id, node or socket.gethostname(), level, message[:2000]))


class JobLog(logging.Handler):
    def __init__(self, conn, job_id, node=None):
        super().__init__(level=logging.INFO)
        self.conn, self.job_id, self.node = conn, job_id, node or socket.gethostname()

    def emit(self, record):
        try:
            add_event(self.conn, self.job_id, record.levelname, record.getMessage(), self.node)
        except Exception:  # noqa: BLE001 — a log line must never break the job's work
            self.handleError(record)


@contextlib.contextmanager
def recording(conn, job_id, logger="oarcloud"):
    """Within the block, records of `logger` (and its children) go to job_events too."""
    handler = JobLog(conn, job_id)
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def events(conn, job_id, after=0):
    """[{id, at, node, level, message}] of a job (those after event id
    `after`), oldest first."""
    cur = conn.execute("SELECT id, at, node, level, message FROM job_events WHERE job_id = %s"
                       " AND id > %s ORDER BY id", (job_id, after))
    return [{"id": i, "at": str(at), "node": node, "level": level, "message": msg}
            for i, at, node, level, msg in cur.fetchall()]


def ended(conn, job_id):
    """Whether every instance of the job is gone (deleted or failed)."""
    return bool(conn.execute("SELECT bool_and(state IN ('deleted', 'failed')) FROM instances"
                             " WHERE job_id = %s", (job_id,)).fetchone()[0])


def follow(conn, job_id, recheck=5.0):
    """The job's events as they come, oldest first: those there already, then
    each new one when its INSERT wakes us (migration 0017's NOTIFY), until
    the job has ended and its last events are read.  Waits at most recheck
    seconds between looks at the job's state."""
    conn.execute("LISTEN oarcloud_job_events")
    last = 0
    while True:
        over = ended(conn, job_id)  # before reading: nothing said before the end is lost
        for event in events(conn, job_id, last):
            last = event["id"]
            yield event
        if over:
            return
        select.select([conn.fileno()], [], [], recheck)
        conn.execute("SELECT 1")  # takes in what woke us
