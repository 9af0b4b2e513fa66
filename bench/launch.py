#!/opt/oarcloud/venv/bin/python
"""Launch benchmark: `oarcloud launch --wait` for 1, 10 and 50 instances on the
lab's nodes, split into OAR scheduling, hook work and domain start, beside a
baseline measured in the same run: a bare `virsh start` of an equivalent
domain (same template, same image, same overlay root) on a node.  Also the
memory an idle instance takes.

Run as root with the lab up (oarcloud-admin lab up --nodes 2):
    bench/launch.py [--counts 1,10,50] [--repeat 5]
Figures only; the goals (docs/benchmarks.md) are compared, never asserted.
"""
import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

from benchlib import ADMIN, TREE, USER_CLI, VENV_PY, run, run_as
from oarcloud_lib.catalog import db, joblog

USER = "ocbench"

# Run on a node: an instance-like domain started by bare virsh (no hooks, no OAR).
BARE = r"""
import subprocess, sys, time
from oarcloud_lib.catalog import db, images
from oarcloud_lib.node import idmap, imagecache, rootfs
from oarcloud_lib.node.driver import DomainSpec
from oarcloud_lib.names import INTEGRATION_BRIDGE
with db.connect() as conn:
    sha = images.get(conn, "tiny")["sha256"]
lower = imagecache.ensure(sha, "tiny")
name, times = "ocbench-0", []
for i in range(int(sys.argv[1])):
    root = rootfs.prepare(name, [lower], [sha], idmap.tenant_base(idmap.MAX_SLOT))
    spec = DomainSpec(name=name, job_id=0, owner="bench", cores=1, memory=256 << 20,
                      rootfs=str(root), uid_base=idmap.tenant_base(idmap.MAX_SLOT),
                      nics=[{"bridge": INTEGRATION_BRIDGE, "mac": "52:54:c6:13:ff:fe",
                             "port": name, "ip": "198.18.255.254", "prefix": 16,
                             "gateway": None, "mtu": 1450}])
    open("/tmp/ocbench.xml", "w").write(spec.xml())
    subprocess.run(["virsh", "-q", "-c", "lxc:///system", "define", "/tmp/ocbench.xml"],
                   check=True, stdout=subprocess.DEVNULL)
    t = time.monotonic()
    subprocess.run(["virsh", "-q", "-c", "lxc:///system", "start", name], check=True,
                   stdout=subprocess.DEVNULL)
    times.append(time.monotonic() - t)
    subprocess.run(["virsh", "-q", "-c", "lxc:///system", "destroy", name], stdout=subprocess.DEVNULL)
    subprocess.run(["virsh", "-q", "-c", "lxc:///system", "undefine", name], stdout=subprocess.DEVNULL)
    rootfs.remove(name)
print(" ".join("%.4f" % t for t in times))
"""


# Run on a node: an instance's root prepared the way before per-tenant uid
# ranges (a plain overlay on the cache entry), with the layers through
# idmapped mounts in the tenant's range but on the node's disk (before
# instance disks), and as now, on a disk of its own (oarcloud_lib.node.disk,
# the site's default size, both allocations); each removed again.
ROOT = r"""
import json, os, subprocess, sys, time
from oarcloud_lib.catalog import db, images
from oarcloud_lib.node import idmap, imagecache, rootfs
n, image = int(sys.argv[1]), sys.argv[2]
with db.connect() as conn:
    sha = images.get(conn, image)["sha256"]
lower = imagecache.ensure(sha, image)
base, name = idmap.tenant_base(idmap.MAX_SLOT), "ocbench-root"
d = rootfs.instance_dir(name)
plain, mapped, sparse, reserved = [], [], [], []
for i in range(n):
    t = time.monotonic()
    for sub in ("upper", "work", "root"):
        os.makedirs(d / sub, exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,workdir=%s"
                    % (lower, d / "upper", d / "work"), str(d / "root")], check=True)
    rootfs.remove(name)
    plain.append(time.monotonic() - t)
    for times, disk in ((mapped, None), (sparse, "sparse"), (reserved, "reserved")):
        t = time.monotonic()
        rootfs.prepare(name, [lower], [sha], base, disk=disk and (4 << 30, disk))
        rootfs.remove(name)
        times.append(time.monotonic() - t)
print(json.dumps({"plain": plain, "idmapped": mapped, "disk_sparse": sparse,
                  "disk_reserved": reserved}))
"""


def root_prepare(repeat, image):
    """{plain, idmapped, disk_sparse, disk_reserved}: seconds to prepare and
    remove an instance root each way, on node-1."""
    res = run([ADMIN, "lab", "exec", "node-1", "--", VENV_PY, "-c", ROOT, str(repeat), image],
              cwd=TREE)
    if res.returncode != 0:
        sys.exit("root prepare failed: %s" % res.stderr)
    return json.loads(res.stdout)


def as_user(argv):
    return run_as(USER, argv)


def bare_start(repeat):
    res = run([ADMIN, "lab", "exec", "node-1", "--", VENV_PY, "-c", BARE, str(repeat)],
              cwd=TREE)
    if res.returncode != 0:
        sys.exit("bare virsh start failed: %s" % res.stderr)
    return [float(x) for x in res.stdout.split()]


def stamp(text):
    return datetime.fromisoformat(text).timestamp()


def launch(count, nodes):
    t0 = time.time()
    res = as_user([USER_CLI, "launch", "--count", str(count), "--nodes", str(nodes),
                   "--walltime", "0:20", "--wait", "--json"])
    t_running = time.time()
    if res.returncode != 0:
        sys.exit("launch of %d failed: %s" % (count, res.stderr))
    rows = json.loads(res.stdout)
    job_id = rows[0]["job_id"]
    # reachable: a command runs in the last instance (through the broker)
    ok = as_user([USER_CLI, "exec", rows[-1]["name"], "--", "true"]).returncode == 0
    t_reach = time.time()
    with db.connect() as conn:
        events = joblog.events(conn, job_id)
    first = stamp(next(e["at"] for e in events if "creating" in e["message"]))
    done = stamp(next(e["at"] for e in events if " node(s) in " in e["message"]))
    starts = [float(e["message"].split("domain start ")[1].split("s")[0])
              for e in events if "domain start" in e["message"]]
    mem = idle_memory(rows)
    t_delete = time.time()
    as_user([USER_CLI, "delete", rows[0]["name"], "--wait"])
    return {"count": count, "nodes": nodes, "total": t_running - t0, "reachable": t_reach - t0,
            "delete": time.time() - t_delete, "reached": ok, "scheduling": first - t0,
            "hooks": done - first, "after_hooks": t_running - done,
            "domain_start_mean": statistics.mean(starts),
            "hook_per_instance": (done - first) / max(1, count / nodes),
            "memory": mem}


def idle_memory(rows):
    """Mean used memory of the instances (libvirt: the container's cgroup), and
    of the libvirt_lxc controller process beside each."""
    used, ctl = [], []
    for r in rows[:10]:
        domain = "oc%d-%d" % (r["job_id"], rows.index(r))
        info = run([ADMIN, "lab", "exec", r["node"], "--", "virsh", "-c", "lxc:///system",
                    "dominfo", domain]).stdout
        for line in info.splitlines():
            if line.startswith("Used memory:"):
                used.append(int(line.split()[2]) * 1024)
            if line.startswith("Id:") and line.split()[1].isdigit():
                status = Path("/proc/%s/status" % line.split()[1]).read_text()
                ctl += [int(l.split()[1]) * 1024 for l in status.splitlines()
                        if l.startswith("VmRSS:")]
    return {"instance": statistics.mean(used) if used else None,
            "controller": statistics.mean(ctl) if ctl else None}


def marginal(results, base):
    """Hook time split into a part per job and a part per instance: the line
    through the two largest multi-node runs (instances per node against hook
    time), the per-instance slope beside the bare start."""
    multi = sorted((r for r in results if r["count"] >= 10), key=lambda r: r["count"])
    if len(multi) < 2:
        return
    a, b = multi[-2], multi[-1]
    per_a, per_b = a["count"] / a["nodes"], b["count"] / b["nodes"]
    if per_b <= per_a:
        return
    slope = (b["hooks"] - a["hooks"]) / (per_b - per_a)
    print("hook time per instance on a node (%d -> %d instances): %.3fs = %.2fx the bare start;"
          " per job: %.2fs (allocation, fan-out, network sync)"
          % (a["count"], b["count"], slope, slope / base, a["hooks"] - slope * per_a))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="1,10,50")
    ap.add_argument("--repeat", type=int, default=5, help="runs of the 1-instance case")
    ap.add_argument("--json", default="/tmp/oarcloud-bench-launch.json",
                    help="where the results go (JSON)")
    args = ap.parse_args()
    run([ADMIN, "user", "add", USER])
    out = {}
    try:
        bare = bare_start(args.repeat)
        base = statistics.median(bare)
        out["bare_start"] = bare
        print("baseline: bare virsh start of an equivalent domain: median %.3fs (%d runs)"
              % (base, len(bare)))
        for image in ("tiny", "bookworm"):
            roots = root_prepare(max(args.repeat, 10), image)
            out["root_prepare_" + image] = roots
            before, after, sparse, reserved = (statistics.median(roots[k]) for k in (
                "plain", "idmapped", "disk_sparse", "disk_reserved"))
            print("instance root of %s: plain overlay (before per-tenant ranges) median %.4fs,"
                  " idmapped layers %.4fs: %.2fx; the whole 1-instance hook work: see below"
                  % (image, before, after, after / before))
            print("  with its own 4 GiB disk (make + remove): sparse %.4fs, %.2fx the root on "
                  "the node's disk; reserved %.4fs, %.2fx" % (sparse, sparse / after, reserved,
                                                              reserved / after))
        results = out["launches"] = []
        for count in [int(c) for c in args.counts.split(",")]:
            runs = args.repeat if count == 1 else 1
            for _ in range(runs):
                results.append(launch(count, 1 if count == 1 else 2))
        print("%-6s %-5s %8s %9s %10s %7s %11s %12s %9s %12s %8s" % (
            "COUNT", "NODES", "TOTAL", "REACHABLE", "SCHEDULING", "HOOKS", "AFTER_HOOKS",
            "HOOK/INST", "START", "HOOK/BARE", "DELETE"))
        for r in results:
            print("%-6d %-5d %7.2fs %8.2fs %9.2fs %6.2fs %10.2fs %11.3fs %8.3fs %11.2fx %7.2fs" % (
                r["count"], r["nodes"], r["total"], r["reachable"], r["scheduling"], r["hooks"],
                r["after_hooks"], r["hook_per_instance"], r["domain_start_mean"],
                r["hook_per_instance"] / base, r["delete"]))
        ones = [r["reachable"] for r in results if r["count"] == 1]
        if ones:
            print("1 instance, submit to reachable: median %.2fs (goal < 3 s)"
                  % statistics.median(ones))
        for r in results:
            if r["count"] >= 10:
                print("%d instances on %d nodes reachable in %.1fs (goal for 50: < 60 s)"
                      % (r["count"], r["nodes"], r["reachable"]))
        marginal(results, base)
        mem = [r["memory"] for r in results if r["memory"]["instance"]]
        if mem:
            print("idle instance memory: %.1f MiB in the container + %.1f MiB libvirt_lxc "
                  "controller" % (statistics.mean(m["instance"] for m in mem) / 2**20,
                                  statistics.mean(m["controller"] for m in mem) / 2**20))
    finally:
        run([ADMIN, "user", "del", USER])
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
        print("results: %s" % args.json)


if __name__ == "__main__":
    main()
