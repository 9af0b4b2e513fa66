"""Node side of cloud jobs, run as root on nodes.

    python -m oarcloud_lib.nodeagent prologue JOB_ID NODEFILE   (first node: coordinator)
    python -m oarcloud_lib.nodeagent epilogue JOB_ID NODEFILE   (first node: coordinator)
    python -m oarcloud_lib.nodeagent create JOB_ID              (every node of the job)
    python -m oarcloud_lib.nodeagent destroy JOB_ID             (every node of the job)
    python -m oarcloud_lib.nodeagent destroy-all                (this node: every instance)

The coordinator plans and allocates the job's instances in the catalog, then
runs `create` on every node of the job in parallel (locally, or over OAR's own
ssh as oar + oardodo); if any node fails, it runs `destroy` everywhere and
records the reason.  `destroy` works from any partial state and is idempotent.
Only the job id comes from the command line; everything else is read from
OAR and the catalog and validated again here.
"""
import logging
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oarcloud_lib import catalog, config, instances, jobspec, ovs, paths, rootfs
from oarcloud_lib.accounts import NAME_RE as USER_RE
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.driver import DomainSpec, LxcDriver
from oarcloud_lib.errors import OarcloudError, Refused
from oarcloud_lib.oar import job_info
from oarcloud_lib.nodesetup import INTEGRATION_BRIDGE, ovs_datapath

LOG = logging.getLogger("oarcloud.nodeagent")
OARDODO = "/usr/lib/oar/oardodo/oardodo"
OAR_SSH = ["ssh", "-F", "/var/lib/oar/.ssh/config", "-i", "/var/lib/oar/.ssh/id_rsa",
           "-p", "6667", "-l", "oar", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
NODE_TIMEOUT = 90
# VXLAN key of the flat instance network (per-network keys come with private networks).
TUNNEL_KEY = 1
INSTANCE_MTU = 1450  # 1500 on the underlay, less VXLAN's 50 bytes


def load_job(job_id, runner=LOCAL):
    """(owner, CloudSpec) of a cloud job, both validated.  Raises Refused."""
    job = job_info(runner.out(["oarstat", "-fj", str(job_id), "-J"], timeout=30), job_id)
    owner = job.get("owner") or job.get("job_user") or ""
    if not USER_RE.match(owner):
        raise Refused(detail="job %s has an unexpected owner %r" % (job_id, owner[:40]))
    spec = jobspec.parse_types(job.get("types") or [])
    if spec is None:
        raise Refused(detail="job %s is not a cloud job" % job_id)
    return owner, spec


def this_node():
    return socket.gethostname()


# -- one node ------------------------------------------------------------------

def create_local(job_id, conn, driver=None, runner=LOCAL):
    """Create this node's instances of the job (already allocated in the catalog)."""
    driver = driver or LxcDriver()
    peers = sorted({r["node"] for r in instances.for_job(conn, job_id)} - {this_node()})
    for peer in peers:
        ip = socket.gethostbyname(peer)
        ovs.ensure_tunnel(INTEGRATION_BRIDGE, ovs.tunnel_port_name(ip), ip, TUNNEL_KEY, runner)
    rows = instances.for_job(conn, job_id, node=this_node())
    owner = rows[0]["owner"] if rows else None
    key = conn.execute("SELECT ssh_pubkey FROM accounts WHERE name = %s", (owner,)).fetchone() \
        if owner else None
    for row in rows:
        if row["state"] == "running":
            continue
        instances.set_state(conn, row["domain"], "creating")
        image = instances.visible_image(conn, row["image"], owner)
        lower = rootfs.cached(image["sha256"], runner=runner)
        root = rootfs.prepare(row["domain"], lower, runner=runner)
        rootfs.write_file(root, "/etc/hostname", row["name"] + "\n")
        rootfs.write_file(root, "/etc/hosts", "127.0.0.1 localhost\n%s %s\n" % (row["ip"], row["name"]))
        if key:
            rootfs.write_file(root, "/root/.ssh/authorized_keys", key[0] + "\n", mode=0o600)
        spec = DomainSpec(
            name=row["domain"], job_id=job_id, owner=owner, cores=row["cores"],
            memory=row["memory"], rootfs=str(root), uid_base=rootfs.UID_BASE,
            uid_count=rootfs.UID_COUNT,
            nics=[{"bridge": INTEGRATION_BRIDGE, "mac": row["mac"], "port": row["domain"],
                   "ip": row["ip"], "prefix": instances.NETWORK.prefixlen, "gateway": None,
                   "mtu": INSTANCE_MTU}])
        guest = driver.define(spec)
        if guest.state() != "running":
            raise OarcloudError("instance %s did not start (state %s)" % (row["name"], guest.state()))
        tune_nics(guest.init_pid(), len(spec.nics), runner)
        instances.set_state(conn, row["domain"], "running")
        LOG.info("job %s: %s (%s) running on %s", job_id, row["name"], row["domain"], this_node())


def tune_nics(init_pid, count, runner=LOCAL):
    """Inside the instance's network namespace (with the node's own tools): the
    MTU that fits VXLAN, and on a userspace datapath no TX checksum offload
    (OVS userspace does not complete checksums: TCP would silently fail)."""
    enter = ["nsenter", "-t", str(init_pid), "-n", "--"]
    for i in range(count):
        dev = "eth%d" % i
        runner.run(enter + ["ip", "link", "set", "dev", dev, "mtu", str(INSTANCE_MTU)])
        if ovs_datapath() == "netdev":
            runner.run(enter + ["ethtool", "-K", dev, "tx", "off"], check=False)


def destroy_local(job_id, conn=None, driver=None, runner=LOCAL):
    """Remove every trace of the job's instances on this node (all of oarcloud's
    instances when job_id is None); idempotent."""
    driver = driver or LxcDriver()
    prefix = "oc" if job_id is None else "oc%d-" % job_id
    domains = set(driver.names(prefix))
    domains |= {p.name for p in paths.INSTANCES.glob(prefix + "*")}
    domains |= {p for p in ovs.ports(INTEGRATION_BRIDGE, runner) if p.startswith(prefix)}
    for domain in sorted(domains):
        driver.remove(domain)
        ovs.delete_port(INTEGRATION_BRIDGE, domain, runner)
        rootfs.remove(domain, runner=runner)
        LOG.info("job %s: %s removed from %s", job_id, domain, this_node())
    # Tunnels serve the node's instances: with none left, none are needed.
    left = ovs.ports(INTEGRATION_BRIDGE, runner)
    if not any(p.startswith("oc") for p in left):
        for port in left:
            if port.startswith("vx-"):
                ovs.delete_port(INTEGRATION_BRIDGE, port, runner)
    return sorted(domains)


# -- the coordinator (first node) ------------------------------------------------

def _on_node(node, verb, job_id):
    """Run `verb JOB_ID` on node: here directly, elsewhere over OAR's ssh."""
    argv = [sys.executable, "-m", "oarcloud_lib.nodeagent", verb, str(job_id)]
    if node == this_node():
        return LOCAL.run(argv, timeout=NODE_TIMEOUT)
    return LOCAL.run(OAR_SSH + [node, OARDODO] + argv, timeout=NODE_TIMEOUT)


def _fan_out(nodes, verb, job_id):
    """Run verb on every node in parallel; returns {node: error or None}."""
    def one(node):
        try:
            _on_node(node, verb, job_id)
            return None
        except OarcloudError as e:
            return str(e)
    with ThreadPoolExecutor(max_workers=min(32, len(nodes)) or 1) as pool:
        return dict(zip(nodes, pool.map(one, nodes)))


def _one_line(text):
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    tail = [l for l in lines if "error" in l.lower()] or lines
    return (tail[-1] if tail else "unknown error")[:300]


def prologue(job_id, nodefile):
    """Allocate the job's instances and create them on all its nodes; 0 on success."""
    conf = config.load()
    node_cores = instances.nodes_from_nodefile(Path(nodefile).read_text())
    with catalog.connect(conf) as conn:
        try:
            owner, spec = load_job(job_id)
            instances.visible_image(conn, spec.image or conf.default_image, owner)
            rows = instances.allocate(conn, instances.plan(job_id, owner, spec, node_cores,
                                                           conf.default_image))
        except OarcloudError as e:
            LOG.error("job %s refused: %s", job_id, e)
            print("oarcloud: %s" % e, file=sys.stderr)
            return 1
        nodes = sorted({r["node"] for r in rows})
        started = time.monotonic()
        errors = {n: e for n, e in _fan_out(nodes, "create", job_id).items() if e}
        if errors:
            reason = "; ".join("%s: %s" % (n, _one_line(e)) for n, e in sorted(errors.items()))
            LOG.error("job %s: creation failed, undoing on all nodes: %s", job_id, reason)
            _fan_out(sorted(node_cores), "destroy", job_id)
            instances.mark_job(conn, job_id, "failed", reason)
            print("oarcloud: %s" % reason, file=sys.stderr)
            return 1
        LOG.info("job %s: %d instance(s) on %d node(s) in %.2fs", job_id, len(rows), len(nodes),
                 time.monotonic() - started)
    return 0


def epilogue(job_id, nodefile):
    """Tear the job's instances down on all its nodes; 0 when every node is clean."""
    conf = config.load()
    nodes = set(instances.nodes_from_nodefile(Path(nodefile).read_text()))
    with catalog.connect(conf) as conn:
        nodes |= {r["node"] for r in instances.for_job(conn, job_id)}
        errors = {n: e for n, e in _fan_out(sorted(nodes), "destroy", job_id).items() if e}
        instances.mark_job(conn, job_id, "deleted")
    if errors:
        LOG.error("job %s: teardown failed on %s", job_id, errors)
        return 1
    return 0


def main(argv):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if argv == ["destroy-all"]:
        try:
            destroy_local(None)
            return 0
        except OarcloudError as e:
            print("oarcloud destroy-all on %s: error: %s" % (this_node(), e), file=sys.stderr)
            return 1
    if len(argv) < 2 or argv[0] not in ("prologue", "epilogue", "create", "destroy") \
            or not argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    verb, job_id = argv[0], int(argv[1])
    try:
        if verb in ("prologue", "epilogue"):
            if len(argv) < 3:
                return 2
            return (prologue if verb == "prologue" else epilogue)(job_id, argv[2])
        with catalog.connect() as conn:
            if verb == "create":
                try:
                    create_local(job_id, conn)
                except OarcloudError:
                    destroy_local(job_id)
                    raise
            else:
                destroy_local(job_id)
        return 0
    except OarcloudError as e:
        print("oarcloud %s on %s: error: %s" % (verb, this_node(), e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
