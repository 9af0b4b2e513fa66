"""What an OAR user expects of oarcloud (issue 18), on the lab as a user:
more walltime with `extend` (OAR's oarwalltime), and plain ssh and scp
through `ssh-config`, launches at a time (`--at`), OAR's placement options,
the user's SSH keys, `--wait`'s timeout and Ctrl-C.  (Named to run before
test_lab.py, whose lab down and up leaves no bookworm image.)"""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import admin, as_user, node_exec, run
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


def test_plain_ssh_scp_and_rsync_work_through_ssh_config(make_user):
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
    rsync = as_user(user, ["rsync", "-a", "-e", "ssh -F %s" % conf, local,
                           "oarcloud-deb:/tmp/rsynced.txt"])
    assert rsync.returncode == 0, rsync.stderr
    back = as_user(user, ["ssh", "-F", conf, "oarcloud-deb", "md5sum < /tmp/rsynced.txt"])
    assert back.stdout.split()[0] == here.stdout.split()[0]
    # Another user's instance is not reachable with that config.
    other = make_user()
    res = as_user(other, ["ssh", "-F", _give(other, "stolen.conf", res.stdout), "-o",
                          "BatchMode=yes", "oarcloud-deb", "true"])
    assert res.returncode != 0
    assert oarcloud(other, "ssh-config", "deb").returncode != 0


def test_cp_copies_files_and_directories_without_sshd_and_refuses_what_escapes(make_user):
    """oarcloud cp through exec, on the tiny image (no sshd): a file each way,
    a directory each way (-r), the bad cases; and an instance that sends a
    hostile archive (its own tar replaced) writes nothing outside the
    destination."""
    import hashlib
    import io
    import tarfile
    user = make_user()
    launch(user, "--name", "cpi", "--cores", "1")
    home = os.path.expanduser("~%s" % user)

    def mine(*argv):
        return as_user(user, list(argv))
    payload = os.urandom(3 << 20)
    local = _give(user, "payload.bin", "")
    Path(local).write_bytes(payload)
    res = oarcloud(user, "cp", local, "cpi:/tmp/", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["bytes"] == len(payload)
    inside = oarcloud(user, "exec", "cpi", "--", "md5sum", "/tmp/payload.bin")
    assert inside.stdout.split()[0] == hashlib.md5(payload).hexdigest(), inside.stderr
    back = os.path.join(home, "back.bin")
    assert oarcloud(user, "cp", "cpi:/tmp/payload.bin", back).returncode == 0
    assert Path(back).read_bytes() == payload and os.stat(back).st_uid == os.stat(home).st_uid
    # a directory each way
    mine("sh", "-c", "mkdir -p %s/tree/sub && echo a > %s/tree/a && echo b > %s/tree/sub/b"
         % (home, home, home)).check_returncode()
    assert oarcloud(user, "cp", "-r", home + "/tree", "cpi:/srv/t").returncode == 0
    res = oarcloud(user, "exec", "cpi", "--", "cat", "/srv/t/tree/a", "/srv/t/tree/sub/b")
    assert res.stdout.split() == ["a", "b"], res.stderr
    assert oarcloud(user, "cp", "-r", "cpi:/srv/t/tree", home + "/out").returncode == 0
    assert Path(home, "out/tree/sub/b").read_text() == "b\n"
    # the bad cases: one line, nothing left behind
    for args, code, words in [(["cpi:/nope", home + "/nope"], 1, "No such file"),
                              ([home + "/tree", "cpi:/tmp"], 2, "add -r"),
                              (["cpi:/srv/t", home + "/x"], 1, "add -r"),
                              ([local, home + "/y"], 2, "one side"),
                              ([local, "cpi:tmp"], 2, "absolute"),
                              ([local, "someone-else:/tmp"], 125, "not found")]:
        res = oarcloud(user, "cp", *args)
        assert res.returncode == code and words in res.stderr, (args, res.returncode, res.stderr)
    assert not [f for f in os.listdir(home) if f.startswith((".oarcloud-cp-", "nope", "x"))]
    # A hostile instance: its tar sends members that leave the destination, a
    # link out of it, and a file through that link.
    evil = Path(home, "made.tar")
    with tarfile.open(evil, "w") as t:
        for name, kind, target in (("d/up", tarfile.SYMTYPE, home), ("d/up/escaped", None, ""),
                                   ("../escaped2", None, ""), ("/tmp/escaped3", None, "")):
            info = tarfile.TarInfo(name)
            if kind:
                info.type, info.linkname = kind, target
                t.addfile(info)
            else:
                info.size = 4
                t.addfile(info, io.BytesIO(b"evil"))
    assert oarcloud(user, "cp", str(evil), "cpi:/tmp/made.tar").returncode == 0
    # (busybox's sh runs its own tar whatever PATH says: the instance replaces sh)
    assert oarcloud(user, "exec", "cpi", "--", "/bin/busybox", "sh", "-c",
                    "rm /bin/sh && printf '#!/bin/busybox sh\\nexec /bin/busybox cat "
                    "/tmp/made.tar\\n' > /bin/sh && chmod +x /bin/sh").returncode == 0
    res = oarcloud(user, "cp", "-r", "cpi:/tmp/anything", home + "/dest")
    assert res.returncode != 0 and "tar could not write" in res.stderr, res.stderr
    assert not Path(home, "escaped").exists() and not Path(home, "escaped2").exists()
    assert not Path("/tmp/escaped3").exists() and not Path(home, "dest/d/up/escaped").exists()
    oarcloud(user, "delete", "cpi", "--wait", check=True)


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


def _job(job_id):
    res = run(["oarstat", "-fj", str(job_id), "-J"], check=True)
    return json.loads(res.stdout)[str(job_id)]


def test_oar_placement_options_reach_oar_and_bad_ones_create_nothing(make_user):
    """--property, --queue, --project and --besteffort are OAR's own (oarsub -p, -q,
    --project, -t besteffort); bad values are refused before oarsub, and OAR's
    own reason reaches the user when OAR says no."""
    user = make_user()
    # --count N --cores C without --nodes: the fewest nodes that hold them
    rows = launch(user, "--name", "wide", "--count", "4", "--cores", "1")
    assert sorted(r["node"] for r in rows) == ["node-1", "node-1", "node-2", "node-2"]
    assert oarcloud(user, "delete", "wide-0", "--wait").returncode == 0  # its job, all four
    (pinned,) = launch(user, "--name", "pinned", "--cores", "1", "--property", "host='node-2'",
                       "--project", "lab-x", "--queue", "default")
    assert pinned["node"] == "node-2"
    job = _job(pinned["job_id"])
    assert "node-2" in job["properties"] and job["project"] == "lab-x" \
        and job["queue"] == "default", job
    (be,) = launch(user, "--name", "be", "--cores", "1", "--besteffort")
    job = _job(be["job_id"])
    assert job["queue"] == "besteffort" and "besteffort" in job["types"], job
    assert oarcloud(user, "exec", "be", "--", "true").returncode == 0
    before = sorted(_listed(user))
    for args, message in [
            (["--property", "1=1; DROP TABLE jobs"], "bad --property"),
            (["--property", "host IN (SELECT host FROM resources)"], "bad --property"),
            (["--queue", "a b"], "bad --queue"), (["--project", "a/b"], "bad --project"),
            (["--besteffort", "--queue", "default"], "--besteffort"),
            (["--property", "host='nowhere'"],
             "OAR refused the job: There are not enough resources for your request"),
            (["--queue", "nosuchqueue"], "OAR refused the job: ERROR : The queue nosuchqueue"),
            (["--count", "4", "--nodes", "1"], "need 4 cores; a node has 2: add --nodes 2"),
            (["--count", "5"], "need 5 cores on 3 nodes of 2; the site has 2 such nodes"),
            (["--cores", "3"], "an instance of 3 cores does not fit")]:
        cores = [] if "--cores" in args else ["--cores", "1"]
        res = oarcloud(user, "launch", "--name", "bad", "--walltime", "0:05", *cores, *args)
        assert res.returncode != 0 and message in res.stdout + res.stderr, (args, res.stderr)
        assert "Modify resource description" not in res.stderr, res.stderr
        assert "error: refused: OAR" not in res.stderr and "verify your request" not in \
            res.stderr, res.stderr
        assert len((res.stdout + res.stderr).strip().splitlines()) == 1, res.stderr
    assert sorted(_listed(user)) == before == ["be", "pinned"]
    for name in ("pinned", "be"):
        assert oarcloud(user, "delete", name, "--wait").returncode == 0


def test_keys_added_after_a_launch_are_in_the_next_instance(make_user):
    """`oarcloud key add|list|del`: a key added after a first launch logs in to
    the next instance (not to the first), another user sees and deletes none of
    it, bad keys change nothing, and a deleted key is in no later instance."""
    alice, bob = make_user(), make_user()
    launch(alice, "--image", "bookworm", "--name", "first", "--cores", "1")
    home = os.path.expanduser("~%s" % alice)
    as_user(alice, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f",
                    os.path.join(home, "laptop")], check=True)
    before = json.loads(oarcloud(alice, "key", "list", "--json", check=True).stdout)
    assert [k["kind"] for k in before] == ["account"]
    for text, message in [(open(os.path.join(home, "laptop")).read(), "private key"),
                          ("ssh-ed25519 AAAAnotakey laptop", "ssh-keygen rejects it"),
                          ('command="id" ' + open(os.path.join(home, "laptop.pub")).read(),
                           "must start with")]:
        res = oarcloud(alice, "key", "add", _give(alice, "bad.pub", text))
        assert res.returncode != 0 and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert json.loads(oarcloud(alice, "key", "list", "--json").stdout) == before
    res = oarcloud(alice, "key", "add", os.path.join(home, "laptop.pub"), "--json")
    assert res.returncode == 0, res.stderr
    added = json.loads(res.stdout)
    assert added["added"] and added["comment"] == "laptop"
    again = json.loads(oarcloud(alice, "key", "add", os.path.join(home, "laptop.pub"),
                                "--json", check=True).stdout)
    assert again == dict(added, added=False)
    keys = json.loads(oarcloud(alice, "key", "list", "--json").stdout)
    assert [(k["kind"], k["comment"]) for k in keys][1:] == [("added", "laptop")]
    # bob sees only his own key, and cannot delete alice's
    assert [k["kind"] for k in json.loads(oarcloud(bob, "key", "list", "--json").stdout)] \
        == ["account"]
    res = oarcloud(bob, "key", "del", added["fingerprint"])
    assert res.returncode != 0 and "key not found" in res.stderr
    # the next instance takes the new key; the first does not have it
    launch(alice, "--image", "bookworm", "--name", "second", "--cores", "1")
    conf = oarcloud(alice, "ssh-config", check=True).stdout
    laptop_only = _give(alice, "laptop.conf", re.sub(
        r"IdentityFile \S+", "IdentityFile %s" % os.path.join(home, "laptop"), conf))
    res = as_user(alice, ["ssh", "-F", laptop_only, "-o", "BatchMode=yes", "oarcloud-second",
                          "id -un"])
    assert res.returncode == 0 and res.stdout.strip() == alice, res.stderr
    res = as_user(alice, ["ssh", "-F", laptop_only, "-o", "BatchMode=yes", "oarcloud-first",
                          "true"])
    assert res.returncode != 0
    # deleted: in no later instance; the account's own key cannot be deleted
    res = oarcloud(alice, "key", "delete", "laptop", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["deleted"], res.stderr
    res = oarcloud(alice, "key", "delete", before[0]["fingerprint"])
    assert res.returncode != 0 and "your account's own key" in res.stderr
    launch(alice, "--name", "third", "--cores", "1")
    keys = oarcloud(alice, "exec", "third", "--", "cat", "/root/.ssh/authorized_keys").stdout
    assert "laptop" not in keys and before[0]["key"].split()[1] in keys
    for name in ("first", "second", "third"):
        assert oarcloud(alice, "delete", name, "--wait").returncode == 0


def test_wait_has_a_timeout_and_ctrl_c_leaves_the_job_going(make_user):
    """--wait --timeout N gives up after N s with what to do, and Ctrl-C says
    the job goes on; both leave the job to `list` and `delete`."""
    user = make_user()
    # every core of the lab taken by a plain job of the user's: the launch waits
    res = as_user(user, ["oarsub", "-l", "nodes=2,walltime=0:05", "sleep 300"])
    assert res.returncode == 0, res.stdout + res.stderr
    blocker = re.search(r"OAR_JOB_ID=([0-9]+)", res.stdout).group(1)
    try:
        res = oarcloud(user, "launch", "--name", "late", "--cores", "1", "--walltime", "0:05",
                       "--wait", "--timeout", "3")
        assert res.returncode != 0, res.stdout
        assert "not running after 3s; the job goes on" in res.stderr, res.stderr
        assert res.stdout == ""  # progress went to stderr
        assert _listed(user)["late"]["state"] == "queued"
        proc = subprocess.Popen(["runuser", "-u", user, "--", "oarcloud", "launch", "--name",
                                 "later", "--cores", "1", "--walltime", "0:05", "--wait"],
                                cwd="/tmp", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True,
                                # as from a terminal: a background CI job ignores SIGINT
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 60
        while "later" not in _listed(user):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        # Ctrl-C reaches the command itself (runuser would turn it into SIGTERM)
        child = Path("/proc/%d/task/%d/children" % (proc.pid, proc.pid)).read_text().split()[0]
        os.kill(int(child), signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "stopped waiting; job" in err and "goes on" in err, \
            (proc.returncode, err)
        assert _listed(user)["later"]["state"] == "queued"
    finally:
        run(["oardel", blocker])
    for name in ("late", "later"):
        assert oarcloud(user, "delete", name).returncode == 0


def test_every_listing_takes_f_and_c_and_errors_have_their_exit_codes(make_user):
    """-f json|yaml|csv|value and -c on the user's listings (real data from the
    lab), and the documented exit codes (docs/cli.md)."""
    import csv
    import io
    import yaml
    user = make_user()
    (row,) = launch(user, "--name", "fmt", "--cores", "1")
    listings = [["list"], ["show", "fmt"], ["image", "list"], ["image", "show", "tiny"],
                ["image", "saves"], ["net", "list"], ["net", "show", "default"],
                ["net", "rule", "list", "default"], ["net", "vpn", "default", "--list"],
                ["alarm", "list"], ["notify", "list"], ["quota"], ["key", "list"],
                ["logs", "fmt"]]
    for args in listings:
        # (logs' -f is --follow, tail's habit: its format is --format)
        res = oarcloud(user, *args, "--format", "json")
        assert res.returncode == 0, (args, res.stderr)
        as_json = json.loads(res.stdout)
        res = oarcloud(user, *args, "--format", "yaml")
        assert res.returncode == 0, (args, res.stderr)
        as_yaml = yaml.safe_load(res.stdout)
        if args[0] == "show":  # walltime_left moves on between the two calls
            as_json.pop("walltime_left"), as_yaml.pop("walltime_left")
        assert as_yaml == as_json, (args, res.stdout[:300])
        assert oarcloud(user, *args, "--format", "csv").returncode == 0, args
    res = oarcloud(user, "list", "-f", "value", "-c", "name", "-c", "state")
    assert res.stdout.split() == ["fmt", "running"], res.stdout
    res = oarcloud(user, "list", "-f", "csv", "-c", "name", "-c", "ip")
    assert list(csv.reader(io.StringIO(res.stdout))) == [["name", "ip"], ["fmt", row["ip"]]]
    res = oarcloud(user, "list", "-c", "NAME", "-c", "state")
    assert [ln.split() for ln in res.stdout.splitlines()] == [["NAME", "STATE"],
                                                             ["fmt", "running"]]
    assert oarcloud(user, "show", "fmt", "-f", "value", "-c", "state").stdout.strip() == \
        "running"
    res = oarcloud(user, "list", "-c", "nope")
    assert res.returncode != 0 and "no column nope here" in res.stderr
    res = oarcloud(user, "ssh-config", "fmt", "-f", "json")
    assert res.returncode == 2 and "-f and -c are for commands" in res.stderr
    out = yaml.safe_load(oarcloud(user, "stop", "fmt", "-f", "yaml", check=True).stdout)
    assert out == {"instance": "fmt", "state": "stopped"}
    oarcloud(user, "start", "fmt", check=True)
    # exit codes
    for args, code, words in [(["show", "nope"], 3, "instance not found: nope"),
                              (["launch", "--memory", "0"], 2, "memory"),
                              (["launch", "--nosuch"], 2, "Unknown switch --nosuch"),
                              (["exec", "nope", "--", "true"], 125, "not found: nope"),
                              (["exec", "fmt", "--", "sh", "-c", "exit 125"], 125, "")]:
        res = oarcloud(user, *args)
        assert res.returncode == code and words in res.stderr, (args, res.returncode, res.stderr)
        assert len(res.stderr.strip().splitlines()) <= 1, res.stderr
    admin("quota", "set", user, "--instances", "1", check=True)
    res = oarcloud(user, "launch", "--name", "more", "--cores", "1")
    assert res.returncode == 5 and "quota" in res.stderr, res.stderr
    assert oarcloud(user, "delete", "fmt", "--wait").returncode == 0


def test_every_changing_command_answers_json_with_what_it_changed(make_user):
    """--json on the commands that change something (through the broker as the
    user): one JSON object each, saying what was created or changed."""
    user = make_user()

    def j(*args):
        res = oarcloud(user, *args, "--json")
        assert res.returncode == 0, (args, res.stderr)
        return json.loads(res.stdout)
    assert j("net", "create", "jnet", "--cidr", "10.77.0.0/24") == {
        "name": "jnet", "cidr": "10.77.0.0/24", "gateway": "10.77.0.1",
        "vni": j("net", "show", "jnet")["vni"]}
    rule = j("net", "rule", "add", "jnet", "--direction", "ingress", "--proto", "tcp",
             "--port", "80")
    assert rule["network"] == "jnet" and rule["added"] is True
    assert j("net", "rule", "delete", "jnet", str(rule["rule"]))["deleted"] is True
    (row,) = launch(user, "--name", "js", "--cores", "1", "--network", "jnet")
    assert j("stop", "js") == {"instance": "js", "state": "stopped"}
    assert j("start", "js") == {"instance": "js", "state": "running"}
    exposed = j("net", "expose", "js", "8080")
    assert (exposed["instance"], exposed["port"], exposed["ip"], exposed["added"]) == \
        ("js", 8080, row["ip"], True) and exposed["ingress_allowed"] is False
    assert j("net", "unexpose", "js", "8080")["published"] is False
    out = j("delete", "js", "--wait")
    assert out["name"] == "js" and out["deleted"] is True and out["job_id"] == row["job_id"]
    assert j("net", "delete", "jnet") == {"name": "jnet", "deleted": True}


def test_man_pages_and_completion_are_installed_and_complete_real_names(make_user):
    """install.sh's man pages and completion (oarcloud_cli.docgen), as the user:
    `man oarcloud` shows every command, and bash and zsh complete the user's
    own instance and network names, asked of the real oarcloud."""
    user = make_user()
    launch(user, "--name", "cmpl", "--cores", "1")
    oarcloud(user, "net", "create", "cnet", "--cidr", "10.78.0.0/24", check=True)
    page = as_user(user, ["man", "-P", "cat", "oarcloud"], check=True).stdout
    assert "oarcloud volume attach NAME INSTANCE PATH" in page and "EXIT STATUS" in page
    assert "oarcloud-admin node drain HOST" in \
        run(["man", "-P", "cat", "oarcloud-admin"], check=True).stdout
    calls = ("COMP_WORDS=(oarcloud show cm); COMP_CWORD=2; _oarcloud_complete; "
             "echo ${COMPREPLY[*]}; COMP_WORDS=(oarcloud launch --network c); COMP_CWORD=3; "
             "_oarcloud_complete; echo ${COMPREPLY[*]}")
    for shell, script in (("bash", "/usr/local/share/bash-completion/completions/oarcloud"),
                          ("zsh", "/usr/local/share/zsh/site-functions/_oarcloud")):
        res = as_user(user, [shell, "-c", "source %s 2>/dev/null; %s" % (script, calls)])
        assert res.stdout.split() == ["cmpl", "cnet"], (shell, res.stdout, res.stderr)
    # bash-completion finds it by itself, by the command's name
    res = as_user(user, ["bash", "-c", "source /usr/share/bash-completion/bash_completion; "
                         "__load_completion oarcloud; complete -p oarcloud"])
    assert "_oarcloud_complete" in res.stdout, res.stdout + res.stderr
    oarcloud(user, "delete", "cmpl", "--wait", check=True)


def test_logs_follow_prints_events_as_they_come_and_ends_with_the_job(make_user):
    """oarcloud logs -f: what is there, then each new event (woken by the
    catalog's NOTIFY), and it ends by itself when the job ends."""
    user = make_user()
    (row,) = launch(user, "--name", "fol", "--cores", "1")
    home = os.path.expanduser("~%s" % user)
    follower = subprocess.Popen(["runuser", "-u", user, "--", "oarcloud", "logs", "-f", "fol",
                                 "--json"], cwd=home, stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, HOME=home, USER=user, LOGNAME=user))
    try:
        first = json.loads(follower.stdout.readline())
        assert first["level"] in ("INFO", "WARNING") and "id" not in first, first
        oarcloud(user, "delete", "fol", check=True)
        rest, _ = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, rest
    assert all(line.strip() for line in rest.splitlines()), repr(rest)   # a JSON object a line
    said = [json.loads(line)["message"] for line in rest.splitlines()]
    assert any(m.startswith("job %s: " % row["job_id"]) and " removed from " in m
               for m in said), said
    assert oarcloud(user, "logs", "fol", "--format", "json").returncode == 0


def _user_data_states(user, names, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        shown = {n: show(user, n) for n in names}
        if all(s.get("user_data") in ("done", "failed") for s in shown.values()):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)


def test_launch_files_are_in_every_instance_before_it_starts_and_stay_the_owners(make_user):
    """launch --file SRC:DEST: in both instances of the launch, with its mode,
    already there when the first-boot user data runs; bad --file refused
    before anything is made; another user's bundle cannot be named."""
    import hashlib
    user, other = make_user(), make_user()
    conf = _give(user, "app.conf", "port = 8080\n")
    tool = _give(user, "tool", "")
    Path(tool).write_bytes(b"#!/bin/sh\necho tool ran\n" + bytes(range(256)))
    os.chmod(tool, 0o750)
    boot = _give(user, "boot.sh", "#!/bin/sh\ncp /etc/app/app.conf /root/seen-at-boot\n")
    rows = launch(user, "--name", "lf", "--count", "2", "--cores", "1", "--user-data", boot,
                  "--file", conf + ":/etc/app/app.conf", "--file", tool + ":/opt/bin/tool")
    _user_data_states(user, [r["name"] for r in rows])
    for r in rows:
        res = oarcloud(user, "exec", r["name"], "--", "sh", "-c", "cat /root/seen-at-boot; "
                       "stat -c '%a %u' /opt/bin/tool; md5sum /opt/bin/tool")
        seen, mode, md5 = res.stdout.splitlines()
        assert seen == "port = 8080" and mode == "750 0", res.stdout + res.stderr
        assert md5.split()[0] == hashlib.md5(Path(tool).read_bytes()).hexdigest()
    before = sorted(_listed(user))
    for args, says in [(["--file", conf], "SRC:DEST"),
                       (["--file", conf + ":etc/x"], "bad destination"),
                       (["--file", conf + ":/proc/x"], "the kernel's"),
                       (["--file", "/nonexistent:/etc/x"], "No such file"),
                       (["--file", os.path.expanduser("~%s" % user) + ":/etc/x"],
                        "Is a directory")]:
        res = oarcloud(user, "launch", "--name", "lfbad", "--walltime", "0:05", *args)
        assert res.returncode == 2 and says in res.stderr, (args, res.stderr)
    assert sorted(_listed(user)) == before
    # the bundle is the user's: another user naming it in oarsub is refused
    from oarcloud_lib.catalog import db
    with db.connect() as c:
        bundle = c.execute("SELECT files FROM instances WHERE name = 'lf-0' AND owner = %s",
                           (user,)).fetchone()[0]
    res = as_user(other, ["oarsub", "-t", "cloud", "-t", "cloud.files=%d" % bundle,
                          "-l", "nodes=1,walltime=0:05:00", "sleep 60"])
    assert res.returncode != 0 and "launch files not found" in res.stdout + res.stderr, \
        res.stdout + res.stderr
    oarcloud(user, "delete", "lf-0", "--wait", check=True)


def test_user_data_runs_once_in_every_instance_and_a_failure_is_reported(make_user):
    user = make_user()
    script = _give(user, "boot.sh", "#!/bin/sh\necho \"booted $(cat /etc/hostname)\"\n"
                                    "echo run >> /root/runs\n")
    rows = launch(user, "--name", "ud", "--count", "2", "--cores", "1", "--user-data", script)
    names = [r["name"] for r in rows]
    shown = _user_data_states(user, names)
    assert {s["user_data"] for s in shown.values()} == {"done"}, shown
    for name in names:
        res = oarcloud(user, "exec", name, "--", "cat", "/root/runs",
                       "/var/log/oarcloud-user-data.log")
        assert res.stdout.split("\n")[:2] == ["run", "booted %s" % name], res.stdout
    logs = oarcloud(user, "logs", names[0], check=True).stdout
    assert "%s user data: booted %s" % (names[0], names[0]) in logs
    assert "%s: user data done" % names[0] in logs
    # once: a restart does not run it again
    assert oarcloud(user, "stop", names[0]).returncode == 0
    assert oarcloud(user, "start", names[0]).returncode == 0
    assert oarcloud(user, "exec", names[0], "--", "cat", "/root/runs").stdout == "run\n"
    # a failing one, as a #cloud-config: reported in show and logs
    conf = _give(user, "boot.yaml", "#cloud-config\nwrite_files:\n  - path: /etc/motd\n"
                                    "    content: hello\nruncmd:\n  - echo about to fail\n"
                                    "  - exit 3\n")
    (bad,) = launch(user, "--name", "udbad", "--cores", "1", "--user-data", conf)
    shown = _user_data_states(user, ["udbad"])["udbad"]
    assert shown["user_data"] == "failed" and shown["user_data_exit"] == 3, shown
    assert oarcloud(user, "exec", "udbad", "--", "cat", "/etc/motd").stdout == "hello"
    logs = oarcloud(user, "logs", "udbad", check=True).stdout
    assert "udbad user data: about to fail" in logs and "udbad: user data failed (exit 3" in logs
    # bad user data: refused before anything is made
    before = sorted(_listed(user))
    for text, why in [("echo no shebang\n", "first line must be"),
                      ("#cloud-config\nbootcmd: [ls]\n", "bootcmd is not supported")]:
        res = oarcloud(user, "launch", "--name", "nope", "--cores", "1", "--user-data",
                       _give(user, "bad.txt", text))
        assert res.returncode == 2 and why in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert sorted(_listed(user)) == before
    for name in ("ud-0", "udbad"):
        assert oarcloud(user, "delete", name, "--wait").returncode == 0


def _console_log(user, name, *args):
    res = oarcloud(user, "console", name, "--log", "--json", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)["log"]


def _until(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "not within %ss" % timeout
        time.sleep(0.2)


def _read_until(fd, needle, timeout=30):
    import select
    seen, deadline = b"", time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, seen[-500:]
        if select.select([fd], [], [], left)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:   # the other side closed
                break
    return seen


def test_console_log_keeps_the_boot_and_what_was_printed_and_attach_still_works(make_user):
    """The node's console keeper (node.consoles) logs an instance's console
    while nobody is attached: the boot's shell prompt, a line printed later.
    `oarcloud console` attaches through it in a terminal: a typed command runs,
    Ctrl-] leaves with exit 0, and the session is in the log too.  Another
    user reads none of it; the node keeps it root's alone."""
    alice, bob = make_user(), make_user()
    (row,) = launch(alice, "--name", "con", "--cores", "1")
    domain = "oc%d-0" % row["job_id"]
    boot = _until(lambda: _console_log(alice, "con"))
    assert "#" in boot, boot   # busybox sh's prompt: its init respawns it on the console
    oarcloud(alice, "exec", "con", "--", "sh", "-c", "echo marker-$((6*7)) > /dev/console",
             check=True)
    assert _until(lambda: "marker-42" in _console_log(alice, "con"))
    assert _console_log(alice, "con", "--lines", "1").count("\n") <= 1
    plain = oarcloud(alice, "console", "con", "--log", check=True).stdout
    assert "marker-42" in plain and "\r" not in plain

    master, slave = os.openpty()
    home = os.path.expanduser("~%s" % alice)
    proc = subprocess.Popen(["runuser", "-u", alice, "--", "oarcloud", "console", "con"],
                            stdin=slave, stdout=slave, stderr=slave, cwd=home,
                            env=dict(os.environ, HOME=home, USER=alice, LOGNAME=alice,
                                     TERM="xterm"), start_new_session=True)
    os.close(slave)
    try:
        _read_until(master, b"Ctrl-]")
        os.write(master, b"echo typed-$((7*8))\r")
        _read_until(master, b"typed-56")
        os.write(master, b"\x1d")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert "typed-56" in _until(lambda: (lambda t: "typed-56" in t and t)(
        _console_log(alice, "con")))

    res = oarcloud(bob, "console", "con", "--log")
    assert res.returncode != 0 and "instance not found: con" in res.stderr, res.stderr
    res = oarcloud(alice, "console", "con", "--lines", "3")
    assert res.returncode == 2 and "--lines" in res.stderr and "log" in res.stderr, res.stderr
    listing = node_exec(row["node"], "stat", "-c", "%a %U %n", "/var/lib/oarcloud/consoles",
                        "/var/lib/oarcloud/consoles/%s.log" % domain, check=True).stdout
    assert listing.split("\n")[0].startswith("700 root") and "600 root" in listing, listing


def test_a_console_flood_is_capped_and_paced_and_the_neighbours_console_still_logs(make_user):
    """Root in an instance floods its console for 4 s: the keeper keeps at
    most two capped files of it, and the instance beside it on the node still
    has its line logged meanwhile (the pace, node.consoles.RATE, is the unit
    tier's: test_consoles)."""
    from oarcloud_lib.node import consoles
    user = make_user()
    rows = launch(user, "--name", "fl", "--count", "2", "--nodes", "1", "--cores", "1")
    node, flood = rows[0]["node"], "oc%d-0" % rows[0]["job_id"]
    flooder = subprocess.Popen(
        ["runuser", "-u", user, "--", "oarcloud", "exec", "fl-0", "--", "timeout", "4", "sh",
         "-c", "yes flood-flood-flood-flood > /dev/console"],
        cwd=os.path.expanduser("~%s" % user), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=dict(os.environ, HOME=os.path.expanduser("~%s" % user)))
    try:
        time.sleep(1)   # the flood is on
        oarcloud(user, "exec", "fl-1", "--", "sh", "-c", "echo beside > /dev/console",
                 check=True)
        assert _until(lambda: "beside" in _console_log(user, "fl-1"))
        flooder.wait(timeout=60)
    finally:
        if flooder.poll() is None:
            flooder.kill()
    sizes = node_exec(node, "sh", "-c", "stat -c '%%s %%n' /var/lib/oarcloud/consoles/%s.log*"
                      % flood, check=True).stdout.split("\n")
    files = {line.split()[1].rsplit("/", 1)[1]: int(line.split()[0]) for line in sizes if line}
    assert set(files) == {flood + ".log", flood + ".log.1"}, files
    assert all(size <= consoles.LOG_CAP + 16384 for size in files.values()), files
