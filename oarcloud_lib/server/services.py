"""The server's long-running services, kept running (F.a.3).

Where systemd runs, each service is a unit (templates/oarcloud-service.j2):
`Restart=on-failure`, and its `ExecStopPost` tells the admins when it died.
Where no systemd runs (the lab, a container), the supervisor below does the
same: one process that runs each service as its child, restarts a child that
ends (at once, then slower while it keeps dying), and tells the admins.

    SERVICES          name -> how it runs (the monitor, the web service)
    ensure_running()  the services up with the installed code (setup server, lab up)
    set_enabled(n, b) one service on or off, for good (`oarcloud-admin web stop`)
    stop()            the services (and the supervisor) down
    status()          what runs, since when, and how often it was restarted
    died(name, how)   the admins' notification of a death (both paths)

A service's own pidfile still says which process it is (monitor status);
stopping never looks processes up by name.
"""
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from oarcloud_lib import daemons, paths, templating
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotReady
from oarcloud_lib.server import monitor
from oarcloud_lib.web import service as web

LOG = logging.getLogger("oarcloud.services")
RUN_DIR = monitor.RUN_DIR
PIDFILE = RUN_DIR / "supervisor.pid"
STATUS = RUN_DIR / "supervisor.json"
LOGFILE = paths.LOG_DIR / "supervisor.log"
UNIT_DIR = Path("/etc/systemd/system")
# name -> (python module run with -I -m, its pidfile, its log, what it does)
SERVICES = {
    "monitor": ("oarcloud_lib.server.monitor", monitor.PIDFILE, monitor.LOGFILE,
                "metrics, alarms and notifications"),
    "web": ("oarcloud_lib.web.service", web.PIDFILE, web.LOGFILE,
            "the web dashboard and HTTP API"),
}
# Seconds before restarting a service that died after 1, 2, 3... quick deaths
# in a row; one that ran STABLE seconds counts from the start again.
DELAYS = (0.5, 1, 2, 5, 10, 30)
STABLE = 60.0


def disabled_marker(name):
    return paths.ETC / ("%s.disabled" % name)


def enabled(name):
    """Whether the service should run (an admin turns one off for good with
    set_enabled; the others keep running)."""
    return not disabled_marker(name).exists()


def argv(name):
    return [sys.executable, "-I", "-m", SERVICES[name][0]]


def how_it_ended(returncode):
    if returncode < 0:
        try:
            return "killed by signal %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    return "exited with status %d" % returncode


def died(name, how, action, conn=None):
    """Queue the admins' notification that service name died (how) and what
    was done (action); the monitor delivers it.  Never raises: a catalog that
    cannot be reached is logged."""
    from oarcloud_lib.catalog import db
    from oarcloud_lib.server import notify
    LOG.error("service %s %s: %s", name, how, action)
    try:
        with db.session(conn) as conn:
            notify.enqueue_event(conn, None, "service_died", service=name,
                                 host=socket.gethostname(), how=how, action=action)
    except Exception as e:  # noqa: BLE001 -- the supervisor goes on whatever the catalog does
        LOG.error("could not tell the admins that %s died: %s", name, e)


# -- the supervisor (no systemd) ------------------------------------------------------

class Supervisor:
    """Runs services as children and restarts them.  spawn(name) -> a Popen-like
    object (poll, pid, terminate, kill, wait); tell(name, how, action) is died."""

    def __init__(self, names, spawn, tell=died, clock=time.monotonic, wanted=lambda n: True):
        self.spawn, self.tell, self.clock, self.wanted = spawn, tell, clock, wanted
        self.children = {}
        self.stopping = set()   # children stopped on purpose: no restart, no news
        self.info = {n: {"pid": None, "started": None, "restarts": 0, "last_death": None}
                     for n in names}
        self.quick = {n: 0 for n in names}
        self.due = {n: clock() for n in names}

    def start_due(self):
        """Start every service whose time has come; seconds until the next one (or None)."""
        now = self.clock()
        for name, at in list(self.due.items()):
            if at <= now:
                del self.due[name]
                if not self.wanted(name):
                    continue
                try:
                    self.children[name] = proc = self.spawn(name)
                except OSError as e:
                    self._schedule(name, now, "could not start: %s" % e)
                    continue
                self.info[name].update(pid=proc.pid, started=time.time(), mono=now)
                LOG.info("service %s started (pid %d)", name, proc.pid)
        return max(0.0, min(self.due.values()) - now) if self.due else None

    def reap(self):
        """Notice children that ended: tell the admins, schedule their restart."""
        now = self.clock()
        for name, proc in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[name]
            if name in self.stopping:
                self.stopping.discard(name)
                self.info[name].update(pid=None)
                LOG.info("service %s stopped (%s)", name, how_it_ended(code))
                continue
            self._schedule(name, now, how_it_ended(code))

    def refresh(self):
        """Services turned off stopped, those turned on started (SIGHUP)."""
        for name in self.info:
            proc = self.children.get(name)
            if not self.wanted(name):
                self.due.pop(name, None)
                if proc is not None and name not in self.stopping:
                    self.stopping.add(name)
                    proc.terminate()
            elif proc is None and name not in self.due:
                self.due[name] = self.clock()

    def _schedule(self, name, now, how):
        info = self.info[name]
        ran = now - info.get("mono", now)
        self.quick[name] = self.quick[name] + 1 if ran < STABLE else 1
        delay = DELAYS[min(self.quick[name], len(DELAYS)) - 1]
        self.due[name] = now + delay
        info.update(pid=None, restarts=info["restarts"] + 1,
                    last_death={"at": time.time(), "how": how})
        self.tell(name, how, "restarting in %gs (death %d in a row)" % (delay, self.quick[name]))

    def stop_all(self, timeout=30.0):
        for proc in self.children.values():
            proc.terminate()
        deadline = self.clock() + timeout
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.children.clear()

    def status(self):
        return {n: {k: v for k, v in i.items() if k != "mono"} for n, i in self.info.items()}


def _spawn(name):
    log = SERVICES[name][2]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(argv(name), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=dict(os.environ, PATH=paths.ROOT_PATH))


def supervise(names=tuple(SERVICES)):
    """The supervisor's main loop, until SIGTERM or SIGINT: children are
    reaped as soon as they end (SIGCHLD wakes the loop), no polling."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    other = daemons.read_pid(PIDFILE)
    if other and other != os.getpid():
        raise NotReady(detail="a supervisor already runs (pid %d)" % other)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    PIDFILE.write_text("%d\n" % os.getpid())
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    stopping, hup = [], []
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGHUP, lambda *_: hup.append(True))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    sup = Supervisor(names, _spawn, wanted=enabled)
    sel = selectors.DefaultSelector()
    sel.register(wake_r, selectors.EVENT_READ)
    try:
        while not stopping:
            if hup:
                hup.clear()
                sup.refresh()
            sup.reap()
            wait = sup.start_due()
            _write_status(sup)
            sel.select(timeout=wait)
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
    finally:
        LOG.info("supervisor stopping its services")
        sup.stop_all()
        if daemons.read_pid(PIDFILE) == os.getpid():
            PIDFILE.unlink()
        STATUS.unlink(missing_ok=True)
    return 0


def _write_status(sup):
    tmp = STATUS.with_suffix(".tmp")
    tmp.write_text(json.dumps({"supervisor": os.getpid(), "services": sup.status()}))
    tmp.replace(STATUS)


# -- systemd -------------------------------------------------------------------------

def systemd_runs():
    """What sd_booted() checks: systemd is this machine's init."""
    return Path("/run/systemd/system").is_dir()


def unit_name(name):
    return "oarcloud-%s.service" % name


def unit_context(name):
    _, _, log, what = SERVICES[name]
    return dict(name=name, what=what, exec_start=" ".join(argv(name)),
                root_path=paths.ROOT_PATH, log=str(log), admin=str(paths.ADMIN_CLI))


def _ensure_units(runner=LOCAL):
    """Each service's unit written, enabled and running with the current code."""
    changed = False
    for name in SERVICES:
        if not enabled(name):
            continue
        if templating.ensure_rendered(UNIT_DIR / unit_name(name), "oarcloud-service.j2",
                                      **unit_context(name)):
            runner.run(["systemctl", "daemon-reload"])
            changed = True
        runner.run(["systemctl", "enable", "--quiet", unit_name(name)])
        pid = daemons.read_pid(SERVICES[name][1])
        if changed or pid is None or SERVICES[name][1].stat().st_mtime < code_mtime():
            runner.run(["systemctl", "restart", unit_name(name)])
            changed = True
    return changed


# -- either ---------------------------------------------------------------------------

def code_mtime():
    """When oarcloud's code last changed (services older than it restart)."""
    return max(p.stat().st_mtime for p in Path(__file__).parents[1].rglob("*.py"))


def supervisor_pid():
    return daemons.read_pid(PIDFILE)


def ensure_running(timeout=15.0):
    """Every service running under systemd or the supervisor, with the
    installed code; True if something was (re)started."""
    if systemd_runs():
        return _ensure_units()
    pid = supervisor_pid()
    if pid and PIDFILE.stat().st_mtime >= code_mtime() and _all_up():
        return False
    stop()
    for name in SERVICES:   # one started by hand or by an older oarcloud
        daemons.stop_pid(daemons.read_pid(SERVICES[name][1]), timeout=30)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOGFILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOGFILE, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-I", "-m", "oarcloud_lib.server.services"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=dict(os.environ, PATH=paths.ROOT_PATH))
    if not daemons.wait_for(lambda: proc.poll() is not None or
                            (supervisor_pid() == proc.pid and _all_up()), timeout):
        raise NotReady(detail="the services did not start (see %s)" % LOGFILE)
    if proc.poll() is not None:
        raise NotReady(detail="the supervisor exited at once (exit %s, see %s)"
                       % (proc.returncode, LOGFILE))
    return True


def _all_up():
    return all(daemons.read_pid(s[1]) for n, s in SERVICES.items() if enabled(n))


def set_enabled(name, on, timeout=20.0):
    """Turn service name on or off for good (it stays so across restarts and
    upgrades), the others untouched; returns True if that changed whether it
    runs."""
    if name not in SERVICES:
        raise NotReady(detail="unknown service %r" % name)
    pidfile = SERVICES[name][1]
    was = daemons.read_pid(pidfile) is not None
    if on:
        disabled_marker(name).unlink(missing_ok=True)
    else:
        paths.ETC.mkdir(parents=True, exist_ok=True)
        disabled_marker(name).write_text("turned off by an admin\n")
    if systemd_runs():
        LOCAL.run(["systemctl", "enable" if on else "disable", "--now", "--quiet",
                   unit_name(name)], check=False)
    elif supervisor_pid():
        os.kill(supervisor_pid(), signal.SIGHUP)
    elif on:
        ensure_running()
    if not daemons.wait_for(lambda: (daemons.read_pid(pidfile) is not None) == on, timeout):
        raise NotReady(detail="service %s did not %s within %d s (see %s)" % (
            name, "start" if on else "stop", timeout, SERVICES[name][2]))
    return was != on


def stop():
    """Stop the services; True if any ran."""
    if systemd_runs():
        was = [n for n in SERVICES if daemons.read_pid(SERVICES[n][1])]
        for n in SERVICES:
            LOCAL.run(["systemctl", "stop", unit_name(n)], check=False)
        return bool(was)
    return daemons.stop_pid(supervisor_pid(), timeout=40)


def status():
    """{manager: systemd|supervisor|none, pid, services: {name: {pid, started,
    restarts, last_death}}}."""
    if systemd_runs():
        return {"manager": "systemd", "services": {
            n: {"pid": daemons.read_pid(s[1]), "unit": unit_name(n), "enabled": enabled(n)}
            for n, s in SERVICES.items()}}
    pid = supervisor_pid()
    if pid is None:
        return {"manager": "none", "pid": None,
                "services": {n: {"pid": daemons.read_pid(s[1]), "enabled": enabled(n)}
                             for n, s in SERVICES.items()}}
    try:
        services = json.loads(STATUS.read_text())["services"]
    except (OSError, ValueError, KeyError):
        services = {}
    for n, s in SERVICES.items():
        services.setdefault(n, {}).update(pid=daemons.read_pid(s[1]), enabled=enabled(n))
    return {"manager": "supervisor", "pid": pid, "services": services}


def systemd_died(name, environ=os.environ):
    """ExecStopPost of a unit: tell the admins unless the service ended well
    ($SERVICE_RESULT, $EXIT_CODE and $EXIT_STATUS from systemd)."""
    if name not in SERVICES:
        raise NotReady(detail="unknown service %r" % name)
    result = environ.get("SERVICE_RESULT", "success")
    if result == "success":
        return False
    how = "%s (%s %s)" % (result, environ.get("EXIT_CODE", "?"), environ.get("EXIT_STATUS", "?"))
    died(name, how, "systemd restarts it (Restart=on-failure)")
    return True


if __name__ == "__main__":
    sys.exit(supervise())
