"""Instances in the catalog: planning a cloud job's instances and allocating them.

Pure planning (which instance goes where, with what) is separate from the
catalog writes, so that it can be tested on its own.
"""
import logging
from collections import Counter

from oarcloud_lib.catalog import networks, quotas
from oarcloud_lib.errors import NotFound, Refused
from oarcloud_lib.names import DOMAIN_RE, domain_name, instance_name  # noqa: F401

LOG = logging.getLogger(__name__)
DEFAULT_MEMORY = 256 << 20
MAX_MEMORY = 256 << 30
# An instance's disk (oarcloud_lib.node.disk): the site's disk_default and
# disk_max where the caller has the site's configuration, else these.
DEFAULT_DISK = 4 << 30
MIN_DISK = 32 << 20  # ext4's journal and a few files
MAX_DISK = 16 << 40
COLUMNS = ("domain", "job_id", "idx", "name", "owner", "node", "image", "cores", "memory",
           "disk", "ip", "mac", "state", "error", "created", "updated", "user_data",
           "user_data_state", "user_data_exit", "files")



def nodes_from_nodefile(text):
    """OAR's node file (one line per resource) -> {node: cores}, in file order."""
    return dict(Counter(line.strip() for line in text.splitlines() if line.strip()))


def disk_size(spec, conf=None):
    """The disk of each instance of spec: --disk, else the site's default,
    within MIN_DISK and the site's disk_max (conf: the site's configuration,
    which only root reads; without it the built-in bounds).  Raises Refused."""
    size = spec.disk or (conf.disk_default if conf else DEFAULT_DISK)
    top = min(conf.disk_max, MAX_DISK) if conf and conf.disk_max else MAX_DISK
    if size < MIN_DISK:
        raise Refused(detail="--disk %d MiB is below the %d MiB an instance's disk needs"
                      % (size >> 20, MIN_DISK >> 20))
    if size > top:
        raise Refused(detail="--disk %s is above the site's %d GiB per instance (disk_max)"
                      % ("%d GiB" % (size >> 30) if size >= 1 << 30 else "%d MiB" % (size >> 20),
                         top >> 30))
    return size


def plan(job_id, owner, spec, node_cores, default_image, memory_per_core=None, conf=None):
    """The instance rows of a job (without addresses); with memory_per_core
    (bytes), no instance has more memory than that for each of its cores: OAR
    schedules cores, so the instances of a node never hold more memory together
    than its cores' share (conf: the site's configuration, for the disks).
    Raises Refused."""
    nodes = list(node_cores)
    if not nodes:
        raise Refused(detail="the job has no nodes")
    count = spec.count or len(nodes)
    placed = [nodes[i % len(nodes)] for i in range(count)]
    per_node = Counter(placed)
    memory = spec.memory or DEFAULT_MEMORY
    if memory > MAX_MEMORY:
        raise Refused(detail="memory per instance above %d GiB" % (MAX_MEMORY >> 30))
    disk = disk_size(spec, conf)
    rows = []
    for idx, node in enumerate(placed):
        have = node_cores[node]
        if spec.cores and spec.cores * per_node[node] > have:
            raise Refused(detail="%d instance(s) of %d cores do not fit in the %d core(s) the "
                                 "job has on %s" % (per_node[node], spec.cores, have, node))
        cores = spec.cores or max(1, have // per_node[node])
        if memory_per_core and memory > cores * memory_per_core:
            raise Refused(detail="%d MiB of memory for %d core(s): at most %d MiB per core "
                                 "(memory_per_core): ask for more cores or less memory"
                          % (memory >> 20, cores, memory_per_core >> 20))
        name = instance_name(spec.name, count, idx) if spec.name else domain_name(job_id, idx)
        rows.append({"domain": domain_name(job_id, idx), "job_id": job_id, "idx": idx,
                     "name": name, "owner": owner, "node": node,
                     "image": spec.image or default_image, "cores": cores, "memory": memory,
                     "disk": disk, "user_data": spec.userdata, "files": spec.files})
    return rows


def needs(rows):
    """What planned rows take of their owner's quotas."""
    return {"instances": len(rows), "cores": sum(r["cores"] for r in rows),
            "memory": sum(r["memory"] for r in rows), "disk": sum(r["disk"] for r in rows)}


def resolve_networks(conn, owner, names, default_cidr, reserved=()):
    """The network rows an instance of owner's attaches to, in order: the named
    ones (the owner's own, or OWNER/NAME shared with them: any other network is
    not found), or the owner's default network (also when named), created on
    first use.  Raises NotFound, Refused."""
    return [networks.ensure_default(conn, owner, default_cidr, reserved)
            if name == networks.DEFAULT_NAME else networks.attachable(conn, owner, name)
            for name in names or [networks.DEFAULT_NAME]]


def allocate(conn, rows, nets, fixed_ip=None):
    """Insert the rows with an address in each network; returns them.  Idempotent per job."""
    if not rows:
        return []
    job_id = rows[0]["job_id"]
    with conn.transaction():
        existing = for_job(conn, job_id)
        if existing:
            return existing
        insert(conn, rows, nets, fixed_ip)
    return for_job(conn, job_id)


def insert(conn, rows, nets, fixed_ip=None):
    """Insert the rows with an address in each network, names and quotas
    checked under the table's lock (in the caller's transaction, if any);
    returns them as the catalog has them."""
    with conn.transaction():
        conn.execute("LOCK TABLE instances IN SHARE ROW EXCLUSIVE MODE")
        taken = conn.execute("SELECT owner, name FROM instances WHERE state NOT IN ('deleted', 'failed')"
                             " AND owner = %s", (rows[0]["owner"],)).fetchall()
        clash = {r["name"] for r in rows} & {n for _, n in taken}
        if clash:
            raise Refused(detail="you already have a live instance named %s" % ", ".join(sorted(clash)))
        networks.attach(conn, rows, nets, fixed_ip)  # sets each row's ip and mac
        quotas.require(conn, rows[0]["owner"], needs(rows))
        for row in rows:
            conn.execute("INSERT INTO instances (domain, job_id, idx, name, owner, node, image,"
                         " cores, memory, disk, ip, mac, user_data, files) VALUES (%(domain)s,"
                         " %(job_id)s, %(idx)s, %(name)s, %(owner)s, %(node)s, %(image)s,"
                         " %(cores)s, %(memory)s, %(disk)s, %(ip)s, %(mac)s, %(user_data)s,"
                         " %(files)s)",
                         dict(row, user_data=row.get("user_data"), files=row.get("files")))
    return [of_domain(conn, r["domain"]) for r in rows]


def rows_of(cur):
    """Dicts of a `SELECT COLUMNS ...` cursor, addresses as text."""
    rows = [dict(zip(COLUMNS, r)) for r in cur.fetchall()]
    for r in rows:
        r["ip"] = str(r["ip"]) if r["ip"] is not None else None
    return rows


def for_job(conn, job_id, node=None):
    sql = "SELECT %s FROM instances WHERE job_id = %%s" % ", ".join(COLUMNS)
    args = [job_id]
    if node is not None:
        sql += " AND node = %s"
        args.append(node)
    return rows_of(conn.execute(sql + " ORDER BY idx", args))


def live(conn, owner=None, node=None):
    """Instances neither deleted nor failed (of one owner, on one node)."""
    sql = "SELECT %s FROM instances WHERE state NOT IN ('deleted', 'failed')" % ", ".join(COLUMNS)
    args = []
    for column, value in (("owner", owner), ("node", node)):
        if value is not None:
            sql += " AND %s = %%s" % column
            args.append(value)
    return rows_of(conn.execute(sql + " ORDER BY job_id, idx", args))


def set_state(conn, domain, state, error=None):
    conn.execute("UPDATE instances SET state = %s, error = coalesce(%s, error), updated = now()"
                 " WHERE domain = %s", (state, error, domain))


def of_domain(conn, domain):
    """The instance's row (any state).  Raises NotFound."""
    rows = rows_of(conn.execute("SELECT %s FROM instances WHERE domain = %%s"
                                % ", ".join(COLUMNS), (domain,)))
    if not rows:
        raise NotFound(what="instance", name=domain)
    return rows[0]


def record_job_nodes(conn, job_id, node_cores):
    """The cores OAR gave the job on each node ({node: cores}); idempotent."""
    for node, cores in sorted(node_cores.items()):
        conn.execute("INSERT INTO job_nodes (job_id, node, cores) VALUES (%s, %s, %s)"
                     " ON CONFLICT (job_id, node) DO UPDATE SET cores = EXCLUDED.cores",
                     (job_id, node, cores))


def job_cores(conn, job_id, node):
    """The cores the job holds on node, or None when its prologue did not say
    (a job older than job_nodes)."""
    row = conn.execute("SELECT cores FROM job_nodes WHERE job_id = %s AND node = %s",
                       (job_id, node)).fetchone()
    return row[0] if row else None


def set_size(conn, domain, cores, memory):
    conn.execute("UPDATE instances SET cores = %s, memory = %s, updated = now()"
                 " WHERE domain = %s", (cores, memory, domain))


def owner_of(conn, domain):
    """Who owns the instance domain (any state).  Raises Refused."""
    row = conn.execute("SELECT owner FROM instances WHERE domain = %s", (domain,)).fetchone()
    if row is None:
        raise Refused(detail="no instance %s in the catalog" % domain)
    return row[0]


def mark_job(conn, job_id, state, error=None, only_live=True):
    """Set the state of the job's instances; deleted or failed ones give their
    addresses back.  Returns the networks whose addresses were released."""
    sql = "UPDATE instances SET state = %s, error = coalesce(%s, error), updated = now()" \
          " WHERE job_id = %s"
    if only_live:
        sql += " AND state NOT IN ('deleted', 'failed')"
    conn.execute(sql, (state, error, job_id))
    if state in ("deleted", "failed"):
        return networks.release(conn, [r["domain"] for r in for_job(conn, job_id)])
    return []
