"""Allocations on the lab (docs/allocations.md): an OAR job that holds cores,
where `launch --in` starts instances at once within what it holds; a delete
frees its slot; the allocation's end tears everything in it down; another
user's allocation is not found; bad input creates nothing."""
import json
import time

from conftest import node_exec, wait_job
from test_instances import node_leftovers, oarcloud


def alloc(user, *args, check=True):
    res = oarcloud(user, "alloc", *args, check=check)
    return json.loads(res.stdout) if check and "--json" in args else res


def launch_in(user, name, *args):
    res = oarcloud(user, "launch", "--in", name, "--json", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def live(user):
    return [r for r in json.loads(oarcloud(user, "list", "--json", check=True).stdout)
            if r["state"] not in ("deleted", "failed")]


def test_instances_start_in_an_allocation_within_its_cores_and_end_with_it(make_user):
    alice, bob = make_user(), make_user()
    made = alloc(alice, "create", "pool", "--nodes", "2", "--cores", "2", "--walltime", "0:10",
                 "--wait", "--json")
    assert made["state"] == "running", made
    job_id = made["job_id"]
    shown = alloc(alice, "show", "pool", "--json")
    assert shown["cores"] == 4 and shown["used"] == 0 and shown["instances"] == []
    assert sorted(shown["nodes"]) == ["node-1", "node-2"]
    # Three instances of one core at once, spread, on their network across nodes.
    started = time.monotonic()
    rows = launch_in(alice, "pool", "--name", "a", "--count", "3", "--cores", "1")
    took = time.monotonic() - started
    assert [r["name"] for r in rows] == ["a-0", "a-1", "a-2"]
    assert {r["state"] for r in rows} == {"running"} and {r["job_id"] for r in rows} == {job_id}
    assert sorted(r["node"] for r in rows).count("node-1") in (1, 2)
    far = next(r for r in rows if r["node"] != rows[0]["node"])
    ping = oarcloud(alice, "exec", "a-0", "--", "ping", "-c", "1", "-W", "3", far["ip"])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    print("3 instances launched in the allocation in %.2f s" % took)
    # It never takes more than the allocation holds: one core is left.
    res = oarcloud(alice, "launch", "--in", "pool", "--cores", "2")
    assert res.returncode == 2 and "do not fit in the allocation: free cores" in res.stderr, \
        res.stderr
    assert len(live(alice)) == 3
    # Another user's allocation and its instances are not found.
    for args in (["launch", "--in", "pool"], ["alloc", "show", "pool"],
                 ["alloc", "delete", "pool"], ["delete", "a-0"], ["exec", "a-0", "--", "id"]):
        res = oarcloud(bob, *args)
        assert res.returncode != 0 and "not found" in res.stderr, (args, res.stderr)
    # A delete frees its slot at once, and leaves the others running.
    gone = rows[1]
    res = oarcloud(alice, "delete", gone["name"])
    assert res.returncode == 0 and "from allocation pool" in res.stdout, res.stderr
    assert sorted(r["name"] for r in live(alice)) == ["a-0", "a-2"]
    domain = "oc%d-%d" % (job_id, 1)
    assert domain not in node_exec(gone["node"], "virsh", "-c", "lxc:///system", "list",
                                   "--all", "--name").stdout.split()
    assert alloc(alice, "show", "pool", "--json")["used"] == 2
    (more,) = launch_in(alice, "pool", "--name", "b", "--cores", "1")
    assert more["state"] == "running" and more["name"] == "b"
    listed = alloc(alice, "list", "--json")
    assert [(r["name"], r["used"], sorted(r["instances"])) for r in listed] == [
        ("pool", 3, ["a-0", "a-2", "b"])]
    # Its end tears down everything in it.
    res = alloc(alice, "delete", "pool")
    assert "deleted allocation pool" in res.stdout
    wait_job(job_id)
    deadline = time.monotonic() + 60
    while live(alice) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert live(alice) == [] and alloc(alice, "list", "--json") == []
    assert node_leftovers("oc%d-" % job_id) == {}


def test_bad_allocations_and_launches_are_refused_and_create_nothing(make_user):
    user = make_user()
    for args, says in ((["create", "Bad", "--walltime", "0:05"], "bad allocation name"),
                       (["create", "p", "--walltime", "5 min"], "bad walltime"),
                       (["create", "p", "--walltime", "0:05", "--cores", "0"], "--cores"),
                       (["create", "p", "--walltime", "0:05", "--cores", "9"], "does not fit"),
                       (["create", "p"], "--walltime"),
                       (["show", "nosuch"], "allocation not found"),
                       (["delete", "nosuch"], "allocation not found")):
        res = alloc(user, *args, check=False)
        assert res.returncode != 0 and says in res.stderr, (args, res.stderr)
    for args, says in ((["--in", "nosuch"], "allocation not found"),
                       (["--in", "x", "--nodes", "2"], "--nodes"),
                       (["--in", "x", "--at", "2030-01-01 10:00"], "--at")):
        res = oarcloud(user, "launch", *args)
        assert res.returncode != 0 and says in res.stderr, (args, res.stderr)
    assert alloc(user, "list", "--json") == [] and live(user) == []
    # One name, one allocation at a time.
    alloc(user, "create", "one", "--cores", "1", "--walltime", "0:05", "--wait")
    res = alloc(user, "create", "one", "--cores", "1", "--walltime", "0:05", check=False)
    assert res.returncode == 2 and "already have an allocation named one" in res.stderr
    alloc(user, "delete", "one")
