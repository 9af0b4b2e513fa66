"""What an OAR user expects of oarcloud (issue 18), on the lab as a user:
more walltime with `extend` (OAR's oarwalltime), and plain ssh and scp
through `ssh-config`, launches at a time (`--at`).  (Named to run before
test_lab.py, whose lab down and up leaves no bookworm image.)"""
import json
import os

from conftest import as_user
from test_instances import launch, oarcloud


def show(user, name):
    return json.loads(oarcloud(user, "show", name, "--json", check=True).stdout)


def test_extend_is_granted_and_shows(make_user):
    user = make_user()
    launch(user, "--name", "long", "--cores", "1")
    before = show(user, "long")
    assert before["walltime"] == 600                  # launch's --walltime 0:10
    res = oarcloud(user, "extend", "long", "+0:30", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["status"] == "granted" and out["asked"] == out["granted"] == 1800, out
    assert out["walltime"] == 2400
    after = show(user, "long")
    assert after["walltime"] == 2400
    assert after["walltime_left"] > before["walltime_left"] + 1700
    res = oarcloud(user, "extend", "long", "+0:05")
    assert res.returncode == 0 and res.stdout.startswith("long: walltime extended by 0:05:00"
                                                         " (now 0:45:00)"), res.stdout


def test_bad_extensions_and_other_users_instances_are_refused(make_user):
    alice, bob = make_user(), make_user()
    launch(alice, "--name", "mine", "--cores", "1")
    for args, message in [(("mine", "1:00"), "bad extension '1:00'"),
                          (("mine", "+0:00"), "bad extension"),
                          (("mine", "-0:10"), "Unknown switch -0"),
                          (("nope", "+0:10"), "instance not found: nope")]:
        res = oarcloud(alice, "extend", *args)
        assert res.returncode != 0 and message in res.stdout + res.stderr, (args, res.stderr)
    res = oarcloud(bob, "extend", "mine", "+1:00")
    assert res.returncode != 0 and "instance not found: mine" in res.stderr
    assert show(alice, "mine")["walltime"] == 600


def _give(user, name, text):
    """A file of user's in their home, with text."""
    home = os.path.expanduser("~%s" % user)
    path = os.path.join(home, name)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, os.stat(home).st_uid, os.stat(home).st_gid)
    return path


def test_plain_ssh_and_scp_work_through_ssh_config(make_user):
    user = make_user()
    launch(user, "--image", "bookworm", "--name", "deb", "--cores", "1")
    home = os.path.expanduser("~%s" % user)
    res = oarcloud(user, "ssh-config", check=True)
    assert res.stdout.startswith("Host oarcloud-deb\n    ProxyCommand sudo -n "), res.stdout
    assert oarcloud(user, "ssh-config", "deb", check=True).stdout == res.stdout
    conf = _give(user, "oarcloud.conf", res.stdout)
    ssh = as_user(user, ["ssh", "-F", conf, "oarcloud-deb", "id -un"])
    assert ssh.returncode == 0 and ssh.stdout.strip() == user, ssh.stderr
    local = os.path.join(home, "payload.txt")
    as_user(user, ["sh", "-c", "seq 1 1000 > %s" % local], check=True)
    scp = as_user(user, ["scp", "-F", conf, local, "oarcloud-deb:/tmp/payload.txt"])
    assert scp.returncode == 0, scp.stderr
    back = as_user(user, ["ssh", "-F", conf, "oarcloud-deb", "md5sum < /tmp/payload.txt"])
    here = as_user(user, ["sh", "-c", "md5sum < %s" % local])
    assert back.stdout.split()[0] == here.stdout.split()[0]
    scp = as_user(user, ["scp", "-F", conf, "oarcloud-deb:/etc/hostname",
                         os.path.join(home, "hostname")])
    assert scp.returncode == 0, scp.stderr
    # Another user's instance is not reachable with that config.
    other = make_user()
    res = as_user(other, ["ssh", "-F", _give(other, "stolen.conf", res.stdout), "-o",
                          "BatchMode=yes", "oarcloud-deb", "true"])
    assert res.returncode != 0
    assert oarcloud(other, "ssh-config", "deb").returncode != 0


def _listed(user):
    return {r["name"]: r for r in json.loads(oarcloud(user, "list", "--json", check=True).stdout)}


def test_an_at_launch_is_scheduled_shows_starts_and_a_queued_one_is_deleted_by_name(make_user):
    import datetime
    import time
    from oarcloud_lib import daemons
    user = make_user()
    soon = datetime.datetime.now() + datetime.timedelta(seconds=40)
    later = datetime.datetime.now() + datetime.timedelta(days=1)
    fmt = "%Y-%m-%d %H:%M:%S"
    for name, when in (("soon", soon), ("later", later)):
        res = oarcloud(user, "launch", "--name", name, "--cores", "1", "--walltime", "0:10",
                       "--at", when.strftime(fmt), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
    rows = _listed(user)
    assert rows["later"]["state"] == "scheduled" and rows["soon"]["state"] == "scheduled"
    start = datetime.datetime.fromisoformat(rows["later"]["start"]).timestamp()
    assert abs(start - later.timestamp()) < 2, rows["later"]
    res = oarcloud(user, "delete", "later")
    assert res.returncode == 0 and "deleted later" in res.stdout, res.stderr
    assert daemons.wait_for(lambda: "later" not in _listed(user), timeout=30)
    # The near one starts at its time and is reachable.
    assert daemons.wait_for(lambda: _listed(user).get("soon", {}).get("state") == "running",
                            timeout=120, interval=1)
    assert time.time() >= soon.timestamp() - 1
    assert oarcloud(user, "exec", "soon", "--", "true").returncode == 0
    for bad, message in (("yesterday", "bad start"), ("2020-01-01 00:00", "coming year")):
        res = oarcloud(user, "launch", "--name", "x", "--at", bad)
        assert res.returncode != 0 and message in res.stderr, res.stderr
