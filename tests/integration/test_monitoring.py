"""Metrics, alarms and notifications on the lab (issue 6): the monitor service the
lab started probes the nodes; a CPU burn in an instance fires its alarm and a
real SMTP server (aiosmtpd, started here) receives the mails; a failed launch
and a node taken down reach JSON webhooks served here; bad input is refused."""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import admin, node_exec, run, wait_job
from test_faults import node_states, wait_alive
from test_instances import NODES, launch, oarcloud
from webhook import Webhook

from oarcloud_lib import paths

BURN = "timeout %d sh -c 'while :; do :; done'"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("after %ss: %s" % (timeout, what))


class Inbox:
    """A real SMTP server on loopback (aiosmtpd) keeping what it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller
        self.messages = []
        self.port = free_port()
        inbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's API
                import email
                msg = email.message_from_bytes(envelope.content)
                parts = [p.get_payload(decode=True).decode() for p in msg.walk()
                         if p.get_content_type() == "text/plain"]
                inbox.messages.append({"to": envelope.rcpt_tos, "subject": msg["Subject"],
                                       "body": "".join(parts)})
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self, to):
        return "mailto://127.0.0.1:%d?from=oarcloud@example.org&to=%s" % (self.port, to)

    def with_subject(self, text):
        return [m for m in self.messages if text in (m["subject"] or "")]

    def stop(self):
        self.controller.stop()


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.stop()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.stop()


def alarm(user, name):
    return json.loads(oarcloud(user, "alarm", "show", name, "--json", check=True).stdout)


def test_the_lab_runs_the_monitor_and_serves_prometheus(lab):
    st = json.loads(admin("monitor", "status", "--json", check=True).stdout)
    assert st["interval"] >= 1
    wait_for(lambda: all((json.loads(admin("monitor", "status", "--json").stdout)["nodes"]
                          .get(n) or {}).get("last_reading") for n in NODES), 60,
             "readings from every node")
    url = "http://%s/metrics" % st["listen"]
    # rates (cpu, net) need a second reading of a probe
    # the metrics are every tenant's: only with the site's token (what Prometheus sends)
    token = ["-H", "Authorization: Bearer " + paths.MONITOR_TOKEN.read_text().strip()]
    text = wait_for(lambda: (lambda t: "oarcloud_node_cpu_percent{" in t and t)(
        run(["curl", "-s", "-m", "5", *token, url], check=True).stdout), 30, "rates in %s" % url)
    denied = run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url])
    assert denied.stdout == "401"
    wrong = run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                 "Authorization: Bearer nottheone", url])
    assert wrong.stdout == "401"
    for n in NODES:
        assert 'oarcloud_node_alive{node="%s"} 1' % n in text
        assert 'oarcloud_node_memory_used_bytes{node="%s"}' % n in text
    assert "# TYPE oarcloud_node_cpu_percent gauge" in text
    got = json.loads(admin("metrics", "node-1", "--since", "1m", "--json", check=True).stdout)
    assert got["metrics"]["memory"]["points"] and got["metrics"]["disk"]["points"]
    # idempotent: a running, current monitor is left alone
    assert "already running" in admin("monitor", "start", check=True).stdout


def test_cpu_burn_fires_the_alarm_by_mail_and_clears(lab, make_user, inbox):
    user = make_user()
    dead = "json://127.0.0.1:%d/" % free_port()   # nobody listens: never slows anything
    for url in (inbox.url("%s@example.org" % user), dead):
        oarcloud(user, "notify", "add", url, check=True)
    rows = launch(user, "--name", "hot", "--cores", "1")
    assert rows[0]["state"] == "running"
    wait_for(lambda: inbox.with_subject("Instance hot is running"), 60, "the running mail")
    res = oarcloud(user, "alarm", "create", "cpu-high", "--instance", "hot", "--metric", "cpu",
                   "--op", "gt", "--threshold", "50", "--period", "5s", "--periods", "2",
                   check=True)
    assert "hot cpu > 50.0% for 2 x 5s" in res.stdout
    wait_for(lambda: alarm(user, "cpu-high")["state"] == "ok", 60, "the alarm ok while idle")
    assert not inbox.with_subject("Alarm cpu-high")  # leaving 'insufficient data' tells nothing
    burn = subprocess.Popen(["runuser", "-u", user, "--", "/usr/local/bin/oarcloud", "exec",
                             "hot", "--", "sh", "-c", BURN % 30], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd="/tmp")
    try:
        started = time.monotonic()
        mails = wait_for(lambda: inbox.with_subject("Alarm cpu-high:"), 60, "the alarm mail")
        fired_after = time.monotonic() - started
        body = mails[0]["body"]
        assert mails[0]["to"] == ["%s@example.org" % user]
        assert "Instance: hot" in body and "Metric: cpu" in body and "State: alarm" in body
        value = float(body.split("Value: ")[1].split("%")[0])
        assert value > 50, body
        assert alarm(user, "cpu-high")["state"] == "alarm"
        print("alarm mail %.1f s after the burn started (2 periods of 5 s)" % fired_after)
    finally:
        burn.wait(timeout=60)
    ok = wait_for(lambda: inbox.with_subject("Alarm cpu-high is ok"), 60, "the ok mail")
    assert "State: ok (was alarm)" in ok[0]["body"]
    shown = alarm(user, "cpu-high")
    assert [h["new_state"] for h in shown["history"]][:2] == ["ok", "alarm"]
    # the values behind it, as the user sees them
    got = json.loads(oarcloud(user, "metrics", "hot", "--metric", "cpu", "--since", "5m",
                              "--json", check=True).stdout)
    assert max(v for _, v in got["metrics"]["cpu"]["points"]) > 50
    text = oarcloud(user, "metrics", "hot", "--since", "5m", check=True).stdout
    assert "cpu " in text and "procs " in text and "rootfs " in text
    chart = Path(os.path.expanduser("~%s" % user)) / "hot.png"
    oarcloud(user, "metrics", "hot", "--plot", str(chart), check=True)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the dead target failed and waits for its next try; the mails went regardless
    log = json.loads(oarcloud(user, "notify", "log", "--json", check=True).stdout)
    dead_rows = [r for r in log if r["url"].startswith("json://127.0.0.1")]
    assert dead_rows and all(r["state"] == "pending" and r["attempts"] >= 1 and r["last_error"]
                             for r in dead_rows), dead_rows
    oarcloud(user, "alarm", "delete", "cpu-high", check=True)
    assert json.loads(oarcloud(user, "alarm", "list", "--json", check=True).stdout) == []


def test_failed_launch_and_node_down_reach_webhooks(lab, make_user, webhook):
    user = make_user()
    oarcloud(user, "notify", "add", webhook.url("user"), check=True)
    res = oarcloud(user, "notify", "test")
    assert res.returncode == 0 and "sent: json://" in res.stdout, res.stdout + res.stderr
    assert webhook.titles("user") == ["oarcloud test notification"]
    added = admin("notify", "add", webhook.url("admin"), check=True)
    target = added.stdout.split()[1].rstrip(":")
    try:
        admin("alarm", "create", "node1-mem", "--node", "node-1", "--metric", "memory",
              "--op", "gt", "--threshold", "1", "--period", "5s", "--periods", "1", check=True)
        wait_for(lambda: [t for t in webhook.titles("admin") if "Alarm node1-mem:" in t], 60,
                 "the admin alarm on node-1's memory")
        admin("alarm", "delete", "node1-mem", check=True)
        pid = int(node_exec("node-2", "cat", "/run/libvirtd.pid", check=True).stdout)
        os.kill(pid, signal.SIGTERM)
        try:
            res = oarcloud(user, "launch", "--walltime", "0:10", "--nodes", "2", "--cores", "1",
                           "--name", "nolv", "--json")
            job = json.loads(res.stdout)["job_id"]
            assert wait_job(str(job))["state"] == "Error"
            failed = wait_for(lambda: [p["json"] for p in webhook.posts if p["path"] == "/user"
                                       and "failed" in p["json"].get("title", "")], 60,
                              "the user's failure notification")
            assert "libvirt" in failed[0]["message"] and "node-2" in failed[0]["message"]
            wait_for(lambda: [t for t in webhook.titles("admin") if t.startswith("Hook prologue")],
                     30, "the admins' failed hook notification")
            wait_for(lambda: node_states()["node-2"] != "Alive", 60, "node-2 taken out")
            wait_for(lambda: [t for t in webhook.titles("admin")
                              if t.startswith("Node node-2 is") and "Alive" not in t], 30,
                     "the admins' node notification")
        finally:
            admin("lab", "up", "--nodes", "2", check=True)  # restarts libvirtd
        wait_alive()
        wait_for(lambda: "Node node-2 is Alive" in webhook.titles("admin"), 60,
                 "the admins told node-2 is back")
    finally:
        admin("notify", "delete", target)
        admin("alarm", "delete", "node1-mem")


@pytest.fixture(scope="module")
def user_with_x(lab):
    """A user with one instance x, for the refusals (created once)."""
    import secrets
    user = "oct" + secrets.token_hex(3)
    admin("user", "add", user, check=True)
    launch(user, "--name", "x", "--cores", "1")
    yield user
    admin("user", "delete", user)


@pytest.mark.parametrize("args,error", [
    (["alarm", "create", "a1", "--instance", "x", "--metric", "cpux", "--threshold", "5"],
     "unknown instance metric"),
    (["alarm", "create", "a1", "--instance", "x", "--metric", "cpu", "--threshold", "abc"],
     "not a number"),
    (["alarm", "create", "a1", "--instance", "x", "--metric", "cpu", "--threshold", "nan"],
     "finite"),
    (["alarm", "create", "a1", "--instance", "x", "--metric", "cpu", "--threshold", "5",
      "--period", "0s"], "must be more than 0"),
    (["alarm", "create", "a1", "--instance", "x", "--metric", "cpu", "--threshold", "5",
      "--period", "1s"], "shorter than the monitors interval"),
    (["alarm", "create", "a1", "--instance", "x", "--metric", "cpu", "--threshold", "5",
      "--periods", "0"], "bad number of periods"),
    (["alarm", "create", "a1", "--instance", "x", "--metric", "cpu", "--threshold", "5",
      "--notify", "foo://bar"], "apprise can parse"),
    (["alarm", "create", "Bad_Name", "--instance", "x", "--metric", "cpu", "--threshold", "5"],
     "bad alarm name"),
    (["alarm", "create", "a1", "--instance", "nope", "--metric", "cpu", "--threshold", "5"],
     "not found"),
    (["notify", "add", "foo://bar"], "apprise can parse"),
    (["notify", "add", "not a url"], "apprise can parse"),
    (["metrics", "x", "--metric", "cpux"], "unknown instance metric"),
    (["metrics", "x", "--since", "0s"], "must be more than 0"),
])
def test_bad_input_is_refused_and_nothing_is_created(user_with_x, args, error):
    user = user_with_x
    res = oarcloud(user, *args)
    assert res.returncode != 0 and error in res.stderr.replace("'", ""), res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert json.loads(oarcloud(user, "alarm", "list", "--json", check=True).stdout) == []
    assert json.loads(oarcloud(user, "notify", "list", "--json", check=True).stdout) == []


def test_another_users_instance_is_not_found(lab, make_user):
    alice, bob = make_user(), make_user()
    launch(alice, "--name", "mine", "--cores", "1")
    res = oarcloud(bob, "alarm", "create", "spy", "--instance", "mine", "--metric", "cpu",
                   "--threshold", "1")
    assert res.returncode != 0 and "not found: mine" in res.stderr
    res = oarcloud(bob, "metrics", "mine")
    assert res.returncode != 0 and "not found: mine" in res.stderr
    oarcloud(alice, "alarm", "create", "own", "--instance", "mine", "--metric", "cpu",
             "--threshold", "90", check=True)
    assert json.loads(oarcloud(bob, "alarm", "list", "--json", check=True).stdout) == []
    assert oarcloud(bob, "alarm", "show", "own").returncode != 0
    assert oarcloud(bob, "alarm", "delete", "own").returncode != 0
    assert [a["name"] for a in json.loads(oarcloud(alice, "alarm", "list", "--json",
                                                   check=True).stdout)] == ["own"]
    # the catalog itself keeps bob's eyes off alice's samples
    res = run(["runuser", "-u", bob, "--", "psql", "-d", "oarcloud", "-tAc",
               "SELECT count(*) FROM samples WHERE owner <> current_user"], cwd="/tmp")
    assert res.stdout.strip() == "0", res.stdout + res.stderr


def test_walltime_and_save_on_exit_reach_the_user(lab, make_user, webhook):
    user = make_user()
    oarcloud(user, "notify", "add", webhook.url("user"), check=True)
    # a 10-minute walltime is within the site's warning (walltime_warning, 10 min)
    launch(user, "--name", "keep", "--cores", "1", "--save-on-exit", "keep-img")
    wait_for(lambda: [t for t in webhook.titles("user")
                      if t.startswith("Instance keep: walltime ends in")], 60,
             "the walltime warning")
    oarcloud(user, "exec", "keep", "--", "sh", "-c", "echo kept > /root/mark", check=True)
    oarcloud(user, "delete", "keep", "--wait", check=True)
    wait_for(lambda: "Instance keep saved as keep-img" in webhook.titles("user"), 180,
             "the image saved notification")
    titles = webhook.titles("user")
    assert titles.index("Instance keep is running") < titles.index(
        "Instance keep saved as keep-img")
