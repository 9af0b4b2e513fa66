"""One instance on this node, for its owner (reached only through the broker,
which checks who owns what): power (start, stop, reboot) and saves (its
changes as a tar stream, live or kept at its job's end).
"""
import logging
import shutil
import sys

from oarcloud_lib import config, paths
from oarcloud_lib.catalog import db, instances
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, OarcloudError, Refused
from oarcloud_lib.names import DOMAIN_PREFIX, DOMAIN_RE
from oarcloud_lib.node.driver import LxcDriver
from oarcloud_lib.node import access, disk as disks, imagecache, layer, limits, resize, rootfs
from oarcloud_lib.node import volumes
from oarcloud_lib.node.lifecycle import tune_nics, wait_for_sshd
from oarcloud_lib.tools.oarssh import this_node

LOG = logging.getLogger("oarcloud.nodeagent")


def _owner_of(domain):
    with db.connect() as conn:
        return instances.owner_of(conn, domain)


def _row_of(domain):
    with db.connect() as conn:
        return instances.of_domain(conn, domain)


def power(domain, verb, grace=10.0, driver=None, runner=LOCAL, pids_max=None):
    """start, stop (signal init, then force after grace seconds) or reboot an
    instance; returns its state.  pids_max: the site's instance_pids_max."""
    guest = access.guest(domain, driver)
    state = guest.state()
    if verb == "start":
        if state != "running":
            guest.start()
            # Its cores and memory as the catalog has them (a resize since
            # its domain was defined), on CPUs claimed again.
            row = _row_of(domain)
            resize.apply(guest, row["cores"], row["memory"],
                         set((driver or LxcDriver()).names(DOMAIN_PREFIX)))
            tune_nics(guest.init_pid(), guest.nic_count(), runner)
            limits.limit_pids(guest.init_pid(), pids_max or config.load().instance_pids_max)
            # Its volumes went with its last mount namespace.
            volumes.attach(domain, guest=guest)
            wait_for_sshd([guest])
    elif verb == "stop":
        if state == "running":
            guest.stop(grace)
            limits.release(domain)
            resize.forget(domain)
    elif verb == "reboot":
        power(domain, "stop", grace, driver, runner)
        power(domain, "start", driver=driver, runner=runner, pids_max=pids_max)
    LOG.info("%s: %s on %s, now %s", domain, verb, this_node(), guest.state())
    return guest.state()


def save(domain, flatten=False):
    """Write the running instance's changes (or its whole root, flattened) as a
    tar stream on stdout, with the instance frozen meanwhile."""
    guest = access.guest(domain)
    skip = layer.injected(_owner_of(domain))
    d = rootfs.instance_dir(domain)
    frozen = False
    if guest.state() == "running":
        # Never read a running instance's files unfrozen (it could swap them
        # under the reader), and never run anything of the instance's as root.
        try:
            guest.suspend()
        except OarcloudError as e:
            raise Conflict(what="instance %s" % domain,
                           detail="it could not be frozen for the save (%s): stop it, then "
                                  "save it" % e) from None
        frozen = True
    try:
        count = layer.export(d / ("root" if flatten else "upper"), sys.stdout.buffer, skip,
                             bases=(imagecache.UID_BASE, rootfs.base_of(d)))
    finally:
        if frozen:
            guest.resume()
    LOG.info("%s: %d entries saved from %s%s", domain, count, this_node(),
             " (flattened)" if flatten else "")


def export_kept(domain, flatten=False):
    """Write the changes kept at the job's end as a tar stream on stdout."""
    if not DOMAIN_RE.match(domain):
        raise Refused(detail="bad domain name %r" % domain[:40])
    kept = paths.KEPT / domain
    disks.ensure_kept(domain, kept)  # mounted again after the node restarted
    if not (kept / "upper").is_dir():
        raise Refused(detail="no changes kept for %s on %s" % (domain, this_node()))
    skip = layer.injected(_owner_of(domain))
    # The kept upper is in the tenant's range, the cache's layers in the cache's.
    bases = (imagecache.UID_BASE, rootfs.base_of(kept))
    if not flatten:
        return layer.export(kept / "upper", sys.stdout.buffer, skip, bases)
    cache = imagecache.cache_dir()
    lowers = [cache / sha / "rootfs" for sha in (kept / "layers").read_text().split()]
    with layer.merged(kept / "upper", lowers) as root:
        return layer.export(root, sys.stdout.buffer, skip, bases)


def drop_kept(domain):
    if not DOMAIN_RE.match(domain):
        raise Refused(detail="bad domain name %r" % domain[:40])
    disks.drop(domain, paths.KEPT / domain)
    shutil.rmtree(paths.KEPT / domain, ignore_errors=True)
