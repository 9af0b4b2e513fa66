"""Node operations on the lab's real OAR (server/nodeops.py): list and show,
drain keeping new jobs off the whole host, owners told, and a running job
never ended before the drain's deadline, ended once it passed."""
import contextlib
import datetime
import json
import time

from conftest import admin, as_user, run, wait_job
from test_instances import NODES, launch, oarcloud
from webhook import Webhook

from oarcloud_lib import daemons


def node(*args, check=False):
    return admin("node", *args, check=check)


def inventory():
    return {r["node"]: r for r in json.loads(node("list", "--json", check=True).stdout)}


def oar_drain(host):
    res = json.loads(run(["oarnodes", "-J"], check=True).stdout).values()
    return {r["drain"] for r in res if r["network_address"] == host}


@contextlib.contextmanager
def drained(host, *args):
    try:
        yield node("drain", host, *args, "--json", check=True)
    finally:
        node("undrain", host, check=True)


def submit(user, *oarsub_args):
    res = as_user(user, ["oarsub", "-t", "cloud", "-t", "cloud.cores=1", *oarsub_args,
                         "sleep 600"])
    assert res.returncode == 0, res.stdout + res.stderr
    return [l.split("=")[1] for l in res.stdout.splitlines() if l.startswith("OAR_JOB_ID=")][0]


def test_node_list_and_show(make_user):
    user = make_user()
    (row,) = launch(user, "--name", "seen", "--cores", "1")
    nodes = inventory()
    assert sorted(nodes) == sorted(NODES)
    here = nodes[row["node"]]
    assert here["state"] == "Alive" and here["drain"] == "no" and here["cores"] == 2
    assert here["cores_used"] >= 1 and here["cores_free"] == 2 - here["cores_used"]
    assert "seen" in here["instances"] and user in here["instance_owners"]
    assert here["jobs"] and row["job_id"] in here["jobs"]
    assert here["cache_bytes"] > 0 and here["cache_entries"] >= 1
    shown = json.loads(node("show", row["node"], "--json", check=True).stdout)
    assert shown["node"] == row["node"] and "seen" in shown["instances"]
    table = node("list", check=True).stdout
    assert table.split("\n")[0].split()[:3] == ["NODE", "STATE", "DRAIN"]
    assert "cache:" in node("show", row["node"], check=True).stdout


def test_bad_node_input_is_refused_and_changes_nothing():
    before = {h: oar_drain(h) for h in NODES}
    for args, message in [(("drain", "node-9"), "node not found: node-9"),
                          (("drain", "../etc"), "bad host name"),
                          (("drain", NODES[0], "--deadline", "-5m"), "bad deadline"),
                          (("drain", NODES[0], "--deadline", "yesterday"), "bad deadline"),
                          (("drain", NODES[0], "--deadline", "2020-01-01T00:00"),
                           "not in the coming year"),
                          (("undrain", "node-9"), "node not found"),
                          (("show", "node-9"), "node not found")]:
        res = node(*args)
        assert res.returncode != 0 and message in res.stderr, (args, res.stdout, res.stderr)
    assert {h: oar_drain(h) for h in NODES} == before == {h: {"NO"} for h in NODES}
    assert all(r["drain"] == "no" for r in inventory().values())


def test_drain_keeps_new_jobs_off_the_whole_host_and_tells_the_owners(make_user):
    user = make_user()
    hook = Webhook()
    oarcloud(user, "notify", "add", hook.url("drain"), check=True)
    (row,) = launch(user, "--name", "stays", "--cores", "1")
    host, other = row["node"], [n for n in NODES if n != row["node"]][0]
    since = time.time()
    try:
        with drained(host) as res:
            out = json.loads(res.stdout)
            assert out["changed"] and out["instances"] == ["stays"] and out["told"] == 1
            assert oar_drain(host) == {"YES"} and oar_drain(other) == {"NO"}
            again = node("drain", host, check=True).stdout
            assert "already drained, nothing changed" in again
            assert hook.wait("Instance stays: node %s is being drained" % host, since, 60)
            # A job that may only go there waits; one that may go anywhere lands on the
            # other node (the scheduler saw both: the first is held by the drain).
            held = submit(user, "-l", "core=1,walltime=0:05:00",
                          "-p", "network_address='%s'" % host)
            free = submit(user, "-l", "core=1,walltime=0:05:00")
            job = wait_job(free, states=("Running",))
            assert job["assigned_network_address"] == [other]
            assert wait_job(held, states=("Waiting", "Running"))["state"] == "Waiting"
            assert inventory()[host]["drain"] == "yes"
            assert oarcloud(user, "exec", "stays", "--", "true").returncode == 0  # goes on
        # Undrained: the held job starts there.
        assert wait_job(held, states=("Running",))["assigned_network_address"] == [host]
        assert inventory()[host]["drain"] == "no"
    finally:
        hook.stop()


def test_a_drain_deadline_ends_what_still_runs_then_and_never_before(make_user):
    user = make_user()
    (row,) = launch(user, "--name", "late", "--cores", "1")
    host, job_id = row["node"], str(row["job_id"])
    with drained(host, "--deadline", "20s") as res:
        deadline = datetime.datetime.fromisoformat(json.loads(res.stdout)["deadline"])
        # Until the deadline the job runs: check it as often as we can until then.
        while time.time() < deadline.timestamp() - 1:
            assert wait_job(job_id, states=("Running", "Terminated", "Error"))["state"] == \
                "Running", "ended before the drain deadline"
            time.sleep(0.5)
        job = wait_job(job_id, timeout=90)
        assert job["state"] in ("Terminated", "Error")
        assert int(job["stopTime"]) >= int(deadline.timestamp())
        assert daemons.wait_for(lambda: not [r for r in json.loads(oarcloud(
            user, "list", "--json", check=True).stdout) if r["name"] == "late"], timeout=60)
        assert inventory()[host]["deadline"] is not None


def oar_hosts():
    return {r["network_address"]: r for r in json.loads(run(["oarnodes", "-J"],
                                                            check=True).stdout).values()}


def test_node_add_and_remove_idempotent_a_node_not_set_up_stays_out_of_the_schedule(make_user):
    again = json.loads(node("add", NODES[0], "--cores", "2", "--json", check=True).stdout)
    assert again == dict(again, added=0, changed=False, reachable=True, state="Alive")
    for args, message in [(("add", "bad_host!"), "bad host name"),
                          (("add", "node-9", "--property", "rack=r1"),
                           "OAR has no property 'rack'"),
                          (("add", "node-9", "--property", "cloud=NO"), "own"),
                          (("add", "node-9", "--cores", "0"), "--cores"),
                          (("remove", "node-9"), "node not found")]:
        res = node(*args)
        assert res.returncode != 0 and message in res.stderr, (args, res.stderr)
    assert "node-9" not in oar_hosts()
    # A host whose agent does not answer (nothing set it up) is added Absent:
    # OAR schedules nothing there.
    out = json.loads(node("add", "node-9", "--cores", "2", "--json", check=True).stdout)
    try:
        assert out["added"] == 2 and not out["reachable"] and out["state"] == "Absent"
        res = [r for r in json.loads(run(["oarnodes", "-J"], check=True).stdout).values()
               if r["network_address"] == "node-9"]
        assert len(res) == 2 and {r["state"] for r in res} == {"Absent"}
        assert {r["cloud"] for r in res} == {"YES"}
        assert "its agent does not answer" in node("add", "node-9", "--cores", "2",
                                                   check=True).stdout
        assert inventory()["node-9"]["state"] == "Absent"
    finally:
        gone = json.loads(node("remove", "node-9", "--json", check=True).stdout)
    assert gone["resources"] == 2 and "node-9" not in oar_hosts()
    assert node("remove", "node-9").returncode != 0


def test_a_node_with_jobs_is_removed_only_by_force(make_user):
    """Refused while an instance runs; nothing changes.  (--force on the lab's
    own node would take it away from the other tests: the unit tier and the
    refusal cover it here.)"""
    user = make_user()
    (row,) = launch(user, "--name", "keeps", "--cores", "1")
    res = node("remove", row["node"])
    assert res.returncode != 0 and "run there" in res.stderr and "--force" in res.stderr
    assert oar_hosts()[row["node"]]["state"] == "Alive" and oar_drain(row["node"]) == {"NO"}
    assert oarcloud(user, "exec", "keeps", "--", "true").returncode == 0


def test_a_maintenance_window_keeps_jobs_that_would_overlap_it_off_the_host(make_user):
    user = make_user()
    host, other = NODES
    res = node("maintenance", host, "--at", "2m", "--for", "1h", "--json", check=True)
    win = json.loads(res.stdout)
    try:
        assert win["changed"] and win["node"] == host
        job = json.loads(run(["oarstat", "-fj", str(win["job_id"]), "-J"],
                             check=True).stdout)[str(win["job_id"])]
        assert job["owner"] == "oarmaint" and job["reservation"] in ("Scheduled", "toSchedule")
        assert inventory()[host]["maintenance"][0]["job_id"] == win["job_id"]
        assert "already planned" in node("maintenance", host, "--at", win["starts"],
                                         "--for", "1h", check=True).stdout
        # A job of 10 minutes may not start there (it would run into the window),
        # so it lands on the other node; one that may only go there waits.
        anywhere = submit(user, "-l", "host=1/core=1,walltime=0:10:00")
        assert wait_job(anywhere, states=("Running",))["assigned_network_address"] == [other]
        only_there = submit(user, "-l", "core=1,walltime=0:10:00",
                            "-p", "network_address='%s'" % host)
        # OAR plans it after the window.
        ends = datetime.datetime.fromisoformat(win["ends"]).timestamp()
        planned = daemons.wait_for(lambda: int(json.loads(run(
            ["oarstat", "-fj", only_there, "-J"], check=True).stdout)[only_there].get(
                "scheduledStart") or 0), timeout=30, interval=0.5)
        assert planned >= ends - 1, (planned, ends)
        assert wait_job(only_there, states=("Waiting", "Running"))["state"] == "Waiting"
        for args, message in [(("maintenance", host, "--at", "1h"), "both --at and --for"),
                              (("maintenance", host, "--at", "1h", "--for", "31d"), "--for"),
                              (("maintenance", "node-9", "--at", "1h", "--for", "1h"),
                               "not found")]:
            bad = node(*args)
            assert bad.returncode != 0 and message in bad.stderr, (args, bad.stderr)
        as_user(user, ["oardel", anywhere, only_there])
    finally:
        cancelled = json.loads(node("maintenance", host, "--cancel", "--json",
                                    check=True).stdout)
    assert cancelled["cancelled"] == [win["job_id"]]
    assert inventory()[host]["maintenance"] == []
    assert "nothing changed" in node("maintenance", host, "--cancel", check=True).stdout


def test_a_viewer_reads_and_changes_nothing(make_user):
    viewer = make_user("--role", "viewer")
    assert json.loads(admin("user", "list", "--json", check=True).stdout) and [
        u["role"] for u in json.loads(admin("user", "list", "--json", check=True).stdout)
        if u["name"] == viewer] == ["viewer"]
    res = oarcloud(viewer, "launch", "--name", "no")
    assert res.returncode != 0 and "viewer" in res.stderr
    res = as_user(viewer, ["oarsub", "-t", "cloud", "-l", "core=1,walltime=0:05:00", "sleep 60"])
    assert res.returncode != 0 and "viewer" in res.stdout + res.stderr, res.stdout
    res = oarcloud(viewer, "net", "create", "n1", "--cidr", "198.18.64.0/24")
    assert res.returncode != 0 and "viewer" in res.stderr
    assert oarcloud(viewer, "token", "create", "dash").returncode == 0
    res = admin("user", "add", viewer, "--role", "chief")
    assert res.returncode != 0 and "chief" in res.stderr


def test_operators_drain_nodes_with_their_own_command_and_users_may_not(make_user):
    operator, viewer, user = (make_user("--role", "operator"), make_user("--role", "viewer"),
                              make_user())
    listed = json.loads(oarcloud(operator, "node", "list", "--json", check=True).stdout)
    assert {n["node"] for n in listed} >= {"node-1", "node-2"}
    assert json.loads(oarcloud(viewer, "node", "show", "node-2", "--json",
                               check=True).stdout)["node"] == "node-2"
    for who, args in ((user, ["node", "list"]), (user, ["node", "drain", "node-2"]),
                      (viewer, ["node", "drain", "node-2"]), (user, ["node", "undrain", "node-2"])):
        res = oarcloud(who, *args)
        assert res.returncode == 2 and "forbidden" in res.stderr, (who, args, res.stderr)
    assert not [n for n in json.loads(admin("node", "list", "--json", check=True).stdout)
                if n["node"] == "node-2" and n["drain"] != "no"]
    try:
        out = json.loads(oarcloud(operator, "node", "drain", "node-2", "--json",
                                  check=True).stdout)
        assert out["changed"] and out["node"] == "node-2"
        shown = json.loads(admin("node", "show", "node-2", "--json", check=True).stdout)
        assert shown["drain"] != "no"
        res = oarcloud(operator, "node", "drain", "nosuch-9")
        assert res.returncode == 3 and "not found" in res.stderr
    finally:
        out = json.loads(oarcloud(operator, "node", "undrain", "node-2", "--json",
                                  check=True).stdout)
    assert out["changed"] and json.loads(admin("node", "show", "node-2", "--json",
                                               check=True).stdout)["drain"] == "no"
