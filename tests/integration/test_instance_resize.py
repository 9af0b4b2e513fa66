"""Live resize on the lab (docs/resize.md): an instance's cores and memory
change while it runs, within its job, and what runs inside sees it at once
(nproc, free, /proc through lxcfs); a memory shrink below use is refused and
kills nothing; bad input, another user's instance, a quota or the job's own
cores are refused and change nothing.  (Named to run before test_lab.py,
whose lab down and up leaves no bookworm image.)"""
import json
from pathlib import Path

from conftest import admin, node_exec
from test_instances import instance_init, launch, oarcloud

MiB = 1 << 20


def inside(user, name, script):
    res = oarcloud(user, "exec", name, "--", "sh", "-c", script)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def seen(user, name):
    """(nproc, /proc/meminfo's MemTotal in MiB, the node's CPUs it may run on,
    /proc/cpuinfo processors) inside.  (busybox's free asks sysinfo(2), which
    shows the node's; lxcfs numbers the CPUs it shows from 0.)"""
    out = inside(user, name, "nproc; awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; "
                             "awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status; "
                             "grep -c ^processor /proc/cpuinfo")
    nproc, total, online, processors = out.split()
    return int(nproc), int(total), online, int(processors)


def free_total(user, name):
    """procps' free's total memory in MiB (it fails on libvirt's own /proc/meminfo)."""
    return int(inside(user, name, "free -m | awk '/^Mem:/ {print $2}'"))


def cgroup(node, domain, controller, name):
    """A file of the instance's cgroup (v1 here), as its node reads it."""
    init = instance_init(node, domain)
    path = next(line.split(":", 2)[2] for line in
                Path("/proc/%s/cgroup" % init).read_text().splitlines()
                if controller in line.split(":")[1].split(","))
    return node_exec(node, "cat", "/sys/fs/cgroup/%s%s/%s" % (controller, path, name),
                     check=True).stdout.strip()


def resize(user, name, *args):
    res = oarcloud(user, "resize", name, "--json", *args)
    return res.returncode, (json.loads(res.stdout) if res.stdout.strip() else res.stderr)


def test_nproc_free_and_proc_follow_a_live_resize_kept_across_a_restart(make_user):
    user = make_user()
    (row,) = launch(user, "--image", "bookworm", "--name", "grow", "--cores", "2",
                    "--memory", "256M")
    node, domain = row["node"], "oc%d-0" % row["job_id"]
    assert seen(user, "grow") == (2, 256, "0-1", 2)
    assert free_total(user, "grow") == 256
    code, out = resize(user, "grow", "--cores", "1", "--memory", "512M")
    assert code == 0 and out["status"] == "resized", out
    assert out["before"] == {"cores": 2, "memory": 256 * MiB}
    assert out["after"] == {"cores": 1, "memory": 512 * MiB}
    # At once inside (procps' free works: lxcfs's /proc/meminfo)...
    nproc, total, online, processors = seen(user, "grow")
    assert (nproc, total, processors) == (1, 512, 1) and online in ("0", "1")
    assert free_total(user, "grow") == 512
    # ... and in its cgroups, read on its node.
    assert cgroup(node, domain, "cpu", "cpu.cfs_quota_us") == "100000"
    assert cgroup(node, domain, "cpu", "cpu.shares") == "1024"
    assert int(cgroup(node, domain, "memory", "memory.limit_in_bytes")) == 512 * MiB
    assert cgroup(node, domain, "cpuset", "cpuset.cpus") == online
    # Back to the job's two cores; list shows what it has.
    code, out = resize(user, "grow", "--cores", "2")
    assert code == 0 and out["after"] == {"cores": 2, "memory": 512 * MiB}, out
    assert seen(user, "grow")[:3] == (2, 512, "0-1")
    listed = json.loads(oarcloud(user, "list", "--json", check=True).stdout)
    assert [(r["cores"], r["memory"]) for r in listed] == [(2, 512 * MiB)]
    # Every resize is an event with the values before and after.
    logs = oarcloud(user, "logs", "grow", check=True).stdout
    assert "grow resized: cores 2 -> 1, memory 256 MiB -> 512 MiB" in logs, logs
    assert "grow resized: cores 1 -> 2" in logs, logs
    # Asking for what it has changes nothing.
    code, out = resize(user, "grow", "--cores", "2")
    assert code == 0 and out["status"] == "unchanged", out
    # A stop and a start keep the resized values.
    oarcloud(user, "resize", "grow", "--cores", "1", check=True)
    oarcloud(user, "stop", "grow", check=True)
    oarcloud(user, "start", "grow", check=True)
    assert seen(user, "grow")[:2] == (1, 512)


def test_a_memory_shrink_below_use_is_infeasible_and_kills_nothing(make_user):
    user = make_user()
    (row,) = launch(user, "--name", "full", "--cores", "1", "--memory", "256M")
    node, domain = row["node"], "oc%d-0" % row["job_id"]
    # 160 MiB that cannot be reclaimed (tmpfs, no swap), and a process to watch.
    inside(user, "full", "mkdir -p /mnt/m && mount -t tmpfs -o size=200m none /mnt/m && "
                         "dd if=/dev/zero of=/mnt/m/fill bs=1M count=160 2>/dev/null && "
                         "(setsid sleep 3600 </dev/null >/dev/null 2>&1 &)")
    sleeper = inside(user, "full", "pidof sleep").split()
    assert len(sleeper) == 1
    code, out = resize(user, "full", "--memory", "96M")
    assert code == 1 and out["status"] == "infeasible", out
    assert "does not fit in 96 MiB" in out["reason"] and "keeps 256 MiB" in out["reason"]
    assert out["after"] == out["before"] == {"cores": 1, "memory": 256 * MiB}
    # Nothing was killed, the limit is the old one, inside and on the node.
    assert inside(user, "full", "pidof sleep").split() == sleeper
    assert "oom_kill 0" in cgroup(node, domain, "memory", "memory.oom_control")
    assert int(cgroup(node, domain, "memory", "memory.limit_in_bytes")) == 256 * MiB
    assert seen(user, "full")[1] == 256
    assert "resize of full infeasible" in oarcloud(user, "logs", "full", check=True).stdout
    # Once the memory is given back, the same shrink goes through.
    inside(user, "full", "rm /mnt/m/fill")
    code, out = resize(user, "full", "--memory", "96M")
    assert code == 0 and out["status"] == "resized", out
    assert seen(user, "full")[1] == 96
    assert inside(user, "full", "pidof sleep").split() == sleeper


def test_a_job_s_instances_get_cpus_of_their_own_and_never_its_cores_beyond(make_user):
    user = make_user()
    rows = launch(user, "--name", "pair", "--count", "2", "--cores", "1", "--nodes", "1")
    assert {r["node"] for r in rows} == {rows[0]["node"]}
    # Two instances of one core each on a 2-core node: one CPU each, not the same.
    cpus = {seen(user, r["name"])[2] for r in rows}
    assert cpus == {"0", "1"}, cpus
    # The job holds two cores there, its other instance one of them.
    res = oarcloud(user, "resize", "pair-0", "--cores", "2")
    assert res.returncode == 2 and "the job %d holds 1 for pair-0" % rows[0]["job_id"] \
        in res.stderr, res.stderr
    assert seen(user, "pair-0")[0] == 1


def test_bad_input_another_user_s_instance_and_a_quota_are_refused_and_change_nothing(
        make_user):
    alice, bob = make_user(), make_user()
    (row,) = launch(alice, "--name", "kept", "--cores", "1", "--memory", "128M")
    for args, says in ((["--cores", "0"], "bad --cores '0'"),
                       (["--cores", "two"], "bad --cores 'two'"),
                       (["--memory", "16M"], "below 32 MiB"),
                       (["--memory", "12Q"], "bad size '12Q'"),
                       (["--memory", "5G"], "at most 4096 MiB per core"),
                       ([], "nothing to change"),
                       (["--cores", "2"], "2 cores do not fit")):
        res = oarcloud(alice, "resize", "kept", *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        line = res.stderr.strip()
        assert says in line and len(line.splitlines()) == 1, (args, line)
    # Another user's instance is not found, like a missing one; bob cannot
    # reach it through the broker either.
    for res in (oarcloud(bob, "resize", "kept", "--memory", "64M"),
                oarcloud(alice, "resize", "nosuch", "--memory", "64M")):
        assert res.returncode != 0 and "instance not found" in res.stderr, res.stderr
    res = oarcloud(bob, "resize", "../kept", "--memory", "64M")
    assert res.returncode == 2 and "bad instance name" in res.stderr
    # The owner's memory quota counts what a resize adds.
    admin("quota", "set", alice, "--memory", "256M", check=True)
    try:
        res = oarcloud(alice, "resize", "kept", "--memory", "512M")
        assert res.returncode != 0 and "quota: memory: 128 MiB used of 256 MiB" in res.stderr, \
            res.stderr
    finally:
        admin("quota", "set", alice, "--memory", "none", check=True)
    listed = json.loads(oarcloud(alice, "list", "--json", check=True).stdout)
    assert [(r["cores"], r["memory"]) for r in listed] == [(1, 128 * MiB)]
    assert seen(alice, "kept")[1] == 128
    assert "resized" not in oarcloud(alice, "logs", "kept", check=True).stdout
    assert row["job_id"]
