#!/opt/oarcloud/venv/bin/python
"""Network benchmark (issue 5), on the lab, with a baseline measured in the same run:

- iperf3 (one TCP stream) between two instances on one node and between two
  instances on two nodes (private network: Open vSwitch userspace datapath,
  our OpenFlow program with conntrack, VXLAN between the nodes), beside the
  plain kernel path on this machine: two network namespaces joined by a veth
  pair, and two namespaces on a Linux bridge (offloads left as they are);
- the time to apply one rule to N running instances (default 50 on 2 nodes):
  `oarcloud net rule add` and `rule del`, the CLI's wall time and the
  "applied on N node(s) in X s" it prints;
- flows on br-int per node: idle, with 2 instances, with N; flows per local
  instance and the marginal cost of one more instance (and of one rule).

The instances' image has no iperf3: it runs from the node's filesystem in the
instance's network namespace (nsenter -n on the instance's init).

Run as root with the lab up (oarcloud-admin lab up --nodes 2):
    bench/networks.py [--count 50] [--seconds 10] [--repeat 3] [--quick] [--baseline-only]
--quick: 10 instances, 3 s iperf3 runs, 1 repeat.  --baseline-only: no lab needed.
Figures only; the goals (docs/benchmarks.md) are compared, never asserted.
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ADMIN, USER_CLI, run, run_as
from oarcloud_lib.catalog.instances import domain_name  # noqa: E402

USER = "ocbnet"
NODES = ("node-1", "node-2")
PORT = 5201
# Baseline namespaces: only ours (bnet-*), addresses only in 198.18.200.0/24.
VETH_NS = ("bnet-va", "bnet-vb")
BRIDGE_NS = ("bnet-br", "bnet-ba", "bnet-bb")   # the bridge, then its two ends
RULE_RE = re.compile(r"rule (\d+) (?:added to|deleted from) network \S+: "
                     r"applied on (\d+) node\(s\) in ([0-9.]+)s")


def must(argv):
    res = run(argv)
    if res.returncode != 0:
        sys.exit("%s failed: %s%s" % (" ".join(argv[:6]), res.stdout, res.stderr))
    return res


def as_user(argv):
    res = run_as(USER, argv)
    if res.returncode != 0:
        sys.exit("%s failed: %s%s" % (" ".join(argv[:4]), res.stdout, res.stderr))
    return res


# -- iperf3 between two network namespaces ------------------------------------------

def wait_listening(prefix, server):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit("iperf3 server ended: %s" % server.stderr.read())
        if run(prefix + ["ss", "-Hltn", "sport", "=", ":%d" % PORT]).stdout.strip():
            return
        time.sleep(0.2)
    sys.exit("iperf3 server not listening after 15 s")


def iperf(server, client, ip, seconds):
    """One TCP stream client -> server at ip, after a second of warm-up: Gbit/s
    received and the sender's retransmits.  server and client are argv prefixes
    that run a command in each end's network namespace."""
    limit = str(seconds + 30)  # nothing of ours outlives a run, even on failure
    proc = subprocess.Popen(server + ["timeout", limit, "iperf3", "-s", "-1", "-p", str(PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(server, proc)
        res = run(client + ["timeout", limit, "iperf3", "-c", ip, "-p", str(PORT), "-t",
                            str(seconds), "-O", "1", "-J"])
        try:
            out = json.loads(res.stdout)
        except ValueError:
            out = {"error": res.stdout + res.stderr}
        if res.returncode != 0 or "error" in out:
            sys.exit("iperf3 to %s failed: %s" % (ip, out.get("error") or res.stderr))
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    end = out["end"]
    return end["sum_received"]["bits_per_second"] / 1e9, end["sum_sent"].get("retransmits", 0)


def mtu(prefix):
    return json.loads(must(prefix + ["ip", "-j", "link", "show", "eth0"]).stdout)[0]["mtu"]


def throughput(label, server, client, ip, args):
    """Median Gbit/s of args.repeat runs, printed; returns it."""
    runs = [iperf(server, client, ip, args.seconds) for _ in range(args.repeat)]
    gbps = statistics.median(r[0] for r in runs)
    print("  %-40s %7.2f Gbit/s  (median of %d x %d s, MTU %d, retransmits %s)" % (
        label, gbps, len(runs), args.seconds, mtu(client), "/".join(str(r[1]) for r in runs)))
    return gbps


# -- baseline: the plain kernel path on this machine -----------------------------------

def in_ns(ns):
    return ["ip", "netns", "exec", ns]


def end_up(ns, ip):
    must(["ip", "-n", ns, "link", "set", "lo", "up"])
    must(["ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"])
    must(["ip", "-n", ns, "link", "set", "eth0", "up"])


def baseline_down():
    for ns in VETH_NS + BRIDGE_NS:  # their veths go with them
        run(["ip", "netns", "del", ns])


def baseline(args):
    """Gbit/s over a veth pair and over a Linux bridge, between namespaces of ours
    (the bridge in a third one: nothing is added to the machine's own)."""
    baseline_down()  # what a killed run may have left
    try:
        for ns in VETH_NS + BRIDGE_NS:
            must(["ip", "netns", "add", ns])
        a, b = VETH_NS
        must(["ip", "link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0",
              "netns", b])
        end_up(a, "198.18.200.1")
        end_up(b, "198.18.200.2")
        br, c, d = BRIDGE_NS
        must(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        for ns, port, ip in ((c, "pc", "198.18.200.11"), (d, "pd", "198.18.200.12")):
            must(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
                  "netns", br])
            must(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
            end_up(ns, ip)
        must(["ip", "-n", br, "link", "set", "br0", "up"])
        print("baseline (this machine, plain kernel path, offloads as they are):")
        return {"veth": throughput("veth pair between two namespaces", in_ns(b), in_ns(a),
                                   "198.18.200.2", args),
                "bridge": throughput("Linux bridge between two namespaces", in_ns(d), in_ns(c),
                                     "198.18.200.12", args)}
    finally:
        baseline_down()


# -- the lab ---------------------------------------------------------------------------

def launch(name, count, nodes, memory=None):
    argv = [USER_CLI, "launch", "--name", name, "--count", str(count), "--nodes", str(nodes),
            "--walltime", "0:30", "--wait", "--json"] + (["--memory", memory] if memory else [])
    t = time.monotonic()
    rows = json.loads(as_user(argv).stdout)
    return rows, time.monotonic() - t


def delete(rows):
    as_user([USER_CLI, "delete", rows[0]["name"], "--wait"])


def in_instance(row):
    """argv prefix running a command (the node's, not the image's) in the instance's
    network namespace."""
    domain = domain_name(row["job_id"], int(row["name"].rsplit("-", 1)[1]))
    ctl = must([ADMIN, "lab", "exec", row["node"], "--", "virsh", "-c", "lxc:///system", "domid",
                domain]).stdout.split()[0]
    init = Path("/proc/%s/task/%s/children" % (ctl, ctl)).read_text().split()[0]
    return [ADMIN, "lab", "exec", row["node"], "--", "nsenter", "-t", init, "-n", "--"]


def pair_throughput(label, rows, args):
    client, server = rows
    return throughput(label, in_instance(server), in_instance(client), server["ip"], args)


def flows(node):
    """Flows on the node's br-int.  Counted by their actions: ovs-ofctl leaves out
    priority= when it is the default one."""
    out = must([ADMIN, "lab", "exec", node, "--", "ovs-ofctl", "-O", "OpenFlow15", "dump-flows",
                "br-int"]).stdout
    return sum(1 for line in out.splitlines() if "actions=" in line)


def flow_samples(label, rows):
    """(label, node, local instances, flows) for every node."""
    return [(label, n, sum(1 for r in rows if r["node"] == n), flows(n)) for n in NODES]


def rule_change(argv):
    """Rule id, nodes, the time the CLI prints, and its wall time."""
    t = time.monotonic()
    res = as_user(argv)
    wall = time.monotonic() - t
    m = RULE_RE.search(res.stdout)
    if not m:
        sys.exit("unexpected output of %s: %s" % (" ".join(argv[1:5]), res.stdout))
    return int(m.group(1)), int(m.group(2)), float(m.group(3)), wall


def rules(rows, args):
    """Add then delete one ingress rule of the default network, args.repeat times;
    prints the medians; returns the flow samples taken with the rule in place."""
    adds, dels, with_rule = [], [], None
    for i in range(args.repeat):
        rule_id, nodes, applied, wall = rule_change(
            [USER_CLI, "net", "rule", "add", "default", "--direction", "ingress", "--proto", "tcp",
             "--port", "8080"])
        adds.append((applied, wall))
        if i == 0:
            with_rule = flow_samples("with one rule more", rows)
        _, _, applied, wall = rule_change([USER_CLI, "net", "rule", "del", "default",
                                           str(rule_id)])
        dels.append((applied, wall))
    n = len(rows)
    for verb, times in (("add", adds), ("del", dels)):
        print("  rule %s, %d instances on %d node(s): CLI %.2fs, applied in %.2fs "
              "(medians of %d; each run: %s)" % (
                  verb, n, nodes, statistics.median(t[1] for t in times),
                  statistics.median(t[0] for t in times), len(times),
                  ", ".join("%.2f/%.2f" % (w, a) for a, w in times)))
    return with_rule


def print_flows(samples, rule_samples):
    print("flows on br-int (ovs-ofctl -O OpenFlow15 dump-flows br-int):")
    print("  %-28s %-7s %9s %6s %11s" % ("CASE", "NODE", "INSTANCES", "FLOWS", "FLOWS/INST"))
    for label, node, local, count in samples + rule_samples:
        print("  %-28s %-7s %9d %6d %11s" % (label, node, local, count,
                                              "%.1f" % (count / local) if local else "-"))
    for node in NODES:
        mine = sorted((local, count) for _, n, local, count in samples if n == node and local)
        if len(mine) > 1 and mine[-1][0] > mine[0][0]:
            (n0, f0), (n1, f1) = mine[0], mine[-1]
            print("  %s: one more instance costs %.1f flows (from %d to %d local instances: "
                  "%d -> %d flows)" % (node, (f1 - f0) / (n1 - n0), n0, n1, f0, f1))
    big = {n: count for label, n, _, count in samples if label.startswith("launch of")}
    for _, node, local, count in rule_samples:
        print("  %s: one rule adds %d flows with %d local instances" % (
            node, count - big[node], local))


def lab(args, base):
    run([ADMIN, "user", "add", USER])
    try:
        samples = flow_samples("idle (before any launch)", [])
        print("instances (private network: OVS userspace datapath, OpenFlow with conntrack):")
        rows, _ = launch("s", 2, 1)
        samples += flow_samples("2 instances on one node", rows)
        same = pair_throughput("two instances on one node", rows, args)
        delete(rows)
        rows, _ = launch("x", 2, 2)
        if rows[0]["node"] == rows[1]["node"]:
            sys.exit("the 2-node launch put both instances on %s" % rows[0]["node"])
        samples += flow_samples("2 instances on two nodes", rows)
        cross = pair_throughput("two instances on two nodes (VXLAN)", rows, args)
        delete(rows)
        for label, gbps in (("one node", same), ("two nodes", cross)):
            print("  %-10s instances/baseline: %.2f of the veth pair, %.2f of the Linux bridge"
                  % (label, gbps / base["veth"], gbps / base["bridge"]))
        # A core each does not fit (2 cores per emulated node): whole nodes, split.
        rows, took = launch("r", args.count, 2, memory="64M")
        print("rules (%d instances launched in %.1fs):" % (len(rows), took))
        samples += flow_samples("launch of %d on two nodes" % len(rows), rows)
        rule_samples = rules(rows, args)
        delete(rows)
        print_flows(samples, rule_samples)
    finally:
        run([ADMIN, "user", "del", USER])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, help="instances for the rule and flow figures "
                                              "(default 50; --quick 10)")
    ap.add_argument("--seconds", type=int, help="length of an iperf3 run (default 10; --quick 3)")
    ap.add_argument("--repeat", type=int, help="iperf3 runs per case and rule add/del rounds "
                                               "(default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="fewer instances, shorter iperf3")
    ap.add_argument("--baseline-only", action="store_true",
                    help="only the veth and bridge baseline (no lab needed)")
    args = ap.parse_args()
    for key, full, quick in (("count", 50, 10), ("seconds", 10, 3), ("repeat", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    base = baseline(args)
    if not args.baseline_only:
        lab(args, base)


if __name__ == "__main__":
    main()
