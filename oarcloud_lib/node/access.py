"""A user's way into one of their instances, on its node, as root: what the
broker's exec, console and proxy verbs run over OAR's ssh.

    python -m oarcloud_lib.node.access exec DOMAIN [-- ARGS]   (as root in the instance)
    python -m oarcloud_lib.node.access console DOMAIN         (through the node's console keeper)
    python -m oarcloud_lib.node.access console-log DOMAIN     (what the keeper logged, raw)
    python -m oarcloud_lib.node.access proxy DOMAIN PORT       (stdio <-> the instance's PORT)

Kept apart from the node agent, with only libvirt to load, because it is on
the path of every `oarcloud exec|ssh|console`: it starts in a fraction of the
agent's time.
"""
import logging
import os
import sys

from oarcloud_lib import paths
from oarcloud_lib.node.driver import LxcDriver
from oarcloud_lib.errors import Conflict, NotReady, OarcloudError, Refused
from oarcloud_lib.names import DOMAIN_RE

LOG = logging.getLogger("oarcloud.access")


def guest(domain, driver=None):
    """The instance's domain, its name checked first (it comes from a user).
    Raises Refused, NotFound."""
    if not DOMAIN_RE.match(domain or ""):
        raise Refused(detail="bad domain name %r" % (domain[:40],))
    return (driver or LxcDriver()).get(domain)


def instance_env():
    return {"PATH": paths.ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8",
            "TERM": os.environ.get("TERM", "dumb")}


CGROUP_ROOT = "/sys/fs/cgroup"


def join_cgroups(pid, root=CGROUP_ROOT):
    """Move this process into the cgroups of pid (the instance's init), so that
    what runs through `exec` is charged to the instance and held to its limits
    (nsenter enters namespaces only).  Returns the hierarchies joined."""
    joined = []
    with open("/proc/%d/cgroup" % pid) as f:
        lines = f.read().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if path == "/":
            continue
        if controllers:
            base = os.path.join(root, controllers.replace("name=", ""))
        else:
            unified = os.path.join(root, "unified")
            base = unified if os.path.ismount(unified) else root
        try:
            with open(os.path.join(base, path.lstrip("/"), "cgroup.procs"), "w") as f:
                f.write("%d\n" % os.getpid())
            joined.append(controllers or "unified")
        except OSError as e:
            LOG.warning("%s: could not join cgroup %s:%s: %s", pid, controllers, path, e)
    return joined


def exec_in(domain, argv):
    """Replace this process with argv run as root in the instance (all its
    namespaces and cgroups)."""
    if not argv:
        argv = ["/bin/sh", "-l"]
    init = guest(domain).init_pid()
    join_cgroups(init)
    os.execve("/usr/bin/nsenter", ["nsenter", "-t", str(init), "-a", "-r", "-w",
                                   "--"] + list(argv), instance_env())


def console(domain):
    """This terminal on the instance's console, through the node's keeper
    (node.consoles), which logs it meanwhile."""
    from oarcloud_lib.node import consoles
    guest(domain)
    try:
        why = consoles.attach(domain)
    except OSError as e:
        raise NotReady(detail="the console keeper does not answer on %s (%s): "
                       "oarcloud-admin setup node starts it" % (consoles.SOCKET, e.strerror))
    except RuntimeError as e:
        raise Conflict(what="console", detail=str(e))
    print("\r\n[%s's console: %s]" % (domain, why), file=sys.stderr)
    return 0


def console_log(domain):
    """What the instance printed on its console, as the keeper kept it."""
    from oarcloud_lib.node import consoles
    guest(domain)
    sys.stdout.buffer.write(consoles.read_log(domain))
    sys.stdout.flush()
    return 0


def proxy(domain, port):
    """Relay stdio to PORT on the instance's own loopback (an ssh ProxyCommand)."""
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise Refused(detail="bad port %r" % port[:10])
    os.execv("/usr/bin/nsenter", ["nsenter", "-t", str(guest(domain).init_pid()), "-n", "--",
                                  sys.executable, "-I", "-m", "oarcloud_lib.node.relay", "127.0.0.1",
                                  port])


def main(argv):
    os.chdir("/")  # never the caller's directory (commands.root_entry, without plumbum's import)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    verb, rest = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if verb == "exec" and rest:
            args = rest[1:]
            return exec_in(rest[0], args[1:] if args[:1] == ["--"] else args)
        if verb == "console" and len(rest) == 1:
            return console(rest[0])
        if verb == "console-log" and len(rest) == 1:
            return console_log(rest[0])
        if verb == "proxy" and len(rest) in (1, 2):
            return proxy(rest[0], rest[1] if len(rest) > 1 else "22")
    except OarcloudError as e:
        print("oarcloud %s on %s: error: %s" % (verb, os.uname().nodename, e), file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
