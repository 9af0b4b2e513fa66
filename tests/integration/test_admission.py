"""The admission rule on the real OAR server: cloud jobs admitted, malformed ones refused."""
import json

import pytest

from conftest import as_user, node_exec, run, wait_job

BAD_TYPES = [
    ["-t", "cloud=../x"],
    ["-t", "cloud", "-t", "cloud.foo=1"],
    ["-t", "cloud", "-t", "cloud.name=a;touch /tmp/pwned"],
    ["-t", "cloud", "-t", "cloud.name=$(id)"],
    ["-t", "cloud", "-t", "cloud.image=a/b"],
    ["-t", "cloud", "-t", "cloud.count=0"],
    ["-t", "cloud", "-t", "cloud.memory=-1"],
    ["-t", "cloud", "-t", "cloud.cores=1", "-t", "cloud.cores=2"],
    ["-t", "cloud.image=tiny"],
]


def _jobs_of(user):
    out = run(["oarstat", "-u", user, "-J"]).stdout.strip()
    return json.loads(out) if out.startswith("{") else {}


def test_user_cloud_job_is_admitted_and_runs_hooks(make_user):
    user = make_user()
    res = as_user(user, ["oarsub", "-t", "cloud", "-l", "nodes=1,walltime=0:05:00", "true"])
    assert res.returncode == 0, res.stderr + res.stdout
    job_id = [l.split("=")[1] for l in res.stdout.splitlines() if l.startswith("OAR_JOB_ID=")][0]
    job = wait_job(job_id)
    assert job["state"] == "Terminated", job
    assert "cloud" in job["types"]
    node = job["assigned_network_address"][0]
    log = node_exec(node, "cat", "/var/log/oarcloud/hooks.log").stdout
    assert "job %s (%s): cloud prologue" % (job_id, user) in log
    assert "job %s (%s): cloud epilogue" % (job_id, user) in log
    # the node is still in service
    nodes = json.loads(run(["oarnodes", "-J"]).stdout)
    assert {r["state"] for r in nodes.values() if r["network_address"] == node} == {"Alive"}


@pytest.mark.parametrize("types", BAD_TYPES, ids=lambda t: " ".join(t))
def test_malformed_cloud_types_are_refused(make_user, types):
    user = make_user()
    res = as_user(user, ["oarsub", *types, "-l", "nodes=1", "true"])
    assert res.returncode != 0
    assert "[ADMISSION RULE] oarcloud:" in res.stdout + res.stderr
    assert _jobs_of(user) == {}
    assert run(["test", "-e", "/tmp/pwned"]).returncode != 0


def test_ordinary_jobs_are_untouched(make_user):
    user = make_user()
    res = as_user(user, ["oarsub", "-l", "nodes=1,walltime=0:05:00", "true"])
    assert res.returncode == 0, res.stderr + res.stdout
    job_id = [l.split("=")[1] for l in res.stdout.splitlines() if l.startswith("OAR_JOB_ID=")][0]
    assert wait_job(job_id)["state"] == "Terminated"
