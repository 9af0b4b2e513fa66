"""Quotas on the lab (docs/quotas.md): each limit refused at each creation path
with what is used and what the limit is, concurrent launches at a limit of one,
the site's default and an account's own limit, and users who cannot read or
change anyone's limits but their own."""
import json
import os
import subprocess
import time

from conftest import admin, as_user, run, wait_job
from test_images import image_row, tiny_tarball
from test_instances import launch, oarcloud

from oarcloud_lib.catalog import db, joblog
from oarcloud_lib import paths


def quota(*args, check=False):
    return admin("quota", *args, check=check)


def report(user):
    rows = json.loads(oarcloud(user, "quota", "--json", check=True).stdout)
    return {r["resource"]: r for r in rows}


def refused(res, resource, used=None, limit=None):
    """res failed with the quota's one line: what is used and the limit."""
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    if used is None:
        assert "quota: %s: " % resource in out and " used of " in out, out
    else:
        assert "quota: %s: %s used of %s" % (resource, used, limit) in out, out
    assert "ask the site's admins" in out, out


def _live(user):
    return json.loads(oarcloud(user, "list", "--json", check=True).stdout)


def _jobs(user):
    out = run(["oarstat", "-u", user, "-J"]).stdout.strip()
    return json.loads(out) if out.startswith("{") else {}


def test_bad_quota_input_is_refused_and_changes_nothing(make_user):
    user = make_user()
    quota("set", user, "--instances", "3", check=True)
    before = quota("list", "--json", check=True).stdout
    for args, message in [
            (("set", user, "--instances", "-1"), "bad instances quota '-1'"),
            (("set", user, "--memory", "lots"), "bad memory quota 'lots'"),
            (("set", user, "--cores", "2.5"), "bad cores quota"),
            (("set", "nosuch" + user, "--cores", "1"), "oarcloud user not found"),
            (("set", "--default", user, "--cores", "1"), "either USER, @GROUP or --default"),
            (("set", "--cores", "1"), "either USER, @GROUP or --default"),
            (("set", user), "nothing to set"),
            (("set", user, "--disks", "1"), "disks"),
            (("set", "Bad;Name", "--cores", "1"), "bad user 'Bad;Name'"),
            (("set", "@nosuch" + user, "--cores", "1"), "group of users not found"),
            (("show", "nosuch" + user), "oarcloud user not found")]:
        res = quota(*args)
        assert res.returncode != 0 and message in res.stdout + res.stderr, (args, res.stdout,
                                                                            res.stderr)
    assert quota("list", "--json", check=True).stdout == before
    # Idempotent: the same value again changes nothing and says so.
    res = quota("set", user, "--instances", "3", check=True)
    assert res.stdout.strip() == "quota of %s: nothing changed" % user
    changed = json.loads(quota("set", user, "--instances", "none", "--json", check=True).stdout)
    assert changed == {"account": user, "changed": [
        {"resource": "instances", "old": 3, "new": None}]}


def test_instance_quotas_are_refused_by_the_cli_and_by_plain_oarsub(make_user):
    user = make_user()
    quota("set", user, "--instances", "1", "--cores", "2", "--memory", "512M", check=True)
    for args, resource, used, limit in [
            (("--cores", "3"), "cores", 0, 2),
            (("--count", "2", "--cores", "1"), "instances", 0, 1),
            (("--memory", "1G"), "memory", "0 B", "512 MiB")]:
        res = oarcloud(user, "launch", "--walltime", "0:10", *args)
        refused(res, resource, used, limit)
    assert _jobs(user) == {}                              # refused before oarsub
    (row,) = launch(user, "--name", "one", "--cores", "1")
    shown = report(user)
    assert (shown["instances"]["used"], shown["instances"]["limit"]) == (1, 1)
    assert (shown["cores"]["used"], shown["memory"]["used"]) == (1, 256 << 20)
    refused(oarcloud(user, "launch", "--walltime", "0:10", "--cores", "1"), "instances", 1, 1)
    # Plain oarsub: OAR's admission rule asks the same check; no job exists.
    res = as_user(user, ["oarsub", "-t", "cloud", "-t", "cloud.cores=1",
                         "-l", "nodes=1,walltime=0:05:00", "sleep 60"])
    assert "[ADMISSION RULE] oarcloud: quota: instances: 1 used of 1" in res.stdout + res.stderr
    assert res.returncode != 0 and list(_jobs(user)) == [str(row["job_id"])]
    # Freed, the room is back.
    oarcloud(user, "delete", "one", "--wait", check=True)
    assert report(user)["instances"]["used"] == 0
    launch(user, "--name", "two", "--cores", "1")


def submit_at_once(users):
    """One plain cloud job (1 core) per entry of users, all submitted at once;
    their job ids."""
    procs = []
    for user in users:
        home = os.path.expanduser("~%s" % user)
        procs.append(subprocess.Popen(
            ["runuser", "-u", user, "--", "oarsub", "-t", "cloud", "-t", "cloud.cores=1",
             "-l", "nodes=1,walltime=0:05:00", "sleep 300"], cwd=home, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, HOME=home, PWD=home, USER=user, LOGNAME=user)))
    outs = [p.communicate(timeout=60)[0] for p in procs]
    return [l.split("=")[1] for out in outs for l in out.splitlines()
            if l.startswith("OAR_JOB_ID=")]


def settle(ids, ending, timeout=90):
    """{job id: state} of the jobs that ended, once `ending` of them have (or
    at the timeout); the others run."""
    ended = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(ended) < ending:
        for job_id in ids:
            state = wait_job(job_id, states=("Running", "Terminated", "Error"))["state"]
            if state != "Running":
                ended[job_id] = state
        time.sleep(0.5)
    return ended


def test_concurrent_launches_at_a_limit_of_one_let_exactly_one_pass(make_user):
    """Every submission passes admission (no instance exists yet); the
    prologues allocate one after the other under the account's quota lock:
    one instance, the other jobs refused and gone, their nodes in service."""
    user = make_user()
    quota("set", user, "--instances", "1", check=True)
    ids = submit_at_once([user] * 3)
    assert len(ids) == 3                                 # all admitted
    ended = settle(ids, 2)
    assert len(ended) == 2, ended
    (running,) = set(ids) - set(ended)
    live = _live(user)
    assert [r["job_id"] for r in live] == [int(running)], live
    with db.connect() as conn:
        for job_id in ended:
            said = [e["message"] for e in joblog.events(conn, int(job_id))]
            assert any("quota: instances: 1 used of 1" in m for m in said), said
    nodes = json.loads(run(["oarnodes", "-J"]).stdout)
    assert {r["state"] for r in nodes.values()} == {"Alive"}


def test_network_port_vpn_alarm_and_target_quotas(make_user):
    user = make_user()
    quota("set", user, "--networks", "2", "--published-ports", "1", "--vpn-clients", "1",
          "--alarms", "1", "--targets", "1", check=True)
    oarcloud(user, "net", "create", "a", "--cidr", "10.71.0.0/24", check=True)
    (row,) = launch(user, "--name", "w", "--cores", "1")        # creates `default`: 2 of 2
    refused(oarcloud(user, "net", "create", "b", "--cidr", "10.72.0.0/24"), "networks", 2, 2)
    oarcloud(user, "net", "expose", "w", "8080", check=True)
    oarcloud(user, "net", "expose", "w", "8080", check=True)    # already published: no more
    refused(oarcloud(user, "net", "expose", "w", "8081"), "published-ports", 1, 1)
    oarcloud(user, "net", "vpn", "default", "--client", "c1", check=True)
    refused(oarcloud(user, "net", "vpn", "default", "--client", "c2"), "vpn-clients", 1, 1)
    alarm = ["alarm", "create", "--instance", "w", "--metric", "cpu", "--op", "gt",
             "--threshold", "90", "--period", "10s", "--periods", "3"]
    oarcloud(user, alarm[0], alarm[1], "hot", *alarm[2:], check=True)
    refused(oarcloud(user, alarm[0], alarm[1], "hotter", *alarm[2:]), "alarms", 1, 1)
    oarcloud(user, "notify", "add", "json://127.0.0.1:9/a", check=True)
    refused(oarcloud(user, "notify", "add", "json://127.0.0.1:9/b"), "targets", 1, 1)
    shown = report(user)
    assert {r: shown[r]["used"] for r in ("networks", "published-ports", "vpn-clients",
                                         "alarms", "targets")} == {
        "networks": 2, "published-ports": 1, "vpn-clients": 1, "alarms": 1, "targets": 1}


def test_images_bytes_quota_refuses_import_and_save_and_leaves_no_file(make_user):
    user = make_user()
    tarball = tiny_tarball(user, "t.tar.zst")
    size = os.path.getsize(tarball)
    quota("set", user, "--images-bytes", str(size // 2), check=True)
    files = set(os.listdir(paths.IMAGE_STORE))
    res = oarcloud(user, "image", "import", tarball, "--name", "big-" + user)
    refused(res, "images-bytes")
    assert "0 B used of" in res.stderr
    assert image_row("big-" + user) is None
    assert set(os.listdir(paths.IMAGE_STORE)) == files
    quota("set", user, "--images-bytes", "1G", check=True)
    oarcloud(user, "image", "import", tarball, "--name", "ok-" + user, check=True)
    used = report(user)["images-bytes"]["used"]
    assert used == image_row("ok-" + user)["size"]
    # Full: refused before the upload is read, and a save is refused too.
    quota("set", user, "--images-bytes", str(used), check=True)
    res = oarcloud(user, "image", "import", tarball, "--name", "more-" + user)
    refused(res, "images-bytes")
    launch(user, "--name", "s", "--cores", "1")
    oarcloud(user, "exec", "s", "--", "sh", "-c", "echo x > /etc/motd", check=True)
    refused(oarcloud(user, "image", "save", "s", "saved-" + user), "images-bytes")
    assert image_row("saved-" + user) is None


def test_the_sites_default_applies_and_an_accounts_own_limit_wins(make_user):
    user = make_user()
    try:
        quota("set", "--default", "--alarms", "0", check=True)
        launch(user, "--name", "w", "--cores", "1")
        alarm = ["alarm", "create", "a1", "--instance", "w", "--metric", "cpu", "--op", "gt",
                 "--threshold", "90", "--period", "10s"]
        refused(oarcloud(user, *alarm), "alarms", 0, 0)
        assert report(user)["alarms"]["source"] == "site"
        quota("set", user, "--alarms", "1", check=True)
        oarcloud(user, *alarm, check=True)
        assert report(user)["alarms"]["source"] == "account"
    finally:
        quota("set", "--default", "--alarms", "none", check=True)
    assert report(user)["alarms"]["limit"] == 1


def test_a_user_reads_only_their_own_limits_and_cannot_change_any(make_user):
    alice, bob = make_user(), make_user()
    quota("set", alice, "--instances", "7", check=True)
    quota("set", bob, "--instances", "1", check=True)
    psql = ["psql", "-d", "oarcloud", "-At", "-c"]
    seen = as_user(bob, psql + ["SELECT account, resource, max FROM quotas"]).stdout
    assert alice not in seen and "%s|instances|1" % bob in seen
    assert report(bob)["instances"]["limit"] == 1
    for attack in ("UPDATE quotas SET max = 1000 WHERE account = '%s'" % bob,
                   "INSERT INTO quotas (account, resource, max) VALUES ('%s', 'cores', 99)"
                   % bob,
                   "DELETE FROM quotas WHERE account = '%s'" % bob):
        res = as_user(bob, psql + [attack])
        assert res.returncode != 0 and "permission denied" in res.stderr, (attack, res.stderr)
    assert report(bob)["instances"]["limit"] == 1


def test_the_group_size_quota_bounds_each_group_s_max_at_create_and_set(make_user):
    user = make_user()
    quota("set", user, "--group-size", "2", check=True)
    res = oarcloud(user, "group", "create", "big", "--min", "0", "--max", "3", "--desired", "0")
    assert res.returncode == 5 and "group-size: --max 3 is above your limit of 2" in res.stderr
    assert json.loads(oarcloud(user, "group", "list", "--json", check=True).stdout) == []
    oarcloud(user, "group", "create", "ok", "--min", "0", "--max", "2", "--desired", "0",
             check=True)
    res = oarcloud(user, "group", "set", "ok", "--max", "3")
    assert res.returncode == 5 and "group-size" in res.stderr
    shown = report(user)["group-size"]
    assert shown["used"] == 2 and shown["limit"] == 2
    [g] = json.loads(oarcloud(user, "group", "list", "--json", check=True).stdout)
    assert g["max_size"] == 2
    oarcloud(user, "group", "delete", "ok", check=True)
