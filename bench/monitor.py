#!/opt/oarcloud/venv/bin/python
"""Monitoring benchmark (issue 6), on the lab, with a baseline measured in the same run:

- the node probe's cost: N instances (default 50) of image `tiny` launched in
  one job on one node (--nodes 1), then `nodeagent probe 1` run on that node
  for K cycles (default 20); its CPU time per cycle is the difference of the
  cumulative "cpu_seconds" of its first and last lines over the cycles
  between them (the interpreter's start-up and the first cycle, which walks
  every instance's written files, are left out: that walk comes again every
  30 s only).  Baseline: a bash loop on the same node reading the same files
  for the same instances with one `cat` per cycle into /dev/null, timed by
  bash's `time` (its own CPU and cat's): per instance /proc/<controller>/cgroup
  and the cgroup's cpuacct.usage, memory.usage_in_bytes, memory.stat and
  cgroup.procs (cgroup v2: cpu.stat, memory.current, memory.stat,
  cgroup.procs); per cycle /proc/net/dev, /proc/stat, /proc/meminfo and
  /proc/loadavg.  What the probe does beyond those reads (libvirt's list of
  running domains, Python parsing, JSON) is the difference.  Both are
  measured again after the instances are deleted (same node), for the
  marginal cost of one instance.  libvirtd's own CPU during the probe run is
  shown too (an upper bound: it also serves the monitor's probe and others);
- breach-to-delivery latency: a local HTTP server is the bench user's
  notification target (json://); an alarm `cpu > 50 for 2 periods of the
  monitor's interval` watches one instance; once it is `ok`, a CPU burn
  starts in the instance (`oarcloud exec`).  BREACH: burn start to the
  alarm's POST arriving; MONITOR: that less the alarm's own window (period x
  periods), the monitor's share; DELIVERY: the alarm_history row's time (the
  evaluation that fired) to the POST; EXEC: burn start to the burn's first
  output line (exec's start-up, counted in BREACH); CLEAR: burn stopped to the
  `is ok` POST.  Repeated R times, each after the alarm is back to `ok`.

Run as root with the lab up (oarcloud-admin lab up --nodes 2) and the monitor
running (oarcloud-admin monitor status):
    bench/monitor.py [--count 50] [--cycles 20] [--repeat 3] [--quick] [--json]
--quick: 5 instances, 1 latency run.  --json: the figures as JSON on stdout
(the table then goes to stderr).  Without --cores the job takes a whole node
and each instance gets one core (cores split, at least one: 50 instances on
a 2-core emulated node share its cores), 64 MiB each.
Figures only; nothing is asserted.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

from benchlib import ADMIN, TREE, USER_CLI, VENV_PY, run, run_as

sys.path.insert(0, os.path.join(TREE, "tests", "integration"))
from webhook import Webhook  # noqa: E402  (the monitoring tests' server)

USER = "ocbmon"
NAME = "m"
ALARM = "hot"
THRESHOLD = 50
PERIODS = 2
MEMORY = "64M"
MONITOR_LOG = "/var/log/oarcloud/monitor.log"
BURN_PID = "/tmp/ocbmon-burn.pid"   # inside the instance
NODE_FILES = ("/proc/net/dev", "/proc/stat", "/proc/meminfo", "/proc/loadavg")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Python on a node runs from /: from the tree's directory it would import the
# tree's oarcloud_lib instead of the installed one, which the monitor runs.
NODE_CWD = "/"

# Run on the node: each domain's cgroup files, found from its libvirt_lxc
# controller's /proc/PID/cgroup (the files metrics.instance_sample reads).
CGROUP_FILES = r"""
import json, os, subprocess, sys
from oarcloud_lib import metrics
out = {}
for d in sys.argv[1:]:
    res = subprocess.run(["virsh", "-q", "-c", "lxc:///system", "domid", d],
                         capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.split():
        continue
    own = "/proc/%s/cgroup" % res.stdout.split()[0]
    g = metrics.parse_proc_cgroup(open(own).read())
    if "cpuacct" in g and "memory" in g:
        c, m = "/sys/fs/cgroup/cpuacct" + g["cpuacct"], "/sys/fs/cgroup/memory" + g["memory"]
        files = [c + "/cpuacct.usage", m + "/memory.usage_in_bytes", m + "/memory.stat",
                 c + "/cgroup.procs"]
    else:
        u = "/sys/fs/cgroup" + g[""]
        files = [u + "/cpu.stat", u + "/memory.current", u + "/memory.stat", u + "/cgroup.procs"]
    out[d] = [f for f in [own] + files if os.path.exists(f)]
print(json.dumps(out))
"""

# Run on the node: K cycles of one cat of every file; bash's `time` prints
# real, user and system seconds (the shell's and its children's).
SHELL_LOOP = r"""
k=$1; shift
TIMEFORMAT='%3R %3U %3S'
time { i=0; while [ "$i" -lt "$k" ]; do cat "$@" >/dev/null 2>&1; i=$((i+1)); done; }
"""

OUT = sys.stdout


def say(text=""):
    print(text, file=OUT, flush=True)


def must(argv, **kw):
    res = run(argv, **kw)
    if res.returncode != 0:
        sys.exit("%s failed: %s%s" % (" ".join(argv[:6]), res.stdout, res.stderr))
    return res


def as_user(argv, check=True):
    res = run_as(USER, argv)
    if check and res.returncode != 0:
        sys.exit("%s failed: %s%s" % (" ".join(argv[:4]), res.stdout, res.stderr))
    return res


def popen_as(user, argv, out):
    """argv as user in the background (as benchlib.run_as), every fd redirected."""
    home = os.path.expanduser("~" + user)
    env = dict(os.environ, HOME=home, PWD=home, USER=user, LOGNAME=user)
    return subprocess.Popen(["runuser", "-u", user, "--", *argv], cwd=home, env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def monitor_status():
    res = run([ADMIN, "monitor", "status", "--json"])
    try:
        return json.loads(res.stdout)
    except ValueError:
        return None


# -- probe cost ------------------------------------------------------------------------

def libvirtd_pid(node):
    res = run([ADMIN, "lab", "exec", node, "--", "cat", "/run/libvirtd.pid"], cwd=NODE_CWD)
    text = res.stdout.strip()
    return int(text) if res.returncode == 0 and text.isdigit() else None


def proc_cpu(pid):
    """CPU seconds (user + system) of a process, from /proc (the nodes share our
    pid namespace); None when unreadable."""
    if pid is None:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def probe_run(node, cycles):
    """`nodeagent probe 1` on node for cycles + 1 readings: CPU per cycle from
    the readings' cumulative cpu_seconds, the instances it saw."""
    lvd = libvirtd_pid(node)
    err = tempfile.TemporaryFile()
    # timeout: a safety net; the probe ends at its next write once we stop reading.
    proc = subprocess.Popen([ADMIN, "lab", "exec", node, "--", "timeout", str(cycles + 60),
                             VENV_PY, "-m", "oarcloud_lib.node.agent", "probe", "1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                            text=True, cwd=NODE_CWD)
    readings, lv = [], []
    try:
        for line in proc.stdout:
            try:
                reading = json.loads(line)
            except ValueError:
                continue
            readings.append(reading)
            if len(readings) == 1 or len(readings) == cycles + 1:
                lv.append(proc_cpu(lvd))
            if len(readings) > cycles:
                break
    finally:
        proc.stdout.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
    err.seek(0)
    warnings = [l for l in err.read().decode(errors="replace").splitlines() if l.strip()]
    if len(readings) < 2:
        sys.exit("the probe on %s gave %d reading(s): %s" % (
            node, len(readings), "\n".join(warnings[-20:])))
    cpu = [r["cpu_seconds"] for r in readings]
    steps = [b - a for a, b in zip(cpu, cpu[1:])]
    n = len(steps)
    domains = sorted(set().union(*(r["instances"] for r in readings[1:])))
    counts = [len(r["instances"]) for r in readings[1:]]
    libvirtd = ((lv[-1] - lv[0]) / n if len(lv) == 2 and None not in lv else None)
    return {"cycles": n, "per_cycle": (cpu[-1] - cpu[0]) / n,
            "median": statistics.median(steps), "max": max(steps),
            "first": cpu[0], "instances": statistics.mean(counts), "domains": domains,
            "instances_min": min(counts), "instances_max": max(counts), "stderr": warnings[-20:],
            "wall": readings[-1]["t"] - readings[0]["t"], "libvirtd_per_cycle": libvirtd}


def shell_run(node, domains, cycles):
    """The bash + cat baseline on node over the same domains' files."""
    files = {}
    if domains:
        res = must([ADMIN, "lab", "exec", node, "--", VENV_PY, "-c", CGROUP_FILES, *domains],
                   cwd=NODE_CWD)
        files = json.loads(res.stdout)
    paths = list(NODE_FILES) + [f for d in sorted(files) for f in files[d]]
    res = must([ADMIN, "lab", "exec", node, "--", "bash", "-c", SHELL_LOOP, "bash",
                str(cycles), *paths], cwd=NODE_CWD)
    real, user, system = (float(x) for x in res.stderr.strip().splitlines()[-1].split())
    return {"cycles": cycles, "per_cycle": (user + system) / cycles, "user": user,
            "system": system, "real": real, "instances": len(files), "files": len(paths)}


def probe_cost(node, cycles, label):
    """The probe and the shell baseline, one after the other, on node as it is."""
    probe = probe_run(node, cycles)
    shell = shell_run(node, probe["domains"], cycles)
    steady = probe["instances_min"] == probe["instances_max"] == shell["instances"] == len(
        probe["domains"])
    ratio = probe["per_cycle"] / shell["per_cycle"] if shell["per_cycle"] > 0 else None
    return {"label": label, "probe": probe, "shell": shell, "ratio": ratio, "steady": steady}


def print_probe(node, rows):
    cycles = rows[0]["probe"]["cycles"]
    say("probe cost on %s (nodeagent probe 1, %d cycles) vs bash + cat of the same files:"
        % (node, cycles))
    say("  %-22s %9s %12s %7s %7s %13s %11s %14s" % (
        "CASE", "INSTANCES", "PROBE ms/cyc", "median", "max", "SHELL ms/cyc",
        "PROBE/SHELL", "PROBE ms/inst"))
    for r in rows:
        probe, shell = r["probe"], r["shell"]
        say("  %-22s %9.1f %12.2f %7.2f %7.2f %13.2f %11s %14s" % (
            r["label"], probe["instances"], probe["per_cycle"] * 1e3, probe["median"] * 1e3,
            probe["max"] * 1e3, shell["per_cycle"] * 1e3,
            "%.2f" % r["ratio"] if r["ratio"] is not None else "-",
            "%.3f" % (probe["per_cycle"] / probe["instances"] * 1e3) if probe["instances"]
            else "-"))
    say("  (ms of CPU per cycle; probe: mean, median and max of %d cycles 1 s apart, start-up"
        " and first cycle left out; shell: one cat of %s files per cycle)" % (
            cycles, "/".join(str(r["shell"]["files"]) for r in rows)))
    tick = 1e3 / CLK_TCK / cycles
    for r in rows:
        p = r["probe"]
        lv = p["libvirtd_per_cycle"]
        say("  %s: probe start-up + first cycle %.2f s CPU; libvirtd %s ms/cycle during the"
            " run (also serves the monitor's own probe)" % (
                r["label"], p["first"], "?" if lv is None else
                "< %.2f" % tick if lv == 0 else "%.2f (+-%.2f)" % (lv * 1e3, tick)))
        if not r["steady"]:
            say("  note: %s: the probe saw %d to %d instances per cycle (%d in all), the shell"
                " read %d: the node changed, figures not comparable" % (
                    r["label"], p["instances_min"], p["instances_max"], len(p["domains"]),
                    r["shell"]["instances"]))
        for line in p["stderr"][:5]:
            say("  %s: probe stderr: %s" % (r["label"], line))
    if len(rows) == 2:
        a, b = rows
        dn = a["probe"]["instances"] - b["probe"]["instances"]
        ds = a["shell"]["instances"] - b["shell"]["instances"]
        if dn > 0 and ds > 0:
            out = {"probe": (a["probe"]["per_cycle"] - b["probe"]["per_cycle"]) / dn,
                   "shell": (a["shell"]["per_cycle"] - b["shell"]["per_cycle"]) / ds}
            out["ratio"] = out["probe"] / out["shell"] if out["shell"] > 0 else None
            say("  one instance more costs the probe %.3f ms/cycle, the shell %.3f ms/cycle"
                " (ratio %s)" % (out["probe"] * 1e3, out["shell"] * 1e3,
                                 "%.2f" % out["ratio"] if out["ratio"] is not None else "-"))
            return out
    return None


# -- breach to delivery ----------------------------------------------------------------

def alarm_show():
    res = as_user([USER_CLI, "alarm", "show", ALARM, "--json"], check=False)
    try:
        return json.loads(res.stdout)
    except ValueError:
        return None


def wait_state(state, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = alarm_show()
        if shown and shown.get("state") == state:
            return True
        time.sleep(1)
    return False


def stamp(text):
    return datetime.fromisoformat(text).timestamp()


class Burn:
    """A CPU burn in the instance through `oarcloud exec`, in the background."""

    def __init__(self, instance, limit):
        self.instance = instance
        self.out = tempfile.NamedTemporaryFile(prefix="ocbmon-burn-")
        cmd = ("echo $$ > %s; echo burning; exec timeout %d sh -c 'while :; do :; done'"
               % (BURN_PID, limit))
        self.started = time.time()
        with open(self.out.name, "wb") as out:
            self.proc = popen_as(USER, [USER_CLI, "exec", instance, "--", "sh", "-c", cmd], out)

    def first_output(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.out.name, "rb") as f:
                if b"burning" in f.read():
                    return time.time()
            if self.proc.poll() is not None:
                return None
            time.sleep(0.02)
        return None

    def stop(self):
        """Kill the burn by its pid, in the instance; returns when it was asked."""
        t = time.time()
        as_user([USER_CLI, "exec", self.instance, "--", "sh", "-c",
                 "kill $(cat %s) 2>/dev/null; rm -f %s" % (BURN_PID, BURN_PID)], check=False)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait()
        self.out.close()
        return t


def latency_run(hook, instance, window):
    """One burn: the figures of the alarm it fires and clears."""
    limit = max(40, 3 * window + 10)
    burn = Burn(instance, limit)
    try:
        seen = burn.first_output()
        arrived = hook.wait("Alarm %s: %s cpu is" % (ALARM, instance), burn.started, limit + 15)
    finally:
        stopped = burn.stop()
    if arrived is None:
        shown = alarm_show() or {}
        sys.exit("no alarm POST within %d s of the burn (alarm state %r)"
                 % (limit + 15, shown.get("state")))
    hist = [h for h in (alarm_show() or {}).get("history", [])
            if h.get("new_state") == "alarm" and stamp(h["at"]) >= burn.started - 1]
    fired = stamp(hist[-1]["at"]) if hist else None
    cleared = hook.wait("Alarm %s is ok:" % ALARM, stopped, 4 * window + 30)
    back = wait_state("ok", 30)
    out = {"breach": arrived - burn.started, "monitor": arrived - burn.started - window,
           "delivery": arrived - fired if fired else None,
           "evaluation": fired - burn.started if fired else None,
           "exec": seen - burn.started if seen else None,
           "clear": cleared - stopped if cleared else None, "back_to_ok": back}
    return out


def fmt(v, spec="%6.2fs"):
    return spec % v if v is not None else "%6s" % "-"


def latency(rows, args, interval):
    """R burns on the first instance; the alarm's POSTs to a local server."""
    instance = rows[0]["name"]
    if rows[0].get("cores", 1) != 1:
        say("  note: %s has %s cores: one burning core is %.0f%% of them" % (
            instance, rows[0]["cores"], 100.0 / rows[0]["cores"]))
    hook = Webhook()
    window = interval * PERIODS
    runs = []
    try:
        as_user([USER_CLI, "notify", "add", hook.url()])
        as_user([USER_CLI, "alarm", "create", ALARM, "--instance", instance, "--metric", "cpu",
                 "--op", "gt", "--threshold", str(THRESHOLD), "--period", "%ds" % interval,
                 "--periods", str(PERIODS)])
        if not wait_state("ok", 6 * window + 30):
            sys.exit("alarm %s not ok after %d s: %r" % (ALARM, 6 * window + 30, alarm_show()))
        say("breach to delivery (alarm cpu > %d%% for %d x %d s on %s, json:// target on"
            " this machine):" % (THRESHOLD, PERIODS, interval, instance))
        say("  %-4s %9s %9s %9s %9s %9s %9s" % ("RUN", "BREACH", "MONITOR", "EVALUATED",
                                               "DELIVERY", "EXEC", "CLEAR"))
        for i in range(args.repeat):
            r = latency_run(hook, instance, window)
            runs.append(r)
            say("  %-4d %9s %9s %9s %9s %9s %9s%s" % (
                i + 1, fmt(r["breach"]), fmt(r["monitor"]), fmt(r["evaluation"]),
                fmt(r["delivery"], "%6.3fs"), fmt(r["exec"]), fmt(r["clear"]),
                "" if r["back_to_ok"] else "  (alarm not back to ok)"))
        med = {k: statistics.median(v) for k in ("breach", "monitor", "evaluation", "delivery",
                                                 "exec", "clear")
               for v in [[r[k] for r in runs if r[k] is not None]] if v}
        say("  median: breach to POST %s, of which the alarm's window %d s, the monitor %s;"
            " evaluation to POST %s" % (fmt(med.get("breach"), "%.2fs"), window,
                                        fmt(med.get("monitor"), "%.2fs"),
                                        fmt(med.get("delivery"), "%.3fs")))
        say("  (BREACH: burn start -> alarm POST; MONITOR: BREACH - %d s window; EVALUATED:"
            " burn start -> alarm_history row; DELIVERY: that row -> POST; EXEC: burn start"
            " -> its first output; CLEAR: burn stopped -> `is ok` POST)" % window)
        return {"instance": instance, "window": window, "interval": interval, "runs": runs,
                "median": med}
    finally:
        as_user([USER_CLI, "alarm", "delete", ALARM], check=False)
        as_user([USER_CLI, "notify", "del", hook.url()], check=False)
        hook.stop()


# -- the lab ---------------------------------------------------------------------------

def launch(args):
    cores = args.cores or (1 if args.count == 1 else None)
    argv = [USER_CLI, "launch", "--name", NAME, "--image", "tiny", "--count", str(args.count),
            "--nodes", "1", "--memory", MEMORY, "--walltime", "0:30", "--wait", "--json"]
    argv += ["--cores", str(cores)] if cores else []
    t = time.monotonic()
    rows = json.loads(as_user(argv).stdout)
    return rows, time.monotonic() - t


def monitor_log_from(offset):
    """Warnings and errors the monitor logged since offset."""
    try:
        with open(MONITOR_LOG, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [l for l in text.splitlines()
            if any(w in l for w in ("WARNING", "ERROR", "Traceback", "Error"))]


def lab(args):
    status = monitor_status()
    if not status or not any(n.get("probing") for n in status.get("nodes", {}).values()):
        sys.exit("the monitor does not run or probes no node: oarcloud-admin monitor status")
    interval = int(status["interval"])
    log_at = os.path.getsize(MONITOR_LOG) if os.path.exists(MONITOR_LOG) else 0
    summary = {"count": args.count, "cycles": args.cycles, "monitor_interval": interval,
               "monitor_pid": status.get("pid")}
    run([ADMIN, "user", "add", USER])
    rows = None
    try:
        rows, took = launch(args)
        node = rows[0]["node"]
        summary.update(node=node, launch_seconds=took,
                       cores=sorted({r.get("cores") for r in rows}))
        say("%d instances of tiny on %s (%s core(s) each, %s) launched in %.1fs" % (
            len(rows), node, "/".join(str(c) for c in summary["cores"]), MEMORY, took))
        say("measuring the probe on %s (%d cycles)..." % (node, args.cycles))
        probe_rows = [probe_cost(node, args.cycles, "with %d of ours" % len(rows))]
        summary["latency"] = latency(rows, args, interval)
        as_user([USER_CLI, "delete", rows[0]["name"], "--wait"])
        rows = None
        say("instances deleted; measuring the probe on %s again..." % node)
        probe_rows.append(probe_cost(node, args.cycles, "after delete"))
        summary["marginal_per_instance"] = print_probe(node, probe_rows)
        summary["probe_cost"] = [dict(r, probe={k: v for k, v in r["probe"].items()
                                                if k != "domains"}) for r in probe_rows]
    finally:
        if rows:
            as_user([USER_CLI, "delete", rows[0]["name"], "--wait"], check=False)
        run([ADMIN, "user", "del", USER])
    after = monitor_status() or {}
    summary["monitor_log"] = monitor_log_from(log_at)
    if after.get("pid") != status.get("pid"):
        say("note: the monitor restarted during the run (pid %s -> %s)"
            % (status.get("pid"), after.get("pid")))
    say("monitor.log during the run: %d warning/error line(s)%s" % (
        len(summary["monitor_log"]), "".join("\n  " + l for l in summary["monitor_log"][:10])))
    return summary


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, help="instances on the probed node (default 50; "
                                              "--quick 5)")
    ap.add_argument("--cycles", type=int, default=20, help="probe cycles measured (default 20)")
    ap.add_argument("--repeat", type=int, help="alarm burns (default 3; --quick 1)")
    ap.add_argument("--cores", type=int, help="cores per instance (default: the node's cores "
                                              "split, at least 1 each; whole node)")
    ap.add_argument("--quick", action="store_true", help="5 instances, one burn")
    ap.add_argument("--json", action="store_true", help="figures as JSON on stdout, the table "
                                                        "on stderr")
    args = ap.parse_args()
    for key, full, quick in (("count", 50, 5), ("repeat", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.count < 1 or args.cycles < 1 or args.repeat < 1:
        ap.error("--count, --cycles and --repeat must be at least 1")
    if args.json:
        OUT = sys.stderr
    summary = lab(args)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
