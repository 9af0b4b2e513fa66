"""Saving instances as images (F.u.3), live or when their job ends.

A save is the instance's changes (its overlay upper directory) as a new image
whose parent is the image it runs: a layer, so that the time and space a save
takes follow what changed, not the image's size.  A chain deeper than
images.MAX_DEPTH, or a save asked with --flatten, is flattened: the whole
merged root becomes a depth-0 image (its parent kept for the record).

Live (`oarcloud image save INSTANCE NAME`): the broker asks the node agent for
the changes of the frozen instance (`save`), streams them through the
store's ingest (validated, compressed, checksummed, named only once whole)
and registers the image.

At the job's end (`oarcloud launch --save-on-exit NAME`): OAR's epilogue has
a timeout, and an instance's changes can be large, so the epilogue only
keeps them: each node moves the upper directory aside (`kept`, a rename) and
marks the save `kept`.  OAR then runs the server epilogue (hooks/
server-epilogue), which starts the saver as a detached worker and returns at
once; the worker pulls each kept change set from its node (`export-kept`),
stores and registers it, then has the node drop it (`drop-kept`).

A save that fails or is killed half-way leaves no image and no store file:
the catalog row is written only after the file is complete.
"""
import fcntl
import logging
import re
import subprocess
import sys
import tempfile
import time

import psycopg

from oarcloud_lib import commands, paths
from oarcloud_lib.catalog import db, images, joblog
from oarcloud_lib.server import imagestore
from oarcloud_lib.service import hooks
from oarcloud_lib.tools import oar, oarssh
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import CommandFailed, Conflict, NotFound, OarcloudError, Refused

LOG = logging.getLogger("oarcloud.saves")
COLUMNS = ("id", "domain", "job_id", "owner", "image", "flatten", "node", "state", "error",
           "created", "updated")
# How long the saver waits for the nodes of an ended job to keep the changes.
KEEP_WINDOW = 300
SAVER_LOCK = paths.HEAL_LOCKS.parent / "saver.lock"
# How long `image saves --retry` waits for the saver's outcome.
RETRY_WAIT = 900


def _rows(cur):
    return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]


def select(conn, where="TRUE", args=()):
    return _rows(conn.execute("SELECT %s FROM image_saves WHERE %s ORDER BY id"
                              % (", ".join(COLUMNS), where), args))


def request_on_exit(conn, rows, names):
    for row, name in zip(rows, names):
        conn.execute("INSERT INTO image_saves (domain, job_id, owner, image, node)"
                     " VALUES (%s, %s, %s, %s, %s)",
                     (row["domain"], row["job_id"], row["owner"], name, row["node"]))


def pending(conn, domain):
    rows = select(conn, "domain = %s AND state = 'pending'", (domain,))
    return rows[0] if rows else None


def set_state(conn, save_id, state, error=None, node=None):
    conn.execute("UPDATE image_saves SET state = %s, error = %s, node = coalesce(%s, node),"
                 " updated = now() WHERE id = %s", (state, error, node, save_id))


def fail_job(conn, job_id, reason):
    conn.execute("UPDATE image_saves SET state = 'failed', error = %s, updated = now()"
                 " WHERE job_id = %s AND state = 'pending'", (reason[:2000], job_id))


def layout(parent, flatten):
    """(flatten, depth) of a save over the parent row: past MAX_DEPTH it is flattened."""
    depth = parent["depth"] + 1
    if flatten or depth > images.MAX_DEPTH:
        return True, 0
    return False, depth


def receive(node, verb, domain, flatten, progress=None):
    """Run the node agent's verb (save, export-kept) and ingest its tar stream."""
    argv = oarssh.agent_argv(node, verb, domain, *(["flatten"] if flatten else []))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err)
        try:
            result = imagestore.ingest(proc.stdout, progress=progress)
        except BaseException as e:
            try:  # an agent that failed first (an empty stream): its words, not the tar's
                code = proc.wait(timeout=5) if isinstance(e, OarcloudError) else None
            except subprocess.TimeoutExpired:
                code = None
            if code:
                raise _agent_failed(code, verb, node, err) from None
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if proc.wait() != 0:
            imagestore.remove(result[0])
            raise _agent_failed(proc.returncode, verb, node, err)
    return result


AGENT_ERROR_RE = re.compile(r"^oarcloud \S+ on \S+: error: (.+)$")


def _agent_failed(code, verb, node, err):
    """The node agent's own error (`oarcloud VERB on NODE: error: ...`) as it
    said it, else the command that failed."""
    err.seek(0)
    lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
    said = AGENT_ERROR_RE.match(lines[-1]) if lines else None
    if said:
        return OarcloudError("on %s: %s" % (node, said.group(1)[:300]))
    return CommandFailed(code=code, argv="%s on %s" % (verb, node),
                         stderr=(lines[-1] if lines else "")[:300])


def _store_and_register(conn, save, parent, flatten, verb, progress=None):
    flatten, depth = layout(parent, flatten)
    sha, size, unpacked = receive(save["node"], verb, save["domain"], flatten, progress)
    images.register(conn, save["image"], sha, size, owner=save["owner"], parent=parent["name"],
                    depth=depth, unpacked=unpacked,
                    description="saved from instance %s (job %s)%s"
                    % (save["instance"], save["job_id"], ", flattened" if flatten else ""))
    return images.get(conn, save["image"])


def save_live(conn, owner, row, name, flatten=False, progress=None):
    """Save the owner's running instance row as image name; returns the image row.
    Nothing is written to the catalog before the image is whole in the store."""
    images.check_new_name(conn, name)
    parent = images.usable(conn, row["image"], owner)
    save = {"domain": row["domain"], "job_id": row["job_id"], "owner": owner, "image": name,
            "node": row["node"], "instance": row["name"]}
    image = _store_and_register(conn, save, parent, flatten, "save", progress)
    joblog.add_event(conn, row["job_id"], "INFO", "%s saved as image %s (%d MB, depth %d)"
                     % (row["name"], name, image["size"] >> 20, image["depth"]), node=row["node"])
    return image


def finish_kept(conn, save):
    """Store, register and drop one save the node kept at its job's end."""
    inst = conn.execute("SELECT name, image FROM instances WHERE domain = %s",
                        (save["domain"],)).fetchone()
    save = dict(save, instance=inst[0] if inst else save["domain"])
    set_state(conn, save["id"], "saving")
    try:
        if inst is None:
            raise Refused(detail="instance %s is not in the catalog" % save["domain"])
        images.check_name(save["image"])
        if images.get(conn, save["image"]) is not None:
            raise Refused(detail="an image named %s appeared meanwhile" % save["image"])
        parent = images.get(conn, inst[1])
        if parent is None:
            raise Refused(detail="the instance's image %s is gone" % inst[1])
        image = _store_and_register(conn, save, parent, save["flatten"], "export-kept")
    except OarcloudError as e:
        # The changes stay on the node (nothing is lost): an admin can export them.
        set_state(conn, save["id"], "failed", ("%s (the changes are kept on %s in %s)"
                                              % (e, save["node"], paths.KEPT / save["domain"]))
                  [:2000])
        joblog.add_event(conn, save["job_id"], "ERROR", "save of %s to image %s failed: %s"
                         % (save["instance"], save["image"], e), node=save["node"])
        LOG.error("save %s (%s -> %s) failed: %s", save["id"], save["domain"], save["image"], e)
    else:
        set_state(conn, save["id"], "done")
        joblog.add_event(conn, save["job_id"], "INFO", "%s saved as image %s (%d MB, depth %d)"
                         % (save["instance"], image["name"], image["size"] >> 20, image["depth"]),
                         node=save["node"])
        LOG.info("save %s: %s -> image %s", save["id"], save["domain"], save["image"])
        LOCAL.run(oarssh.agent_argv(save["node"], "drop-kept", save["domain"]), check=False,
                  timeout=120)


def _failed_kept(conn, owner, save_id):
    """The owner's failed save save_id whose changes a node kept (another
    user's is not found, like a missing one)."""
    try:
        sid = int(save_id)
    except ValueError:
        raise Refused(detail="a save id is a number (oarcloud image saves), not %r"
                             % save_id[:40]) from None
    rows = select(conn, "id = %s AND owner = %s", (sid, owner))
    if not rows:
        raise NotFound(what="save", name=str(save_id))
    save = rows[0]
    if save["state"] != "failed" or not save["node"] or "(the changes are kept on" not in \
            (save["error"] or ""):
        raise Refused(detail="save %d is %s: only a failed save whose changes a node kept "
                             "can be retried or discarded" % (sid, save["state"]))
    return save


def retry(conn, owner, save_id, name=None):
    """Store the kept changes of the owner's failed save again, as name if
    given; returns the save row after the attempt (done, or failed again with
    the changes still kept)."""
    save = _failed_kept(conn, owner, save_id)
    if name:
        images.check_new_name(conn, name)
    try:
        conn.execute("UPDATE image_saves SET state = 'kept', image = %s, error = NULL,"
                     " updated = now() WHERE id = %s AND state = 'failed'",
                     (name or save["image"], save["id"]))
    except psycopg.errors.UniqueViolation:
        raise Conflict(what="save", detail="another save already asks for image %s: pick "
                       "another --name" % (name or save["image"])) from None
    # The saver stores it (one worker at a time: if another one runs, it
    # takes this save before it stops); wait for the outcome.
    work(window=None)
    deadline = time.monotonic() + RETRY_WAIT
    while True:
        row = select(conn, "id = %s", (save["id"],))[0]
        if row["state"] not in ("kept", "saving") or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


def discard(conn, owner, save_id):
    """Drop the kept changes of the owner's failed save from their node."""
    save = _failed_kept(conn, owner, save_id)
    LOCAL.run(oarssh.agent_argv(save["node"], "drop-kept", save["domain"]), timeout=120)
    set_state(conn, save["id"], "discarded", "discarded by %s" % owner)
    joblog.add_event(conn, save["job_id"], "INFO", "the kept changes of %s (save %d) were "
                     "discarded" % (save["domain"], save["id"]), node=save["node"])
    return save


def work(window=KEEP_WINDOW, runner=LOCAL):
    """Carry out every kept save; wait (up to window seconds) for the saves of
    ended jobs that their nodes have not kept yet (window None: not at all,
    and fail none of them).  One worker at a time."""
    SAVER_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(SAVER_LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # the running worker looks again before it stops
        deadline = time.monotonic() + (window or 0)
        with db.connect() as conn:
            while True:
                # A save found `saving` here lost its worker (this one holds the lock).
                for save in select(conn, "state IN ('kept', 'saving')"):
                    finish_kept(conn, save)
                if window is None:
                    return
                waiting = [s for s in select(conn, "state = 'pending'")
                           if oar.get_job(s["job_id"], runner).get("state") in
                           ("Terminated", "Error")]
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    for s in waiting:
                        set_state(conn, s["id"], "failed", "the node did not keep the changes "
                                  "when the job ended (see oarcloud logs)")
                    return
                time.sleep(1)


def main(argv):
    """server-epilogue JOB_ID (from OAR: start the worker, return 0 at once) or --worker."""
    commands.root_entry(paths.ROOT_PATH)
    if argv[:1] == ["--worker"]:
        hooks.log_to_file("saver.log")
        try:
            work()
        except OarcloudError as e:
            LOG.error("saver: %s", e)
            return 1
        return 0
    # OAR stops every queue when the server epilogue fails: never fail, never wait.
    try:
        oarssh.spawn_root_worker("oarcloud_lib.server.saves", "--worker")
    except Exception as e:  # noqa: BLE001 -- logged, never raised (see above)
        hooks.log_to_file("saver.log")
        LOG.error("saver: could not be started: %s", e)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
