"""Running external commands: argv lists only, never a shell string.

Every tool wrapper in oarcloud takes a Runner; the lab passes one that enters
an emulated node, the real node setup passes the local one. That is the only
place where "emulated" and "real" differ.
"""
import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

from plumbum import local
from plumbum.commands.processes import CommandNotFound, ProcessTimedOut

from oarcloud_lib.errors import CommandFailed, NotReady

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Runner:
    """Runs argv lists locally, behind an optional argv prefix (e.g. nsenter)."""

    def __init__(self, prefix=(), name="local"):
        self.prefix = tuple(prefix)
        self.name = name

    def __repr__(self):
        return "Runner(%s)" % self.name

    def _command(self, argv):
        full = list(self.prefix) + [str(a) for a in argv]
        try:
            return local[full[0]][full[1:]]
        except CommandNotFound:
            raise NotReady(detail="command not found: %s" % full[0]) from None

    def run(self, argv, *, stdin=None, timeout=120, check=True, env=None):
        """Run argv and return a Result; raises CommandFailed when check and exit != 0."""
        cmd = self._command(argv)
        if env:
            cmd = cmd.with_env(**env)
        LOG.debug("%s: %s", self.name, shlex.join(str(a) for a in argv))
        try:
            if stdin is not None:
                code, out, err = (cmd << stdin).run(retcode=None, timeout=timeout)
            else:
                code, out, err = cmd.run(retcode=None, timeout=timeout,
                                         stdin=subprocess.DEVNULL)
        except ProcessTimedOut:
            raise CommandFailed(code="timeout", argv=shlex.join(map(str, argv)),
                                stderr="no answer within %ss" % timeout) from None
        if check and code != 0:
            raise CommandFailed(code=code, argv=shlex.join(map(str, argv)),
                                stderr=(err or out).strip()[-2000:])
        return Result(code, out, err)

    def out(self, argv, **kwargs):
        """Run argv and return its stdout."""
        return self.run(argv, **kwargs).out

    def spawn(self, argv, log_path=None):
        """Start argv detached from us (own session); returns the Popen."""
        cmd = self._command(argv)
        sink = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            return cmd.popen(stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                             start_new_session=True)
        finally:
            if log_path:
                sink.close()

    def passthrough(self, argv):
        """Run argv attached to our terminal; returns its exit code."""
        cmd = self._command(argv)
        return cmd.run(retcode=None, stdin=None, stdout=None, stderr=None)[0]


LOCAL = Runner()


def set_path(path):
    """Use path to find commands, here and in every child (plumbum keeps its own
    copy of the environment)."""
    os.environ["PATH"] = path
    local.env["PATH"] = path


def root_entry(path):
    """What every entry point that runs as root does first: commands from path
    only, and the working directory "/" (never a caller's, whose files a
    relative name could pick up)."""
    set_path(path)
    os.chdir("/")


def exit_now(code):
    """End this process with code, skipping the interpreter's teardown (0.04 to
    0.07 s once psycopg, plumbum and jinja2 are loaded, on the path of every hook
    and broker call).  Callers have closed their connections; logs and standard
    streams are flushed here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 1)


def require_commands(names):
    missing = [n for n in names if shutil.which(n) is None
               and not os.path.exists(os.path.join("/usr/sbin", n))]
    if missing:
        raise NotReady(detail="missing commands %s: run ./install.sh (Debian packages)"
                       % ", ".join(missing))
