"""An instance's cores and memory on this node: the CPUs it runs on, and its
limits changed live (`oarcloud resize`, docs/resize.md).

Cores are three things in the instance's cgroups: its cpuset (the node's
CPUs it may run on: what `nproc` and lxcfs's /proc/cpuinfo show inside),
its CPU quota (cores x period) and its CPU weight (1024 per core).  The CPUs
come from claim(): each instance on the node holds a claim file naming its
CPUs (/run/oarcloud/cpus/DOMAIN), and a new one takes the CPUs the fewest
claims hold, under a lock, so that instances of different jobs spread over
the node (OAR counts cores, the node picks which: OAR's own cpuset manager
is off, docs/design.md).  A node whose OAR cores outnumber its CPUs shares
the least used ones.

Memory is the hard limit.  Growing it is one write.  Shrinking it never
kills: on cgroup v2, memory.high first (the kernel reclaims and throttles,
never kills, at the high mark), then memory.max once usage is below it; on
cgroup v1 the kernel itself reclaims on a lower memory.limit_in_bytes and
refuses it (EBUSY) when it cannot, without killing.  Either way a shrink
that usage cannot follow is Infeasible and the old limit stays.

Every value written is read back.
"""
import errno
import fcntl
import logging
import os
import time
from collections import Counter
from pathlib import Path

from oarcloud_lib import metrics
from oarcloud_lib.errors import NotReady, OarcloudError
from oarcloud_lib.names import DOMAIN_PREFIX

LOG = logging.getLogger("oarcloud.nodeagent")
CLAIMS = Path("/run/oarcloud/cpus")
CLAIM_TTL = 300.0   # s: a claim of a domain libvirt does not know (a create in flight)
PERIOD = 100000     # us, the CPU quota's period (as in the domain's XML)
SHARES_PER_CORE = 1024
SHRINK_WAIT = 5.0   # s for usage to follow a lower memory.high
# What lxcfs computes for the reader from its cgroups, bound over the
# instance's own files (nproc reads its affinity: the cpuset).
LXCFS_VIEWS = ("proc/cpuinfo", "proc/diskstats", "proc/loadavg", "proc/meminfo", "proc/stat",
               "proc/swaps", "proc/uptime", "sys/devices/system/cpu/online")


class Infeasible(OarcloudError):
    """A resize the instance cannot follow (its memory in use above the new
    limit); nothing was changed."""

    exit_code = 1


def views(mountpoint):
    """(node file, instance path) of each lxcfs file, or () when lxcfs does
    not serve mountpoint (the instance then sees the node's)."""
    root = Path(mountpoint)
    if not os.path.ismount(root):
        LOG.warning("lxcfs is not mounted on %s: instances see the node's /proc files", root)
        return ()
    return tuple((str(root / p), "/" + p) for p in LXCFS_VIEWS if (root / p).exists())


# -- CPU lists ------------------------------------------------------------------------

def parse_cpus(text):
    """'0-2,5' -> [0, 1, 2, 5].  Raises ValueError."""
    cpus = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return sorted(cpus)


def format_cpus(cpus):
    """[0, 1, 2, 5] -> '0-2,5'."""
    out, cpus = [], sorted(set(cpus))
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(out)


def pick(cores, used, online, keep=()):
    """cores CPUs of online: those of keep first (the instance's own, the
    least shared of them when it shrinks), then the least used (used: a
    Counter of other instances' CPUs), lowest first.  A node with fewer CPUs
    than cores gives them all."""
    online = sorted(set(online))
    mine = sorted((c for c in set(keep) if c in online), key=lambda c: (used[c], c))
    others = sorted((c for c in online if c not in mine), key=lambda c: (used[c], c))
    return sorted((mine + others)[:max(1, cores)])


def online_cpus(path="/sys/devices/system/cpu/online"):
    return parse_cpus(Path(path).read_text())


def claim(domain, cores, defined, keep=(), claims=None, online=None):
    """The CPUs domain runs on from now, recorded in its claim; defined: the
    domains libvirt knows on this node (the claims of others are stale and
    dropped, unless fresh: a create in flight)."""
    claims = claims or CLAIMS
    claims.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(claims / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = Counter()
        for f in claims.iterdir():
            if f.name.startswith(".") or f.name == domain:
                continue
            try:
                if f.name in defined or time.time() - f.stat().st_mtime < CLAIM_TTL:
                    used.update(parse_cpus(f.read_text()))
                else:
                    f.unlink()
            except (OSError, ValueError):
                continue
        cpus = pick(cores, used, online_cpus() if online is None else online, keep)
        tmp = claims / (".%s.tmp" % domain)
        tmp.write_text(format_cpus(cpus) + "\n")
        tmp.replace(claims / domain)
    return cpus


def claimed(domain, claims=None):
    try:
        return parse_cpus(((claims or CLAIMS) / domain).read_text())
    except (OSError, ValueError):
        return []


def forget(domain, claims=None):
    ((claims or CLAIMS) / domain).unlink(missing_ok=True)


# -- cgroups ----------------------------------------------------------------------------

class Cgroups:
    """The directories of one running instance's cgroups (v1, or v2 unified)."""

    def __init__(self, init_pid, root="/sys/fs/cgroup", proc="/proc"):
        try:
            groups = metrics.parse_proc_cgroup(Path(proc, str(init_pid), "cgroup").read_text())
        except OSError as e:
            raise NotReady(detail="instance init %s: %s" % (init_pid, e.strerror)) from None
        root = Path(root)
        self.v2 = "memory" not in groups
        if self.v2:
            d = root / groups.get("", "/").lstrip("/")
            self.cpuset = self.cpu = self.memory = d
        else:
            self.cpuset, self.cpu, self.memory = (root / c / groups.get(c, "/").lstrip("/")
                                                  for c in ("cpuset", "cpu", "memory"))
        for d in {self.cpuset, self.cpu, self.memory}:
            if d == root or d.parent == root:
                raise NotReady(detail="instance init %s is in no cgroup of its own" % init_pid)

    # cores
    def cpus(self):
        return parse_cpus((self.cpuset / "cpuset.cpus").read_text())

    def set_cpus(self, cpus):
        """The cpuset of the instance and of any cgroup it made below: widened
        from the top, then narrowed from the bottom (a child may hold no CPU
        its parent lacks)."""
        dirs = [self.cpuset] + sorted((p.parent for p in self.cpuset.rglob("*/cpuset.cpus")),
                                      key=lambda p: len(p.parts))
        union = set(cpus) | set(self.cpus())
        if union != set(self.cpus()):
            for d in dirs:
                _write(d / "cpuset.cpus", format_cpus(union), parse_cpus)
        if union != set(cpus):
            for d in reversed(dirs):
                _write(d / "cpuset.cpus", format_cpus(cpus), parse_cpus)

    def quota_cores(self):
        """The cores its CPU quota allows (None: no quota)."""
        return metrics.quota_cores(self.cpu, self.v2)

    def set_cores(self, cores):
        if self.v2:
            _write(self.cpu / "cpu.max", "%d %d" % (cores * PERIOD, PERIOD))
            # libvirt's conversion of shares to a weight (1..10000)
            shares = cores * SHARES_PER_CORE
            _write(self.cpu / "cpu.weight", 1 + (shares - 2) * 9999 // 262142, int)
        else:
            _write(self.cpu / "cpu.cfs_period_us", PERIOD, int)
            _write(self.cpu / "cpu.cfs_quota_us", cores * PERIOD, int)
            _write(self.cpu / "cpu.shares", cores * SHARES_PER_CORE, int)

    # memory
    def memory_limit(self):
        name = "memory.max" if self.v2 else "memory.limit_in_bytes"
        text = (self.memory / name).read_text().strip()
        return None if text == "max" else int(text)

    def memory_usage(self):
        name = "memory.current" if self.v2 else "memory.usage_in_bytes"
        return int((self.memory / name).read_text())

    def set_memory(self, limit, wait=SHRINK_WAIT):
        """The hard limit, shrunk without killing (module docstring).
        Raises Infeasible (the old limit kept)."""
        old = self.memory_limit()
        if self.v2:
            if old is None or limit < old:
                _write(self.memory / "memory.high", limit, int)
                if not _until(lambda: self.memory_usage() <= limit, wait):
                    used = self.memory_usage()
                    _write(self.memory / "memory.high", "max")
                    raise Infeasible("%d MiB in use does not fit in %d MiB: the instance "
                                     "keeps %s" % (used >> 20, limit >> 20, _mib(old)))
            _write(self.memory / "memory.max", limit, int)
            _write(self.memory / "memory.high", "max")
            return
        memsw = self.memory / "memory.memsw.limit_in_bytes"
        if memsw.exists() and int(memsw.read_text()) < limit:
            _write(memsw, limit, int)  # swap+memory never below memory
        try:
            (self.memory / "memory.limit_in_bytes").write_text("%d\n" % limit)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            raise Infeasible("%d MiB in use does not fit in %d MiB (the kernel could not "
                             "reclaim it): the instance keeps %s" % (
                                 self.memory_usage() >> 20, limit >> 20, _mib(old))) from None
        got = self.memory_limit()
        # The kernel rounds the limit down to whole pages.
        if got is None or abs(got - limit) >= os.sysconf("SC_PAGE_SIZE"):
            raise NotReady(detail="memory.limit_in_bytes reads %s, not %d" % (got, limit))


def _mib(value):
    return "no limit" if value is None else "%d MiB" % (value >> 20)


def _until(predicate, timeout, interval=0.05):
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


def _write(path, value, parse=str):
    Path(path).write_text("%s\n" % value)
    got = Path(path).read_text().strip()
    if parse(got) != parse(str(value)):
        raise NotReady(detail="%s reads %s, not %s" % (path, got, value))


# -- one instance -----------------------------------------------------------------------

def apply(guest, cores, memory, defined, init_pid=None):
    """Give the running guest cores (its CPUs claimed, its quota and weight)
    and memory bytes, memory first when it shrinks (a refused shrink then
    changes nothing).  Returns what its cgroups read afterwards:
    {cores, cpus, memory}.  Raises Infeasible, NotReady."""
    groups = Cgroups(init_pid or guest.init_pid())
    old_memory = groups.memory_limit()
    if old_memory is None or memory < old_memory:
        groups.set_memory(memory)
    cpus = claim(guest.name, cores, defined, keep=groups.cpus())
    groups.set_cpus(cpus)
    groups.set_cores(cores)
    if old_memory is not None and memory > old_memory:
        groups.set_memory(memory)
    return {"cores": groups.quota_cores(), "cpus": format_cpus(groups.cpus()),
            "memory": groups.memory_limit()}


def resize(domain, cores, memory, driver=None):
    """The agent's resize (the broker checked the values against the job and
    the owner's quotas): applied now to a running instance, and at its next
    start (node.power) to a stopped one.  Returns {status: resized,
    infeasible or stopped, cores, cpus, memory[, reason]}."""
    from oarcloud_lib.node import access
    from oarcloud_lib.node.driver import LxcDriver
    driver = driver or LxcDriver()
    guest = access.guest(domain, driver)
    if guest.state() != "running":
        return {"status": "stopped", "cores": cores, "memory": memory, "cpus": None}
    try:
        got = apply(guest, cores, memory, set(driver.names(DOMAIN_PREFIX)))
    except Infeasible as e:
        groups = Cgroups(guest.init_pid())
        LOG.warning("%s: resize to %d core(s), %d MiB infeasible: %s", domain, cores,
                    memory >> 20, e)
        return {"status": "infeasible", "reason": str(e), "cores": groups.quota_cores(),
                "cpus": format_cpus(groups.cpus()), "memory": groups.memory_limit()}
    LOG.info("%s: %s core(s) on CPUs %s, %d MiB", domain, got["cores"], got["cpus"],
             (got["memory"] or 0) >> 20)
    return dict(got, status="resized")
