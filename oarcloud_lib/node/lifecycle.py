"""A job's instances on this node: create them, remove every trace of them.

Runs as root on each node of a cloud job (the node agent's `create` and
`destroy` verbs, reached from the coordinator).  What to create is read from
the catalog (allocated by the coordinator); the domains are made through a
Driver (oarcloud_lib.node.driver), the roots by rootfs, the ports and flows by
netnode.  destroy_local works from any partial state and is idempotent: a
domain, a port or a directory alone is found and removed.
"""
import contextlib
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from oarcloud_lib import config, names, paths
from oarcloud_lib.names import INTEGRATION_BRIDGE
from oarcloud_lib.catalog import accounts, db, images, instances, joblog, networks
from oarcloud_lib.catalog import launchfiles
from oarcloud_lib.catalog import userdata as user_data
from oarcloud_lib.catalog import volumes as volume_rows
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.node import disk as disks, idmap, imagecache, limits, netnode, rootfs, userdata
from oarcloud_lib.node import consoles, resize, volumes
from oarcloud_lib.node.driver import DomainSpec, LxcDriver
from oarcloud_lib.server import saves
from oarcloud_lib.tools import netdev, ovs
from oarcloud_lib.tools.oarssh import this_node

LOG = logging.getLogger("oarcloud.nodeagent")
INSTANCE_MTU = netnode.MTU  # 1500 on the underlay, less VXLAN's 50 bytes
# Instances started (or removed) at once on one node: a start is mostly
# libvirt's and the kernel's CPU, so about one per core (bench/launch.py: 50
# instances on two 2-core nodes, hooks 4.2-4.3 s with 2 or 3 at once, 4.8 s
# with 4).
NODE_PARALLEL = min(8, (os.cpu_count() or 1) + 1)
# How long an instance's sshd (images that have one) gets to listen before the
# instance is called running anyway (its first start makes its host keys).
SSHD_WAIT = 30.0


def create_local(job_id, conn, driver=None, runner=LOCAL, only=None):
    """Create this node's instances of the job (already allocated in the
    catalog; only: those domains, launched in an allocation's job)."""
    driver = driver or LxcDriver()
    conf = config.load()
    every = [r for r in instances.for_job(conn, job_id) if r["state"] not in ("deleted", "failed")]
    rows = [r for r in every if r["node"] == this_node() and (only is None or r["domain"] in only)]
    nics = networks.nics_of(conn, [r["domain"] for r in rows])
    # Every instance of the job knows the others by name.
    hosts = "127.0.0.1 localhost\n" + "".join("%s %s\n" % (r["ip"], r["name"]) for r in every)
    owner = rows[0]["owner"] if rows else None
    account = conn.execute("SELECT ssh_pubkey, id_slot FROM accounts WHERE name = %s",
                           (owner,)).fetchone() if owner else None
    key = accounts.authorized_keys(conn, owner) if account else None
    # The owner's instances run in the owner's own uid range on the node.
    uid_base = idmap.tenant_base(account[1]) if account else None

    # The domains here already: their CPU claims stand (node.resize).
    defined = set(driver.names(names.DOMAIN_PREFIX))
    views = resize.views(paths.LXCFS)

    def one(row):
        if row["state"] in ("allocated", "creating"):
            cpus = resize.claim(row["domain"], row["cores"], defined)
            return create_one(job_id, dict(row, cpus=cpus, views=views), nics[row["domain"]],
                              conn, driver, owner, key, hosts, stacks[row["image"]], userns,
                              conf, runner)
    # One user namespace carries the owner's uid mapping for all their instances here.
    with imagecache.using(), (idmap.Userns(uid_base) if rows else contextlib.nullcontext()) \
            as userns:
        stacks = {image: image_stack(conn, image, owner)
                  for image in sorted({r["image"] for r in rows})}
        # A few at a time: a domain start waits on libvirt and the kernel, not
        # on us; meanwhile the gateways of their networks are made.
        with ThreadPoolExecutor(max_workers=NODE_PARALLEL + 1) as pool:
            gateways = pool.submit(netnode.prepare, conn, runner)
            started = [s for s in pool.map(one, rows) if s]
            gateways.result()
    # Their ports are on br-int: now the flows and tunnels that serve them.
    netnode.sync(conn, runner)
    # Running means reachable: on its networks, and by `oarcloud ssh` (sshd up).
    wait_for_sshd([guest for _, guest, _ in started])
    for row, guest, timings in started:
        instances.set_state(conn, row["domain"], "running")
        LOG.info("job %s: %s (%s) running on %s (%s)", job_id, row["name"], row["domain"],
                 this_node(), timings)
        if row.get("user_data") and not row.get("user_data_state"):
            userdata.start(row["domain"])
    imagecache.evict(conf.node_cache_budget)


def image_stack(conn, image, owner):
    """(lower directories, their checksums) of an image the owner may use, top
    first, each in this node's cache (fetched, checked)."""
    chain = images.chain(conn, images.usable(conn, image, owner))  # rights, again on the node
    return ([imagecache.ensure(c["sha256"], c["name"]) for c in chain],
            [c["sha256"] for c in chain])


def create_one(job_id, row, nics, conn, driver, owner, key, hosts, stack, userns, conf,
               runner):
    instances.set_state(conn, row["domain"], "creating")
    t_root = time.monotonic()
    uid_base = userns.base
    root = rootfs.prepare(row["domain"], *stack, uid_base=uid_base, runner=runner,
                          userns=userns, disk=(row["disk"], conf.disk_allocation)
                          if row.get("disk") else None)
    # Its disk's (loop) device, or the node's disk for an instance without one.
    io_device = limits.io_device(root.parent)
    if io_device is None:
        LOG.warning("%s is on no block device of its own: it gets no I/O limit", root.parent)
    rootfs.write_file(root, "/etc/hostname", row["name"] + "\n")
    rootfs.write_file(root, "/etc/hosts", hosts)
    if key:
        rootfs.write_file(root, "/root/.ssh/authorized_keys", key + "\n", mode=0o600,
                          dir_mode=0o700)
    rootfs.add_account(root, owner, key)
    if row.get("files"):
        # The launch's files, before the start; the owner's, checked again.
        for path, mode, data in launchfiles.get(conn, owner, row["files"]):
            rootfs.write_file(root, path, data, mode=mode)
    if row.get("user_data") and not row.get("user_data_state"):
        # Run once the instance runs (userdata.start); the owner's, checked again.
        rootfs.write_file(root, userdata.SCRIPT, user_data.get(conn, owner, row["user_data"])
                          ["script"], mode=0o700, dir_mode=0o755)
    spec = DomainSpec(
        name=row["domain"], job_id=job_id, owner=owner, cores=row["cores"],
        memory=row["memory"], rootfs=str(root), uid_base=uid_base,
        uid_count=rootfs.UID_COUNT, io=limits.io_tune(io_device, row["cores"], conf),
        cpuset=resize.format_cpus(row["cpus"]) if row.get("cpus") else None,
        views=row.get("views", ()),
        nics=[{"bridge": INTEGRATION_BRIDGE, "mac": n["mac"], "port": n["port"], "ip": n["ip"],
               "prefix": n["prefix"], "gateway": n["gateway"], "mtu": INSTANCE_MTU}
              for n in nics])
    t_start = time.monotonic()
    guest = driver.define(spec)
    t_started = time.monotonic()
    if guest.state() != "running":
        raise OarcloudError("instance %s did not start (state %s)" % (row["name"], guest.state()))
    tune_nics(guest.init_pid(), len(spec.nics), runner)
    limits.limit_pids(guest.init_pid(), conf.instance_pids_max)
    volumes.attach_all(conn, row["domain"], guest.init_pid())
    return row, guest, "root %.3fs, domain start %.3fs, nics %.3fs" % (
        t_start - t_root, t_started - t_start, time.monotonic() - t_started)


def wait_for_sshd(guests, timeout=SSHD_WAIT):
    """Wait until the sshd of each instance whose image has one listens on
    port 22.  One whose sshd does not come up in time is logged, not failed:
    its owner can still exec into it."""
    def has_sshd(guest):
        try:
            return guest.has_file("/usr/sbin/sshd")
        except OarcloudError:  # init gone: nothing to wait for
            return False

    def done(guest):
        try:
            return guest.listens(22)
        except OarcloudError:  # init gone meanwhile: stop waiting
            return True
    waiting = [g for g in guests if has_sshd(g)]
    count, start = len(waiting), time.monotonic()
    while waiting and time.monotonic() < start + timeout:
        waiting = [g for g in waiting if not done(g)]
        if waiting:
            time.sleep(0.05)
    for guest in waiting:
        LOG.warning("%s: its sshd does not listen on port 22 after %g s", guest.name, timeout)
    if count > len(waiting):
        LOG.info("sshd listening in %d instance(s) after %.2fs", count - len(waiting),
                 time.monotonic() - start)


def tune_nics(init_pid, count, runner=LOCAL):
    """Inside the instance's network namespace: the MTU that fits VXLAN, and on a
    userspace datapath no TX checksum offload (TCP would silently fail)."""
    for i in range(count):
        dev = "eth%d" % i
        netdev.set_mtu(dev, INSTANCE_MTU, runner, netns_pid=init_pid)
        if ovs.datapath() == "netdev":
            netdev.tx_offload_off(dev, runner, netns_pid=init_pid, check=True)


def destroy_local(job_id, conn=None, driver=None, runner=LOCAL, only=None):
    """Remove every trace of the job's instances on this node (all of oarcloud's
    instances when job_id is None; only: those domains); idempotent."""
    driver = driver or LxcDriver()
    prefix = names.job_prefix(job_id)
    # Without libvirt, remove the rest anyway (and say so at the end).
    try:
        domains = set(driver.names(prefix))
        libvirt_error = None
    except OarcloudError as e:
        domains, libvirt_error = set(), e
    domains |= {p.name for p in paths.INSTANCES.glob(prefix + "*")}
    domains |= {d for d in disks.domains() if d.startswith(prefix)}
    domains |= set(consoles.logged(job_id))
    ports = [p for p in ovs.ports(INTEGRATION_BRIDGE, runner) if p.startswith(prefix)]
    domains |= {names.domain_of_port(p) for p in ports}
    if only is not None:
        domains &= set(only)

    def one(domain):
        # The job is over: no grace, except for an instance whose changes are
        # to be saved (libvirt's SIGTERM first, then its kill).
        save = saves.pending(conn, domain) if conn is not None else None
        if libvirt_error is None:
            driver.remove(domain, at_once=save is None)
            limits.release(domain)
            resize.forget(domain)
            if conn is not None:  # its volumes went with its mount namespace
                volume_rows.release_domains(conn, [domain])
        for port in ports:
            if names.domain_of_port(port) == domain:
                ovs.delete_port(INTEGRATION_BRIDGE, port, runner)
        if save is not None and libvirt_error is None:
            keep_changes(conn, domain, save, runner)
        rootfs.remove(domain, runner=runner)
        consoles.forget(domain)
        LOG.info("job %s: %s removed from %s", job_id, domain, this_node())
    with ThreadPoolExecutor(max_workers=NODE_PARALLEL) as pool:
        list(pool.map(one, sorted(domains)))
    # Flows, tunnels and gateways of the networks no longer served here go too.
    if not netnode.sync_quietly(conn, runner) and not any(
            p.startswith("oc") for p in ovs.ports(INTEGRATION_BRIDGE, runner)):
        netnode.clear(runner)  # catalog unreachable, nothing left to serve: all of it
    if libvirt_error is not None:
        raise libvirt_error
    return sorted(domains)


def keep_changes(conn, domain, save, runner=LOCAL):
    """Keep the changes of an instance its owner asked to save when its job ends
    (save: its pending row): the overlay's upper directory, for the server's
    saver; True if kept."""
    d = rootfs.instance_dir(domain)
    if not (d / "upper").is_dir():
        saves.set_state(conn, save["id"], "failed", "the instance's root was not found on %s"
                        % this_node())
        return False
    rootfs.unmount(domain, runner=runner)
    paths.ensure_dir(paths.KEPT, 0o700, 0, 0)
    kept = paths.KEPT / domain
    if disks.mounted(d):
        # The whole disk is kept, moved and not copied: kept/<domain> is its root.
        disks.keep(domain, d, kept, runner=runner)
    else:
        if kept.exists():
            shutil.rmtree(kept)
        kept.mkdir(mode=0o700)
        uid_base = rootfs.base_of(d)
        os.chown(kept, uid_base, uid_base)
        os.rename(d / "upper", kept / "upper")
        os.rename(d / "layers", kept / "layers")
    saves.set_state(conn, save["id"], "kept", node=this_node())
    LOG.info("%s: changes kept on %s for the save to image %s", domain, this_node(),
             save["image"])
    return True


def run_verb(verb, job_id, record=True, only=None):
    """create or destroy the job's instances on this node (only: those
    domains); a failed create is undone.  record: keep what happens in the
    job's events (the coordinator records already when it runs a verb on its
    own node)."""
    with db.connect() as conn, \
            (joblog.recording(conn, job_id) if record else contextlib.nullcontext()):
        if verb == "create":
            try:
                create_local(job_id, conn, only=only)
            except OarcloudError as e:
                LOG.error("job %s: creation failed on %s: %s", job_id, this_node(), e)
                destroy_local(job_id, only=only)
                raise
        else:
            destroy_local(job_id, conn, only=only)
            imagecache.evict(config.load().node_cache_budget)
