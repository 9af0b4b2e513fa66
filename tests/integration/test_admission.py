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


def _oarsub_cloud(user, *types):
    argv = ["oarsub"]
    for t in ("cloud",) + types:
        argv += ["-t", t]
    return as_user(user, argv + ["-l", "nodes=1,walltime=0:05:00", "sleep 600"])


def test_plain_oarsub_is_refused_at_submission_for_what_the_prologue_would_refuse(make_user):
    """A job the prologue would refuse is refused by oarsub itself, with the
    reason, and never exists: an unknown image, another user's network, a
    name the user already has, an address outside the network."""
    from test_instances import launch, oarcloud
    alice, bob = make_user(), make_user()
    oarcloud(alice, "net", "create", "priv", "--cidr", "10.5.0.0/24", check=True)
    oarcloud(bob, "net", "create", "mine", "--cidr", "10.6.0.0/24", check=True)
    launch(bob, "--name", "web")
    jobs_before = _jobs_of(bob)
    for types, reason in [
            (("cloud.image=nope",), "image not found: nope"),
            (("cloud.network=priv",), "network not found: priv"),
            (("cloud.name=web",), "you already have an instance named web"),
            (("cloud.network=mine", "cloud.ip=10.7.0.5"), "10.7.0.5"),
    ]:
        res = _oarsub_cloud(bob, *types)
        out = res.stdout + res.stderr
        assert res.returncode != 0, (types, out)
        assert "[ADMISSION RULE] oarcloud: " in out and reason in out, (types, out)
        assert "OAR_JOB_ID" not in out, (types, out)
    assert _jobs_of(bob) == jobs_before
    # what the checks let through is admitted as before
    res = _oarsub_cloud(bob, "cloud.name=other", "cloud.network=mine")
    assert res.returncode == 0 and "OAR_JOB_ID=" in res.stdout, res.stdout + res.stderr
    job_id = [l.split("=")[1] for l in res.stdout.splitlines() if l.startswith("OAR_JOB_ID=")][0]
    run(["oardel", job_id], check=True)


def test_a_user_cannot_ask_the_admission_check_for_someone_else(make_user):
    """The broker's admit verb answers OAR's own user only: a user asking it
    directly (to learn another user's instance names) is refused."""
    from oarcloud_lib import paths
    alice, bob = make_user(), make_user()
    res = as_user(bob, ["sudo", "-n", str(paths.HOOKS_INSTALL_DIR / "broker"), "admit", alice,
                        "1", "cloud", "cloud.name=web"])
    assert res.returncode != 0
    assert "admit is asked by OAR's admission rule only" in res.stderr, res.stderr
