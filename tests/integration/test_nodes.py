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
