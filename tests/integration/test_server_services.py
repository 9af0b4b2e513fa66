"""The server's services kept running (server/services.py) on the lab: the
supervisor restarts a killed monitor and the admins are told; the systemd
unit and the logrotate rule oarcloud ships are valid for the real tools."""
import json
import os
import signal
import time

from conftest import admin, run
from webhook import Webhook

from oarcloud_lib import daemons, paths, templating
from oarcloud_lib.server import monitor, services


def test_a_killed_monitor_is_back_within_10s_and_the_admins_are_told(lab):
    st = json.loads(admin("service", "status", "--json", check=True).stdout)
    assert st["manager"] == "supervisor" and st["pid"] == services.supervisor_pid()
    hook = Webhook()
    admin("notify", "add", hook.url("services"), check=True)
    try:
        old = monitor.running_pid()
        assert old
        since = time.time()
        os.kill(old, signal.SIGKILL)
        new = daemons.wait_for(lambda: (monitor.running_pid() or old) != old, timeout=10,
                               interval=0.05)
        took = time.time() - since
        assert new, "the monitor was not back within 10 s"
        print("monitor back %.2f s after SIGKILL (pid %d -> %d)" % (took, old,
                                                                  monitor.running_pid()))
        arrived = hook.wait("Service monitor died on", since, 60)
        assert arrived, hook.posts
        body = [p["json"].get("message", "") for p in hook.posts if p["at"] >= since][0]
        assert "killed by signal SIGKILL: restarting in" in body, body
        st = json.loads(admin("service", "status", "--json", check=True).stdout)
        mon = st["services"]["monitor"]
        assert mon["pid"] == monitor.running_pid() and mon["restarts"] >= 1
        assert mon["last_death"]["how"] == "killed by signal SIGKILL"
        # The new monitor works: it reads the nodes again.
        assert daemons.wait_for(lambda: (monitor.status() or {}).get("pid") ==
                                monitor.running_pid(), timeout=30)
    finally:
        admin("notify", "delete", hook.url("services"))
        hook.stop()


def test_monitor_stop_and_start_take_the_supervisor_with_them(lab):
    sup, mon = services.supervisor_pid(), monitor.running_pid()
    res = admin("monitor", "stop", check=True)
    assert res.stdout.strip() == "monitor stopped"
    assert not daemons.alive(sup) and not daemons.alive(mon)     # nothing restarted it
    assert admin("monitor", "stop", check=True).stdout.strip() == "monitor was not running"
    assert admin("service", "status").returncode == 1
    assert admin("monitor", "start", check=True).stdout.startswith("monitor started")
    assert services.supervisor_pid() and monitor.running_pid()
    assert admin("monitor", "start", check=True).stdout.startswith("monitor already running")


def test_the_shipped_unit_and_logrotate_rule_pass_the_real_tools(lab, tmp_path):
    unit = tmp_path / services.unit_name("monitor")
    templating.ensure_rendered(unit, "oarcloud-service.j2", **services.unit_context("monitor"))
    res = run(["systemd-analyze", "verify", "--man=no", str(unit)])
    assert res.returncode == 0, res.stdout + res.stderr
    # What setup server installed, and a real rotation with that rule.
    assert paths.LOGROTATE.read_text() == templating.render("logrotate.j2",
                                                            log_dir=paths.LOG_DIR)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "monitor.log").write_text("line\n" * 100)
    rule = tmp_path / "rule"
    templating.ensure_rendered(rule, "logrotate.j2", log_dir=logs)
    res = run(["logrotate", "--force", "--state", str(tmp_path / "state"), str(rule)])
    assert res.returncode == 0, res.stderr
    assert (logs / "monitor.log.1").read_text() == "line\n" * 100
    assert (logs / "monitor.log").stat().st_size == 0             # copytruncate: same file
