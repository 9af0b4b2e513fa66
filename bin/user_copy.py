"""oarcloud cp: files between this machine and an instance, through the broker's
exec (as root in the instance, like `oarcloud exec`): no sshd needed in the
image.  Everything on this side runs as the calling user."""
import os
import re
import subprocess
import sys
import tempfile

from plumbum import cli

from oarcloud_cli.common import Changes, Command, broker_argv, said
from oarcloud_lib.catalog.jobspec import NAME_RE

# NAME:PATH names a path in an instance when NAME is an instance name (scp's
# habit: a colon before any slash); anything else is a local path.
REMOTE = re.compile(r"^(%s):(.*)\Z" % NAME_RE, re.S)
CHUNK = 1 << 20
# The instance's side: a file into PATH (or into PATH/NAME when PATH is a
# directory); a file out of PATH (refused for a directory without -r).
PUT_FILE = 'd=$1; if [ -d "$d" ]; then d="$d/$2"; fi; cat > "$d"'
GET_FILE = ('if [ -d "$1" ]; then echo "$1 is a directory: add -r" >&2; exit 1; fi; '
            'exec cat -- "$1"')
PUT_TREE = 'mkdir -p -- "$1" && exec tar -xf - -C "$1"'
GET_TREE = 'cd -- "$(dirname -- "$1")" && exec tar -cf - -- "$(basename -- "$1")"'


def _side(text):
    m = REMOTE.match(text)
    if not m:
        return None, text
    if not m.group(2).startswith("/"):
        raise CopyError("paths in an instance are absolute: %s:/%s" % (m.group(1), m.group(2)))
    return m.group(1), m.group(2)


class CopyError(Exception):
    pass


def _exec(name, script, *args, **popen):
    return subprocess.Popen(broker_argv("exec", name, "--", "sh", "-c", script, "sh", *args),
                            **popen)


def _pump(src, dst, meter):
    done = 0
    for chunk in iter(lambda: src.read(CHUNK), b""):
        dst.write(chunk)
        done += len(chunk)
        meter(done)
    meter(done, final=True)
    return done


def put(local, name, path, recursive, meter):
    """local (a file, or with recursive a directory) into the instance at path."""
    if os.path.isdir(local):
        if not recursive:
            raise CopyError("%s is a directory: add -r" % local)
        base = os.path.basename(os.path.normpath(local))
        tar = subprocess.Popen(["tar", "-C", os.path.dirname(os.path.abspath(local)) or "/",
                                "-cf", "-", "--", base], stdout=subprocess.PIPE)
        far = _exec(name, PUT_TREE, path, stdin=subprocess.PIPE)
        try:
            done = _pump(tar.stdout, far.stdin, meter)
        finally:
            far.stdin.close()
        if tar.wait() != 0:
            raise CopyError("tar could not read all of %s" % local)
        return far.wait(), done
    with open(local, "rb") as f:
        far = _exec(name, PUT_FILE, path, os.path.basename(local), stdin=subprocess.PIPE)
        try:
            done = _pump(f, far.stdin, meter)
        except BrokenPipeError:
            done = 0  # the far side refused: it says why
        finally:
            try:
                far.stdin.close()
            except BrokenPipeError:
                pass
    return far.wait(), done


def get(name, path, local, recursive, meter):
    """The instance's path (a file, or with recursive a directory) into local."""
    if recursive:
        os.makedirs(local, exist_ok=True)
        far = _exec(name, GET_TREE, path, stdout=subprocess.PIPE)
        # GNU tar as this user: no member leaves local (leading / and .. are
        # refused, links are placed last), owners are this user.
        tar = subprocess.Popen(["tar", "-xf", "-", "-C", local, "--no-same-owner"],
                               stdin=subprocess.PIPE)
        try:
            done = _pump(far.stdout, tar.stdin, meter)
        finally:
            tar.stdin.close()
        code = far.wait()
        if tar.wait() != 0 and code == 0:
            raise CopyError("tar could not write all of %s into %s" % (path, local))
        return code, done
    if os.path.isdir(local):
        local = os.path.join(local, os.path.basename(path.rstrip("/")) or "root")
    fd, tmp = tempfile.mkstemp(prefix=".oarcloud-cp-", dir=os.path.dirname(local) or ".")
    try:
        with os.fdopen(fd, "wb") as out:
            far = _exec(name, GET_FILE, path, stdout=subprocess.PIPE)
            done = _pump(far.stdout, out, meter)
            code = far.wait()
        if code == 0:
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, local)  # whole, or not at all
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return code, done


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Copy(Changes, Command):
    """Copy a file between this machine and an instance, with no sshd needed:
    oarcloud cp FILE NAME:/PATH, or oarcloud cp NAME:/PATH FILE (-r: a
    directory and what it holds).  A PATH or FILE that is a directory gets it
    by its own name."""

    recursive = cli.Flag(["-r", "--recursive"], help="copy a directory and what it holds")

    def run_command(self, source, destination):
        from oarcloud_lib import progress
        from oarcloud_lib.errors import Refused
        try:
            (src_name, src), (dst_name, dst) = _side(source), _side(destination)
        except CopyError as e:
            raise Refused(detail=str(e)) from None
        if bool(src_name) == bool(dst_name):
            raise Refused(detail="one side is an instance's path (NAME:/PATH), the other a "
                                 "local one")
        if not src_name and not os.path.exists(src):
            raise Refused(detail="no such file or directory: %s" % src)
        meter = progress.Meter("cp %s" % source, None if src_name or os.path.isdir(src)
                               else os.path.getsize(src))
        try:
            code, done = put(src, dst_name, dst, self.recursive, meter) if dst_name else \
                get(src_name, src, dst, self.recursive, meter)
        except CopyError as e:
            raise Refused(detail=str(e)) from None
        if code != 0:
            return 125 if code == 125 else 1  # the far side said why, on stderr
        said(self.json, {"source": source, "destination": destination, "bytes": done,
                         "recursive": bool(self.recursive)},
             "copied %s to %s (%d bytes)" % (source, destination, done))
        return 0


if __name__ == "__main__":
    sys.exit(Copy.run())
