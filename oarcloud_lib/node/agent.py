"""The node agent: what runs as root on nodes, one verb per call.

    python -m oarcloud_lib.node.agent prologue JOB_ID NODEFILE   (first node: coordinator)
    python -m oarcloud_lib.node.agent epilogue JOB_ID NODEFILE   (first node: coordinator)
    python -m oarcloud_lib.node.agent create JOB_ID [DOMAIN...]  (every node of the job; with
                                  domains: only those, placed in an allocation's job)
    python -m oarcloud_lib.node.agent destroy JOB_ID [DOMAIN...] (every node of the job)
    python -m oarcloud_lib.node.agent destroy-all                (this node: every instance)
    python -m oarcloud_lib.node.agent net-sync                   (this node: networks as the
                                                                  catalog says, node.netnode)
    python -m oarcloud_lib.node.agent probe INTERVAL             (this node: one JSON line of
                                  readings every INTERVAL s, node.probes)
    python -m oarcloud_lib.node.agent facts                      (this node: its image cache,
                                                                  as JSON, for `node list`)
    python -m oarcloud_lib.node.agent sweep [RUNNING_JOB...]     (this node: remove the
                                  instances of every other job, then check the node is sound)
    python -m oarcloud_lib.node.agent start|stop|reboot DOMAIN
    python -m oarcloud_lib.node.agent save DOMAIN [flatten]      (the instance's changes, frozen,
                                                                  as a tar stream on stdout)
    python -m oarcloud_lib.node.agent export-kept|drop-kept DOMAIN [flatten]
                                  (changes kept at the job's end for --save-on-exit)
    python -m oarcloud_lib.node.agent volume-attach|volume-detach DOMAIN VOLUME_ID
                                  (a volume in a running instance, as the catalog says)
    python -m oarcloud_lib.node.agent resize DOMAIN CORES MEMORY_BYTES
                                  (its cgroups live, node.resize; JSON of what they read)
    python -m oarcloud_lib.node.agent os-update                  (this drained node: the
                                  admin's update script on stdin, node.upkeep; JSON)
    python -m oarcloud_lib.node.agent health [PEER...]           (this node's checks, JSON)

Where each verb's work lives: the coordinator in service.coordinator, create
and destroy in node.lifecycle, power and saves in node.power, the sweep in
node.sweep.  Only job ids and domain names come from the command line (each
checked here by its verb's argument pattern, and again where it is used);
everything else is read from OAR and the catalog.  The per-instance verbs are
reached only through the server's broker (server.broker), which checks who
owns what.
"""
import json
import logging
import re
import sys
from dataclasses import dataclass

from oarcloud_lib import commands, config, paths
from oarcloud_lib.errors import OarcloudError, from_foreign
from oarcloud_lib.names import DOMAIN_RE, HOST_RE
from oarcloud_lib.tools.oarssh import this_node

LOG = logging.getLogger("oarcloud.nodeagent")
JOB = re.compile(r"^[0-9]{1,9}\Z")
INTERVAL = re.compile(r"^[1-9][0-9]{0,4}\Z")
VOLUME = re.compile(r"^[1-9][0-9]{0,9}\Z")
CORES = re.compile(r"^[1-9][0-9]{0,3}\Z")
BYTES = re.compile(r"^[1-9][0-9]{0,14}\Z")


@dataclass(frozen=True)
class Verb:
    run: object           # fn(*argv) -> exit code, or what to print (exit 0)
    args: tuple = ()      # a pattern per fixed argument
    extra: object = None  # pattern of each further argument (any number), if any
    optional: tuple = ()  # literal words allowed after the fixed ones


def _coordinator(name):
    def run(job_id, nodefile):
        from oarcloud_lib.service import coordinator
        return getattr(coordinator, name)(int(job_id), nodefile)
    return run


def _node_verb(name):
    def run(job_id, *domains):
        from oarcloud_lib.node import lifecycle
        lifecycle.run_verb(name, int(job_id), only=domains or None)
        return 0
    return run


def _destroy_all():
    from oarcloud_lib.node import lifecycle
    lifecycle.destroy_local(None)
    return 0


def _net_sync():
    from oarcloud_lib.node import netnode
    return str(netnode.sync())


def _probe(interval):
    from oarcloud_lib.node import probes
    return probes.run(int(interval), config.load().server_address)


def _sweep(*running):
    from oarcloud_lib.node import sweep
    problems = sweep.sweep([int(a) for a in running])
    for p in problems:
        print("oarcloud sweep on %s: %s" % (this_node(), p), file=sys.stderr)
    return 1 if problems else 0


def _facts():
    """What the server's `node list` shows of this node: its image cache."""
    from oarcloud_lib.node import imagecache
    entries = imagecache.entries()
    return json.dumps({"cache": {"entries": len(entries),
                                 "bytes": sum(e["bytes"] for e in entries)}})


def _power(verb):
    def run(domain):
        from oarcloud_lib.node import power
        return power.power(domain, verb)
    return run


def _save(name):
    def run(domain, *rest):
        from oarcloud_lib.node import power
        getattr(power, name)(domain, rest == ("flatten",))
        return 0
    return run


def _volume(verb):
    def run(domain, volume_id):
        from oarcloud_lib.node import volumes
        return getattr(volumes, verb)(domain, int(volume_id))
    return run


def _resize(domain, cores, memory):
    from oarcloud_lib.node import resize
    return json.dumps(resize.resize(domain, int(cores), int(memory)), sort_keys=True)


def _os_update():
    from oarcloud_lib.node import upkeep
    out = upkeep.update(sys.stdin.read(upkeep.MAX_SCRIPT + 1))
    print(upkeep.as_json(out))
    return 0 if out["exit"] == 0 else 1


def _health(*peers):
    from oarcloud_lib.node import upkeep
    out = upkeep.health(peers)
    print(upkeep.as_json(out))
    return 0 if out["ok"] else 1


def _drop_kept(domain):
    from oarcloud_lib.node import power
    power.drop_kept(domain)
    return 0


VERBS = {
    "prologue": Verb(_coordinator("prologue"), (JOB, None)),
    "epilogue": Verb(_coordinator("epilogue"), (JOB, None)),
    "create": Verb(_node_verb("create"), (JOB,), extra=DOMAIN_RE),
    "destroy": Verb(_node_verb("destroy"), (JOB,), extra=DOMAIN_RE),
    "destroy-all": Verb(_destroy_all),
    "net-sync": Verb(_net_sync),
    "probe": Verb(_probe, (INTERVAL,)),
    "facts": Verb(_facts),
    "sweep": Verb(_sweep, extra=JOB),
    "start": Verb(_power("start"), (DOMAIN_RE,)),
    "stop": Verb(_power("stop"), (DOMAIN_RE,)),
    "reboot": Verb(_power("reboot"), (DOMAIN_RE,)),
    "save": Verb(_save("save"), (DOMAIN_RE,), optional=("flatten",)),
    "export-kept": Verb(_save("export_kept"), (DOMAIN_RE,), optional=("flatten",)),
    "drop-kept": Verb(_drop_kept, (DOMAIN_RE,)),
    "volume-attach": Verb(_volume("attach"), (DOMAIN_RE, VOLUME)),
    "volume-detach": Verb(_volume("detach"), (DOMAIN_RE, VOLUME)),
    "resize": Verb(_resize, (DOMAIN_RE, CORES, BYTES)),
    "os-update": Verb(_os_update),
    "health": Verb(_health, extra=HOST_RE),
}


def parse(argv, verbs=VERBS):
    """(Verb, its arguments) for argv, or None when argv is not a call of a verb."""
    verb = verbs.get(argv[0]) if argv else None
    if verb is None:
        return None
    args, fixed = argv[1:], len(verb.args)
    if len(args) < fixed:
        return None
    if any(p is not None and not p.match(a) for p, a in zip(verb.args, args)):
        return None
    rest = args[fixed:]
    if verb.extra is not None:
        if not all(verb.extra.match(a) for a in rest):
            return None
    elif rest and (len(rest) > len(verb.optional) or
                   any(a != o for a, o in zip(rest, verb.optional))):
        return None
    return verb, args


def main(argv):
    commands.root_entry(paths.ROOT_PATH)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    call = parse(argv)
    if call is None:
        print(__doc__, file=sys.stderr)
        return 2
    verb, args = call
    try:
        out = verb.run(*args)
    except Exception as e:  # noqa: BLE001 -- ours, or a library's / the OS's in one line
        ours = e if isinstance(e, OarcloudError) else from_foreign(e)
        if ours is None:
            raise
        print("oarcloud %s on %s: error: %s" % (argv[0], this_node(), ours), file=sys.stderr)
        return 1
    if isinstance(out, str):
        print(out)
        return 0
    return out


if __name__ == "__main__":
    commands.exit_now(main(sys.argv[1:]))
