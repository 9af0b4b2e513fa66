"""A node's health: remove what belongs to no running job, then check the node
can serve (the healer's `sweep`, oarcloud_lib.server.healing)."""
import logging
import os
import signal
from pathlib import Path

from oarcloud_lib import names, paths
from oarcloud_lib.names import INTEGRATION_BRIDGE
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.node import consoles, disk as disks
from oarcloud_lib.node.driver import LxcDriver
from oarcloud_lib.node.lifecycle import destroy_local
from oarcloud_lib.tools import ovs
from oarcloud_lib.tools.oarssh import AGENT_MODULE, this_node

LOG = logging.getLogger("oarcloud.nodeagent")


def stop_agents(job_id):
    """Kill this node's agents still working on job_id (a prologue OAR killed leaves
    the `create` it ran on other nodes running).  Only our own agents, in this
    node's network."""
    me = os.readlink("/proc/self/ns/net")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path("/proc/%s/cmdline" % pid).read_bytes().decode(errors="replace").split("\0")
            if os.readlink("/proc/%s/ns/net" % pid) != me or int(pid) == os.getpid():
                continue
        except OSError:
            continue
        if AGENT_MODULE not in args:
            continue
        i = args.index(AGENT_MODULE)
        if args[i + 1:i + 3] in (["prologue", str(job_id)], ["create", str(job_id)]):
            LOG.warning("sweep: stopping agent %s (%s job %s)", pid, args[i + 1], job_id)
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def sweep(running_jobs, driver=None, runner=LOCAL):
    """Remove every instance whose job is not in running_jobs, then check that the
    node can serve: libvirt answers, br-int exists, nothing of another job is
    left.  Returns the problems found (empty: the node is sound)."""
    driver = driver or LxcDriver()
    running = set(running_jobs)

    def present():
        return driver.names("oc") + [p.name for p in paths.INSTANCES.glob("oc*")] \
            + disks.domains() + consoles.logged()
    try:
        found = present()
    except OarcloudError as e:
        return ["libvirt: %s" % e]
    found += [p for p in ovs.ports(INTEGRATION_BRIDGE, runner) if p.startswith("oc")]
    for job_id in sorted({names.job_of(n) for n in found} - running - {None}):
        LOG.warning("sweep: removing leftovers of job %s on %s", job_id, this_node())
        stop_agents(job_id)
        destroy_local(job_id, driver=driver, runner=runner)
    if not running:
        destroy_local(None, driver=driver, runner=runner)  # stray tunnels too
    problems = []
    try:   # a keeper that died: later instances' consoles logged again
        from oarcloud_lib.node import nodesetup
        nodesetup.ensure_consoles(runner)
    except OarcloudError as e:
        problems.append("console keeper: %s" % e)
    if not ovs.bridge_exists(INTEGRATION_BRIDGE, runner):
        problems.append("open vswitch: bridge %s missing" % INTEGRATION_BRIDGE)
    left = sorted(n for n in present() if names.job_of(n) not in running)
    if left:
        problems.append("left after sweeping: %s" % ", ".join(left))
    return problems
