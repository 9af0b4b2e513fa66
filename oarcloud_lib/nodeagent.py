"""Node side of cloud jobs, run as root on nodes.

    python -m oarcloud_lib.nodeagent prologue JOB_ID NODEFILE   (first node: coordinator)
    python -m oarcloud_lib.nodeagent epilogue JOB_ID NODEFILE   (first node: coordinator)
    python -m oarcloud_lib.nodeagent create JOB_ID              (every node of the job)
    python -m oarcloud_lib.nodeagent destroy JOB_ID             (every node of the job)
    python -m oarcloud_lib.nodeagent destroy-all                (this node: every instance)
    python -m oarcloud_lib.nodeagent net-sync                   (this node: networks as the
                                                                 catalog says, oarcloud_lib.netnode)
    python -m oarcloud_lib.nodeagent probe INTERVAL             (this node: one JSON line of
                                  readings every INTERVAL s, oarcloud_lib.probes)
    python -m oarcloud_lib.nodeagent sweep [RUNNING_JOB...]     (this node: remove the
                                  instances of every other job, then check the node is sound)
    python -m oarcloud_lib.nodeagent start|stop|reboot DOMAIN
    python -m oarcloud_lib.nodeagent save DOMAIN [flatten]      (the instance's changes, frozen,
                                                                 as a tar stream on stdout)
    python -m oarcloud_lib.nodeagent export-kept|drop-kept DOMAIN [flatten]
                                  (changes kept at the job's end for --save-on-exit)

The coordinator plans and allocates the job's instances in the catalog, then
runs `create` on every node of the job in parallel (locally, or over OAR's own
ssh as oar + oardodo); if any node fails, it runs `destroy` everywhere and
records the reason.  `destroy` works from any partial state and is idempotent.
Only the job id (or a domain name, itself derived from a job id) comes from
the command line; everything else is read from OAR and the catalog and
validated again here.  The per-instance verbs are reached only through the
server's instance broker (oarcloud_lib.broker), which checks who owns what.
"""
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oarcloud_lib import (access, catalog, commands, config, idmap, imagecache, images, instances,
                          joblog, jobspec, layer, limits, netnode, networks, oarssh, ovs, paths,
                          rootfs, saves)
from oarcloud_lib.accounts import NAME_RE as USER_RE
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.driver import DomainSpec, LxcDriver
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
from oarcloud_lib.oar import job_facts
from oarcloud_lib.nodesetup import INTEGRATION_BRIDGE, ovs_datapath
from oarcloud_lib.oarssh import this_node

LOG = logging.getLogger("oarcloud.nodeagent")
NODE_TIMEOUT = 90
INSTANCE_MTU = 1450  # 1500 on the underlay, less VXLAN's 50 bytes
# Instances started (or removed) at once on one node: a start is mostly
# libvirt's and the kernel's CPU, so about one per core (bench/launch.py: 50
# instances on two 2-core nodes, hooks 4.2-4.3 s with 2 or 3 at once, 4.8 s
# with 4).
NODE_PARALLEL = min(8, (os.cpu_count() or 1) + 1)
# How long an instance's sshd (images that have one) gets to listen before the
# instance is called running anyway (its first start makes its host keys).
SSHD_WAIT = 30.0
JOB_OF_NAME = re.compile(r"^oc([0-9]{1,9})-")
NIC_SUFFIX = re.compile(r"n[0-9]$")  # the ports of an instance's NICs after the first


def load_job(job_id):
    """(owner, CloudSpec, resubmission of) of a cloud job, validated.  Raises Refused.

    The hook dispatcher passes what OAR's database says of the job in
    OARCLOUD_JOB (its environment is OAR's, not a user's); otherwise it is read."""
    job = None
    with contextlib.suppress(ValueError, TypeError):
        job = json.loads(os.environ.get("OARCLOUD_JOB") or "null")
    if not isinstance(job, dict) or os.environ.get("OARCLOUD_JOB_ID") != str(job_id):
        job = job_facts(job_id)
    owner = job.get("owner") or ""
    if not isinstance(owner, str) or not USER_RE.match(owner):
        raise Refused(detail="job %s has an unexpected owner %r" % (job_id, str(owner)[:40]))
    spec = jobspec.parse_types(job.get("types") or [])
    if spec is None:
        raise Refused(detail="job %s is not a cloud job" % job_id)
    return owner, spec, int(job.get("resubmit_job_id") or 0)


# -- one node ------------------------------------------------------------------

def create_local(job_id, conn, driver=None, runner=LOCAL):
    """Create this node's instances of the job (already allocated in the catalog)."""
    driver = driver or LxcDriver()
    conf = config.load()
    every = instances.for_job(conn, job_id)
    rows = [r for r in every if r["node"] == this_node()]
    nics = networks.nics_of(conn, [r["domain"] for r in rows])
    # Every instance of the job knows the others by name.
    hosts = "127.0.0.1 localhost\n" + "".join("%s %s\n" % (r["ip"], r["name"]) for r in every)
    owner = rows[0]["owner"] if rows else None
    account = conn.execute("SELECT ssh_pubkey, id_slot FROM accounts WHERE name = %s",
                           (owner,)).fetchone() if owner else None
    key = account[0] if account else None
    # The owner's instances run in the owner's own uid range on the node.
    uid_base = idmap.tenant_base(account[1]) if account else None

    def one(row):
        if row["state"] != "running":
            return _create_one(job_id, row, nics[row["domain"]], conn, driver, owner, key,
                               hosts, stacks[row["image"]], userns, conf.instance_pids_max,
                               runner)
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
    imagecache.evict(conf.node_cache_budget)


def image_stack(conn, image, owner):
    """(lower directories, their checksums) of an image the owner may use, top
    first, each in this node's cache (fetched, checked)."""
    chain = images.chain(conn, images.usable(conn, image, owner))  # rights, again on the node
    return ([imagecache.ensure(c["sha256"], c["name"]) for c in chain],
            [c["sha256"] for c in chain])


def _create_one(job_id, row, nics, conn, driver, owner, key, hosts, stack, userns, pids_max,
                runner):
    instances.set_state(conn, row["domain"], "creating")
    t_root = time.monotonic()
    uid_base = userns.base
    root = rootfs.prepare(row["domain"], *stack, uid_base=uid_base, runner=runner,
                          userns=userns)
    rootfs.write_file(root, "/etc/hostname", row["name"] + "\n")
    rootfs.write_file(root, "/etc/hosts", hosts)
    if key:
        rootfs.write_file(root, "/root/.ssh/authorized_keys", key + "\n", mode=0o600,
                          dir_mode=0o700)
    rootfs.add_account(root, owner, key)
    spec = DomainSpec(
        name=row["domain"], job_id=job_id, owner=owner, cores=row["cores"],
        memory=row["memory"], rootfs=str(root), uid_base=uid_base,
        uid_count=rootfs.UID_COUNT,
        nics=[{"bridge": INTEGRATION_BRIDGE, "mac": n["mac"], "port": n["port"], "ip": n["ip"],
               "prefix": n["prefix"], "gateway": n["gateway"], "mtu": INSTANCE_MTU}
              for n in nics])
    t_start = time.monotonic()
    guest = driver.define(spec)
    t_started = time.monotonic()
    if guest.state() != "running":
        raise OarcloudError("instance %s did not start (state %s)" % (row["name"], guest.state()))
    tune_nics(guest.init_pid(), len(spec.nics), runner)
    limits.limit_pids(guest.init_pid(), pids_max)
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
    """Inside the instance's network namespace (with the node's own tools): the
    MTU that fits VXLAN, and on a userspace datapath no TX checksum offload
    (OVS userspace does not complete checksums: TCP would silently fail)."""
    enter = ["nsenter", "-t", str(init_pid), "-n", "--"]
    for i in range(count):
        dev = "eth%d" % i
        runner.run(enter + ["ip", "link", "set", "dev", dev, "mtu", str(INSTANCE_MTU)])
        if ovs_datapath() == "netdev":
            runner.run(enter + ["ethtool", "-K", dev, "tx", "off"])


def destroy_local(job_id, conn=None, driver=None, runner=LOCAL):
    """Remove every trace of the job's instances on this node (all of oarcloud's
    instances when job_id is None); idempotent."""
    driver = driver or LxcDriver()
    prefix = "oc" if job_id is None else "oc%d-" % job_id
    # Without libvirt, remove the rest anyway (and say so at the end).
    try:
        domains = set(driver.names(prefix))
        libvirt_error = None
    except OarcloudError as e:
        domains, libvirt_error = set(), e
    domains |= {p.name for p in paths.INSTANCES.glob(prefix + "*")}
    ports = [p for p in ovs.ports(INTEGRATION_BRIDGE, runner) if p.startswith(prefix)]
    domains |= {NIC_SUFFIX.sub("", p) for p in ports}

    def one(domain):
        # The job is over: no grace, except for an instance whose changes are
        # to be saved (libvirt's SIGTERM first, then its kill).
        save = saves.pending(conn, domain) if conn is not None else None
        if libvirt_error is None:
            driver.remove(domain, at_once=save is None)
            limits.release(domain)
        for port in ports:
            if NIC_SUFFIX.sub("", port) == domain:
                ovs.delete_port(INTEGRATION_BRIDGE, port, runner)
        if save is not None and libvirt_error is None:
            keep_changes(conn, domain, save, runner)
        rootfs.remove(domain, runner=runner)
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


# -- one instance, for its owner (through the broker) -----------------------------

def power(domain, verb, grace=10.0):
    """start, stop (signal init, then force after grace seconds) or reboot an instance."""
    guest = access.guest(domain)
    state = guest.state()
    if verb == "start":
        if state != "running":
            guest.start()
            tune_nics(guest.init_pid(), guest.nic_count())
            limits.limit_pids(guest.init_pid(), config.load().instance_pids_max)
            wait_for_sshd([guest])
    elif verb == "stop":
        if state == "running":
            try:
                guest.shutdown()
            except OarcloudError:
                pass
            deadline = time.monotonic() + grace
            while guest.state() == "running" and time.monotonic() < deadline:
                time.sleep(0.2)
            guest.destroy()
            limits.release(domain)
    elif verb == "reboot":
        power(domain, "stop", grace)
        power(domain, "start")
    LOG.info("%s: %s on %s, now %s", domain, verb, this_node(), guest.state())
    return guest.state()


def _owner_of(domain):
    with catalog.connect() as conn:
        row = conn.execute("SELECT owner FROM instances WHERE domain = %s", (domain,)).fetchone()
    if row is None:
        raise Refused(detail="no instance %s in the catalog" % domain)
    return row[0]


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
    if not instances.DOMAIN_RE.match(domain):
        raise Refused(detail="bad domain name %r" % domain[:40])
    kept = paths.KEPT / domain
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
    if not instances.DOMAIN_RE.match(domain):
        raise Refused(detail="bad domain name %r" % domain[:40])
    shutil.rmtree(paths.KEPT / domain, ignore_errors=True)


# -- a node's health ---------------------------------------------------------------

def _job_of(name):
    """The job id in an oarcloud name (domain, port, instance directory), or None."""
    m = JOB_OF_NAME.match(name)
    return int(m.group(1)) if m else None


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
        if "oarcloud_lib.nodeagent" not in args:
            continue
        i = args.index("oarcloud_lib.nodeagent")
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

    def names():
        return driver.names("oc") + [p.name for p in paths.INSTANCES.glob("oc*")]
    try:
        found = names()
    except OarcloudError as e:
        return ["libvirt: %s" % e]
    found += [p for p in ovs.ports(INTEGRATION_BRIDGE, runner) if p.startswith("oc")]
    for job_id in sorted({_job_of(n) for n in found} - running - {None}):
        LOG.warning("sweep: removing leftovers of job %s on %s", job_id, this_node())
        stop_agents(job_id)
        destroy_local(job_id, driver=driver, runner=runner)
    if not running:
        destroy_local(None, driver=driver, runner=runner)  # stray tunnels too
    problems = []
    if runner.run(["ovs-vsctl", "--timeout=5", "br-exists", INTEGRATION_BRIDGE],
                  check=False).code != 0:
        problems.append("open vswitch: bridge %s missing" % INTEGRATION_BRIDGE)
    left = sorted(n for n in names() if _job_of(n) not in running)
    if left:
        problems.append("left after sweeping: %s" % ", ".join(left))
    return problems


# -- the coordinator (first node) ------------------------------------------------

def _on_node(node, verb, job_id):
    """Run `verb JOB_ID` on node: here in this process, elsewhere over OAR's ssh."""
    if node == this_node():
        return node_verb(verb, job_id, record=False)  # the coordinator records already
    return LOCAL.run(oarssh.agent_argv(node, verb, job_id), timeout=NODE_TIMEOUT)


def node_verb(verb, job_id, record=True):
    """create or destroy the job's instances on this node; a failed create is undone."""
    with catalog.connect() as conn, \
            (joblog.recording(conn, job_id) if record else contextlib.nullcontext()):
        if verb == "create":
            try:
                create_local(job_id, conn)
            except OarcloudError as e:
                LOG.error("job %s: creation failed on %s: %s", job_id, this_node(), e)
                destroy_local(job_id)
                raise
        else:
            destroy_local(job_id, conn)
            imagecache.evict(config.load().node_cache_budget)


def _fan_out(nodes, verb, job_id):
    """Run verb on every node in parallel; returns {node: error or None}."""
    return _parallel(nodes, lambda node: _on_node(node, verb, job_id))


def _parallel(nodes, work):
    def one(node):
        try:
            work(node)
            return None
        except OarcloudError as e:
            return str(e)
    with ThreadPoolExecutor(max_workers=min(32, len(nodes)) or 1) as pool:
        return dict(zip(nodes, pool.map(one, nodes)))


def sync_nodes(nodes):
    """Bring the networking of these nodes up to date with the catalog (`net-sync`
    on each, in parallel); returns {node: error} for the nodes that failed."""
    def one(node):
        if node == this_node():
            netnode.sync()
        else:
            LOCAL.run(oarssh.agent_argv(node, "net-sync"), timeout=NODE_TIMEOUT)
    errors = {n: e for n, e in _parallel(list(nodes), one).items() if e}
    for node, error in sorted(errors.items()):
        LOG.error("network sync on %s failed: %s", node, _one_line(error))
    return errors


def _one_line(text):
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    tail = [l for l in lines if "error" in l.lower()] or lines
    return (tail[-1] if tail else "unknown error")[:300]


def _refuse(job_id):
    """End a job whose request was refused (the user's input, not a fault of the
    node) without failing the prologue: OAR would mark all its nodes Suspected.
    The job is deleted as OAR's own user (who may delete any job) and the
    prologue succeeds; OAR then kills it before its command starts."""
    res = LOCAL.run(["runuser", "-u", "oar", "--", "oardel", str(job_id)], check=False,
                    timeout=60)
    if res.code != 0:
        LOG.error("job %s: oardel failed (%s): failing the prologue instead", job_id,
                  _one_line(res.err or res.out))
        return 1
    return 0


def prologue(job_id, nodefile):
    """Allocate the job's instances and create them on all its nodes; 0 on success."""
    conf = config.load()
    node_cores = instances.nodes_from_nodefile(Path(nodefile).read_text())
    with catalog.connect(conf) as conn, joblog.recording(conn, job_id):
        try:
            owner, spec, original = load_job(job_id)
            if original:
                # The healer deletes it: failing here would make OAR resubmit it again.
                LOG.warning("job %s is OAR's automatic resubmission of failed job %s:"
                            " oarcloud creates nothing for it", job_id, original)
                return 0
            images.usable(conn, spec.image or conf.default_image, owner)
            nets = instances.resolve_networks(conn, owner, spec.networks,
                                              conf.default_network_cidr,
                                              networks.reserved_ranges(conf))
            planned = instances.plan(job_id, owner, spec, node_cores, conf.default_image,
                                     conf.memory_per_core)
            wanted = saves.names_on_exit(spec, len(planned))
            for name in wanted:
                images.check_new_name(conn, name)
            rows = instances.allocate(conn, planned, nets, spec.ip)
            saves.request_on_exit(conn, rows, wanted)
        except OarcloudError as e:
            LOG.error("job %s refused: %s", job_id, e)
            print("oarcloud: %s" % e, file=sys.stderr)
            if isinstance(e, (Refused, NotFound, Conflict)):
                return _refuse(job_id)
            return 1
        nodes = sorted({r["node"] for r in rows})
        LOG.info("job %s: creating %d instance(s) on %s", job_id, len(rows), ", ".join(nodes))
        started = time.monotonic()
        # Meanwhile the other nodes of these networks learn the new addresses
        # (from the catalog: they need not wait for the ports).
        others = sorted(set(networks.hosting_nodes(conn, [n["id"] for n in nets])) - set(nodes))
        with ThreadPoolExecutor(max_workers=1) as pool:
            peers = pool.submit(sync_nodes, others)
            errors = {n: e for n, e in _fan_out(nodes, "create", job_id).items() if e}
            peers.result()
        if errors:
            reason = "; ".join("%s: %s" % (n, _one_line(e)) for n, e in sorted(errors.items()))
            LOG.error("job %s: creation failed, undoing on all nodes: %s", job_id, reason)
            saves.fail_job(conn, job_id, "the instances were not created: " + reason)
            _fan_out(sorted(node_cores), "destroy", job_id)
            released = instances.mark_job(conn, job_id, "failed", reason)
            sync_nodes(networks.hosting_nodes(conn, released))
            print("oarcloud: %s" % reason, file=sys.stderr)
            return 1
        LOG.info("job %s: %d instance(s) on %d node(s) in %.2fs", job_id, len(rows), len(nodes),
                 time.monotonic() - started)
    return 0


def epilogue(job_id, nodefile):
    """Tear the job's instances down on all its nodes; 0 when every node is clean."""
    conf = config.load()
    nodes = set(instances.nodes_from_nodefile(Path(nodefile).read_text()))
    with catalog.connect(conf) as conn, joblog.recording(conn, job_id):
        nodes |= {r["node"] for r in instances.for_job(conn, job_id)}
        errors = {n: e for n, e in _fan_out(sorted(nodes), "destroy", job_id).items() if e}
        released = instances.mark_job(conn, job_id, "deleted")
        sync_nodes(networks.hosting_nodes(conn, released))
        if errors:
            LOG.error("job %s: teardown failed on %s", job_id, errors)
            return 1
        LOG.info("job %s: torn down on %s", job_id, ", ".join(sorted(nodes)))
    return 0


NODE_VERBS = ("start", "stop", "reboot", "save", "export-kept", "drop-kept")


def main(argv):
    commands.root_entry(paths.ROOT_PATH)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    verb = argv[0] if argv else ""
    try:
        if verb == "destroy-all" and len(argv) == 1:
            destroy_local(None)
            return 0
        if verb == "probe" and len(argv) == 2 and argv[1].isdigit() and int(argv[1]) > 0:
            from oarcloud_lib import probes
            return probes.run(int(argv[1]), config.load().server_address)
        if verb == "net-sync" and len(argv) == 1:
            print(netnode.sync())
            return 0
        if verb == "sweep" and all(a.isdigit() for a in argv[1:]):
            problems = sweep([int(a) for a in argv[1:]])
            for p in problems:
                print("oarcloud sweep on %s: %s" % (this_node(), p), file=sys.stderr)
            return 1 if problems else 0
        if verb in NODE_VERBS and len(argv) >= 2:
            domain, rest = argv[1], argv[2:]
            if verb in ("save", "export-kept"):
                (save if verb == "save" else export_kept)(domain, rest[:1] == ["flatten"])
                return 0
            if verb == "drop-kept":
                drop_kept(domain)
                return 0
            print(power(domain, verb))
            return 0
        if verb not in ("prologue", "epilogue", "create", "destroy") or len(argv) < 2 \
                or not argv[1].isdigit():
            print(__doc__, file=sys.stderr)
            return 2
        job_id = int(argv[1])
        if verb in ("prologue", "epilogue"):
            if len(argv) < 3:
                return 2
            return (prologue if verb == "prologue" else epilogue)(job_id, argv[2])
        node_verb(verb, job_id)
        return 0
    except OarcloudError as e:
        print("oarcloud %s on %s: error: %s" % (verb, this_node(), e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    commands.exit_now(main(sys.argv[1:]))
