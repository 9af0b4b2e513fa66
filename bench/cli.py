#!/opt/oarcloud/venv/bin/python
"""CLI benchmark (issue 19): how fast `oarcloud` answers, as a user, beside
baselines measured in the same run: the shell's own start (`sh -c true`),
and Python's (`python3 -c pass`, the same interpreter the CLI runs on).

Whole-process wall times (runuser included in every figure, baselines too),
`--repeat` runs after one warm-up, medians:

- `oarcloud --version` (imports only), `list`, `show NAME`, `list --json`;
- `exec NAME -- true` (CLI, sudo broker, OAR's ssh, nsenter) on an instance
  the bench launches (tiny image, one core).

Run as root with the lab up (oarcloud-admin lab up --nodes 2):
    bench/cli.py [--repeat 9] [--json FILE]
Goals (issue 19, compared, never asserted): list and show under 150 ms
beyond the shell's start; exec under 400 ms.
"""
import argparse
import json
import statistics
import time
from datetime import datetime
from pathlib import Path

from benchlib import ADMIN, USER_CLI, run, run_as

USER = "ocbenchcli"
GOALS = {"list": 0.150, "show": 0.150, "exec": 0.400}


def timed(argv, repeat):
    """Median, min and max wall seconds of argv as USER (one warm-up first)."""
    run_as(USER, argv)
    times = []
    for _ in range(repeat):
        t = time.monotonic()
        res = run_as(USER, argv)
        times.append(time.monotonic() - t)
        if res.returncode != 0:
            raise SystemExit("bench/cli.py: %s failed: %s" % (" ".join(argv), res.stderr.strip()))
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=9, help="timed runs of each command")
    ap.add_argument("--json", default="/tmp/oarcloud-bench-cli.json",
                    help="where the results go (JSON)")
    args = ap.parse_args()
    commit = run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short",
                  "HEAD"]).stdout.strip()
    out = {"bench": "cli", "when": datetime.now().isoformat(timespec="seconds"),
           "commit": commit, "repeat": args.repeat}
    run([ADMIN, "user", "add", USER])
    try:
        res = run_as(USER, [USER_CLI, "launch", "--name", "b", "--cores", "1", "--walltime",
                            "0:15", "--wait", "--json"])
        if res.returncode != 0:
            raise SystemExit("bench/cli.py: launch failed: %s" % res.stderr.strip())
        cases = {"shell": ["sh", "-c", "true"],
                 "python": ["/opt/oarcloud/venv/bin/python", "-c", "pass"],
                 "version": [USER_CLI, "--version"],
                 "list": [USER_CLI, "list"],
                 "list_json": [USER_CLI, "list", "--json"],
                 "show": [USER_CLI, "show", "b"],
                 "exec": [USER_CLI, "exec", "b", "--", "true"]}
        figures = out["figures"] = {name: timed(argv, args.repeat)
                                    for name, argv in cases.items()}
        shell = figures["shell"]["median"]
        out["beyond_shell"] = {k: v["median"] - shell for k, v in figures.items()
                               if k != "shell"}
        print("%-10s %10s %10s %10s %14s" % ("CASE", "MEDIAN ms", "MIN ms", "MAX ms",
                                              "BEYOND SH ms"))
        for name, f in figures.items():
            print("%-10s %10.0f %10.0f %10.0f %14.0f" % (
                name, f["median"] * 1e3, f["min"] * 1e3, f["max"] * 1e3,
                (f["median"] - shell) * 1e3))
        for name, goal in GOALS.items():
            got = figures[name]["median"] - (shell if name != "exec" else 0)
            print("%s: %.0f ms %s (goal under %.0f ms)" % (
                name, got * 1e3, "beyond the shell" if name != "exec" else "in all", goal * 1e3))
    finally:
        run_as(USER, [USER_CLI, "delete", "b", "--wait"])
        run([ADMIN, "user", "delete", USER])
    Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True))
    print("results: %s" % args.json)


if __name__ == "__main__":
    main()
