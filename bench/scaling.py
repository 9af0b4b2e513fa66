#!/opt/oarcloud/venv/bin/python
"""Scaling benchmark (issue 15): a launch inside an allocation, from submit to
reachable, beside a bare `virsh start` of an equivalent domain measured in
the same run; from a CPU breach to a new member serving behind the
balancer, in an allocation and with own jobs; throughput through the
balancer beside one member reached directly (h2load); the time to add and to
remove a member behind the balancer.

Run as root with the lab up (oarcloud-admin lab up --nodes 2):
    bench/scaling.py [--repeat 5] [--json bench/results/scaling.json]
Figures only; the goals (docs/benchmarks.md) are compared, never asserted.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

from benchlib import ADMIN, TREE, USER_CLI, run, run_as
from launch import bare_start
from oarcloud_lib.catalog import db

USER = "ocbenchs"
SERVE = ("#!/bin/sh\nmkdir -p /www\nhostname > /www/index.html\n"
         "busybox httpd -f -p 8080 -h /www </dev/null >/dev/null 2>&1 &\n")
BURN = "timeout %d sh -c 'while :; do :; done'"


def cli(*args, check=True):
    res = run_as(USER, [USER_CLI, *args])
    if check and res.returncode != 0:
        raise SystemExit("oarcloud %s failed: %s" % (" ".join(args), res.stderr.strip()))
    return res


def cli_json(*args):
    return json.loads(cli(*args, "--json").stdout)


def wait(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit("bench: no %s after %ss" % (what, timeout))


def lb_up(name):
    return sorted(m["name"] for m in cli_json("lb", "show", name)["members"]
                  if m["state"] == "up")


def alloc_launches(repeat):
    """launch --in, submit to running (its answer) and to reachable (exec)."""
    out = []
    for i in range(repeat):
        t0 = time.monotonic()
        rows = cli_json("launch", "--in", "pool", "--name", "b%d" % i)
        t_running = time.monotonic() - t0
        cli("exec", rows[0]["name"], "--", "true")
        t_reach = time.monotonic() - t0
        t1 = time.monotonic()
        cli("delete", rows[0]["name"])
        out.append({"running": t_running, "reachable": t_reach,
                    "delete": time.monotonic() - t1})
    return out


def h2load(url, requests=4000, clients=8):
    res = run(["h2load", "--h1", "-n", str(requests), "-c", str(clients), url])
    m = re.search(r"finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", res.stdout)
    failed = re.search(r"(\d+) failed, (\d+) errored", res.stdout)
    if not m:
        raise SystemExit("h2load: %s" % res.stdout[-500:])
    return {"req_per_s": float(m.group(3)), "failed": int(failed.group(1)) if failed else None}


def breach_to_serving(group, rounds):
    """Burn CPU in the group's one member until a second one is up behind
    the balancer; then wait for it to go again."""
    out = []
    for _ in range(rounds):
        first = cli_json("group", "show", group)["members"][0]
        member = first["name"]
        started = time.time()
        burn = subprocess.Popen(["runuser", "-u", USER, "--", USER_CLI, "exec", member, "--",
                                 "sh", "-c", BURN % 60], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
        t0 = time.monotonic()
        wait(lambda: len(lb_up("front-" + group)) == 2, 120, "a second member up")
        t_up = time.monotonic() - t0
        up_at = time.time()
        hist = cli_json("group", "show", group)["history"]
        burn.kill()
        burn.wait()
        # The breach: the first sample of the member's CPU above the target.
        with db.connect() as conn:
            domain = conn.execute("SELECT domain FROM group_members WHERE name = %s AND"
                                  " group_id = (SELECT id FROM scaling_groups WHERE owner = %s"
                                  " AND name = %s)", (member, USER, group)).fetchone()[0]
            breach = conn.execute("SELECT extract(epoch FROM min(t)) FROM samples WHERE"
                                  " kind = 'instance' AND subject = %s AND metric = 'cpu' AND"
                                  " step = 0 AND value > 50 AND t >= to_timestamp(%s)",
                                  (domain, started)).fetchone()[0]
        out.append({"burn_to_up": t_up, "breach_to_up": up_at - float(breach)
                    if breach else None, "history": hist[-2:]})
        wait(lambda: len(cli_json("group", "show", group)["members"]) == 1, 180,
             "the scale-in", interval=1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="breach rounds per group kind")
    ap.add_argument("--json", default=str(Path(TREE) / "bench" / "results" / "scaling.json"))
    args = ap.parse_args()
    commit = run(["git", "-C", TREE, "rev-parse", "--short", "HEAD"]).stdout.strip()
    out = {"bench": "scaling", "commit": commit, "machine": platform.node(),
           "cpus": os.cpu_count(), "args": vars(args), "at": time.strftime("%FT%T%z")}
    run([ADMIN, "user", "add", USER])
    script = Path(os.path.expanduser("~" + USER)) / "serve.sh"
    script.write_text(SERVE)
    os.chown(script, *[int(x) for x in run(["id", "-u", USER]).stdout.split()
                       + run(["id", "-g", USER]).stdout.split()])
    try:
        bare = bare_start(args.repeat)
        out["bare_start"] = bare
        base = statistics.median(bare)
        print("baseline: bare virsh start of an equivalent domain: median %.3f s" % base)
        # 1 core on each node: the other cores stay for the own-jobs group
        cli("alloc", "create", "pool", "--nodes", "2", "--cores", "1", "--walltime", "0:30",
            "--wait")
        launches = out["alloc_launch"] = alloc_launches(args.repeat)
        reach = statistics.median(r["reachable"] for r in launches)
        print("launch --in, submit to running: median %.3f s; to reachable (exec): %.3f s "
              "(goal < 0.5 s), %.1fx the bare start; delete %.3f s" % (
                  statistics.median(r["running"] for r in launches), reach, reach / base,
                  statistics.median(r["delete"] for r in launches)))
        cli("net", "rule", "add", "default", "--direction", "ingress", "--proto", "tcp",
            "--port", "8080")
        kinds = (("in-alloc", ["--in", "pool"]), ("own-jobs", ["--walltime", "0:20"]))
        for kind, where in kinds:
            cli("group", "create", kind, *where, "--min", "1", "--max", "2", "--target",
                "cpu=50", "--period", "5s", "--cooldown-out", "5s", "--cooldown-in", "10s",
                "--window-in", "10s", "--user-data", str(script))
            wait(lambda: any(m["state"] == "running" for m in
                             cli_json("group", "show", kind)["members"]), 120, "a member")
            cli("lb", "create", "front-" + kind, "--group", kind, "--port", "8080", "--check",
                "http:/index.html")
            wait(lambda: len(lb_up("front-" + kind)) == 1, 60, "the member up")
            rounds = out["breach_" + kind] = breach_to_serving(kind, args.rounds)
            print("%s: CPU burn started -> second member up behind the balancer: %s s; "
                  "from the breach (first sample above the target): %s s (goal %s)" % (
                      kind, ", ".join("%.1f" % r["burn_to_up"] for r in rounds),
                      ", ".join("%.1f" % r["breach_to_up"] for r in rounds
                                if r["breach_to_up"] is not None),
                      "< 5 s" if kind == "in-alloc" else "< 10 s"))
        # Throughput, and the time to add and remove a member (in the allocation).
        lb = cli_json("lb", "show", "front-in-alloc")
        member = cli_json("group", "show", "in-alloc")["members"][0]
        exposed = cli_json("net", "expose", member["name"], "8080")
        direct = h2load("http://%s:%d/index.html" % (exposed["address"], exposed["node_port"]))
        through = h2load("http://%s/index.html" % lb["address"])
        out["throughput"] = {"direct": direct, "balancer": through}
        print("throughput, 1 member: direct %.0f req/s, through the balancer %.0f req/s: "
              "%.2fx" % (direct["req_per_s"], through["req_per_s"],
                         through["req_per_s"] / direct["req_per_s"]))
        t0 = time.monotonic()
        cli("group", "set", "in-alloc", "--target", "none", "--desired", "2")
        wait(lambda: len(lb_up("front-in-alloc")) == 2, 60, "the added member up")
        added = time.monotonic() - t0
        t0 = time.monotonic()
        cli("group", "set", "in-alloc", "--desired", "1")
        wait(lambda: len(cli_json("lb", "show", "front-in-alloc")["members"]) == 1, 60,
             "the member removed")
        removed = time.monotonic() - t0
        out["member_add"], out["member_remove"] = added, removed
        print("a member added (set --desired to up behind the balancer): %.2f s; removed "
              "(drained, deleted): %.2f s" % (added, removed))
    finally:
        for kind in ("in-alloc", "own-jobs"):
            cli("lb", "delete", "front-" + kind, check=False)
            cli("group", "delete", kind, check=False)
        cli("alloc", "delete", "pool", check=False)
        time.sleep(3)
        run([ADMIN, "user", "delete", USER])
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
        print("results: %s" % args.json)


if __name__ == "__main__":
    main()
