"""Running node agent verbs on many nodes at once, from the server or a job's
first node: locally on this node, elsewhere as root over OAR's ssh."""
import logging
from concurrent.futures import ThreadPoolExecutor

from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.tools import oarssh
from oarcloud_lib.tools.oarssh import this_node

LOG = logging.getLogger("oarcloud.fanout")
NODE_TIMEOUT = 90


def parallel(nodes, work):
    """work(node) on every node at once; returns {node: error text or None}."""
    def one(node):
        try:
            work(node)
            return None
        except OarcloudError as e:
            return str(e)
    with ThreadPoolExecutor(max_workers=min(32, len(nodes)) or 1) as pool:
        return dict(zip(nodes, pool.map(one, nodes)))


def on_node(node, verb, *args, here=None):
    """Run the node agent's `verb args...` on node; here(verb, *args) when the
    node is this one (in this process), if given."""
    if node == this_node() and here is not None:
        return here(verb, *args)
    return LOCAL.run(oarssh.agent_argv(node, verb, *args), timeout=NODE_TIMEOUT)


def sync_nodes(nodes):
    """Bring the networking of these nodes up to date with the catalog (`net-sync`
    on each, in parallel); returns {node: error} for the nodes that failed."""
    def here(verb):
        from oarcloud_lib.node import netnode
        netnode.sync()
    errors = {n: e for n, e in parallel(list(nodes),
                                        lambda n: on_node(n, "net-sync", here=here)).items()
              if e}
    for node, error in sorted(errors.items()):
        LOG.error("network sync on %s failed: %s", node, one_line(error))
    return errors


def one_line(text):
    """The line of an error's text (a remote agent's stderr) that says most."""
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    tail = [l for l in lines if "error" in l.lower()] or lines
    return (tail[-1] if tail else "unknown error")[:300]
