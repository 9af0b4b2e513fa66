"""Running oarcloud's node agent as root on a node, the way OAR itself reaches nodes.

OAR's server and nodes trust each other through the `oar` user's ssh key and
the oar-node sshd (port 6667); on the node, oardodo (setuid, for group oar)
gives root.  ssh joins its arguments into one remote shell line: every
argument is quoted here, so values never become shell syntax on the node.
"""
import os
import shlex
import socket
import sys
from pathlib import Path

OARDODO = "/usr/lib/oar/oardodo/oardodo"
OAR_SSH_CONFIG = Path("/var/lib/oar/.ssh/config")
# OpenSSH 9's default key exchange (sntrup761x25519, post-quantum) costs 0.09 s
# of CPU on every connection; OAR opens one to check nodes and one to start
# each job, oarcloud one per node and per exec.  x25519 first, sntrup761 kept.
KEX_LINE = "KexAlgorithms ^curve25519-sha256"
KEX_MARK = "# set by oarcloud: x25519 key exchange first (sntrup761: +0.09 s per connection)"
OAR_SSH = ["ssh", "-F", str(OAR_SSH_CONFIG), "-i", "/var/lib/oar/.ssh/id_rsa",
           "-p", "6667", "-l", "oar", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
           "-o", "LogLevel=ERROR"]


def ensure_client_config(path=OAR_SSH_CONFIG):
    """OAR's ssh client configuration (user oar's, also given to our own ssh with
    -F) with x25519 key exchange first; True if changed.  The file is the OAR
    package's: one line is added, its owner and mode are kept."""
    text = path.read_text() if path.exists() else ""
    if KEX_LINE in text.splitlines():
        return False
    path.write_text(text + ("" if text.endswith("\n") or not text else "\n")
                    + "%s\n%s\n" % (KEX_MARK, KEX_LINE))
    return True


def this_node():
    return socket.gethostname()


# The node agent (`python -m AGENT_MODULE VERB...`); the sweep finds its
# processes by this name.
AGENT_MODULE = "oarcloud_lib.node.agent"


def root_python():
    """The interpreter argv for code that runs as root: isolated (-I: neither the
    working directory nor PYTHON* variables nor a user's site packages reach
    sys.path), so that a caller's ./oarcloud_lib never shadows the package."""
    return [sys.executable, "-I"]


def spawn_root_worker(module, *args):
    """Start `python -m module args...` as root, detached (own session), and return
    at once: what OAR's server-side hooks do, since OAR waits for them."""
    from oarcloud_lib.commands import LOCAL
    argv = [*root_python(), "-m", module, *args]
    if os.geteuid() != 0:
        argv = [OARDODO] + argv
    return LOCAL.spawn(argv)


def agent_argv(node, verb, *args, tty=False, module=AGENT_MODULE):
    """argv running `python -m module verb args...` (the node agent by default)
    as root on node."""
    argv = [*root_python(), "-m", module, verb, *[str(a) for a in args]]
    if node == this_node():
        return argv
    return OAR_SSH + (["-tt"] if tty else ["-T"]) + [node, OARDODO] + [shlex.quote(a) for a in argv]
