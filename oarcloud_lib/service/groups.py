"""Scaling groups (docs/groups.md): instances of one shape kept between a
minimum and a maximum, at a desired size that a target on their metric
moves, in an allocation (started at once, service.allocations) or each in
an OAR job of its own.

    create(conn, owner, spec) / change(conn, owner, name, spec) / delete(conn, owner, name)
        (root: the broker, for owner; every check before any write)
    show(conn, owner, name) / listing(conn, owner)
    Scaler().tick(conn, now)     (root: the monitor, each cycle, for every group)

The scaler works as root for each owner, through the same paths as the
owner's own commands: launch_in and lifecycle.launch check the owner's
rights and quotas, and a member is removed as `oarcloud delete` would.  A
group's work is serialized by an advisory lock on its id, so the broker's
delete and the monitor's cycle never act on one group at once.
"""
import logging
import math
import time

from oarcloud_lib import config, metrics
from oarcloud_lib.catalog import groups as rows, images, instances, jobspec, quotas
from oarcloud_lib.catalog import nodes as catalog_nodes
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, OverQuota, Refused
from oarcloud_lib.service import allocations, jobs, lifecycle
from oarcloud_lib.tools import oar

LOG = logging.getLogger("oarcloud.groups")
LOCK_BASE = 0x6f630000   # advisory lock keys: this plus a group's id
LIVE = ("allocated", "creating", "running", "stopped")
PENDING_TTL = 600        # s a member's own job may wait in OAR before it is given up
UNHEALTHY_FOR = 10       # s a member may fail its balancer's health check before it is replaced
MAX_GROUPS = 20          # per user: each costs the monitor some work every cycle
CHANNEL = "oarcloud_groups"  # NOTIFY: a group changed (the monitor LISTENs)


class group_lock:  # noqa: N801 - a context manager, named as one
    """The group's advisory lock, held by this session until the block ends."""

    def __init__(self, conn, group_id, wait=True):
        self.conn, self.key, self.wait = conn, LOCK_BASE + group_id, wait
        self.held = False

    def __enter__(self):
        if self.wait:
            self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
            self.held = True
        else:
            self.held = self.conn.execute("SELECT pg_try_advisory_lock(%s)",
                                          (self.key,)).fetchone()[0]
        return self.held

    def __exit__(self, *exc):
        if self.held:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))


def _spec_of(group, count=None):
    """The launch spec of the group's members."""
    return jobspec.CloudSpec(image=group["image"], cores=group["cores"], memory=group["memory"],
                             networks=list(group["networks"] or []), count=count,
                             userdata=group["user_data"])


def _check_room(conn, owner, s):
    """The group at its maximum fits its allocation and the owner's quotas."""
    need_cores = s["max_size"] * s["cores"]
    if s["alloc"]:
        alloc = allocations.show(conn, owner, s["alloc"])
        if need_cores > alloc["cores"]:
            raise Refused(detail="--max %d x %d core(s) need %d cores: allocation %s holds %d"
                          % (s["max_size"], s["cores"], need_cores, s["alloc"], alloc["cores"]))
    most, source = quotas.tightest(conn, owner, "group-size")
    if most is not None and s["max_size"] > most:
        raise OverQuota(detail="group-size: --max %d is above %s limit of %d members per "
                               "group (oarcloud quota): lower --max, or ask the site's admins "
                               "to raise it" % (s["max_size"], "your" if source[0] != "@"
                                                else "group %s's" % source, most))
    for resource, need in (("instances", s["max_size"]), ("cores", need_cores)):
        limit = quotas.tightest(conn, owner, resource)[0]
        if limit is not None and need > limit:
            raise Refused(detail="--max %d needs %d %s: your quota is %d (oarcloud quota)"
                          % (s["max_size"], need, resource, limit))


def wake_scaler(conn):
    """Have the monitor scale groups now rather than at its next cycle."""
    conn.execute("NOTIFY %s" % CHANNEL)


def create(conn, owner, spec, conf=None):
    """A new group of owner's (spec: catalog.groups.DEFAULTS' keys and name);
    its members come with the monitor's next cycle.  Returns its row.
    Raises Refused, NotFound."""
    conf = conf or config.load()
    name = rows.check_name(spec.get("name"))
    s = rows.check_spec({k: v for k, v in spec.items() if k != "name"})
    s["walltime"] = jobs.check_walltime(s["walltime"])
    if s["image"] is None:
        s["image"] = conf.default_image
    # What one member asks, checked as its launch will be (image, networks...).
    lifecycle.admit(conn, owner, _spec_of(s, 1), 1, conf.default_image, conf=conf)
    _check_room(conn, owner, s)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_BASE,))  # one create at a time
        if conn.execute("SELECT 1 FROM scaling_groups WHERE owner = %s AND name = %s",
                        (owner, name)).fetchone():
            raise Refused(detail="you already have a group named %s" % name)
        if conn.execute("SELECT count(*) FROM scaling_groups WHERE owner = %s",
                        (owner,)).fetchone()[0] >= MAX_GROUPS:
            raise Refused(detail="you have %d groups, the most a user may have: delete one "
                                 "first" % MAX_GROUPS)
        group_id = rows.insert(conn, owner, dict(s, name=name))
        rows.record(conn, group_id, "create", None, s["desired"],
                    "created: %d to %d, desired %d" % (s["min_size"], s["max_size"],
                                                        s["desired"]))
    wake_scaler(conn)
    LOG.info("group %s of %s created: %s", name, owner, s)
    return rows.get(conn, owner, name)


def change(conn, owner, name, spec):
    """Set some of a group's settings (rows.SETTABLE); the whole is checked
    again.  Returns its row.  Raises Refused, NotFound."""
    group = rows.get(conn, owner, name)
    changes = {k: v for k, v in spec.items() if k in rows.SETTABLE and v is not None}
    if spec.get("target") == "none":
        changes.update(target_metric=None, target_value=None)
    if spec.get("vertical") == "none":
        changes.update(vertical_cores=None)
    if spec.get("extend") == "none":
        changes.update(extend_by=None)
    if not changes and "none" not in (spec.get("target"), spec.get("vertical"),
                                      spec.get("extend")):
        raise Refused(detail="nothing to change: give --min, --max, --desired, --target...")
    if changes.get("image") not in (None, group["image"]):
        images.usable(conn, changes["image"], owner)   # another's private one: not found
    merged = {k: group[k] for k in rows.DEFAULTS}
    merged.update(changes)
    if "desired" not in changes:  # the size follows the new bounds
        merged["desired"] = max(merged["min_size"], min(merged["max_size"], group["desired"]))
    s = rows.check_spec(merged)
    _check_room(conn, owner, s)
    with conn.transaction():
        rows.update(conn, group["id"], {k: s[k] for k in rows.SETTABLE})
        said = ", ".join("%s %s" % (k.replace("_size", ""), s[k]) for k in sorted(changes))
        rows.record(conn, group["id"], "set", group["desired"], s["desired"],
                    "set by %s: %s" % (owner, said or "no target"))
    wake_scaler(conn)
    return rows.get(conn, owner, name)


def add_rule(conn, owner, name, spec):
    """A step rule of owner's group name (spec: catalog.groups.check_rule's).
    Returns its row.  Raises Refused, NotFound."""
    group = rows.get(conn, owner, name)
    rule = rows.check_rule(spec)
    row = rows.add_rule(conn, group["id"], rule)
    rows.record(conn, group["id"], "rule", None, None, "rule %d added by %s: %s" % (
        row["id"], owner, rows.describe_rule(row)))
    wake_scaler(conn)
    return row


def delete_rule(conn, owner, name, rule_id):
    """Raises NotFound."""
    group = rows.get(conn, owner, name)
    rows.delete_rule(conn, group["id"], rule_id)
    rows.record(conn, group["id"], "rule", None, None, "rule %s deleted by %s"
                % (rule_id, owner))


def protect(conn, owner, name, member, on=True):
    """Keep member out of scale-in and image replacement (on False: no
    longer).  Returns changed?.  Raises NotFound."""
    group = rows.get(conn, owner, name)
    found = {m["name"]: m for m in rows.members(conn, group["id"])}.get(member)
    if found is None:
        raise NotFound(what="member of group %s" % name, name=member)
    if bool(found["protected"]) == bool(on):
        return False
    with conn.transaction():
        rows.protect(conn, group["id"], member, on)
        rows.record(conn, group["id"], "protect" if on else "unprotect", None, None,
                    "member %s %s by %s" % (member, "protected" if on else "unprotected",
                                            owner))
    wake_scaler(conn)
    return True


def schedule(conn, owner, name, spec):
    """A schedule of owner's group name: spec {cron | at ('YYYY-MM-DD HH:MM',
    the server's time), desired, min_size, max_size}.  Returns its row.
    Raises Refused, NotFound."""
    import datetime
    group = rows.get(conn, owner, name)
    cron, at = spec.get("cron"), spec.get("at")
    if (cron is None) == (at is None):
        raise Refused(detail="a schedule takes --cron or --at")
    if cron is not None:
        cron = rows.check_cron(cron)
    else:
        at = datetime.datetime.strptime(jobs.check_start(at), "%Y-%m-%d %H:%M:%S").astimezone()
    sizes = rows.check_schedule({k: spec.get(k) for k in ("desired", "min_size", "max_size")},
                                group)
    if sizes.get("max_size") is not None:   # its maximum fits the allocation and quotas
        _check_room(conn, owner, dict(group, max_size=sizes["max_size"]))
    with conn.transaction():
        conn.execute("SELECT id FROM scaling_groups WHERE id = %s FOR UPDATE", (group["id"],))
        if len(rows.schedules(conn, group["id"])) >= rows.MAX_SCHEDULES:
            raise Refused(detail="group %s has %d schedules, the most it may have"
                          % (name, rows.MAX_SCHEDULES))
        sched_id = conn.execute(
            "INSERT INTO group_schedules (group_id, cron, at, desired, min_size, max_size)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (group["id"], cron, at, sizes.get("desired"), sizes.get("min_size"),
             sizes.get("max_size"))).fetchone()[0]
    wake_scaler(conn)
    return next(r for r in rows.schedules(conn, group["id"]) if r["id"] == sched_id)


def unschedule(conn, owner, name, sched_id):
    """Remove schedule sched_id of owner's group name.  Raises NotFound."""
    group = rows.get(conn, owner, name)
    if not str(sched_id).isdigit() or conn.execute(
            "DELETE FROM group_schedules WHERE id = %s AND group_id = %s RETURNING id",
            (int(sched_id), group["id"])).fetchone() is None:
        raise NotFound(what="schedule", name="%s of group %s" % (str(sched_id)[:12], name))


def delete(conn, owner, name, runner=LOCAL):
    """Remove every member, then the group.  Returns the members' names."""
    from oarcloud_lib.server import balancers
    group = rows.get(conn, owner, name)
    lb = balancers.of_group(conn, group["id"])
    if lb:
        raise Refused(detail="balancer %s is in front of group %s: oarcloud lb delete %s first"
                      % (lb["name"], name, lb["name"]))
    with group_lock(conn, group["id"]):
        gone = [m["name"] for m in rows.members(conn, group["id"])]
        for m in rows.members(conn, group["id"]):
            _remove(conn, group, m, runner)
        conn.execute("DELETE FROM scaling_groups WHERE id = %s", (group["id"],))
    LOG.info("group %s of %s deleted with %d member(s)", name, owner, len(gone))
    return gone


def forget_owner(conn, owner):
    """An account's balancers stopped and its groups removed, before its
    jobs end (account deletion): the scaler launches nothing more for it.
    Its members go with its jobs."""
    from oarcloud_lib.server import balancers
    for lb in balancers.owned(conn, owner):
        balancers.stop(lb["id"])
        conn.execute("DELETE FROM balancers WHERE id = %s", (lb["id"],))
    for group in rows.owned(conn, owner):
        with group_lock(conn, group["id"]):
            conn.execute("DELETE FROM scaling_groups WHERE id = %s", (group["id"],))


def show(conn, owner, name):
    group = rows.get(conn, owner, name)
    return describe(conn, group)


def describe(conn, group):
    ms = rows.members(conn, group["id"])
    out = dict(group, members=[{k: m[k] for k in ("name", "state", "node", "ip", "job_id",
                                                  "cores", "memory", "image", "protected",
                                                  "added")} for m in ms],
               size=len([m for m in ms if m["state"] in LIVE or m["state"] is None]),
               history=rows.history(conn, group["id"]),
               schedules=rows.schedules(conn, group["id"]),
               rules=[dict(r, condition=rows.describe_rule(r))
                      for r in rows.rules(conn, group["id"])])
    out["target"] = "%s=%g" % (group["target_metric"], group["target_value"]) \
        if group["target_metric"] else None
    return out


def describe_public(shown):
    """describe's dict as JSON shows it: times in ISO 8601, no internals."""
    out = {k: v for k, v in shown.items() if k not in ("id", "next_seq")}
    for k in ("created", "last_out", "last_in"):
        out[k] = out[k].isoformat(timespec="seconds") if out.get(k) else None
    out["members"] = [dict(m, added=m["added"].isoformat(timespec="seconds"))
                      for m in out.get("members", [])]
    out["history"] = [dict(h, at=h["at"].isoformat(timespec="seconds"))
                      for h in out.get("history", [])]
    for key in ("schedules", "rules"):
        out[key] = [{k: (v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else v)
                     for k, v in row.items() if k != "group_id"} for row in out.get(key, [])]
    return out


def listing(conn, owner=None):
    return [describe(conn, g) for g in rows.owned(conn, owner)]


# -- members -----------------------------------------------------------------------------

def _remove(conn, group, member, runner=LOCAL):
    """Remove one member as its owner's `oarcloud delete` would; forget it."""
    try:
        if group["alloc"] and member["state"] in LIVE:
            row = instances.of_domain(conn, member["domain"])
            allocations.remove(conn, group["owner"], row, runner)
        elif not group["alloc"]:
            jobs.delete(member["job_id"], runner, user=group["owner"])
    except (NotFound, Conflict) as e:
        LOG.info("group %s: member %s already gone: %s", group["name"], member["name"], e)
    rows.drop_member(conn, group["id"], member["name"])


def _launch(conn, group, count, runner=LOCAL, conf=None):
    """count new members; returns their names.  Raises what the launch
    paths raise (Refused, OverQuota, Conflict...)."""
    with conn.transaction():
        names = rows.take_names(conn, group, count)
    if group["alloc"]:
        made = allocations.launch_in(conn, group["owner"], group["alloc"],
                                     _spec_of(group, count), runner, conf, names=names)
        with conn.transaction():
            for r in made:
                rows.add_member(conn, group["id"], r["name"], r["job_id"], r["domain"])
        return names
    for name in names:
        spec = _spec_of(group)
        spec.name = name
        job_id = lifecycle.launch(conn, group["owner"], spec, 1, group["walltime"], runner)
        rows.add_member(conn, group["id"], name, job_id, instances.domain_name(job_id, 0))
    return names


class Scaler:
    """The monitor's part: each group's size from its target, then its
    members brought to that size.  Keeps the recent recommendations of each
    group (scale-in stabilization) in memory: after a restart, a scale-in
    waits a whole window again."""

    def __init__(self, conf=None, runner=LOCAL, notify=None):
        from oarcloud_lib.server import balancers
        self.conf = conf or config.load()
        self.runner = runner
        self.recent = {}   # group id -> [(t, recommended size)]
        self.notify = notify  # (conn, owner, kind, **fields) or None
        self.sampler = balancers.Sampler()
        self.down_since = {}   # (balancer id, member) -> when its balancer first saw it down
        self.job_ends = {}     # job id -> when its walltime ends (OAR's current jobs)
        self.extend_asked = set()   # member jobs OAR was asked more walltime for
        self.replacing = set()  # (group id, member) told to be replaced before its end
        self.drained = set()    # the drained nodes, read once a pass (catalog.nodes)

    def tick(self, conn, now=None, domains=None):
        """Scale every group (domains: only those with a target and a member
        among these domains, whose samples just came; OAR is not asked then,
        so no member of an own job is taken for ended)."""
        now = time.time() if now is None else now
        from oarcloud_lib.server import balancers
        groups = rows.owned(conn)
        self.drained = catalog_nodes.drained(conn)
        if domains is not None:
            targeted = {r[0] for r in conn.execute(
                "SELECT DISTINCT m.group_id FROM group_members m JOIN scaling_groups g ON"
                " g.id = m.group_id WHERE g.target_metric IS NOT NULL AND m.domain = ANY(%s)",
                (sorted(domains),))}
            groups = [g for g in groups if g["id"] in targeted]
            current = None
        else:
            for gone in set(self.recent) - {g["id"] for g in groups}:
                del self.recent[gone]
            balancers.sweep(conn)
            # OAR's current jobs, read once (None: unknown; then no member of an
            # own job is taken for ended)
            current = self._current_jobs() if any(not g["alloc"] for g in groups) else None
        for group in groups:
            with group_lock(conn, group["id"], wait=False) as held:
                if not held:
                    continue  # the broker is deleting it
                try:
                    self.scale(conn, rows.get(conn, group["owner"], group["name"]), now,
                               current, whole=domains is None)
                except NotFound:
                    continue
                except OarcloudError as e:
                    LOG.warning("group %s of %s: %s", group["name"], group["owner"], e)

    def _current_jobs(self):
        try:
            jobs_now = oar.current_jobs(self.runner)
        except OarcloudError as e:
            LOG.warning("scaler: oarstat: %s", e)
            return None
        self.job_ends = {int(j): int(job["startTime"]) + int(job["walltime"])
                         for j, job in jobs_now.items()
                         if str(job.get("startTime") or "").isdigit() and int(job["startTime"])
                         and str(job.get("walltime") or "").isdigit()}
        self.extend_asked &= set(self.job_ends)   # ended jobs are forgotten
        return jobs_now

    def _tell(self, conn, owner, kind, **fields):
        if self.notify:
            self.notify(conn, owner, kind, **fields)

    def scale(self, conn, group, now, current_jobs, whole=True):
        """One pass over group: its schedules, its ended members, its target,
        then members launched or removed.  whole: the cycle's pass (False:
        fresh samples came; the balancer's metrics and health wait for the
        cycle)."""
        from oarcloud_lib.server import balancers
        lb = balancers.of_group(conn, group["id"])
        group = self._scheduled(conn, group, now)
        members = self._sweep(conn, group, current_jobs)
        running = [m for m in members if m["state"] == "running"]
        desired = self._target(conn, group, running, now)
        desired = self._steps(conn, group, running, now, desired)
        live = [m for m in members if m["state"] in LIVE or m["state"] is None]
        # Members whose own job ends soon count as gone: their replacements
        # come first, and they go once those run.
        names = {m["name"] for m in live}
        self.replacing -= {k for k in self.replacing if k[0] == group["id"] and k[1] not in names}
        expiring = self._expiring(conn, group, live, now)
        healthy = [m for m in live if m["name"] not in expiring]
        reconciled = False
        if len(healthy) < desired:
            self._grow(conn, group, desired - len(healthy))
        else:
            extra = rows.victims(healthy, len(healthy) - desired, group["deletion"],
                                 group["image"])
            # The expiring go once their replacements serve: running, and up
            # behind the balancer (which takes the new ones first).
            seen = None
            if lb and expiring:
                balancers.reconcile(conn, lb, members, self.runner, self.conf)
                reconciled = True   # what goes below is drained out of it one by one
                seen = balancers.health(lb)
            serving = [m for m in healthy if m["state"] == "running" and m not in extra
                       and (seen is None or seen.get(m["name"]) == "up")]
            if len(serving) >= desired:
                extra += [m for m in live if m["name"] in expiring]
            for m in extra:
                if lb:  # no request lost: out of the balancer first
                    balancers.drain(lb, m["name"])
                _remove(conn, group, m, self.runner)
        if lb and not reconciled:
            balancers.reconcile(conn, lb, rows.members(conn, group["id"]), self.runner,
                                self.conf)
        if lb and whole:
            self._sample(conn, lb, now)
            self._replace_unhealthy(conn, group, lb, now)

    def _replace_unhealthy(self, conn, group, lb, now):
        """A member its balancer has seen down for UNHEALTHY_FOR seconds is
        removed: the next cycle launches its replacement."""
        from oarcloud_lib.server import balancers
        seen = balancers.health(lb)
        for key in [k for k in self.down_since if k[0] == lb["id"] and seen.get(k[1]) != "down"]:
            del self.down_since[key]
        for m in rows.members(conn, group["id"]):
            if seen.get(m["name"]) != "down":
                continue
            since = self.down_since.setdefault((lb["id"], m["name"]), now)
            if now - since < UNHEALTHY_FOR:
                continue
            why = "member %s failed its health check for %d s" % (m["name"], now - since)
            balancers.drain(lb, m["name"])
            _remove(conn, group, m, self.runner)
            del self.down_since[(lb["id"], m["name"])]
            rows.record(conn, group["id"], "replace", None, None, why)
            LOG.info("group %s of %s: %s", group["name"], group["owner"], why)
            self._tell(conn, group["owner"], "group_member_lost", group=group["name"],
                       member=m["name"], reason="failed its health check")

    def _sample(self, conn, lb, now):
        values = self.sampler.sample(lb, now)
        if values:
            metrics.store(conn, [("lb", str(lb["id"]), lb["owner"], m, now, v)
                                 for m, v in sorted(values.items())])

    def _expiring(self, conn, group, live, now):
        """The names of group's members to replace before they go: those on
        a drained node (docs/nodes.md), and those whose own OAR job ends
        within its replace_before (as OAR's current jobs last said: an
        extension moves the end); each recorded once as being replaced."""
        out = set()
        # A new image: one member at a time is renewed (its replacement first,
        # then it goes, drained), the next once that is done.
        stale = rows.outdated(live, group["image"])
        renewing = [m for m in stale if (group["id"], m["name"]) in self.replacing]
        for m in renewing or stale[:1]:
            out.add(m["name"])
            if (group["id"], m["name"]) not in self.replacing:
                self.replacing.add((group["id"], m["name"]))
                why = "member %s: on image %s, the group's is %s: replaced" % (
                    m["name"], m["image"], group["image"])
                rows.record(conn, group["id"], "replace", None, None, why)
                LOG.info("group %s of %s: %s", group["name"], group["owner"], why)
        for m in live:
            end = self.job_ends.get(m["job_id"])
            near = not group["alloc"] and group["replace_before"] and end is not None
            if near and group["extend_by"] and m["job_id"] not in self.extend_asked \
                    and end - now <= 2 * group["replace_before"]:
                self._extend(conn, group, m, end - now)
            if m["node"] in self.drained:
                why = "member %s: its node %s is drained: replaced elsewhere first" % (
                    m["name"], m["node"])
            elif near and end - now <= group["replace_before"]:
                why = "member %s: its job %d ends in %d s: replaced before" % (
                    m["name"], m["job_id"], max(0, end - now))
            else:
                continue
            out.add(m["name"])
            if (group["id"], m["name"]) not in self.replacing:
                self.replacing.add((group["id"], m["name"]))
                rows.record(conn, group["id"], "replace", None, None, why)
                LOG.info("group %s of %s: %s", group["name"], group["owner"], why)
        return out

    def _extend(self, conn, group, member, left):
        """Ask OAR, once, for the group's extend_by more walltime for member's
        job (as its owner, as `oarcloud extend` does): granted, its end moves
        and it is not replaced; refused or not granted in time, it is."""
        self.extend_asked.add(member["job_id"])
        more = group["extend_by"]
        try:
            oar.walltime_change(member["job_id"], "+%d:%02d:%02d" % (
                more // 3600, more // 60 % 60, more % 60), self.runner, group["owner"])
            why = "member %s: its job %d ends in %d s: %d s more walltime asked of OAR" % (
                member["name"], member["job_id"], max(0, left), more)
        except OarcloudError as e:
            why = "member %s: its job %d ends in %d s and OAR gives no more walltime (%s): " \
                  "it will be replaced" % (member["name"], member["job_id"], max(0, left), e)
        rows.record(conn, group["id"], "extend", None, None, why)
        LOG.info("group %s of %s: %s", group["name"], group["owner"], why)

    def _scheduled(self, conn, group, now):
        """The group's due schedules applied (sizes, then the desired size
        within the bounds); returns the group as it now is."""
        at = _ts(now)
        for sc in rows.schedules(conn, group["id"]):
            when = rows.fired(sc, at)
            if when is None:
                continue
            low = group["min_size"] if sc["min_size"] is None else sc["min_size"]
            high = group["max_size"] if sc["max_size"] is None else sc["max_size"]
            if low > high:   # the group's own bounds moved since: keep them
                low, high = group["min_size"], group["max_size"]
            want = group["desired"] if sc["desired"] is None else sc["desired"]
            want = max(low, min(high, want))
            what = "%s: desired %d (%d..%d)" % (
                "cron %s" % sc["cron"] if sc["cron"] else "at %s"
                % when.astimezone().strftime("%Y-%m-%d %H:%M"), want, low, high)
            with conn.transaction():
                rows.update(conn, group["id"], {"min_size": low, "max_size": high,
                                                "desired": want})
                conn.execute("UPDATE group_schedules SET last_run = %s WHERE id = %s",
                             (at, sc["id"]))
                rows.record(conn, group["id"], "scheduled", group["desired"], want,
                            "schedule %d, %s" % (sc["id"], what))
            LOG.info("group %s of %s: schedule %d: %s", group["name"], group["owner"],
                     sc["id"], what)
            if want != group["desired"]:
                self._tell(conn, group["owner"], "group_scaled", group=group["name"],
                           action="scheduled", before=group["desired"], after=want,
                           reason="schedule %d, %s" % (sc["id"], what))
            group = dict(group, min_size=low, max_size=high, desired=want)
        return group

    def _sweep(self, conn, group, current_jobs):
        """Forget the members that ended (their job over, failed, deleted by
        their owner); returns the others."""
        kept = []
        for m in rows.members(conn, group["id"]):
            known = current_jobs is not None
            job = current_jobs.get(str(m["job_id"])) if known else None
            waited = m["state"] is None and time.time() - m["added"].timestamp() > PENDING_TTL
            ended = m["state"] in ("deleted", "failed") or (
                m["state"] is None and known and job is None)
            if not ended and not waited:
                kept.append(m)
                continue
            if waited and not ended:
                _remove(conn, group, m, self.runner)   # waited too long in OAR: given up
            else:
                rows.drop_member(conn, group["id"], m["name"])
            why = "member %s ended (%s)" % (m["name"], m["state"] or "its job ended")
            rows.record(conn, group["id"], "replace", len(kept), None, why)
            self._tell(conn, group["owner"], "group_member_lost", group=group["name"],
                       member=m["name"], reason=m["state"] or "its job ended")
        return kept

    def _target(self, conn, group, running, now):
        """The group's desired size after target tracking (recorded when it
        changes)."""
        desired = group["desired"]
        if not group["target_metric"] or not running:
            return desired
        metric = group["target_metric"]
        if metric in rows.LB_TARGETS:   # the group's balancer's, shared by its members
            from oarcloud_lib.server import balancers
            lb = balancers.of_group(conn, group["id"])
            value = metrics.period_means(conn, "lb", str(lb["id"]), metric[3:], group["period"],
                                         1, now)[0] if lb else None
            values = rows.target_values(metric, value, len(running))
        else:
            values = [metrics.period_means(conn, "instance", m["domain"], metric,
                                           group["period"], 1, now)[0] for m in running]
        rec = rows.recommend(len(running), values, group["target_value"], group["min_size"],
                             group["max_size"])
        if rec is None:
            return desired
        recent = self.recent.setdefault(group["id"], [])
        recent.append((now, rec))
        window = group["window_in"]
        del recent[:-1000]
        recent[:] = [(t, r) for t, r in recent if now - t <= window]
        known = [v for v in values if v is not None]
        mean = sum(known) / len(known)
        seen = "%s %.1f against target %g over %d member(s)" % (
            group["target_metric"], mean, group["target_value"], len(running))
        last_out = group["last_out"].timestamp() if group["last_out"] else 0
        last_in = group["last_in"].timestamp() if group["last_in"] else 0
        if rec > desired and now - last_out >= group["cooldown_out"]:
            if group["vertical_cores"] and self._grow_up(conn, group, running, values, now):
                return desired   # the members grew enough
            return self._set(conn, group, desired, rec, "scale-out", seen, last_out=now)
        if rec <= desired:
            # Every recommendation of the window agrees, and the window is
            # covered since the last scaling (or since this monitor started).
            lowest_safe = rows.stabilized(recent, now, window)
            since = max(last_out, last_in)
            first = min(t for t, _ in recent)
            settled = lowest_safe <= desired and now - first >= window * 0.9 \
                and now - since >= max(group["cooldown_in"], window)
            if settled and group["vertical_cores"] \
                    and self._shrink_down(conn, group, running, values, now):
                return desired   # grown members gave cores back before any member goes
            if settled and lowest_safe < desired:
                return self._set(conn, group, desired, lowest_safe, "scale-in", seen,
                                 last_in=now)
        return desired

    def _shrink_down(self, conn, group, running, values, now):
        """Vertical first on the way down too: members grown past the group's
        --cores give cores back (the largest first, live) while the others
        still hold the load at the target.  Returns True when one did."""
        from oarcloud_lib.service import resize
        load = sum(m["cores"] * v for m, v in zip(running, values) if v is not None)
        spare = sum(m["cores"] for m in running) - load / group["target_value"]
        shrunk = []
        for m in sorted(running, key=lambda m: (-m["cores"], m["name"])):
            give = min(m["cores"] - group["cores"], math.floor(spare))
            if give < 1:
                continue
            try:
                out = resize.resize(conn, group["owner"], m["name"], cores=m["cores"] - give,
                                    runner=self.runner, conf=self.conf)
            except OarcloudError as e:
                LOG.info("group %s: %s not shrunk: %s", group["name"], m["name"], e)
                continue
            if out["status"] == "resized":
                spare -= give
                shrunk.append("%s %d -> %d cores" % (m["name"], m["cores"], m["cores"] - give))
        if not shrunk:
            return False
        why = "%s against target %g: %s (%.1f cores spare)" % (
            group["target_metric"], group["target_value"], ", ".join(shrunk), spare)
        with conn.transaction():
            rows.update(conn, group["id"], {"last_in": _ts(now)})
            rows.record(conn, group["id"], "scale-down", group["desired"], group["desired"], why)
        LOG.info("group %s of %s: scale-down: %s", group["name"], group["owner"], why)
        self._tell(conn, group["owner"], "group_scaled", group=group["name"],
                   action="scale-down", before=group["desired"], after=group["desired"],
                   reason=why)
        return True

    def _steps(self, conn, group, running, now, desired):
        """The group's step rules on its members' (or its balancer's) metrics
        over the group's --period: a change of the desired size, within the
        bounds and cooldowns, unless target tracking changed it this pass."""
        found = rows.rules(conn, group["id"]) if running else []
        if not found or desired != group["desired"]:
            return desired
        from oarcloud_lib.server import balancers
        lb = balancers.of_group(conn, group["id"])
        hit = []
        for r in found:
            if r["metric"] in rows.LB_TARGETS:
                series = [metrics.period_means(conn, "lb", str(lb["id"]), r["metric"][3:],
                                               group["period"], r["periods"], now)] if lb else []
            else:
                series = [metrics.period_means(conn, "instance", m["domain"], r["metric"],
                                               group["period"], r["periods"], now)
                          for m in running]
            if rows.rule_breached(r, series):
                hit.append(r)
        step = rows.stepped(hit, desired, group["min_size"], group["max_size"])
        if step is None:
            return desired
        action, new = step
        why = "rule %s" % "; ".join(rows.describe_rule(r) for r in hit
                                    if (r["change"] > 0) == (action == "scale-out"))
        last_out = group["last_out"].timestamp() if group["last_out"] else 0
        last_in = group["last_in"].timestamp() if group["last_in"] else 0
        if action == "scale-out" and now - last_out >= group["cooldown_out"]:
            return self._set(conn, group, desired, new, action, why, last_out=now)
        if action == "scale-in" and now - max(last_out, last_in) >= group["cooldown_in"]:
            return self._set(conn, group, desired, new, action, why, last_in=now)
        return desired

    def _grow_up(self, conn, group, running, values, now):
        """Vertical first: resize running members, fewest cores first, up to
        the group's vertical_cores, until their cores hold the load at the
        target (sum of cores x metric / target).  Returns True when they do."""
        from oarcloud_lib.service import resize
        load = sum(m["cores"] * v for m, v in zip(running, values) if v is not None)
        needed = load / group["target_value"]
        capacity = sum(m["cores"] for m in running)
        grown = []
        for m in sorted(running, key=lambda m: (m["cores"], m["name"])):
            if capacity >= needed:
                break
            new = min(group["vertical_cores"], m["cores"] + math.ceil(needed - capacity))
            if new <= m["cores"]:
                continue
            try:
                out = resize.resize(conn, group["owner"], m["name"], cores=new,
                                    runner=self.runner, conf=self.conf)
            except OarcloudError as e:   # no room in its job or allocation there, quota...
                LOG.info("group %s: %s not grown to %d cores: %s", group["name"], m["name"],
                         new, e)
                continue
            if out["status"] != "resized":
                continue
            capacity += new - m["cores"]
            grown.append("%s %d -> %d cores" % (m["name"], m["cores"], new))
        if not grown:
            return False
        why = "%s against target %g: %s (%.1f cores needed, %d held)" % (
            group["target_metric"], group["target_value"], ", ".join(grown), needed, capacity)
        with conn.transaction():
            rows.update(conn, group["id"], {"last_out": _ts(now)})
            rows.record(conn, group["id"], "scale-up", group["desired"], group["desired"], why)
        LOG.info("group %s of %s: scale-up: %s", group["name"], group["owner"], why)
        self._tell(conn, group["owner"], "group_scaled", group=group["name"], action="scale-up",
                   before=group["desired"], after=group["desired"], reason=why)
        return capacity >= needed

    def _set(self, conn, group, before, after, action, why, **stamp):
        with conn.transaction():
            rows.update(conn, group["id"], dict(
                {k: (None if v is None else _ts(v)) for k, v in stamp.items()}, desired=after))
            rows.record(conn, group["id"], action, before, after, why)
        LOG.info("group %s of %s: %s %d -> %d: %s", group["name"], group["owner"], action,
                 before, after, why)
        self._tell(conn, group["owner"], "group_scaled", group=group["name"], action=action,
                   before=before, after=after, reason=why)
        return after

    def _grow(self, conn, group, count):
        try:
            names = _launch(conn, group, count, self.runner, self.conf)
        except OarcloudError as e:
            why = str(e)
            if group["unreachable"] != why:
                with conn.transaction():
                    rows.update(conn, group["id"], {"unreachable": why})
                    rows.record(conn, group["id"], "unreachable", None, group["desired"], why)
                self._tell(conn, group["owner"], "group_unreachable", group=group["name"],
                           desired=group["desired"], reason=why)
            LOG.warning("group %s of %s: %d member(s) not launched: %s", group["name"],
                        group["owner"], count, why)
            return []
        if group["unreachable"]:
            rows.update(conn, group["id"], {"unreachable": None})
        LOG.info("group %s of %s: launched %s", group["name"], group["owner"], ", ".join(names))
        return names


def _ts(epoch):
    import datetime
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
