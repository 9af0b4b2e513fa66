"""The OAR prologue/epilogue dispatcher: runs hooks/<phase>.d/ for cloud jobs.

OAR runs PROLOGUE_EXEC_FILE / EPILOGUE_EXEC_FILE on the job's first node, as
user oar, with: job id, job user, node file.  Jobs that are not cloud jobs
return at once with success: a hook must never fail an ordinary job.  The
scripts in <phase>.d run in name order, each bounded in time, with the job's
facts in the environment (OARCLOUD_JOB_ID, OARCLOUD_JOB_USER,
OARCLOUD_NODEFILE, OARCLOUD_PHASE, and OARCLOUD_JOB: what OAR's database says
of the job, as JSON, so that no script asks OAR again).
"""
import json
import logging
import os
import sys
import time
from pathlib import Path

from oarcloud_lib import commands, paths
from oarcloud_lib.catalog import accounts, jobspec
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError, Refused
from oarcloud_lib.tools.oar import job_facts

LOG = logging.getLogger("oarcloud.hooks")
PHASES = ("prologue", "epilogue")
STEP_TIMEOUT = 100


def check_args(args):
    """(job_id, user, nodefile) from OAR's arguments.  Raises Refused."""
    if len(args) < 3:
        raise Refused(detail="expected: JOB_ID USER NODEFILE")
    job_id, user, nodefile = args[:3]
    if not job_id.isdigit() or not accounts.NAME_RE.match(user):
        raise Refused(detail="bad job id or user from OAR: %r %r" % (job_id[:20], user[:40]))
    return int(job_id), user, nodefile


def log_to_file(name, logger=None):
    """Records of logger (the root logger by default), INFO and up, to
    /var/log/oarcloud/NAME (stderr when it cannot be written)."""
    try:
        paths.LOG_DIR.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(paths.LOG_DIR / name)
    except OSError:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logger or logging.getLogger()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def run_phase(phase, job_id, user, nodefile, job=None, hooks_dir=None, runner=LOCAL):
    """Run every script of <phase>.d in order; raises CommandFailed on the first failure."""
    hooks_dir = Path(hooks_dir or paths.HOOKS_INSTALL_DIR) / ("%s.d" % phase)
    env = {"OARCLOUD_JOB_ID": str(job_id), "OARCLOUD_JOB_USER": user,
           "OARCLOUD_NODEFILE": nodefile, "OARCLOUD_PHASE": phase}
    if job is not None:
        env["OARCLOUD_JOB"] = json.dumps(job)
    for script in sorted(hooks_dir.glob("*")):
        if not (script.is_file() and os.access(script, os.X_OK)):
            continue
        started = time.monotonic()
        runner.run([str(script)], env=env, timeout=STEP_TIMEOUT)
        LOG.info("job %s %s %s: ok in %.2fs", job_id, phase, script.name,
                 time.monotonic() - started)


def main(phase, args):
    """Entry point of the installed prologue/epilogue; returns the exit code for OAR."""
    assert phase in PHASES
    commands.root_entry(paths.ROOT_PATH)
    log_to_file("hooks.log", LOG)
    try:
        job_id, user, nodefile = check_args(args)
        job = job_facts(job_id)
        spec = jobspec.parse_types(job["types"])
        if spec is None:
            return 0
        LOG.info("job %s (%s): cloud %s starts: %s", job_id, user, phase, json.dumps(spec.__dict__))
        run_phase(phase, job_id, user, nodefile, job)
        return 0
    except OarcloudError as e:
        LOG.error("%s failed: %s", phase, e)
        print("oarcloud %s: %s" % (phase, e), file=sys.stderr)
        return 1
