"""Images on the lab: import, layered saves deployed on the other node, saves at a
job's end, rights between users, hostile input, a corrupt node cache, a killed save."""
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path


from conftest import USER_CLI, admin, node_exec, pids_where, wait_job
from test_instances import NODES, launch, node_leftovers, oarcloud

from oarcloud_lib import paths
from oarcloud_lib.catalog import db, images
from oarcloud_lib.server import imagestore


def image_row(name):
    with db.connect() as conn:
        return images.get(conn, name)


def store_files():
    return sorted(p.name for p in paths.IMAGE_STORE.iterdir())


def give(user, path):
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return str(path)


def tiny_tarball(user, name="rootfs.tar.gz"):
    """The tiny image as a .tar.gz (OneLXC's format) or .tar.zst in the user's home."""
    home = Path(os.path.expanduser("~%s" % user))
    src = imagestore.path_of(image_row("tiny")["sha256"])
    out = home / name
    if name.endswith(".tar.zst"):
        shutil.copy(src, out)
    else:
        with open(out, "wb") as f:
            subprocess.run("zstd -dcq %s | gzip -1" % src, shell=True, stdout=f, check=True)
    return give(user, out)


def hostile_tarball(user, name, member):
    home = Path(os.path.expanduser("~%s" % user))
    out = home / name
    with tarfile.open(out, "w") as t:
        info = tarfile.TarInfo("etc")
        info.type = tarfile.DIRTYPE
        t.addfile(info)
        t.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return give(user, out)


def member(name, kind="file", dev=(0, 0)):
    info = tarfile.TarInfo(name)
    if kind == "file":
        info.size = 1
    else:
        info.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
        info.devmajor, info.devminor = dev
    return info


def test_import_save_and_launch_the_change_on_the_other_node(make_user):
    user = make_user()
    base, saved = "base-" + user, "saved-" + user
    res = oarcloud(user, "image", "import", tiny_tarball(user), "--name", base,
                   "--description", "busybox from a tarball")
    assert res.returncode == 0 and "imported" in res.stdout, res.stdout + res.stderr
    parent_before = image_row(base)
    assert parent_before["owner"] == user and parent_before["visibility"] == "private"
    rows = launch(user, "--image", base, "--name", "src", "--count", "2", "--nodes", "1")
    node = rows[0]["node"]
    oarcloud(user, "exec", "src-0", "--", "sh", "-c",
             "echo changed > /etc/motd && rm /etc/inittab", check=True)
    res = oarcloud(user, "image", "save", "src-0", saved)
    assert res.returncode == 0 and "a layer over %s" % base in res.stdout, res.stdout + res.stderr
    shown = json.loads(oarcloud(user, "image", "show", saved, "--json", check=True).stdout)
    assert shown["parent"] == base and shown["depth"] == 1 and shown["chain"] == [saved, base]
    assert shown["size"] < parent_before["size"]  # only the change
    # The first job holds its node: the new one lands on the other.
    (dst,) = launch(user, "--image", saved, "--name", "dst")
    assert dst["node"] != node
    res = oarcloud(user, "exec", "dst", "--", "sh", "-c", "cat /etc/motd; ls /etc/inittab")
    assert res.stdout.strip() == "changed" and res.returncode != 0, res.stdout + res.stderr
    # The parent is unchanged: catalog, store, and the other instance of it.
    assert image_row(base) == parent_before
    assert imagestore.sha256_file(imagestore.path_of(parent_before["sha256"])) == \
        parent_before["sha256"]
    res = oarcloud(user, "exec", "src-1", "--", "sh", "-c", "ls /etc/motd; cat /etc/inittab")
    assert "::sysinit" in res.stdout and "No such file" in res.stderr
    # --flatten: the whole root, depth 0, the parent kept for the record
    oarcloud(user, "exec", "src-1", "--", "sh", "-c", "echo flat > /etc/motd", check=True)
    res = oarcloud(user, "image", "save", "src-1", "flat-" + user, "--flatten")
    assert res.returncode == 0 and "flattened" in res.stdout, res.stdout + res.stderr
    flat = image_row("flat-" + user)
    assert flat["depth"] == 0 and flat["parent"] == base and flat["unpacked"] > 1 << 20
    assert oarcloud(user, "image", "delete", "flat-" + user).returncode == 0
    # Deleting what is in use is refused; then it goes, files included.
    res = oarcloud(user, "image", "delete", base)
    assert res.returncode != 0 and "in use by" in res.stderr and saved in res.stderr
    for name in ("src-0", "dst"):
        assert oarcloud(user, "delete", name, "--wait").returncode == 0
    assert oarcloud(user, "image", "delete", saved).returncode == 0
    assert oarcloud(user, "image", "delete", base).returncode == 0
    with db.connect() as conn:  # same content as tiny (ingest is deterministic): kept
        shared = conn.execute("SELECT 1 FROM images WHERE sha256 = %s",
                              (parent_before["sha256"],)).fetchone() is not None
    assert image_row(base) is None
    assert ("%s.tar.zst" % parent_before["sha256"] in store_files()) == shared
    assert ("%s.tar.zst" % image_row("tiny")["sha256"]) in store_files()
    assert node_leftovers() == {}


def test_save_on_exit_when_the_walltime_ends(make_user):
    user = make_user()
    target = "onexit-" + user
    res = oarcloud(user, "launch", "--name", "short", "--walltime", "0:00:25",
                   "--save-on-exit", target, "--wait", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    (row,) = json.loads(res.stdout)
    oarcloud(user, "exec", "short", "--", "sh", "-c", "echo kept > /root/at-exit", check=True)
    wait_job(row["job_id"], timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        saves = json.loads(oarcloud(user, "image", "saves", "--json", check=True).stdout)
        if saves and saves[0]["state"] in ("done", "failed"):
            break
        time.sleep(1)
    assert saves[0]["state"] == "done" and saves[0]["image"] == target, saves
    assert image_row(target)["parent"] == "tiny"
    (again,) = launch(user, "--image", target, "--name", "again")
    res = oarcloud(user, "exec", "again", "--", "cat", "/root/at-exit")
    assert res.stdout.strip() == "kept", res.stdout + res.stderr
    assert "saved as image %s" % target in oarcloud(user, "logs", "short", check=True).stdout
    assert oarcloud(user, "delete", "again", "--wait").returncode == 0
    # nothing kept on the nodes once saved
    for n in NODES:
        assert node_exec(n, "ls", "/var/lib/oarcloud/kept").stdout.split() == []


def _wait_save(user, job_id):
    deadline = time.monotonic() + 120
    while True:
        rows = [r for r in json.loads(oarcloud(user, "image", "saves", "--json",
                                               check=True).stdout) if r["job_id"] == job_id]
        if rows and rows[0]["state"] in ("done", "failed"):
            return rows[0]
        assert time.monotonic() < deadline, rows
        time.sleep(1)


def test_a_failed_save_on_exit_keeps_its_changes_until_retried_or_discarded(make_user):
    """The save-on-exit of a user over their image-bytes quota fails: the
    changes stay on the node (nothing lost), another user can neither retry
    nor discard them, the owner retries once the quota allows it; a second
    failed one is discarded, and nothing is left on the nodes."""
    user, other = make_user(), make_user()
    admin("quota", "set", user, "--images-bytes", "1K", check=True)
    rows = []
    for name, target in (("k1", "kept1-" + user), ("k2", "kept2-" + user)):
        res = oarcloud(user, "launch", "--name", name, "--walltime", "0:00:25",
                       "--save-on-exit", target, "--wait", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        rows.append(json.loads(res.stdout)[0])
        oarcloud(user, "exec", name, "--", "sh", "-c",
                 "head -c 200000 /dev/urandom > /root/at-exit", check=True)
    failed = []
    for row in rows:
        wait_job(row["job_id"], timeout=120)
        save = _wait_save(user, row["job_id"])
        assert save["state"] == "failed" and "images-bytes" in save["error"] \
            and "the changes are kept on %s" % row["node"] in save["error"], save
        failed.append(save)
    domain = failed[0]["domain"]
    assert node_exec(rows[0]["node"], "ls", "/var/lib/oarcloud/kept").stdout.split().count(
        domain) == 1
    # another user's save is not found; bad ids and a done save are refused
    for args in (["--retry", str(failed[0]["id"])], ["--discard", str(failed[0]["id"])]):
        res = oarcloud(other, "image", "saves", *args)
        assert res.returncode != 0 and "save not found: %d" % failed[0]["id"] in res.stderr, \
            res.stderr
    res = oarcloud(user, "image", "saves", "--retry", "x1")
    assert res.returncode != 0 and "a save id is a number" in res.stderr
    res = oarcloud(user, "image", "saves", "--retry", str(failed[0]["id"]), "--name", "a/b")
    assert res.returncode != 0 and "a/b" in res.stderr, res.stderr
    # still over quota: failed again, still kept
    res = oarcloud(user, "image", "saves", "--retry", str(failed[0]["id"]))
    assert res.returncode != 0 and "failed again" in res.stdout, res.stdout + res.stderr
    assert domain in node_exec(rows[0]["node"], "ls", "/var/lib/oarcloud/kept").stdout.split()
    # the quota lifted: the retry stores them under a new name
    admin("quota", "set", user, "--images-bytes", "none", check=True)
    res = oarcloud(user, "image", "saves", "--retry", str(failed[0]["id"]), "--name",
                   "retried-" + user)
    assert res.returncode == 0 and "now image retried-%s" % user in res.stdout, \
        res.stdout + res.stderr
    (again,) = launch(user, "--image", "retried-" + user, "--name", "again", "--cores", "1")
    assert oarcloud(user, "exec", "again", "--", "sh", "-c", "wc -c < /root/at-exit"
                    ).stdout.strip() == "200000"
    res = oarcloud(user, "image", "saves", "--retry", str(failed[0]["id"]))
    assert res.returncode != 0 and "is done" in res.stderr
    # the second one is discarded
    res = oarcloud(user, "image", "saves", "--discard", str(failed[1]["id"]))
    assert res.returncode == 0 and "dropped" in res.stdout, res.stdout + res.stderr
    states = {r["id"]: r["state"] for r in json.loads(oarcloud(
        user, "image", "saves", "--json").stdout)}
    assert (states[failed[0]["id"]], states[failed[1]["id"]]) == ("done", "discarded")
    assert oarcloud(user, "delete", "again", "--wait").returncode == 0
    for n in NODES:
        assert node_exec(n, "ls", "/var/lib/oarcloud/kept").stdout.split() == []


def test_rights_between_users_and_bad_input(make_user):
    owner, other = make_user(), make_user()
    private = "priv-" + owner
    res = oarcloud(owner, "image", "import", tiny_tarball(owner, "t.tar.zst"), "--name", private)
    assert res.returncode == 0, res.stderr
    before_rows, before_store = image_row(private), store_files()
    # Another user: not found, whatever they try.
    for args in (["image", "show", private], ["image", "share", private, other],
                 ["image", "delete", private], ["image", "publish", private],
                 ["launch", "--image", private]):
        res = oarcloud(other, *args)
        assert res.returncode != 0 and "image not found: %s" % private in res.stderr, (args, res.stderr)
    assert private not in oarcloud(other, "image", "list").stdout
    # ...nor save over its name
    launch(other, "--name", "mine")
    res = oarcloud(other, "image", "save", "mine", private)
    assert res.returncode != 0 and "exists" in res.stderr, res.stderr
    # Bad names and hostile archives are refused before anything is stored.
    tarball = tiny_tarball(other)
    for name in ("a/b", "..", "x" * 300, "../../etc", "-rf"):
        res = oarcloud(other, "image", "import", tarball, "--name", name)
        assert res.returncode == 2 and "bad image name" in res.stderr, (name, res.stderr)
    for i, (m, why) in enumerate([
            (member("/etc/passwd"), "absolute path"),
            (member("../../../etc/cron.d/x"), "leaves the image root"),
            (member("etc/mem", "chr", (1, 1)), "device node"),
            (member("etc/sda", "blk", (8, 0)), "block device")]):
        res = oarcloud(other, "image", "import", hostile_tarball(other, "h%d.tar" % i, m),
                       "--name", "hostile-%d-%s" % (i, other))
        assert res.returncode == 2 and why in res.stderr, (why, res.stderr)
    res = oarcloud(other, "image", "import", "/etc/shadow", "--name", "shadow-" + other)
    assert res.returncode != 0 and "ermission denied" in res.stderr + res.stdout
    assert image_row(private) == before_rows and store_files() == before_store
    assert [r for r in json.loads(oarcloud(other, "image", "list", "--json").stdout)
            if r["owner"] == other] == []
    res = oarcloud(other, "image", "build", "--debootstrap", "bookworm", "--name", "b-" + other)
    assert res.returncode == 2 and "only admins" in res.stderr, res.stderr
    # Shared: the other user may launch it, still not delete it.
    assert oarcloud(owner, "image", "share", private, other, check=True).returncode == 0
    res = oarcloud(other, "image", "delete", private)
    assert res.returncode != 0 and "not yours" in res.stderr
    (row,) = launch(other, "--image", private, "--name", "shared")
    assert row["image"] == private
    for name in ("mine", "shared"):
        assert oarcloud(other, "delete", name, "--wait").returncode == 0
    # Published: everybody sees it.
    assert "is now public" in oarcloud(owner, "image", "publish", private, check=True).stdout
    listed = json.loads(oarcloud(other, "image", "list", "--json", check=True).stdout)
    assert [r["visibility"] for r in listed if r["name"] == private] == ["public"]
    assert oarcloud(owner, "image", "delete", private).returncode == 0


def test_a_corrupt_node_cache_entry_is_fetched_again(make_user):
    user = make_user()
    sha = image_row("tiny")["sha256"]
    launch(user, "--name", "warm", "--nodes", "2")  # tiny in both nodes' caches
    assert oarcloud(user, "delete", "warm-0", "--wait").returncode == 0
    for n in NODES:
        node_exec(n, "sh", "-c", "echo tampered >> /var/lib/oarcloud/cache/%s/rootfs/etc/inittab"
                  % sha, check=True)
    launch(user, "--name", "fresh", "--nodes", "2")
    for name in ("fresh-0", "fresh-1"):
        res = oarcloud(user, "exec", name, "--", "cat", "/etc/inittab", check=True)
        assert "tampered" not in res.stdout
    logs = oarcloud(user, "logs", "fresh-0", check=True).stdout
    assert logs.count("is corrupt") == 2 and logs.count("image tiny: cached") == 2, logs
    assert oarcloud(user, "delete", "fresh-0", "--wait").returncode == 0
    for n in NODES:  # the aside copies went with the last instance using them
        assert node_exec(n, "sh", "-c", "ls -a /var/lib/oarcloud/cache | grep corrupt").stdout == ""
    assert node_leftovers() == {}


def _broker_pids(image):
    return pids_where(lambda args: b"image-save" in args and image.encode() in args
                      and any(a.endswith(b"/broker") for a in args) and args[0] != b"sudo")


def test_a_save_killed_half_way_leaves_catalog_and_store_as_before(make_user):
    user = make_user()
    launch(user, "--name", "big")
    oarcloud(user, "exec", "big", "--", "sh", "-c",
             "head -c 400000000 /dev/urandom > /root/big", check=True, timeout=300)
    before = store_files()
    target = "killed-" + user
    home = os.path.expanduser("~%s" % user)
    save = subprocess.Popen(["runuser", "-u", user, "--", USER_CLI, "image", "save", "big",
                             target], cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not _broker_pids(target) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well into the transfer
    pids = _broker_pids(target)
    assert pids, "the save's broker never showed up"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    save.wait(timeout=60)
    assert save.returncode != 0
    time.sleep(2)  # the node agent sees the broken pipe and thaws the instance
    assert image_row(target) is None and store_files() == before
    res = oarcloud(user, "exec", "big", "--", "sh", "-c", "rm /root/big; echo alive", timeout=30)
    assert res.stdout.strip() == "alive", res.stdout + res.stderr
    # and the name is free for a save that completes
    assert oarcloud(user, "image", "save", "big", target).returncode == 0
    assert oarcloud(user, "image", "delete", target).returncode == 0
    assert oarcloud(user, "delete", "big", "--wait").returncode == 0
