#!/opt/oarcloud/venv/bin/python
"""Image benchmark, on the lab, with baselines measured in the same run:

- launch time of a cached 10 MB image vs a cached 1 GB image (goal: ratio < 1.2);
- first deploy (node cache fill: fetch, verify, unpack, shift) vs a bare
  `zstd -dc FILE | tar -x` of the same file on the same disk (goal: >= 0.8 of it);
- live save time vs bytes changed, on a 10 MB and a 1 GB image (goal:
  proportional to the change, not to the image), beside OneLXC's way of
  saving: `tar czf` of the instance's whole root filesystem.

Run as root with the lab up (oarcloud-admin lab up --nodes 2):
    bench/images.py [--repeat 3] [--big-mb 1024]
Figures only; the goals (docs/benchmarks.md) are compared, never asserted.
"""
import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ADMIN, TREE, USER_CLI, VENV_PY, run, run_as
from oarcloud_lib.catalog import db, images, joblog
from oarcloud_lib.server import imagestore

USER = "ocbimg"

# On a node: first deploy of an image (cold cache) vs bare zstd -dc | tar -x.
DEPLOY = r"""
import shutil, subprocess, sys, tempfile, time
from pathlib import Path
from oarcloud_lib.node import imagecache
from oarcloud_lib.server import imagestore
sha = sys.argv[1]
src = imagestore.path_of(sha)
def bare():
    d = tempfile.mkdtemp(dir="/var/lib/oarcloud")
    t = time.monotonic()
    subprocess.run("zstd -dcq %s | tar -x -C %s" % (src, d), shell=True, check=True)
    subprocess.run(["sync"])
    el = time.monotonic() - t
    shutil.rmtree(d)
    return el
def ours():
    shutil.rmtree(imagecache.cache_dir() / sha, ignore_errors=True)
    t = time.monotonic()
    imagecache.ensure(sha, "bench")
    subprocess.run(["sync"])
    return time.monotonic() - t
bare()  # the store file in the page cache for both
out = []
for _ in range(int(sys.argv[2])):
    out.append((bare(), ours()))
print(" ".join("%.4f,%.4f" % p for p in out))
"""


def as_user(argv, check=True):
    res = run_as(USER, argv)
    if check and res.returncode != 0:
        sys.exit("%s failed: %s" % (" ".join(argv[:4]), res.stderr))
    return res


def make_tree(name, mb):
    """tiny's root filesystem plus mb MB of incompressible data, owned by the user."""
    home = Path(os.path.expanduser("~" + USER))
    root = home / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    with db.connect() as conn:
        src = imagestore.path_of(images.get(conn, "tiny")["sha256"])
    subprocess.run(["tar", "-I", "zstd", "-xf", str(src), "-C", str(root)], check=True)
    (root / "data").mkdir()
    for i in range(max(1, mb // 100)):
        chunk = min(100, mb - 100 * i) if mb >= 100 else mb
        with open(root / "data" / ("f%02d" % i), "wb") as f:
            f.write(os.urandom(chunk << 20))
    pw = pwd.getpwnam(USER)
    subprocess.run(["chown", "-R", "%d:%d" % (pw.pw_uid, pw.pw_gid), str(root)], check=True)
    return root


def events(job_id):
    with db.connect() as conn:
        return joblog.events(conn, job_id)


def launch(image, nodes=1, count=None):
    t0 = time.monotonic()
    args = [USER_CLI, "launch", "--image", image, "--nodes", str(nodes), "--walltime", "0:30",
            "--wait", "--json"] + (["--count", str(count)] if count else [])
    rows = json.loads(as_user(args).stdout)
    total = time.monotonic() - t0
    ev = events(rows[0]["job_id"])
    hooks = [float(e["message"].rsplit(" in ", 1)[1].rstrip("s")) for e in ev
             if " node(s) in " in e["message"]]
    cached = [e["message"] for e in ev if "cached in" in e["message"]]
    return rows, total, (hooks[0] if hooks else None), cached


def delete(rows):
    as_user([USER_CLI, "delete", rows[0]["name"], "--wait"])


def timed(argv):
    t = time.monotonic()
    res = as_user(argv)
    return time.monotonic() - t, res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=1024)
    args = ap.parse_args()
    run([ADMIN, "user", "add", USER])
    names = {"small": "bench-10m", "big": "bench-%dm" % args.big_mb}
    try:
        # -- import (also builds the two images) -----------------------------------
        for key, mb in (("small", 9), ("big", args.big_mb)):
            as_user([USER_CLI, "image", "delete", names[key]], check=False)
            tree = make_tree(names[key], mb)
            took, _ = timed([USER_CLI, "image", "import", str(tree), "--name", names[key]])
            shutil.rmtree(tree)
            with db.connect() as conn:
                row = images.get(conn, names[key])
            print("import %-10s %5d MB unpacked, %5d MB packed: %.1fs (%.0f MB/s)" % (
                names[key], row["unpacked"] >> 20, row["size"] >> 20, took,
                (row["unpacked"] >> 20) / took))
        # -- first deploy vs zstd -d | tar -x ------------------------------------
        with db.connect() as conn:
            big = images.get(conn, names["big"])
        res = run([ADMIN, "lab", "exec", "node-1", "--", VENV_PY, "-c", DEPLOY, big["sha256"],
                   str(args.repeat)], cwd=TREE)
        if res.returncode != 0:
            sys.exit("deploy bench failed: %s" % res.stderr)
        pairs = [tuple(map(float, p.split(","))) for p in res.stdout.split()]
        bare, ours = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        mb = big["size"] >> 20
        print("first deploy of %d MB (packed): bare zstd -dc | tar -x %.2fs (%.0f MB/s); "
              "oarcloud cache fill (verify + unpack + shift + fingerprint) %.2fs (%.0f MB/s): "
              "%.2f of bare (goal >= 0.8)" % (mb, bare, mb / bare, ours, mb / ours, bare / ours))
        # -- launch with a cached small vs big image -------------------------------
        for key in ("small", "big"):  # warm both nodes' caches
            rows, _, _, _ = launch(names[key], nodes=2)
            delete(rows)
        times = {"small": [], "big": []}
        hooks = {"small": [], "big": []}
        for _ in range(args.repeat):
            for key in ("small", "big"):
                rows, total, hook, cached = launch(names[key])
                assert not cached, cached  # warm: nothing fetched
                times[key].append(total)
                hooks[key].append(hook)
                delete(rows)
        for key in ("small", "big"):
            print("launch %-10s (cached): submit to running median %.2fs, hook median %.3fs" % (
                names[key], statistics.median(times[key]), statistics.median(hooks[key])))
        print("launch big/small ratio: %.2f submit to running, %.2f hook (goal < 1.2)" % (
            statistics.median(times["big"]) / statistics.median(times["small"]),
            statistics.median(hooks["big"]) / statistics.median(hooks["small"])))
        # -- save time vs bytes changed --------------------------------------------
        print("%-10s %8s %9s %10s" % ("IMAGE", "CHANGED", "SAVE", "LAYER"))
        for key in ("small", "big"):
            rows = launch(names[key])[0]
            name = rows[0]["name"]
            for change in (1, 10, 100):
                as_user([USER_CLI, "exec", name, "--", "sh", "-c",
                         "rm -f /root/chg; head -c %d /dev/urandom > /root/chg" % (change << 20)])
                took, _ = timed([USER_CLI, "image", "save", name, "bench-save"])
                with db.connect() as conn:
                    size = images.get(conn, "bench-save")["size"]
                as_user([USER_CLI, "image", "delete", "bench-save"])
                print("%-10s %6d MB %8.2fs %7d MB" % (names[key], change, took, size >> 20))
            # OneLXC's way: the whole root filesystem, tar czf, same instance, same node.
            domain = "oc%d-0" % rows[0]["job_id"]
            t = time.monotonic()
            res = run([ADMIN, "lab", "exec", rows[0]["node"], "--", "sh", "-c",
                       "tar czf - -C /var/lib/oarcloud/instances/%s/root . | wc -c" % domain])
            took = time.monotonic() - t
            print("%-10s baseline tar czf of the whole root (OneLXC): %.2fs, %d MB" % (
                names[key], took, int(res.stdout.strip() or 0) >> 20))
            delete(rows)
    finally:
        for key in ("small", "big"):
            as_user([USER_CLI, "image", "delete", names[key]], check=False)
        run([ADMIN, "user", "del", USER])


if __name__ == "__main__":
    main()
