"""Allocations: cores OAR holds for a user, where instances start at once,
without a scheduler pass (docs/allocations.md), the way Slurm's `srun`
places a step inside `salloc`.

    create(conn, owner, name, nodes, cores, walltime, at) -> job id   (oarsub, as owner)
    listing(conn, owner) / get(conn, owner, name)
    delete(conn, owner, name)             (oardel, as owner: its epilogue tears all down)
    launch_in(conn, owner, name, spec)    (root, the broker: rows, then the nodes create)
    remove(conn, owner, row)              (root, the broker: one instance of one)

An allocation is an OAR cloud job of type `cloud.alloc=NAME` (with
`cloud.cores=C`: C cores on each node, else whole nodes); its prologue
records the cores OAR gave it on each node (job_nodes) and its row here,
and creates nothing; lifecycle.end_jobs ends the row with the job.  OAR still owns the reservation: an instance launched
in it takes cores the allocation holds and no other instance of it does;
when its job ends, its epilogue tears down every instance in it like any
job's.
"""
import logging

from oarcloud_lib import config
from oarcloud_lib.catalog import instances, jobspec, joblog, networks, volumes
from oarcloud_lib.catalog import nodes as catalog_nodes
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
from oarcloud_lib.service import fanout, jobs, lifecycle
from oarcloud_lib.tools import oar

LOG = logging.getLogger("oarcloud.allocations")
COLUMNS = ("job_id", "name", "owner", "state", "created")


def check_name(name):
    if not isinstance(name, str) or not jobspec.NAME_PATTERN.match(name):
        raise Refused(detail="bad allocation name %r: lowercase letters, digits and '-', at "
                             "most %d" % (str(name)[:40], jobspec.MAX_NAME))
    return name


def check_new(conn, owner, name, runner=LOCAL, waiting=None):
    """Refuse a name owner already has for a running or waiting allocation."""
    check_name(name)
    if conn.execute("SELECT 1 FROM allocations WHERE owner = %s AND name = %s AND"
                    " state = 'running'", (owner, name)).fetchone() or \
            name in [w["alloc"] for w in (waiting if waiting is not None
                                          else _waiting(owner, runner))]:
        raise Refused(detail="you already have an allocation named %s (oarcloud alloc delete "
                             "it first)" % name)


def _waiting(owner, runner=LOCAL, jobs_now=None):
    """owner's allocations OAR has not started: [{alloc, job_id, state, start}]."""
    out = []
    for job_id, job in sorted((oar.waiting_jobs(owner, runner) if jobs_now is None
                               else jobs_now).items()):
        try:
            spec = jobspec.parse_types(job.get("types") or [])
        except Refused:
            continue
        if spec is not None and spec.alloc:
            start = job.get("scheduledStart")
            out.append({"alloc": spec.alloc, "job_id": job_id,
                        "state": "scheduled" if job.get("reservation") == "Scheduled"
                        else "queued", "cores": spec.cores,
                        "start": int(start) if str(start or "").isdigit() and int(start)
                        else None})
    return out


def create(conn, owner, name, nodes=1, cores=None, walltime="1:00:00", at=None, runner=LOCAL,
           prop=None):
    """Submit the allocation's OAR job as owner; returns its id."""
    check_new(conn, owner, name, runner)
    walltime = jobs.check_walltime(walltime)
    if cores is not None and not 1 <= cores <= 999:
        raise Refused(detail="--cores must be between 1 and 999 (per node)")
    if at:
        jobs.check_start(at)
    spec = jobspec.CloudSpec(alloc=name, cores=cores)
    if cores:
        lifecycle.spread(nodes, cores, nodes, lifecycle.cloud_host_cores(runner),
                         narrowed=prop is not None)
    job_id = jobs.submit(spec, nodes, walltime, runner=runner, user=owner, at=at,
                         options=jobs.oar_options(prop, None, None, False))
    LOG.info("allocation %s of %s: job %s", name, owner, job_id)
    return job_id


def record(conn, job_id, owner, spec, node_cores):
    """The prologue's part: the job's cores and its row; idempotent."""
    with conn.transaction():
        instances.record_job_nodes(conn, job_id, node_cores)
        conn.execute("INSERT INTO allocations (job_id, name, owner) VALUES (%s, %s, %s)"
                     " ON CONFLICT (job_id) DO NOTHING", (job_id, spec.alloc, owner))


def _rows(conn, owner, name=None):
    sql = "SELECT %s FROM allocations WHERE owner = %%s AND state = 'running'" \
        % ", ".join(COLUMNS)
    args = [owner]
    if name is not None:
        sql += " AND name = %s"
        args.append(name)
    return [dict(zip(COLUMNS, r)) for r in conn.execute(sql + " ORDER BY name", args)]


def _capacity(conn, job_id):
    """{node: {cores, used}} of an allocation's job."""
    held = dict(conn.execute("SELECT node, cores FROM job_nodes WHERE job_id = %s",
                             (job_id,)).fetchall())
    used = dict(conn.execute("SELECT node, sum(cores) FROM instances WHERE job_id = %s AND"
                             " state NOT IN ('deleted', 'failed') GROUP BY node",
                             (job_id,)).fetchall())
    return {n: {"cores": c, "used": int(used.get(n) or 0)} for n, c in sorted(held.items())}


def _describe(conn, row):
    nodes = _capacity(conn, row["job_id"])
    live = [r for r in instances.for_job(conn, row["job_id"])
            if r["state"] not in ("deleted", "failed")]
    return dict(row, created=str(row["created"]), nodes=nodes,
                cores=sum(n["cores"] for n in nodes.values()),
                used=sum(n["used"] for n in nodes.values()),
                instances=[r["name"] for r in live])


def listing(conn, owner, runner=LOCAL):
    """owner's allocations: the running ones with their cores and instances,
    then those OAR has not started."""
    out = [_describe(conn, r) for r in _rows(conn, owner)]
    for w in _waiting(owner, runner):
        out.append({"job_id": w["job_id"], "name": w["alloc"], "owner": owner,
                    "state": w["state"], "start": w["start"], "nodes": {}, "cores": None,
                    "used": 0, "instances": []})
    return out


def get(conn, owner, name):
    """owner's running allocation name.  Raises NotFound (another user's too)."""
    check_name(name)
    rows = _rows(conn, owner, name)
    if not rows:
        raise NotFound(what="allocation", name=name)
    return rows[0]


def show(conn, owner, name):
    return _describe(conn, get(conn, owner, name))


def delete(conn, owner, name, runner=LOCAL):
    """End the allocation's OAR job (a waiting one too); its epilogue tears
    down every instance in it.  Returns its job id."""
    check_name(name)
    rows = _rows(conn, owner, name)
    job_id = rows[0]["job_id"] if rows else next(
        (w["job_id"] for w in _waiting(owner, runner) if w["alloc"] == name), None)
    if job_id is None:
        raise NotFound(what="allocation", name=name)
    jobs.delete(job_id, runner, user=owner)
    return job_id


def place(count, cores, capacity):
    """The node of each of count instances of cores each, in capacity
    ({node: {cores, used}}): each on the node with the most free cores then.
    Raises Refused saying what is free."""
    free = {n: c["cores"] - c["used"] for n, c in capacity.items()}
    before, placed = dict(free), []
    for _ in range(count):
        node = max(sorted(free), key=lambda n: free[n], default=None)
        if node is None or free[node] < cores:
            raise Refused(detail="%d instance(s) of %d core(s) do not fit in the allocation: "
                                 "free cores %s" % (count, cores, ", ".join(
                                     "%s %d" % (n, f) for n, f in sorted(before.items()))
                                     or "none"))
        free[node] -= cores
        placed.append(node)
    return placed


def launch_in(conn, owner, name, spec, runner=LOCAL, conf=None, names=None):
    """Place spec's instances in owner's allocation name and start them on
    its nodes now (root: the broker, for owner; names: theirs, one each, as
    a scaling group gives them).  Returns their rows.
    Raises Refused, NotFound, Conflict."""
    conf = conf or config.load()
    if spec.alloc or spec.save or spec.ip:
        raise Refused(detail="launch --in takes no %s" % (
            "allocation of its own" if spec.alloc else "--save-on-exit" if spec.save
            else "--ip"))
    alloc = get(conn, owner, name)
    job_id = alloc["job_id"]
    state = oar.job_state(job_id)
    if state != "Running":
        raise Conflict(what="allocation", detail="%s: its job %s is %s" % (name, job_id, state))
    count = len(names) if names else spec.count or 1
    cores = spec.cores or 1
    spec.cores, spec.count = cores, count
    lifecycle.admit(conn, owner, spec, 1, conf.default_image, conf=conf)
    nets = instances.resolve_networks(conn, owner, spec.networks, conf.default_network_cidr,
                                      networks.reserved_ranges(conf))
    with conn.transaction():
        # One launch into an allocation at a time: its free cores are read here.
        conn.execute("SELECT job_id FROM allocations WHERE job_id = %s FOR UPDATE", (job_id,))
        # Never on a drained node (docs/nodes.md).
        capacity = _capacity(conn, job_id)
        drained = catalog_nodes.drained(conn)
        if capacity and set(capacity) <= drained:
            raise Refused(detail="every node of allocation %s is drained (%s): no new instance "
                                 "lands there" % (name, ", ".join(sorted(capacity))))
        placed = place(count, cores, {n: c for n, c in capacity.items() if n not in drained})
        start = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM instances WHERE job_id = %s",
                             (job_id,)).fetchone()[0]
        node_cores = {}
        for node in placed:
            node_cores[node] = node_cores.get(node, 0) + cores
        plans = instances.plan(job_id, owner, spec, node_cores, conf.default_image,
                               conf.memory_per_core, conf)
        rows = []
        for i, (row, node) in enumerate(zip(plans, placed)):
            idx = start + i
            rows.append(dict(row, node=node, idx=idx, domain=instances.domain_name(job_id, idx),
                             name=names[i] if names else
                             instances.instance_name(spec.name, count, i) if spec.name
                             else instances.domain_name(job_id, idx)))
        rows = instances.insert(conn, rows, nets)
        if spec.volumes:
            volumes.hold_for_launch(conn, owner, spec.volumes, rows)
        domains = [r["domain"] for r in rows]
        joblog.add_event(conn, job_id, "INFO", "launch in %s: %s on %s" % (
            name, ", ".join(r["name"] for r in rows), ", ".join(placed)))
    nodes = sorted(set(placed))
    others = sorted(set(networks.hosting_nodes(conn, [n["id"] for n in nets])) - set(nodes))

    def work(node):
        # The network's other nodes learn the new addresses while these start.
        if node in others:
            return fanout.on_node(node, "net-sync")
        return fanout.on_node(node, "create", job_id,
                              *[d for d, p in zip(domains, placed) if p == node])
    done = fanout.parallel(nodes + others, work)
    for node in others:
        if done[node]:
            LOG.error("network sync on %s failed: %s", node, fanout.one_line(done[node]))
    errors = {n: done[n] for n in nodes if done[n]}
    if errors:
        reason = "; ".join("%s: %s" % (n, fanout.one_line(e)) for n, e in sorted(errors.items()))
        for d in domains:
            instances.set_state(conn, d, "failed", reason)
        _released(conn, domains)
        raise OarcloudError("the instances were not created: %s" % reason)
    return [instances.of_domain(conn, d) for d in domains]


def _released(conn, domains):
    """The addresses of ended instances go back; their networks' nodes follow."""
    freed = networks.release(conn, domains)
    volumes.release_domains(conn, domains)
    if freed:
        fanout.sync_nodes(networks.hosting_nodes(conn, sorted(freed)))


def remove(conn, owner, row, runner=LOCAL):
    """Delete one instance of an allocation (root, for owner): out of the
    catalog first (its cores are free at once, its network's nodes forget
    its address), then its node removes it."""
    instances.set_state(conn, row["domain"], "deleted")
    _released(conn, [row["domain"]])
    errors = fanout.parallel([row["node"]], lambda node: fanout.on_node(
        node, "destroy", row["job_id"], row["domain"]))
    error = errors.get(row["node"])
    joblog.add_event(conn, row["job_id"], "INFO", "%s deleted from the allocation" % row["name"],
                     row["node"])
    if error:
        raise OarcloudError("%s: removed from the catalog, but its node said: %s"
                            % (row["name"], fanout.one_line(error)))
    return row


def of_instance(conn, row):
    """The allocation row holds, or None (an instance of its own job)."""
    found = conn.execute("SELECT name FROM allocations WHERE job_id = %s", (row["job_id"],)
                         ).fetchone()
    return found[0] if found else None

