"""Rolling OS updates of the lab's nodes (oarcloud-admin node update;
server/updates.py, node/upkeep.py): capacity kept at the floor, every node
back Alive, a failed node left drained and the run stopped, resumed, a
running job waited for and never ended."""
import contextlib
import json
import subprocess
import time

import pytest

from conftest import ADMIN, admin, node_exec
from test_instances import NODES, launch, oarcloud

from oarcloud_lib import daemons

MARK = "/run/oarcloud-updated-$(hostname)"
CHECK = "/etc/oar/check.d/zz-oarcloud-test"


def inventory():
    return {r["node"]: r for r in json.loads(admin("node", "list", "--json",
                                                   check=True).stdout)}


def update(*args, timeout=900):
    return admin("node", "update", *args, "--json", timeout=timeout)


def status():
    return json.loads(admin("node", "update", "status", "--json", check=True).stdout)


@contextlib.contextmanager
def cleaned():
    """Whatever a test leaves: a run not over cancelled, nodes undrained."""
    try:
        yield
    finally:
        admin("node", "update", "cancel")
        for n in NODES:
            admin("node", "undrain", n)


@pytest.fixture(autouse=True)
def _no_run_left(lab):
    with cleaned():
        yield


def states():
    return {n: (r["state"], r["drain"]) for n, r in inventory().items()}


def last_run():
    res = admin("node", "update", "status", "--json")
    return json.loads(res.stdout)["id"] if res.returncode == 0 else None


def test_bad_updates_are_refused_and_start_nothing():
    before, run_before = states(), last_run()
    for args, message in [(("--all",), "--command"),
                          (("--nodes", "node-9", "--command", "true"), "node not found"),
                          (("--nodes", "node-1,node-1", "--command", "true"), "each node once"),
                          (("--all", "--command", "true", "--min-capacity", "150%"),
                           "--min-capacity"),
                          (("--all", "--command", "true", "--drain-deadline", "soon"), "--for"),
                          (("--all", "--image", "deb13"), "not available yet")]:
        res = update(*args)
        assert res.returncode != 0 and message in res.stderr, (args, res.stderr)
    assert states() == before and last_run() == run_before


def test_a_rolling_update_keeps_capacity_at_the_floor_and_every_node_comes_back_alive(
        make_user):
    res = update("--all", "--command", "echo updated > %s" % MARK, "--max-unavailable", "2",
                 "--min-capacity", "50%")
    assert res.returncode == 0, res.stdout + res.stderr
    st = json.loads(res.stdout)
    assert st["state"] == "done" and [n["step"] for n in st["nodes"]] == ["done"] * len(NODES)
    total = st["capacity"][0]["total"]
    print("capacity in service over the run:",
          [(c["in_service"], c["out_of_service"]) for c in st["capacity"]])
    # Half the cores is the floor: the two nodes went one after the other.
    assert st["lowest"] >= total / 2
    assert max(len(c["out_of_service"]) for c in st["capacity"]) == 1
    assert {tuple(c["out_of_service"]) for c in st["capacity"]} >= {(n,) for n in NODES}
    for n in NODES:
        assert "%s: healthy" % n in res.stderr and "%s: drained" % n in res.stderr
        assert node_exec(n, "sh", "-c", "cat %s" % MARK, check=True).stdout == "updated\n"
    nodes = inventory()
    assert all(r["state"] == "Alive" and r["drain"] == "no" for r in nodes.values()), nodes
    assert status()["state"] == "done"
    # The nodes serve again: libvirtd was restarted with the updated code.
    user = make_user()
    rows = launch(user, "--nodes", "2")
    assert sorted(r["node"] for r in rows) == sorted(NODES)


def test_a_failed_node_is_left_drained_the_run_stops_and_resumes_past_it():
    # No floor: node-1 stays drained, and node-2 may still go out after it.
    res = update("--nodes", ",".join(NODES), "--command", 'test "$(hostname)" != %s' % NODES[0],
                 "--min-capacity", "0%")
    assert res.returncode == 1
    st = json.loads(res.stdout)
    assert st["state"] == "stopped" and "1 node(s) failed (%s)" % NODES[0] in st["reason"]
    assert [n["step"] for n in st["nodes"]] == ["failed", "queued"]
    assert "the command exited with 1" in st["nodes"][0]["error"]
    nodes = inventory()
    assert nodes[NODES[0]]["drain"] == "yes"
    assert nodes[NODES[1]]["drain"] == "no" and nodes[NODES[1]]["state"] == "Alive"
    again = update("--all", "--command", "true")
    assert again.returncode != 0 and "is stopped" in again.stderr and "resume" in again.stderr
    res = admin("node", "update", "resume", "--json", timeout=900)
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st["state"] == "done" and [n["step"] for n in st["nodes"]] == ["failed", "done"]
    assert inventory()[NODES[0]]["drain"] == "yes"   # still: an admin looks at it


def test_the_floor_stops_a_run_that_would_break_it():
    admin("node", "drain", NODES[0], check=True)
    res = update("--nodes", NODES[1], "--command", "true", "--min-capacity", "50%")
    st = json.loads(res.stdout)
    assert res.returncode == 1 and st["state"] == "stopped"
    assert "taking %s out would leave 0 of 4 cores in service, below the floor of 50%% (2)" \
        % NODES[1] in st["reason"]
    assert [n["step"] for n in st["nodes"]] == ["queued"]
    assert inventory()[NODES[1]]["drain"] == "no"


def test_a_node_whose_health_check_fails_is_left_drained_and_the_run_stops():
    """OAR's own node check (check.d) fails after the update on the first node."""
    cmd = ("printf '#!/bin/sh\\necho broken > \"$CHECKLOGFILE\"\\n' > %s && chmod 755 %s"
           % (CHECK, CHECK))
    try:
        res = update("--nodes", ",".join(NODES), "--command", cmd)
        st = json.loads(res.stdout)
        assert res.returncode == 1 and st["state"] == "stopped", res.stderr
        assert [n["step"] for n in st["nodes"]] == ["failed", "queued"]
        assert "health check failed: OAR node check" in st["nodes"][0]["error"]
        assert inventory()[NODES[0]]["drain"] == "yes"
        assert inventory()[NODES[1]]["drain"] == "no"
    finally:
        for n in NODES:
            node_exec(n, "sh", "-c", "rm -f %s /var/lib/oar/checklogs/*" % CHECK)


def test_an_update_waits_for_the_running_job_and_never_ends_it(make_user):
    user = make_user()
    (row,) = launch(user, "--name", "busy", "--nodes", "1")
    host = row["node"]
    proc = subprocess.Popen([ADMIN, "node", "update", "--nodes", host, "--command", "true",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert daemons.wait_for(lambda: [n["step"] for n in status()["nodes"]] == ["waiting"],
                                timeout=60, interval=0.5)
        # It waits: the instance runs on, drained, for as long as its owner wants.
        for _ in range(3):
            assert oarcloud(user, "exec", "busy", "--", "true").returncode == 0
            assert status()["nodes"][0]["step"] == "waiting" and proc.poll() is None
        oarcloud(user, "delete", "busy", "--wait", check=True)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    assert proc.returncode == 0, err
    st = json.loads(out)
    assert st["state"] == "done" and st["nodes"][0]["step"] == "done"
    assert inventory()[host]["drain"] == "no"


def test_reserve_updates_a_node_in_its_earliest_gap_and_jobs_that_fit_before_still_run(
        make_user):
    """docs/nodes.md: --reserve instead of a drain: OAR reserves the node at
    the end of the job there; a job that ends before still starts there
    meanwhile; the update runs in the reservation, which ends once the node
    is healthy."""
    user = make_user()
    host = "node-2"
    started = time.monotonic()
    first = json.loads(oarcloud(user, "launch", "--name", "first", "--cores", "1",
                                "--walltime", "0:01:15", "--property",
                                "network_address='%s'" % host, "--wait", "--json",
                                check=True).stdout)
    assert first[0]["node"] == host
    proc = subprocess.Popen([ADMIN, "node", "update", "--nodes", host, "--command",
                             "touch %s" % MARK, "--reserve", "5m", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert daemons.wait_for(lambda: [n["step"] for n in status()["nodes"]] == ["reserved"],
                                timeout=60, interval=0.5)
        assert inventory()[host]["drain"] == "no"          # nothing drained
        # A job that ends before the reservation still starts there now.
        short = json.loads(oarcloud(user, "launch", "--name", "short", "--cores", "1",
                                    "--walltime", "0:00:20", "--property",
                                    "network_address='%s'" % host, "--wait", "--json",
                                    check=True).stdout)
        assert short[0]["node"] == host and status()["nodes"][0]["step"] == "reserved"
        oarcloud(user, "delete", "short", "--wait", check=True)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    assert proc.returncode == 0, err
    st = json.loads(out)
    assert st["state"] == "done" and st["nodes"][0]["step"] == "done", st
    assert time.monotonic() - started >= 70      # not before the first job's end
    assert "reserved from" in err and "its reservation runs; updating" in err, err
    assert node_exec(host, "sh", "-c", "test -e %s" % MARK).returncode == 0
    node_exec(host, "sh", "-c", "rm -f %s" % MARK)
    row = inventory()[host]
    assert (row["state"], row["drain"], row["maintenance"]) == ("Alive", "no", [])
