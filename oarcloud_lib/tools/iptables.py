"""iptables: the one module that runs iptables and iptables-restore (argv only).

oarcloud's rules live in its own chains (OC-<CHAIN>), each reached by one
jump from the built-in chain, so that a whole set is replaced at once with
`iptables-restore --noflush` and nothing of the site's own rules is touched.
"""
from oarcloud_lib.commands import LOCAL


def _in(netns):
    return ["ip", "netns", "exec", netns] if netns else []


def rules(table, runner=LOCAL):
    """The rules of a table, as `iptables -S` lists them."""
    return set(runner.out(["iptables", "-t", table, "-S"]).splitlines())


def restore(text, runner=LOCAL, netns=None, noflush=False):
    """Load iptables-restore text (in the named network namespace netns)."""
    runner.run(_in(netns) + ["iptables-restore"] + (["--noflush"] if noflush else []),
               stdin=text)


def ensure_jump(table, chain, target, listed, runner=LOCAL):
    """The jump from chain to target first in chain, unless listed (rules())
    already has it."""
    if "-A %s -j %s" % (chain, target) not in listed:
        runner.run(["iptables", "-t", table, "-I", chain, "1", "-j", target])


def remove_chain(table, chain, target, runner=LOCAL):
    """Remove target, its rules and the jump to it from chain (what is not
    there is no error)."""
    for argv in (["-D", chain, "-j", target], ["-F", target], ["-X", target]):
        runner.run(["iptables", "-t", table] + argv, check=False)
