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

OARDODO = "/usr/lib/oar/oardodo/oardodo"
OAR_SSH = ["ssh", "-F", "/var/lib/oar/.ssh/config", "-i", "/var/lib/oar/.ssh/id_rsa",
           "-p", "6667", "-l", "oar", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]


def this_node():
    return socket.gethostname()


def spawn_root_worker(module, *args):
    """Start `python -m module args...` as root, detached (own session), and return
    at once: what OAR's server-side hooks do, since OAR waits for them."""
    from oarcloud_lib.commands import LOCAL
    argv = [sys.executable, "-m", module, *args]
    if os.geteuid() != 0:
        argv = [OARDODO] + argv
    return LOCAL.spawn(argv)


def agent_argv(node, verb, *args, tty=False, module="oarcloud_lib.nodeagent"):
    """argv running `python -m module verb args...` (the node agent by default)
    as root on node."""
    argv = [sys.executable, "-m", module, verb, *[str(a) for a in args]]
    if node == this_node():
        return argv
    return OAR_SSH + (["-tt"] if tty else ["-T"]) + [node, OARDODO] + [shlex.quote(a) for a in argv]
