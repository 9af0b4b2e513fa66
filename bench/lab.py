#!/opt/oarcloud/venv/bin/python
"""Lab benchmark: lab up from scratch, a no-op lab up, lab down, and the memory an
idle emulated node takes, beside a baseline of the same run: a bare network
namespace with one veth (what emulation itself costs, without a node's daemons).

Run as root with no lab up:  bench/lab.py [--nodes N]
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from oarcloud_lib.lab import Lab  # noqa: E402

ADMIN = "/usr/local/bin/oarcloud-admin"


def timed(argv):
    t = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def bare_namespace():
    """Baseline: unshare a netns+mntns+utsns, add a veth, tear down."""
    t = time.monotonic()
    p = subprocess.Popen(["unshare", "--net", "--mount", "--uts", "sleep", "infinity"])
    time.sleep(0.01)
    subprocess.run(["ip", "link", "add", "ocbench0", "type", "veth", "peer", "name", "eth0",
                    "netns", str(p.pid)], check=True)
    subprocess.run(["nsenter", "-t", str(p.pid), "-n", "ip", "link", "set", "eth0", "up"], check=True)
    p.terminate()
    p.wait()
    subprocess.run(["ip", "link", "del", "ocbench0"], stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def rss_in_netns(netns):
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.readlink(p / "ns/net") != netns:
                continue
            for line in (p / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=2)
    args = ap.parse_args()
    if Lab().state() is not None:
        sys.exit("bench/lab.py: a lab is up; `oarcloud-admin lab down` first")
    base = sorted(bare_namespace() for _ in range(5))[2]
    up = timed([ADMIN, "lab", "up", "--nodes", str(args.nodes)])
    noop = timed([ADMIN, "lab", "up", "--nodes", str(args.nodes)])
    state = Lab().state()
    rss = [rss_in_netns(n["netns"]) for n in state["nodes"].values()]
    down = timed([ADMIN, "lab", "down"])
    per_node = (up) / args.nodes
    print("lab up from scratch, %d nodes:   %6.2f s  (%.2f s per node incl. server setup)"
          % (args.nodes, up, per_node))
    print("lab up again (no-op):           %6.2f s" % noop)
    print("lab down:                       %6.2f s" % down)
    print("baseline: bare namespace+veth:  %6.3f s  -> a node costs %.0fx the bare namespace"
          % (base, per_node / base))
    print("idle node RSS (its daemons):    %s MiB" % ", ".join("%.0f" % (r / 2**20) for r in rss))


if __name__ == "__main__":
    main()
