#!/opt/oarcloud/venv/bin/python
"""Rolling update benchmark (issue 16): how long draining, updating and
returning one node takes, and the capacity in service over a rolling update
of every node, as a plot, beside baselines of the same run: one node agent
call (`facts`) and one `node drain` + `node undrain`.

Run as root with the lab up and idle (no job on the nodes):
    bench/node_update.py [--command 'true'] [--min-capacity 50%] [--json FILE] [--plot PNG]
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchlib import ADMIN, TREE, run

from oarcloud_lib.tools import oarssh


def timed(argv):
    t = time.monotonic()
    res = run(argv)
    if res.returncode != 0:
        raise SystemExit("bench/node_update.py: %s failed: %s" % (" ".join(argv), res.stderr))
    return time.monotonic() - t, res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--command", default="true", help="the update command (default true)")
    ap.add_argument("--min-capacity", default="50%")
    ap.add_argument("--json", default=str(Path(TREE) / "bench" / "results" / "node_update.json"))
    ap.add_argument("--plot", default=str(Path(TREE) / "bench" / "results" / "node_update.png"))
    args = ap.parse_args()
    nodes = sorted(r["node"] for r in json.loads(run([ADMIN, "node", "list", "--json"]).stdout))
    agent, _ = timed(oarssh.agent_argv(nodes[0], "facts"))
    drain, _ = timed([ADMIN, "node", "drain", nodes[0]])
    undrain, _ = timed([ADMIN, "node", "undrain", nodes[0]])
    whole, res = timed([ADMIN, "node", "update", "--all", "--command", args.command,
                        "--min-capacity", args.min_capacity, "--max-unavailable",
                        str(len(nodes)), "--json"])
    st = json.loads(res.stdout)
    per_node = {n["node"]: (datetime.datetime.fromisoformat(n["finished"]) -
                            datetime.datetime.fromisoformat(n["started"])).total_seconds()
                for n in st["nodes"]}
    start = datetime.datetime.fromisoformat(st["capacity"][0]["at"]).timestamp()
    capacity = [(datetime.datetime.fromisoformat(c["at"]).timestamp() - start, c["in_service"],
                 c["total"]) for c in st["capacity"]]
    print("baselines: agent call %.2f s, drain + undrain %.2f s" % (agent, drain + undrain))
    print("%-10s %10s %14s" % ("node", "seconds", "x drain+undrain"))
    for n, s in per_node.items():
        print("%-10s %10.2f %14.1f" % (n, s, s / (drain + undrain)))
    print("whole run, %d nodes: %.2f s; lowest capacity %d of %d cores (floor %s)"
          % (len(nodes), whole, st["lowest"], capacity[0][2], args.min_capacity))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3))
    xs = [c[0] for c in capacity] + [whole]
    ys = [c[1] for c in capacity] + [capacity[-1][1]]
    ax.step(xs, ys, where="post", label="cores in service")
    ax.axhline(capacity[0][2] * int(args.min_capacity.rstrip("%")) / 100, color="red",
               linestyle="--", label="floor (%s)" % args.min_capacity)
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("cores")
    ax.set_ylim(0, capacity[0][2] + 1)
    ax.legend(loc="lower right")
    ax.set_title("rolling update of %d nodes" % len(nodes))
    fig.tight_layout()
    fig.savefig(args.plot)
    out = {"bench": "node_update", "when": datetime.datetime.now().isoformat(timespec="seconds"),
           "commit": run(["git", "-C", TREE, "rev-parse", "--short", "HEAD"]).stdout.strip(),
           "machine": {"host": platform.node(), "cpus": os.cpu_count()}, "args": vars(args),
           "baselines": {"agent_call": agent, "drain_undrain": drain + undrain},
           "per_node": per_node, "whole": whole, "lowest": st["lowest"],
           "capacity": capacity, "state": st["state"]}
    Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print("results: %s, plot: %s" % (args.json, args.plot))
    return 0 if st["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
