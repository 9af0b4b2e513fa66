#!/opt/oarcloud/venv/bin/python
"""Disk I/O benchmark (issue 13, per-instance I/O limits), on the lab, with a
baseline measured in the same run: direct I/O (dd, O_DIRECT, bounded size) on
the node's own instances directory as root, beside the same I/O as root in an
instance (1 core: the site's throttles, io_*_per_core, once), and in two
instances of two users on one node at once (each keeps its own throttle; the
node's disk is shared).

Run as root with the lab up and its Debian image (the instances' dd is
coreutils', which reports its time; oarcloud-admin lab up --nodes 2 --with-debian):
    bench/io.py [--mib 256] [--json FILE]
Figures only: the goal is that an instance gets about its throttle (ratio
to the configured limit near 1, or the disk's own speed if slower), never
asserted.
"""
import argparse
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import ADMIN, USER_CLI, run, run_as
from oarcloud_lib import config

USERS = ("ocbio1", "ocbio2")
DD = ("dd if=/dev/zero of={f} bs=1M count={n} oflag=direct 2>&1; "
      "dd if={f} of=/dev/null bs=1M iflag=direct 2>&1; rm -f {f}")


def must(res, what):
    if res.returncode != 0:
        sys.exit("%s failed: %s%s" % (what, res.stdout, res.stderr))
    return res


def rates(out, mib):
    """(write MB/s, read MB/s) from two dd reports (busybox or coreutils)."""
    secs = [float(s) for s in re.findall(r"([0-9.]+) ?s(?:econds)?\b", out)]
    if len(secs) < 2:
        sys.exit("unexpected dd output: %s" % out)
    return tuple((mib << 20) / s / 1e6 for s in secs[:2])


def on_node(node, mib):
    script = DD.format(f="/var/lib/oarcloud/instances/.bench-io", n=mib)
    return rates(must(run([ADMIN, "lab", "exec", node, "--", "sh", "-c", script]),
                      "dd on %s" % node).stdout, mib)


def in_instance(user, name, mib):
    script = DD.format(f="/bench-io", n=mib)
    res = must(run_as(user, [USER_CLI, "exec", name, "--", "sh", "-c", script]),
               "dd in %s" % name)
    return rates(res.stdout, mib)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB written then read per run")
    ap.add_argument("--json", default="/tmp/oarcloud-bench-io.json", help="results file")
    args = ap.parse_args()
    conf = config.load()
    limit = (conf.io_write_bytes_per_core / 1e6, conf.io_read_bytes_per_core / 1e6)
    for u in USERS:
        run([ADMIN, "user", "add", u])
    try:
        rows = []
        for u in USERS:
            res = must(run_as(u, [USER_CLI, "launch", "--name", "io", "--cores", "1", "--image",
                                  "bookworm",
                                  "--walltime", "0:20", "--wait", "--json"]), "launch")
            rows.append(json.loads(res.stdout)[0])
        node = rows[0]["node"]
        t = time.monotonic()
        base = on_node(node, args.mib)
        one = in_instance(USERS[0], "io", args.mib)
        same_node = [u for u, r in zip(USERS, rows) if r["node"] == node]
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda u: in_instance(u, "io", args.mib), same_node))
        out = {"mib": args.mib, "limit_mb_s": {"write": limit[0], "read": limit[1]},
               "node_baseline_mb_s": {"write": base[0], "read": base[1]},
               "one_instance_mb_s": {"write": one[0], "read": one[1]},
               "instances_at_once_mb_s": [{"write": w, "read": r} for w, r in both],
               "seconds": time.monotonic() - t}
        print("direct I/O, %d MiB:          write MB/s  read MB/s" % args.mib)
        print("  node's own directory (root) %9.1f %10.1f" % base)
        print("  throttle per core (site)    %9.1f %10.1f" % limit)
        print("  one instance, 1 core        %9.1f %10.1f   (%.2fx / %.2fx of the throttle)" % (
            one + (one[0] / limit[0], one[1] / limit[1])))
        for (w, r), user in zip(both, same_node):
            print("  %s, %d on %s at once  %9.1f %10.1f" % (user, len(same_node), node, w, r))
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True))
        print("results: %s" % args.json)
    finally:
        for u in USERS:
            run_as(u, [USER_CLI, "delete", "io", "--wait"])
            run([ADMIN, "user", "del", u])


if __name__ == "__main__":
    main()
