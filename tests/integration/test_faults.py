"""Faults during a cloud job's creation, on the lab's two nodes: the job ends in
Error with a reason, nothing is left on the nodes, and they serve the next job
(oarcloud_lib.server.healing brings Suspected nodes back once they are clean)."""
import json
import os
import signal
import time

from conftest import admin, node_exec, pids_where, run, wait_job
from oarcloud_lib.catalog import db, instances
from test_instances import NODES, launch, node_leftovers, oarcloud


def node_states():
    data = json.loads(run(["oarnodes", "-J"], check=True).stdout)
    items = data.values() if isinstance(data, dict) else data
    states = {}
    for r in items:
        states.setdefault(r["network_address"], set()).add(r["state"])
    return {n: ",".join(sorted(s)) for n, s in states.items()}


def wait_alive(timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = node_states()
        if all(states.get(n) == "Alive" for n in NODES):
            return
        time.sleep(1)
    raise AssertionError("nodes not Alive after %ss: %s" % (timeout, node_states()))


def submitted(user, *args):
    res = oarcloud(user, "launch", "--walltime", "0:10", "--json", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)["job_id"]


def no_cloud_jobs_left(timeout=90):
    """The cloud jobs OAR still has after timeout (OAR's resubmissions of a failed
    job, which the healer deletes, take a while to end)."""
    deadline = time.monotonic() + timeout
    while True:
        out = run(["oarstat", "-J"]).stdout.strip()
        jobs = json.loads(out) if out.startswith("{") else {}
        left = [j for j, job in jobs.items() if "cloud" in (job.get("types") or [])]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)


def serves_next_job(user):
    rows = launch(user, "--nodes", "2", "--name", "next")
    assert {r["state"] for r in rows} == {"running"}
    assert oarcloud(user, "delete", "next-0", "--wait").returncode == 0
    assert node_leftovers() == {}


def test_libvirtd_down_on_one_node(lab, make_user):
    user = make_user()
    pid = int(node_exec("node-2", "cat", "/run/libvirtd.pid", check=True).stdout)
    os.kill(pid, signal.SIGTERM)
    try:
        job = submitted(user, "--nodes", "2", "--name", "nolv")
        assert wait_job(str(job))["state"] == "Error"
        shown = json.loads(oarcloud(user, "show", "nolv-0", "--json", check=True).stdout)
        assert shown["state"] == "failed" and "node-2" in shown["error"] \
            and "libvirt" in shown["error"], shown
        assert "\n" not in shown["error"]
        # node-1 is clean and back in service; node-2 waits for its libvirtd
        deadline = time.monotonic() + 60
        while node_states().get("node-1") != "Alive" and time.monotonic() < deadline:
            time.sleep(1)
        assert node_states()["node-1"] == "Alive"
        assert node_states()["node-2"] != "Alive"
    finally:
        admin("lab", "up", "--nodes", "2", check=True)  # restarts what is missing
    wait_alive()
    assert node_leftovers() == {} and no_cloud_jobs_left() == []
    serves_next_job(user)


def _agent_pids(verb, job_id):
    return pids_where(lambda args: b"oarcloud_lib.node.agent" in args and verb.encode() in args
                      and str(job_id).encode() in args)


def kill_prologue_agents(job):
    """SIGKILL the job's prologue agents (they must be running)."""
    pids = _agent_pids("prologue", job)
    assert pids, "the prologue ended before it could be killed"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def kill_prologue(job):
    """SIGKILL the job's prologue agents, then wait for OAR to end the job and
    the healer to bring the nodes back."""
    kill_prologue_agents(job)
    assert wait_job(str(job))["state"] == "Error"
    wait_alive()


def test_prologue_killed_half_way(lab, make_user):
    user = make_user()
    job = submitted(user, "--nodes", "1", "--count", "12", "--name", "killed")
    deadline = time.monotonic() + 60
    with db.connect() as conn:
        # half way: its instances are being created (an instance is called
        # running only once all of the node's are, just before the prologue ends)
        while not [r for r in instances.for_job(conn, job)
                   if r["state"] in ("creating", "running")]:
            assert time.monotonic() < deadline, "the prologue never started creating"
            time.sleep(0.02)
    kill_prologue(job)
    assert node_leftovers() == {} and no_cloud_jobs_left() == []
    rows = json.loads(oarcloud(user, "list", "--json", check=True).stdout)
    assert len(rows) == 12 and {r["state"] for r in rows} == {"failed"}, rows
    assert "PROLOGUE_ERROR" in rows[0]["error"], rows[0]
    serves_next_job(user)


def test_node_unreachable(lab, make_user):
    user = make_user()
    run(["ip", "link", "set", "oclv2", "down"], check=True)
    try:
        job = submitted(user, "--nodes", "2", "--name", "cut")
        ended = wait_job(str(job), timeout=180)
        assert ended["state"] == "Error" and ended["events"], ended
    finally:
        run(["ip", "link", "set", "oclv2", "up"], check=True)
    wait_alive(timeout=180)
    assert node_leftovers() == {} and no_cloud_jobs_left() == []
    serves_next_job(user)
