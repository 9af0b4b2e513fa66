"""`python -m oarcloud_lib.node.umount_exec [--umount PATH]... -- CMD...`: exec CMD after
lazily unmounting PATHs.  Meant to run inside a fresh private mount namespace
(unshare -m), so the unmounts are seen by CMD only.  Used to start libvirtd on
hosts whose cgroup layout its LXC driver cannot handle (docs/platform.md).
"""
import os
import subprocess
import sys


def main(argv):
    umounts = []
    while argv and argv[0] == "--umount":
        umounts.append(argv[1])
        argv = argv[2:]
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: umount_exec [--umount PATH]... -- CMD...", file=sys.stderr)
        return 2
    for path in umounts:
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", path], check=True)
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
