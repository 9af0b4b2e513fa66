#!/opt/oarcloud/venv/bin/python
"""Instance disk benchmark (issue 20): what a disk of its own costs an instance
(oarcloud_lib.node.disk), beside baselines measured in the same run on the
same filesystem (the one holding /var/lib/oarcloud, the backend):

- making and removing a disk (sparse and reserved) beside a plain directory;
- sequential and random direct I/O in a disk, and in a volume (its file
  where the volume store is, mounted as a node mounts one), beside the
  backend's own directory (no throttle: bench/io.py measures the site's I/O
  limits);
- whether this kernel offers the other way, project quotas: XFS's need
  CONFIG_XFS_QUOTA, ext4's CONFIG_QFMT_V2 (read from /proc/config.gz).

Run as root on a node or on the lab's machine (no lab needed):
    bench/disk.py [--mib 256] [--ops 4000] [--repeat 20] [--json FILE]
Figures only: the goal (I/O at least 0.9x the backend's) is compared, never
asserted.
"""
import argparse
import gzip
import json
import mmap
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import run  # and the tree on sys.path
from oarcloud_lib import paths
from oarcloud_lib.node import disk, volumes
from oarcloud_lib.tools import ext4

MiB = 1 << 20
BLOCK = 4096


def kernel_quota():
    """'yes' / 'no' / 'unknown': whether this kernel has project quotas: XFS's
    own (CONFIG_XFS_QUOTA) or ext4's, which need the v2 quota format."""
    try:
        config = gzip.open("/proc/config.gz", "rt").read().splitlines()
    except OSError:
        return "unknown"
    return "yes" if {"CONFIG_XFS_QUOTA=y", "CONFIG_QFMT_V2=y"} & set(config) else "no"


def setup_costs(base, repeat, size):
    """Seconds to make and remove: a plain directory, a sparse disk, a reserved one."""
    out = {"plain": [], "sparse": [], "reserved": []}
    (base / "instances").mkdir(exist_ok=True)
    for i in range(repeat):
        for kind in out:
            mnt = base / "instances" / ("ocbench%d-%d" % (i, len(kind)))
            t = time.monotonic()
            mnt.mkdir()
            if kind != "plain":
                disk.create(mnt.name, size, mnt, 0, kind, base / "disks")
                disk.remove(mnt.name, mnt, base / "disks")
            mnt.rmdir()
            out[kind].append(time.monotonic() - t)
    return out


def _aligned(size):
    buf = mmap.mmap(-1, size)
    buf.write(os.urandom(size))
    return buf


def sequential(path, mib):
    """(write MB/s, read MB/s), O_DIRECT, 1 MiB blocks, fsync'ed."""
    buf = _aligned(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    t = time.monotonic()
    for _ in range(mib):
        os.write(fd, buf)
    os.fsync(fd)
    write = mib / (time.monotonic() - t)
    os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    t = time.monotonic()
    while os.readv(fd, [buf]):
        pass
    read = mib / (time.monotonic() - t)
    os.close(fd)
    return write * MiB / 1e6, read * MiB / 1e6


def random_io(path, ops):
    """(write IOPS, read IOPS): 4 KiB O_DIRECT at random offsets of the file
    sequential() left, each write synchronous (O_DSYNC)."""
    size = os.path.getsize(path)
    buf = _aligned(BLOCK)
    rnd = random.Random(1)
    offsets = [rnd.randrange(size // BLOCK) * BLOCK for _ in range(ops)]
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    t = time.monotonic()
    for off in offsets:
        os.pwritev(fd, [buf], off)
    write = ops / (time.monotonic() - t)
    os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    rnd.shuffle(offsets)
    t = time.monotonic()
    for off in offsets:
        os.preadv(fd, [buf], off)
    read = ops / (time.monotonic() - t)
    os.close(fd)
    return write, read


def io_case(directory, mib, ops):
    f = Path(directory) / "bench.data"
    seq = sequential(f, mib)
    rio = random_io(f, ops)
    f.unlink()
    return {"seq_write_MBps": seq[0], "seq_read_MBps": seq[1], "rand_write_iops": rio[0],
            "rand_read_iops": rio[1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB written and read per case")
    ap.add_argument("--ops", type=int, default=4000, help="random 4 KiB operations per case")
    ap.add_argument("--repeat", type=int, default=20, help="disks made for the setup costs")
    ap.add_argument("--json", default="/tmp/oarcloud-bench-disk.json")
    args = ap.parse_args()
    paths.STATE.mkdir(parents=True, exist_ok=True)
    out = {"kernel_quota": kernel_quota()}
    print("project quotas (XFS/ext4 prjquota): %s" % {
        "no": "unavailable, this kernel has neither CONFIG_XFS_QUOTA nor CONFIG_QFMT_V2", "yes": "available",
        "unknown": "unknown (no /proc/config.gz)"}[out["kernel_quota"]])
    with tempfile.TemporaryDirectory(prefix="oarcloud-bench-disk-", dir=paths.STATE) as tmp:
        base = Path(tmp)
        try:
            costs = out["setup"] = setup_costs(base, args.repeat, 4 << 30)
            plain = statistics.median(costs["plain"])
            print("make + remove, median of %d (4 GiB disk):" % args.repeat)
            for kind, times in costs.items():
                print("  %-9s %8.1f ms" % (kind, statistics.median(times) * 1e3))
            (base / "backend").mkdir()
            mnt = base / "instances" / "ocio-0"
            mnt.mkdir()
            disk.create(mnt.name, (args.mib + 64) * MiB, mnt, 0, "reserved", base / "disks")
            # A volume: the same filesystem in a file, mounted as nodes mount
            # one (node.volumes: barriers on), its file where the store is.
            store = Path(tempfile.mkdtemp(prefix="oarcloud-bench-vol-",
                                          dir=paths.VOLUME_STORE.parent))
            ext4.make(store / "1.ext4", (args.mib + 64) * MiB)
            disk.attach(store / "1.ext4", base / "volume", options=volumes.VOLUME_OPTIONS)
            cases = out["io"] = {"backend": io_case(base / "backend", args.mib, args.ops),
                                 "disk": io_case(mnt, args.mib, args.ops),
                                 "volume": io_case(base / "volume", args.mib, args.ops)}
            disk.remove(mnt.name, mnt, base / "disks")
            disk.detach(base / "volume")
            shutil.rmtree(store)
            print("%-9s %12s %12s %12s %12s" % ("CASE", "SEQ W MB/s", "SEQ R MB/s",
                                                "RAND W IOPS", "RAND R IOPS"))
            for name, c in cases.items():
                print("%-9s %12.0f %12.0f %12.0f %12.0f" % (
                    name, c["seq_write_MBps"], c["seq_read_MBps"], c["rand_write_iops"],
                    c["rand_read_iops"]))
            ratios = out["ratios"] = {c: {k: cases[c][k] / cases["backend"][k] for k in cases[c]}
                                      for c in ("disk", "volume")}
            for c in ratios:
                print("%s / backend: %s (goal >= 0.9 each)"
                      % (c, ", ".join("%s %.2fx" % kv for kv in ratios[c].items())))
            print("a disk's make + remove beside a plain directory: %.1f ms more (sparse), "
                  "%.1f ms more (reserved)" % ((statistics.median(costs["sparse"]) - plain) * 1e3,
                                               (statistics.median(costs["reserved"]) - plain)
                                               * 1e3))
        finally:
            for m in sorted(base.rglob("*"), reverse=True):
                if m.is_dir() and os.path.ismount(m):
                    run(["umount", "-l", str(m)])
            shutil.rmtree(base / "disks", ignore_errors=True)
    Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True))
    print("results: %s" % args.json)


if __name__ == "__main__":
    main()
