"""The life of a user's instances, for every caller: the user's command, the
broker, OAR's prologue, and (to come) scaling groups and the web API.

    admit(conn, owner, spec, nodes)      the one check of a launch request
    launch(conn, owner, spec, nodes, walltime) -> job id   (admit, then oarsub)
    find(conn, owner, name)              the owner's instance called name
    reachable(conn, owner, name)         ... live, and its job running
    delete(conn, owner, name)            end the instance's OAR job
    extend(conn, owner, name, "+1:00")   more walltime for the instance's job (oarwalltime)
    end_jobs(conn, [(job, state, why)])  record ended jobs, free their addresses

conn is the caller's catalog connection: the user's own (row-level security
shows them only their rows) or root's (the broker, the prologue, a scaler),
which is why every function takes the owner explicitly.  A root caller acts
for the owner: OAR gets the job from the owner's account (runuser), never
from root's.
"""
import logging
import re

from oarcloud_lib import daemons
from oarcloud_lib.catalog import (accounts, images, instances, jobspec, networks, nodesets,
                                  quotas, volumes)
from oarcloud_lib.catalog import launchfiles
from oarcloud_lib.catalog import userdata as user_data
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, Forbidden, NotFound, Refused
from oarcloud_lib.service import fanout, jobs
from oarcloud_lib.tools import oar
from oarcloud_lib.tools.oar import job_state

LOG = logging.getLogger("oarcloud.lifecycle")
# Instances a user can reach (exec, ssh, power, save, publish a port).
REACHABLE_STATES = ("running", "stopped")
# Launching: the prologue is finishing (other nodes of the networks follow the
# new addresses) while the instance already runs.
REACHABLE_JOB_STATES = ("Running", "Launching")


def save_names(spec, count):
    """The image names a --save-on-exit job asks for: NAME, or NAME-0, NAME-1..."""
    if not spec.save:
        return []
    return [instances.instance_name(spec.save, count, i) for i in range(count)]


def check_nodes(conn, owner, hosts):
    """Refuse a job of owner's placed on hosts in a node set owner is not
    granted (the prologue's check of what OAR gave; admission keeps jobs off
    them).  Raises Refused."""
    barred = nodesets.barred(conn, owner)
    if not barred:
        return
    props = oar.node_properties(hosts, {p for _, p, _ in barred})
    bad = nodesets.refused_nodes(barred, props)
    if bad:
        raise Refused(detail="%s: node set %s is kept for other users (ask the site's admins "
                             "for it: oarcloud-admin nodeset grant)" % (
                                 ", ".join(sorted(bad)), ", ".join(sorted(set(bad.values())))))


def admit(conn, owner, spec, nodes, default_image=None, walltime=None, job_id=None, conf=None):
    """Check a launch of spec on `nodes` nodes by owner before anything is
    created: the image is one owner may use, the networks are owner's, a fixed
    address is free, the instance and image names are free, the owner's quotas
    leave room for it, the disk size is within bounds (the site's, with conf),
    the walltime is well formed.  Called before oarsub, by OAR's admission
    rule and again by the job's prologue (job_id: that job's own rows do not
    count).  Returns the walltime as OAR wants it.  Raises Refused
    (OverQuota among them), NotFound, Conflict."""
    if not 1 <= nodes <= 1000:
        raise Refused(detail="--nodes must be between 1 and 1000")
    if accounts.role(conn, owner) == "viewer":
        raise Forbidden(detail="%s is a viewer: it reads, it launches nothing" % owner)
    if spec.alloc:  # an allocation: its name only (service.allocations)
        from oarcloud_lib.service import allocations
        if job_id is None:  # the prologue's own row may be there already
            allocations.check_new(conn, owner, spec.alloc)
        return jobs.check_walltime(walltime) if walltime is not None else None
    disk = instances.disk_size(spec, conf)
    image = spec.image or default_image
    if image:
        images.usable(conn, image, owner)
    nets = networks.named(conn, owner, spec.networks)
    if spec.userdata:
        user_data.get(conn, owner, spec.userdata)
    if spec.files:
        launchfiles.get(conn, owner, spec.files)
    if spec.ip:
        networks.check_fixed_ip(conn, spec, nets, nodes)
    count = spec.count or nodes
    if spec.name:
        wanted = {instances.instance_name(spec.name, count, i) for i in range(count)}
        taken = sorted(wanted & {r["name"] for r in instances.live(conn, owner=owner)
                                 if r["job_id"] != job_id})
        if taken:
            raise Refused(detail="you already have an instance named %s (oarcloud delete it "
                                 "first)" % ", ".join(taken))
    for name in save_names(spec, count):
        images.check_new_name(conn, name)
    if spec.volumes:
        volumes.check_launch(conn, owner, spec.volumes, count, job_id)
    quotas.require(conn, owner, needs(conn, owner, spec, count, disk))
    return jobs.check_walltime(walltime) if walltime is not None else None


def needs(conn, owner, spec, count, disk):
    """What a launch takes at least of owner's quotas, known before OAR picks
    the nodes: an instance without --cores has one core at least (the prologue
    counts exactly, in the transaction that allocates the instances), the
    default network when it does not exist yet; disk: each instance's."""
    more = {"instances": count, "cores": count * (spec.cores or 1),
            "memory": count * (spec.memory or instances.DEFAULT_MEMORY), "disk": count * disk}
    if networks.DEFAULT_NAME in (spec.networks or [networks.DEFAULT_NAME]) and \
            not networks.exists(conn, owner, networks.DEFAULT_NAME):
        more["networks"] = 1
    return more


def spread(count, cores, nodes, host_cores, narrowed=False):
    """How many nodes count instances of cores each take: nodes when given
    and they hold them, else the fewest that do (host_cores: the cores of
    each cloud node in service; narrowed: a --property may leave fewer).
    Raises Refused saying what is missing."""
    largest = max(host_cores, default=0)
    if not largest:
        return nodes or 1  # OAR says what is missing
    if cores > largest:
        raise Refused(detail="an instance of %d cores does not fit: a node has %d at most "
                             "(--cores %d or less)" % (cores, largest, largest))
    fewest = next(n for n in range(1, count + 1) if -(-count // n) * cores <= largest)
    total = count * cores
    if nodes is None:
        if fewest > len(host_cores) and not narrowed:
            raise Refused(detail="%d instances x %d core(s) need %d cores on %d nodes of %d; "
                                 "the site has %d such nodes in service: ask for fewer"
                          % (count, cores, total, fewest, largest, len(host_cores)))
        return fewest
    if -(-count // nodes) * cores > largest:
        raise Refused(detail="%d instances x %d core(s) need %d cores; %s %d: add --nodes %d"
                      % (count, cores, total, "a node has" if nodes == 1 else
                         "%d nodes of" % nodes, largest, fewest))
    return nodes


def cloud_host_cores(runner=LOCAL):
    """The cores of each cloud node OAR has in service (Alive, not drained)."""
    hosts = oar.resources_by_host(runner.out(["oarnodes", "-J"], timeout=60))
    return [sum(1 for r in res if r.get("type", "default") == "default")
            for res in hosts.values()
            if all(r.get("cloud") == "YES" and r.get("state") == "Alive"
                   and r.get("drain", "NO") != "YES" for r in res)]


def launch(conn, owner, spec, nodes=1, walltime="1:00:00", runner=LOCAL, at=None, prop=None,
           queue=None, project=None, besteffort=False):
    """Admit the request, then submit its OAR cloud job as owner (nodes None:
    the fewest that hold spec's instances; at: an advance reservation's
    start; prop, queue, project: oarsub's -p, -q and --project; besteffort: a
    job OAR may kill for others); returns the job id.  The job's prologue
    creates the instances."""
    options = jobs.oar_options(prop, queue, project, besteffort)
    # The owner's rights and quotas first (on the nodes asked, or one), then
    # whether the instances fit the site's nodes.
    walltime = admit(conn, owner, spec, 1 if nodes is None else nodes, walltime=walltime)
    if spec.cores and (spec.cores > 1 or (spec.count or 1) > 1):  # one core always fits
        nodes = spread(spec.count or nodes or 1, spec.cores, nodes, cloud_host_cores(runner),
                       narrowed=prop is not None)
    nodes = 1 if nodes is None else nodes
    if at:
        jobs.check_start(at)
    job_id = jobs.submit(spec, nodes, walltime, runner=runner, user=owner, at=at,
                         options=options, besteffort=besteffort)
    LOG.info("job %s submitted for %s: %s", job_id, owner, " ".join(spec.to_types()))
    return job_id


def find(conn, owner, name):
    """owner's instance called name: the live one, else the last one.
    Raises Refused (a malformed name), NotFound (another user's instance is
    not found, exactly like a missing one)."""
    if not isinstance(name, str) or not jobspec.NAME_PATTERN.match(name):
        raise Refused(detail="bad instance name %r" % (str(name)[:60],))
    cur = conn.execute("SELECT %s FROM instances WHERE name = %%s AND owner = %%s ORDER BY"
                       " state IN ('deleted', 'failed'), created DESC, idx DESC LIMIT 1"
                       % ", ".join(instances.COLUMNS), (name, owner))
    rows = instances.rows_of(cur)
    if not rows:
        raise NotFound(what="instance", name=name)
    return rows[0]


def reachable(conn, owner, name):
    """owner's live instance called name, whose OAR job runs: one its owner can
    enter, power, save or publish.  Raises Refused, NotFound, Conflict."""
    row = find(conn, owner, name)
    if row["state"] in ("deleted", "failed"):
        raise NotFound(what="instance", name=name)
    if row["state"] not in REACHABLE_STATES:
        raise Conflict(what="instance", detail="%s is %s" % (name, row["state"]))
    state = job_state(row["job_id"])
    if state not in REACHABLE_JOB_STATES:
        raise Conflict(what="instance", detail="%s: its job %s is %s" % (name, row["job_id"],
                                                                         state))
    return row


EXTEND_RE = re.compile(r"^\+([0-9]{1,4}):([0-5][0-9])(?::([0-5][0-9]))?\Z")


def check_extension(text):
    """'+H:MM' or '+H:MM:SS', more than zero -> seconds.  Raises Refused."""
    m = EXTEND_RE.match(text or "")
    seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0) if m else 0
    if not seconds:
        raise Refused(detail="bad extension %r: +H:MM or +H:MM:SS, more than zero (e.g. +1:00)"
                      % (str(text)[:20],))
    return seconds


def extend(conn, owner, name, delta, wait=30.0, runner=LOCAL):
    """Ask OAR for delta more walltime for the job of owner's instance name,
    and wait up to `wait` seconds for OAR's scheduler to decide.  Returns
    {instance, job_id, asked, granted, pending, walltime, possible, status}
    (seconds; status granted, partly granted or pending: OAR keeps trying a
    pending change until the job ends).  Raises Refused (OAR's reason),
    NotFound, Conflict."""
    asked = check_extension(delta)
    row = reachable(conn, owner, name)
    job_id = row["job_id"]
    before = oar.walltime_status(job_id, runner, owner)
    oar.walltime_change(job_id, "+%d:%02d:%02d" % (asked // 3600, asked // 60 % 60, asked % 60),
                        runner, owner)
    now = daemons.wait_for(lambda: _decided(oar.walltime_status(job_id, runner, owner)),
                           timeout=wait, interval=0.5) or oar.walltime_status(job_id, runner,
                                                                              owner)
    granted = max(0, now["granted"] - before["granted"])
    status = "granted" if granted >= asked else "partly granted" if granted else "pending"
    LOG.info("job %s of %s: +%ds asked, +%ds granted", job_id, owner, asked, granted)
    return {"instance": name, "job_id": job_id, "asked": asked, "granted": granted,
            "pending": now["pending"], "walltime": now["walltime"], "possible": now["possible"],
            "status": status}


def _decided(status):
    return status if not status.get("pending") else None


def waiting(conn, owner, runner=LOCAL, jobs=None):
    """owner's cloud jobs OAR has not started: [{name, names, state (queued,
    or scheduled for an advance reservation), job_id, image, count, start
    (epoch: the reservation's, or OAR's estimate; None)}].  jobs: OAR's
    answer already asked (oar.waiting_jobs_started)."""
    out = []
    for job_id, job in sorted((oar.waiting_jobs(owner, runner) if jobs is None
                               else jobs).items()):
        try:
            spec = jobspec.parse_types(job.get("types") or [])
        except Refused:
            spec = None
        if spec is None:
            continue
        count = spec.count or 1
        names = [instances.instance_name(spec.name, count, i) if spec.name
                 else instances.domain_name(job_id, i) for i in range(count)]
        start = job.get("scheduledStart")
        out.append({"name": names[0] if count == 1 else "%s..%s" % (names[0], names[-1]),
                    "names": names, "job_id": job_id,
                    "state": "scheduled" if job.get("reservation") == "Scheduled" else "queued",
                    "image": spec.image, "count": spec.count,
                    "start": int(start) if str(start or "").isdigit() and int(start) else None})
    return out


def delete(conn, owner, name, wait=False, runner=LOCAL):
    """End the OAR job of owner's instance called name (with every instance of
    that job; its epilogue tears them down), or of a launch OAR has not
    started yet; returns the instance's row (or the waiting job's)."""
    try:
        row = find(conn, owner, name)
    except NotFound:
        row = None
    if row is None or row["state"] in ("deleted", "failed"):
        queued = [w for w in waiting(conn, owner, runner) if name in w["names"]]
        if queued:
            jobs.delete(queued[0]["job_id"], runner, user=owner)
            return dict(queued[0], name=name)
        if row is None:
            raise NotFound(what="instance", name=name)
    jobs.delete(row["job_id"], runner, user=owner)
    if wait:
        jobs.wait_ended(conn, row["job_id"], runner=runner)
    return row


def end_jobs(conn, ended):
    """Record jobs that ended, [(job_id, state, reason)] with state deleted or
    failed: their instances leave the catalog's live set, and the nodes that
    host their networks forget their addresses.  Returns the networks freed of
    them, and {node: error} of the nodes that could not follow (the next change
    on those nodes retries)."""
    released = set()
    for job_id, state, reason in ended:
        released |= set(instances.mark_job(conn, job_id, state, reason))
        # Their volumes too (their nodes release them at teardown; this is for
        # a teardown that never ran: a dead agent, an unreachable node).
        volumes.release_domains(conn, [r["domain"] for r in instances.for_job(conn, job_id)])
        conn.execute("DELETE FROM job_nodes WHERE job_id = %s", (job_id,))
        conn.execute("UPDATE allocations SET state = 'ended', ended = now() WHERE job_id = %s"
                     " AND state = 'running'", (job_id,))
    errors = fanout.sync_nodes(networks.hosting_nodes(conn, sorted(released))) \
        if released else {}
    return sorted(released), errors
