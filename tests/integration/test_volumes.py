"""Volumes on the lab (docs/storage.md): filesystems that outlive instances and
follow them to any node, read-write in one instance at a time or read-only in
many, another user's not found.  Each test works as ordinary users."""
import json
import os
from pathlib import Path

import pytest

from conftest import admin, as_user, node_exec
from test_instances import launch, oarcloud

MiB = 1 << 20


def vol(user, *args, check=False):
    return oarcloud(user, "volume", *args, check=check)


def sh(user, name, script):
    return oarcloud(user, "exec", name, "--", "sh", "-c", script)


def volume_mounts(node, volume_id):
    """Loop devices of the volume's file and its mounts seen on node (its own namespace)."""
    image = "/srv/oarcloud/volumes/%d.ext4" % volume_id
    loops = [l for l in node_exec(node, "losetup", "-j", image).stdout.splitlines() if l]
    mounts = [l for l in node_exec(node, "cat", "/proc/self/mountinfo").stdout.splitlines()
              if "/volmounts/" in l]
    return loops + mounts


def volume_id(name, owner):
    from oarcloud_lib.catalog import db
    with db.connect() as conn:
        return conn.execute("SELECT id FROM volumes WHERE owner = %s AND name = %s",
                            (owner, name)).fetchone()[0]


def test_a_volume_outlives_its_instance_and_follows_it_to_the_other_node(make_user):
    alice = make_user()
    out = json.loads(vol(alice, "create", "data", "--size", "64M", "--json", check=True).stdout)
    assert out["size"] == 64 * MiB and out["access"] == "owner"
    (a1,) = launch(alice, "--name", "a1", "--volume", "data:/data", "--property",
                   "host='node-1'")
    res = sh(alice, "a1", "echo kept > /data/f && mkdir /data/d && chown 1000:1000 /data/d && "
             "sync && stat -c '%u %s' /data/f && df -k /data | tail -1")
    assert res.returncode == 0, res.stdout + res.stderr
    owner_size, df = res.stdout.splitlines()
    assert owner_size == "0 5"  # root's inside: the instance's own uid 0
    assert 40 * MiB < int(df.split()[1]) * 1024 <= 64 * MiB
    shown = json.loads(vol(alice, "show", "data", "--json", check=True).stdout)
    assert [(a["instance"], a["path"], a["readonly"], a["state"]) for a in shown["attachments"]] \
        == [("a1", "/data", False, "attached")]
    oarcloud(alice, "delete", "a1", "--wait", check=True)
    assert json.loads(vol(alice, "show", "data", "--json").stdout)["attachments"] == []
    assert volume_mounts("node-1", volume_id("data", alice)) == []
    (a2,) = launch(alice, "--name", "a2", "--volume", "data:/srv/data", "--property",
                   "host='node-2'")
    assert a2["node"] == "node-2"
    res = sh(alice, "a2", "cat /srv/data/f; stat -c %u /srv/data/d")
    assert res.stdout.split() == ["kept", "1000"], res.stdout + res.stderr
    # stop and start: the volume is mounted again
    oarcloud(alice, "stop", "a2", check=True)
    oarcloud(alice, "start", "a2", check=True)
    assert sh(alice, "a2", "cat /srv/data/f").stdout.strip() == "kept"
    oarcloud(alice, "delete", "a2", "--wait", check=True)
    vid = volume_id("data", alice)
    vol(alice, "delete", "data", check=True)
    assert not Path("/srv/oarcloud/volumes/%d.ext4" % vid).exists()


def test_read_write_in_one_instance_or_read_only_in_many(make_user):
    alice = make_user()
    vol(alice, "create", "shared", "--size", "32M", check=True)
    launch(alice, "--name", "w1", "--volume", "shared:/v", "--cores", "1")
    assert sh(alice, "w1", "echo one > /v/f").returncode == 0
    launch(alice, "--name", "w2", "--cores", "1")
    # a second writer, or a reader beside the writer: refused, before anything is made
    res = oarcloud(alice, "launch", "--name", "w3", "--volume", "shared:/v", "--walltime", "0:05")
    assert res.returncode == 4 and "attached read-write to w1" in res.stderr, res.stderr
    for extra in ([], ["--ro"]):
        res = vol(alice, "attach", "shared", "w2", "/v", *extra)
        assert res.returncode == 4 and "read-write" in res.stderr, res.stderr
    res = oarcloud(alice, "launch", "--name", "w4", "--count", "2", "--volume", "shared:/v",
                   "--walltime", "0:05")
    assert res.returncode == 2 and "goes to one instance" in res.stderr, res.stderr
    # in use: refused; then free: detached live
    sh(alice, "w1", "cd /v && sleep 300 >/dev/null 2>&1 &")
    res = vol(alice, "detach", "shared", "w1")
    assert res.returncode == 4 and "still uses it" in res.stderr, res.stderr
    sh(alice, "w1", "pkill sleep || killall sleep")
    vol(alice, "detach", "shared", "w1", check=True)
    assert sh(alice, "w1", "test -e /v/f").returncode != 0
    # read-only in many
    vol(alice, "attach", "shared", "w1", "/ro", "--ro", check=True)
    vol(alice, "attach", "shared", "w2", "/ro", "--ro", check=True)
    for name in ("w1", "w2"):
        assert sh(alice, name, "cat /ro/f").stdout.strip() == "one"
        res = sh(alice, name, "echo x > /ro/g")
        assert res.returncode != 0 and "Read-only" in res.stdout + res.stderr
    res = oarcloud(alice, "launch", "--name", "w5", "--volume", "shared:/v", "--walltime", "0:05")
    assert res.returncode == 4 and "attached read-only" in res.stderr, res.stderr
    # 20 attach/detach cycles leave no mount or loop device behind (loop
    # devices are the machine's: every emulated node sees them all)
    vol(alice, "detach", "shared", "w1", check=True)
    vol(alice, "detach", "shared", "w2", check=True)
    for _ in range(20):
        vol(alice, "attach", "shared", "w2", "/c", check=True)
        vol(alice, "detach", "shared", "w2", check=True)
    vid = volume_id("shared", alice)
    assert volume_mounts("node-1", vid) == [] and volume_mounts("node-2", vid) == []
    oarcloud(alice, "delete", "w1", "--wait", check=True)
    oarcloud(alice, "delete", "w2", "--wait", check=True)
    assert volume_mounts("node-1", vid) == [] and volume_mounts("node-2", vid) == []
    vol(alice, "delete", "shared", check=True)


def test_another_users_volume_is_not_found_unless_shared_and_then_read_only(make_user):
    alice, bob = make_user(), make_user()
    vol(alice, "create", "mine", "--size", "32M", check=True)
    launch(alice, "--name", "own", "--volume", "mine:/m", "--cores", "1")
    sh(alice, "own", "echo secret > /m/s")
    oarcloud(alice, "delete", "own", "--wait", check=True)
    for args in (["show", "mine"], ["show", "%s/mine" % alice], ["delete", "mine"],
                 ["delete", "%s/mine" % alice], ["resize", "%s/mine" % alice, "--size", "64M"],
                 ["share", "%s/mine" % alice, bob]):
        res = vol(bob, *args)
        assert res.returncode == 3 and "not found" in res.stderr, (args, res.stderr)
    res = oarcloud(bob, "launch", "--name", "spy", "--volume", "%s/mine:/m:ro" % alice,
                   "--walltime", "0:05")
    assert res.returncode == 3 and "not found" in res.stderr, res.stderr
    assert json.loads(vol(bob, "list", "--json", check=True).stdout) == []
    vol(alice, "share", "mine", bob, check=True)
    res = oarcloud(bob, "launch", "--name", "spy", "--volume", "%s/mine:/m" % alice,
                   "--walltime", "0:05")
    assert res.returncode == 2 and "read-only" in res.stderr, res.stderr
    launch(bob, "--name", "reader", "--volume", "%s/mine:/m:ro" % alice, "--cores", "1")
    assert sh(bob, "reader", "cat /m/s").stdout.strip() == "secret"
    assert sh(bob, "reader", "rm /m/s").returncode != 0
    res = vol(bob, "delete", "%s/mine" % alice)
    assert res.returncode == 2 and "only its owner" in res.stderr, res.stderr
    assert [r["access"] for r in json.loads(vol(bob, "list", "--json").stdout)] == ["read-only"]
    assert json.loads(vol(alice, "show", "mine", "--json").stdout)["shared_with"] == [bob]
    oarcloud(bob, "delete", "reader", "--wait", check=True)


def test_snapshots_and_resizes_keep_the_data(make_user):
    alice = make_user()
    vol(alice, "create", "base", "--size", "32M", check=True)
    launch(alice, "--name", "s1", "--volume", "base:/b", "--cores", "1")
    sh(alice, "s1", "echo v1 > /b/f")
    res = vol(alice, "resize", "base", "--size", "64M")
    assert res.returncode == 4 and "detach it first" in res.stderr, res.stderr
    vol(alice, "detach", "base", "s1", check=True)
    out = json.loads(vol(alice, "snapshot", "base", "base-v1", "--json", check=True).stdout)
    assert out["origin"] == "snapshot of base" and out["size"] == 32 * MiB
    vol(alice, "resize", "base", "--size", "96M", check=True)
    res = vol(alice, "resize", "base", "--size", "64M")
    assert res.returncode == 2 and "only grows" in res.stderr, res.stderr
    vol(alice, "attach", "base", "s1", "/b", check=True)
    vol(alice, "attach", "base-v1", "s1", "/v1", check=True)
    res = sh(alice, "s1", "cat /b/f /v1/f; df -k /b | tail -1")
    lines = res.stdout.splitlines()
    assert lines[:2] == ["v1", "v1"], res.stdout + res.stderr
    assert int(lines[2].split()[1]) * 1024 > 80 * MiB
    oarcloud(alice, "delete", "s1", "--wait", check=True)


@pytest.mark.parametrize("args, says", [
    (["create", "bad", "--size", "0"], "bad volume size"),
    (["create", "bad", "--size", "16M"], "32 MiB to"),
    (["create", "Bad_Name", "--size", "64M"], "bad volume name"),
    (["create", "bad", "--size", "2T"], "quota: volumes-bytes"),
])
def test_bad_volume_input_is_refused_and_creates_nothing(make_user, args, says):
    user = make_user()
    admin("quota", "set", user, "--volumes-bytes", "1G", check=True)
    res = vol(user, *args)
    assert res.returncode != 0 and says in res.stderr, res.stderr
    assert json.loads(vol(user, "list", "--json", check=True).stdout) == []


@pytest.mark.parametrize("spec, says", [
    ("v:data", "bad value for volume"), ("v:/", "bad value for volume"),
    ("v:/etc", "the system needs it"),
    ("v:/a/../etc", "bad volume path"), ("v:/proc/x", "the system needs it"),
    ("nope:/data", "not found")])
def test_bad_launch_volumes_are_refused_before_anything_is_created(make_user, spec, says):
    user = make_user()
    vol(user, "create", "v", "--size", "32M", check=True)
    res = oarcloud(user, "launch", "--name", "x", "--volume", spec, "--walltime", "0:05")
    assert res.returncode != 0 and says in res.stderr, res.stderr
    assert json.loads(oarcloud(user, "list", "--json", check=True).stdout) == []


def test_a_volume_held_by_a_killed_prologue_is_free_once_its_job_ended(lab, make_user):
    """Twelve readers whose prologue is killed half way (its node agent gone,
    no teardown of its own): once OAR ends the job, the volume is free, and a
    writer gets it."""
    import time

    from oarcloud_lib.catalog import db
    from test_faults import kill_prologue, submitted
    alice = make_user()
    vol(alice, "create", "kv", "--size", "32M", check=True)
    job = submitted(alice, "--nodes", "1", "--count", "12", "--name", "readers",
                    "--volume", "kv:/k:ro")
    vid, deadline = volume_id("kv", alice), time.monotonic() + 60
    with db.connect() as conn:
        while not conn.execute("SELECT count(*) FROM volume_attachments WHERE volume = %s"
                               " AND state = 'attached'", (vid,)).fetchone()[0]:
            assert time.monotonic() < deadline, "no instance got the volume"
            time.sleep(0.02)
    kill_prologue(job)
    assert json.loads(vol(alice, "show", "kv", "--json").stdout)["attachments"] == []
    assert volume_mounts("node-1", vid) == [] and volume_mounts("node-2", vid) == []
    launch(alice, "--name", "writer", "--volume", "kv:/k", "--cores", "1")
    assert sh(alice, "writer", "touch /k/w").returncode == 0
    oarcloud(alice, "delete", "writer", "--wait", check=True)


def test_a_writer_whose_node_agent_was_killed_frees_its_volume_for_the_next_writer(
        lab, make_user):
    """w1's prologue (its node agent) is killed with the volume mounted in w1,
    before the prologue ends: no teardown of its own.  While it holds, a
    second writer is refused; once OAR ended the job, the next writer gets it."""
    import time

    from oarcloud_lib.catalog import db
    from conftest import wait_job
    from test_faults import kill_prologue_agents, submitted, wait_alive
    alice = make_user()
    vol(alice, "create", "kw", "--size", "32M", check=True)
    job = submitted(alice, "--name", "w1", "--cores", "1", "--volume", "kw:/k")
    vid, deadline = volume_id("kw", alice), time.monotonic() + 60

    def state(conn, sql):
        row = conn.execute(sql, (vid,)).fetchone()
        return row and row[0]
    with db.connect() as conn, db.connect() as holder:
        # The prologue updates w1's row twice: creating, then running once its
        # volumes are mounted.  Held between the two, the prologue waits there.
        inst = "SELECT i.state FROM instances i JOIN volume_attachments a ON" \
               " a.domain = i.domain WHERE a.volume = %s"
        while state(conn, inst) != "creating":
            assert time.monotonic() < deadline, "w1's prologue never started creating"
            time.sleep(0.005)
        with holder.transaction():
            locked = state(holder, inst + " FOR UPDATE OF i")
            assert locked == "creating", "the prologue ended before the test held it"
            while state(conn, "SELECT state FROM volume_attachments WHERE volume = %s") \
                    != "attached":
                assert time.monotonic() < deadline, "w1 never got the volume"
                time.sleep(0.02)
            res = oarcloud(alice, "launch", "--name", "w2", "--volume", "kw:/k",
                           "--walltime", "0:05")
            assert res.returncode == 4 and "attached read-write to w1" in res.stderr, \
                res.stderr
            kill_prologue_agents(job)
    assert wait_job(str(job))["state"] == "Error"
    wait_alive()
    assert json.loads(vol(alice, "show", "kw", "--json").stdout)["attachments"] == []
    assert volume_mounts("node-1", vid) == [] and volume_mounts("node-2", vid) == []
    launch(alice, "--name", "w2", "--volume", "kw:/k", "--cores", "1")
    assert sh(alice, "w2", "touch /k/w").returncode == 0
    oarcloud(alice, "delete", "w2", "--wait", check=True)


def test_what_a_killed_broker_left_in_the_volume_store_is_swept_by_the_monitor(lab, make_user):
    """A broker killed while it made a volume leaves a file that no row names
    (its transaction rolled back), a snapshot's half copy, its fill's mount:
    the monitor deletes them at its next sweep (at its start here), and
    nothing of a volume.  While a volume is being made, nothing is swept."""
    import signal

    from oarcloud_lib import daemons, paths
    from oarcloud_lib.catalog import db
    from oarcloud_lib.node import disk
    from oarcloud_lib.server import monitor, volumestore
    from oarcloud_lib.tools import ext4
    alice = make_user()
    vol(alice, "create", "real", "--size", "32M", check=True)
    real = paths.volume_image(volume_id("real", alice))
    with db.connect() as conn:
        top = conn.execute("SELECT max(id) FROM volumes").fetchone()[0]
    orphan = paths.volume_image(top + 1000)
    half = paths.VOLUME_STORE / ("%d.tmp" % (top + 1001))
    fill = paths.VOLUME_MOUNTS / ("fill-%d-killed" % (top + 1000))
    ext4.make(orphan, 32 * MiB)
    half.write_bytes(b"half a copy")
    paths.ensure_dir(paths.VOLUME_MOUNTS, 0o700, 0, 0)
    fill.mkdir()
    disk.attach(orphan, fill, options="loop,nosuid,nodev,noatime")
    try:
        with db.connect() as holder, holder.transaction(), db.connect() as conn:
            holder.execute("LOCK TABLE volumes IN SHARE ROW EXCLUSIVE MODE")  # as a create does
            assert volumestore.sweep(conn) == []
        assert orphan.exists() and half.exists() and os.path.ismount(fill)
        old = monitor.running_pid()
        os.kill(old, signal.SIGKILL)
        assert daemons.wait_for(lambda: not (orphan.exists() or half.exists() or fill.exists()),
                                timeout=60, interval=0.1), "the monitor swept nothing"
        assert monitor.running_pid() not in (None, old)
        assert real.exists()
        vol(alice, "delete", "real", check=True)
    finally:
        disk.detach(fill)
        for f in (orphan, half):
            f.unlink(missing_ok=True)
        if fill.exists():
            fill.rmdir()


def test_a_volume_from_an_image_holds_its_files_as_the_instance_s_root(make_user):
    alice = make_user()
    out = json.loads(vol(alice, "create", "rootcopy", "--size", "64M", "--from", "tiny",
                         "--json", check=True).stdout)
    assert out["origin"] == "image tiny"
    launch(alice, "--name", "img", "--volume", "rootcopy:/img", "--cores", "1")
    res = sh(alice, "img", "stat -c '%u %a' /img/bin/busybox && /img/bin/busybox true")
    assert res.stdout.split() == ["0", "755"], res.stdout + res.stderr
    oarcloud(alice, "delete", "img", "--wait", check=True)
    # an image of the user's own, 48 MiB unpacked, into a 32 MiB volume
    home = Path(os.path.expanduser("~%s" % alice))
    as_user(alice, ["sh", "-c", "mkdir -p big/bin && cp /bin/busybox big/bin/ && "
                    "head -c 50331648 /dev/zero > big/fill"], check=True)
    oarcloud(alice, "image", "import", str(home / "big"), "--name", "big-" + alice, check=True)
    for args, says, code in ((["small", "--size", "32M", "--from", "big-" + alice],
                              "does not fit in the volume", 2),
                             (["nothere", "--size", "64M", "--from", "no-such-image"],
                              "not found", 3)):
        res = vol(alice, "create", *args)
        assert res.returncode == code and says in res.stderr, res.stderr
    assert [r["name"] for r in json.loads(vol(alice, "list", "--json").stdout)] == ["rootcopy"]
