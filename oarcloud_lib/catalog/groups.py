"""Scaling groups in the catalog (migration 0020): their spec checked, their
rows, members and history, and the scaler's pure decisions.

    check_spec(spec) -> spec          (Refused on anything bad, before any write)
    recommend(current, values, target, low, high) -> desired or None
    stabilized(recent, now, window) -> the highest recommendation in the window
    victims(members, count, deletion) -> the members a scale-in removes

The service (service/groups.py) does the writing and the scaling.
"""
import math
import re

from oarcloud_lib import metrics
from oarcloud_lib.catalog import alarms, jobspec
from oarcloud_lib.catalog.db import dicts
from oarcloud_lib.errors import NotFound, Refused

MAX_GROUP_NAME = jobspec.MAX_NAME - 6   # room for "-NNNNN", its members' suffix
MAX_SIZE = 100
DELETION = ("oldest", "newest", "old-image")
# Target tracking leaves the size alone within this fraction of the target
# (Kubernetes' HPA tolerance), so that noise does not flap it.
TOLERANCE = 0.1
DEFAULTS = {"min_size": 1, "max_size": None, "desired": None, "cores": 1, "memory": None,
            "image": None, "networks": [], "alloc": None, "walltime": "1:00:00",
            "target_metric": None, "target_value": None, "period": 60, "cooldown_out": 60,
            "cooldown_in": 300, "window_in": 300, "deletion": "oldest", "user_data": None,
            "replace_before": 300, "vertical_cores": None, "extend_by": None}
COLUMNS = ("id", "owner", "name", "image", "cores", "memory", "networks", "alloc", "walltime",
           "min_size", "max_size", "desired", "target_metric", "target_value", "period",
           "cooldown_out", "cooldown_in", "window_in", "deletion", "next_seq", "last_out",
           "last_in", "unreachable", "user_data", "replace_before", "vertical_cores", "extend_by",
           "created")
SETTABLE = ("min_size", "max_size", "desired", "target_metric", "target_value", "period",
            "cooldown_out", "cooldown_in", "window_in", "deletion", "replace_before",
            "vertical_cores", "image", "extend_by")


def check_name(name, what="group"):
    if not isinstance(name, str) or not jobspec.NAME_PATTERN.match(name) \
            or len(name) > MAX_GROUP_NAME:
        raise Refused(detail="bad %s name %r: lowercase letters, digits and '-', at most %d%s"
                      % (what, str(name)[:40], MAX_GROUP_NAME,
                         " (its members are NAME-0, NAME-1...)" if what == "group" else ""))
    return name


# Targets on the group's balancer (HAProxy's figures): a rate is shared by
# the members (the target is per member), a latency is not.
LB_TARGETS = {"lb.rate": True, "lb.errors": True, "lb.latency": False}


def check_target_metric(metric):
    """An instance metric (the members' mean) or one of LB_TARGETS.  Raises Refused."""
    if isinstance(metric, str) and metric.startswith("lb."):
        if metric not in LB_TARGETS:
            raise Refused(detail="unknown balancer target %r: one of %s" % (
                metric[:40], ", ".join(LB_TARGETS)))
        return metric
    metrics.check_metric(metric, "instance")
    return metric


def target_values(metric, value, members):
    """Each of members' share of the balancer's value of metric (None: no value)."""
    if value is None:
        return [None] * members
    return [value / members if LB_TARGETS[metric] else value] * members


def parse_target(text):
    """'cpu=60' -> ('cpu', 60.0): an instance metric (or lb.rate, lb.errors,
    lb.latency: the group's balancer's) and a positive value.  Raises Refused."""
    metric, sep, value = (text or "").partition("=")
    if not sep:
        raise Refused(detail="bad --target %r: METRIC=VALUE, as cpu=60" % str(text)[:40])
    check_target_metric(metric)
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        raise Refused(detail="bad --target value %r: a number above 0" % value[:20])
    return metric, number


def check_spec(spec):
    """A group's settings (DEFAULTS' keys), whole and coherent.  Raises Refused."""
    s = dict(DEFAULTS, **{k: v for k, v in spec.items() if v is not None or k == "desired"})
    for key in ("min_size", "max_size", "desired"):
        v = s[key]
        if v is not None and (not isinstance(v, int) or not 0 <= v <= MAX_SIZE):
            raise Refused(detail="--%s must be a whole number from 0 to %d"
                          % (key.replace("_size", ""), MAX_SIZE))
    if s["max_size"] is None:
        raise Refused(detail="a group needs --max")
    if s["min_size"] > s["max_size"]:
        raise Refused(detail="--min %d is above --max %d" % (s["min_size"], s["max_size"]))
    if s["max_size"] == 0:
        raise Refused(detail="--max must be at least 1")
    if s["desired"] is None:
        s["desired"] = s["min_size"]
    if not s["min_size"] <= s["desired"] <= s["max_size"]:
        raise Refused(detail="--desired %d is outside --min %d and --max %d"
                      % (s["desired"], s["min_size"], s["max_size"]))
    for key in ("period", "cooldown_out", "cooldown_in", "window_in", "replace_before"):
        v = s[key]
        low = 0 if key.startswith("cooldown") or key == "replace_before" else 1
        if not isinstance(v, int) or not low <= v <= 86400:
            raise Refused(detail="--%s must be %s seconds, at most a day"
                          % (key.replace("_", "-"), "0 or more" if low == 0 else "more than 0"))
    v = s["extend_by"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                          or not 60 <= v <= 7 * 86400):
        raise Refused(detail="--extend-by must be 1 minute to 7 days")
    if s["deletion"] not in DELETION:
        raise Refused(detail="bad --deletion %r: %s" % (s["deletion"], " or ".join(DELETION)))
    if (s["target_metric"] is None) != (s["target_value"] is None):
        raise Refused(detail="a target needs both a metric and a value (--target cpu=60)")
    if s["target_metric"] is not None:
        check_target_metric(s["target_metric"])
    if not isinstance(s["cores"], int) or not 1 <= s["cores"] <= 999:
        raise Refused(detail="--cores must be between 1 and 999")
    v = s["vertical_cores"]
    if v is not None and (not isinstance(v, int) or not s["cores"] <= v <= 999):
        raise Refused(detail="--vertical-cores must be from the members' --cores (%d) to 999"
                      % s["cores"])
    for net in s["networks"]:
        if not jobspec.NAME_PATTERN.match(net):
            raise Refused(detail="bad network name %r" % str(net)[:40])
    if s["user_data"] is not None and (not isinstance(s["user_data"], int)
                                       or s["user_data"] <= 0):
        raise Refused(detail="bad user data id %r" % (s["user_data"],))
    if s["alloc"] is not None and not jobspec.NAME_PATTERN.match(s["alloc"]):
        raise Refused(detail="bad allocation name %r" % str(s["alloc"])[:40])
    return s


# -- the scaler's decisions (pure) -------------------------------------------------------

def recommend(current, values, target, low, high):
    """The size target tracking asks for: current members whose metric reads
    values (None: no sample yet) against target, within [low, high]; None
    when there is nothing to go by (no member, no sample)."""
    known = [v for v in values if v is not None]
    if current <= 0 or not known:
        return None
    ratio = (sum(known) / len(known)) / target
    if abs(ratio - 1) <= TOLERANCE:
        want = current
    else:
        want = math.ceil(current * ratio - 1e-9)
    return max(low, min(high, want))


def stabilized(recent, now, window):
    """The highest of the recommendations [(t, size)] made in the last window
    seconds: a scale-in waits until every one of them agrees."""
    inside = [size for t, size in recent if now - t <= window]
    return max(inside) if inside else None


def victims(members, count, deletion, image=None):
    """The count members ([{name, added, image, protected}]) a scale-in
    removes, never a protected one: the oldest or the newest first (by when
    they were added, then by name); old-image: those not on image (the
    group's) first, oldest first."""
    order = sorted((m for m in members if not m.get("protected")),
                   key=lambda m: (m["added"], m["name"]), reverse=deletion == "newest")
    if deletion == "old-image":
        order.sort(key=lambda m: m.get("image") == image)   # stable: oldest first within
    return order[:max(0, count)]


def outdated(members, image):
    """The members (oldest first) on another image than the group's, not
    protected: those a rolling replacement renews."""
    return [m for m in members if m.get("image") not in (None, image)
            and not m.get("protected")]


# -- rows ---------------------------------------------------------------------------------

def get(conn, owner, name, lock=False):
    """owner's group name.  Raises NotFound (another user's is not found either)."""
    check_name(name)
    rows = dicts(conn.execute("SELECT %s FROM scaling_groups WHERE owner = %%s AND name = %%s%s"
                              % (", ".join(COLUMNS), " FOR UPDATE" if lock else ""),
                              (owner, name)))
    if not rows:
        raise NotFound(what="group", name=name)
    return rows[0]


def owned(conn, owner=None):
    """owner's groups (None: every group), by name."""
    where, args = ("WHERE owner = %s", (owner,)) if owner is not None else ("", ())
    return dicts(conn.execute("SELECT %s FROM scaling_groups %s ORDER BY owner, name"
                              % (", ".join(COLUMNS), where), args))


def insert(conn, owner, s):
    keys = ["owner", "name"] + [k for k in DEFAULTS]
    row = dict(s, owner=owner)
    cur = conn.execute("INSERT INTO scaling_groups (%s) VALUES (%s) RETURNING id"
                       % (", ".join(keys), ", ".join("%%(%s)s" % k for k in keys)), row)
    return cur.fetchone()[0]


def update(conn, group_id, changes):
    sets = [k for k in changes if k in SETTABLE + ("last_out", "last_in", "unreachable")]
    if sets:
        conn.execute("UPDATE scaling_groups SET %s WHERE id = %%(id)s"
                     % ", ".join("%s = %%(%s)s" % (k, k) for k in sets), dict(changes, id=group_id))


def members(conn, group_id):
    """[{name, job_id, domain, added, protected, state, node, ip, cores,
    memory, image}] of a group, oldest first; state None: the member's own
    job has not created it yet."""
    return dicts(conn.execute(
        "SELECT m.name, m.job_id, m.domain, m.added, m.protected, i.state, i.node,"
        " host(i.ip) AS ip, i.cores, i.memory, i.image FROM group_members m"
        " LEFT JOIN instances i ON i.domain = m.domain"
        " WHERE m.group_id = %s ORDER BY m.added, m.name", (group_id,)))


def add_member(conn, group_id, name, job_id, domain):
    conn.execute("INSERT INTO group_members (group_id, name, job_id, domain) VALUES"
                 " (%s, %s, %s, %s)", (group_id, name, job_id, domain))


def protect(conn, group_id, name, on=True):
    """Mark a member protected (or not); False if there is no such member."""
    return conn.execute("UPDATE group_members SET protected = %s WHERE group_id = %s"
                        " AND name = %s", (bool(on), group_id, name)).rowcount == 1


def drop_member(conn, group_id, name):
    conn.execute("DELETE FROM group_members WHERE group_id = %s AND name = %s", (group_id, name))


def take_names(conn, group, count):
    """count new member names of the group (NAME-<seq>), never given before."""
    seq = conn.execute("UPDATE scaling_groups SET next_seq = next_seq + %s WHERE id = %s"
                       " RETURNING next_seq", (count, group["id"])).fetchone()[0]
    return ["%s-%d" % (group["name"], i) for i in range(seq - count, seq)]


def record(conn, group_id, action, before, after, reason):
    conn.execute("INSERT INTO group_history (group_id, action, before, after, reason) VALUES"
                 " (%s, %s, %s, %s, %s)", (group_id, action, before, after, reason))


def history(conn, group_id, limit=50):
    """The last actions on a group, oldest first."""
    rows = dicts(conn.execute("SELECT at, action, before, after, reason FROM group_history"
                              " WHERE group_id = %s ORDER BY id DESC LIMIT %s",
                              (group_id, limit)))
    return rows[::-1]


# -- schedules ------------------------------------------------------------------------------

SCHEDULE_COLUMNS = ("id", "group_id", "cron", "at", "desired", "min_size", "max_size",
                    "last_run", "created")
MAX_SCHEDULES = 20


def check_cron(text):
    """A cron expression of five fields (minute hour day month weekday, the
    server's local time).  Raises Refused."""
    from croniter import croniter
    fields = str(text or "").split()
    if len(fields) != 5 or not croniter.is_valid(" ".join(fields)):
        raise Refused(detail="bad --cron %r: five fields, minute hour day month weekday, as "
                             "'0 8 * * 1-5' (weekdays at 08:00)" % str(text)[:60])
    return " ".join(fields)


def check_schedule(s, group):
    """A schedule's sizes against each other and the group's bounds (those
    it does not set).  Raises Refused."""
    for key in ("desired", "min_size", "max_size"):
        v = s.get(key)
        if v is not None and (not isinstance(v, int) or not 0 <= v <= MAX_SIZE):
            raise Refused(detail="--%s must be a whole number from 0 to %d"
                          % (key.replace("_size", ""), MAX_SIZE))
    if all(s.get(k) is None for k in ("desired", "min_size", "max_size")):
        raise Refused(detail="a schedule sets --desired, --min or --max")
    low = group["min_size"] if s.get("min_size") is None else s["min_size"]
    high = group["max_size"] if s.get("max_size") is None else s["max_size"]
    if low > high or high < 1:
        raise Refused(detail="the schedule would make --min %d above --max %d" % (low, high))
    if s.get("desired") is not None and not low <= s["desired"] <= high:
        raise Refused(detail="--desired %d is outside --min %d and --max %d"
                      % (s["desired"], low, high))
    return s


def fired(schedule, now):
    """When schedule last fired at or before now (aware datetime), if that is
    after it last ran (or was made); else None."""
    since = schedule["last_run"] or schedule["created"]
    if schedule["at"] is not None:
        return schedule["at"] if schedule["last_run"] is None and schedule["at"] <= now \
            else None
    from croniter import croniter
    prev = croniter(schedule["cron"], now.astimezone()).get_prev(type(now))
    return prev if prev > since else None


def schedules(conn, group_id):
    return dicts(conn.execute("SELECT %s FROM group_schedules WHERE group_id = %%s ORDER BY id"
                              % ", ".join(SCHEDULE_COLUMNS), (group_id,)))


# -- step rules ------------------------------------------------------------------------------

AGGREGATIONS = ("avg", "max", "min", "any", "all")
RULE_COLUMNS = ("id", "group_id", "metric", "agg", "op", "threshold", "periods", "change",
                "created")
MAX_RULES = 20
CHANGE_RE = re.compile(r"^[+-][1-9][0-9]?\Z")


def check_rule(spec):
    """{metric, agg, op, threshold, periods, change}: a step rule, checked.
    metric: an instance metric or the balancer's (lb.rate...); change: '+N'
    or '-N' members.  Raises Refused."""
    if not isinstance(spec, dict):
        raise Refused(detail="a rule needs --metric, --op, --threshold and --change")
    metric = check_target_metric(spec.get("metric"))
    agg = spec.get("agg") or "avg"
    if agg not in AGGREGATIONS:
        raise Refused(detail="bad --agg %r: one of %s" % (str(agg)[:20], ", ".join(AGGREGATIONS)))
    if spec.get("op") not in alarms.OPS:
        raise Refused(detail="bad --op %r: one of %s" % (str(spec.get("op"))[:20],
                                                         ", ".join(alarms.OPS)))
    change = str(spec.get("change", ""))
    if not CHANGE_RE.match(change):
        raise Refused(detail="bad --change %r: +N or -N members, N from 1 to 99" % change[:20])
    periods = spec.get("periods", 1)
    if isinstance(periods, str) and periods.isdigit():
        periods = int(periods)
    if isinstance(periods, bool) or not isinstance(periods, int) or not 1 <= periods <= 100:
        raise Refused(detail="bad --periods %r: from 1 to 100" % (periods,))
    return {"metric": metric, "agg": agg, "op": spec["op"],
            "threshold": alarms.check_threshold(spec.get("threshold")), "periods": periods,
            "change": int(change)}


def rule_breached(rule, series):
    """Whether rule holds on series: one list of period values (oldest first)
    per running member, or one list for the balancer's metric.  Every period
    must have a value and breach; avg, max and min aggregate the members'
    values of each period, any and all ask it of members one by one."""
    hit = alarms.OPS[rule["op"]]
    if not series:
        return False

    def all_breach(values):
        return all(v is not None and hit(v, rule["threshold"]) for v in values)
    if rule["agg"] in ("any", "all"):
        member = [all_breach(values) for values in series]
        return any(member) if rule["agg"] == "any" else all(member)
    agg = {"avg": lambda vs: sum(vs) / len(vs), "max": max, "min": min}[rule["agg"]]
    per_period = []
    for values in zip(*series):
        known = [v for v in values if v is not None]
        per_period.append(agg(known) if known else None)
    return all_breach(per_period)


def stepped(breached_rules, desired, low, high):
    """(action, new desired) that the breached rules ask, or None: the largest
    increase when any rule adds members (scale-out), else the smallest
    decrease among those removing some (scale-in); within [low, high]."""
    ups = [r["change"] for r in breached_rules if r["change"] > 0]
    downs = [r["change"] for r in breached_rules if r["change"] < 0]
    if ups:
        new = min(high, desired + max(ups))
        return ("scale-out", new) if new > desired else None
    if downs:
        new = max(low, desired + max(downs))
        return ("scale-in", new) if new < desired else None
    return None


def describe_rule(rule):
    return "%s(%s) %s %g for %d period(s): %+d" % (
        rule["agg"], rule["metric"], alarms.SIGNS[rule["op"]], rule["threshold"],
        rule["periods"], rule["change"])


def rules(conn, group_id):
    return dicts(conn.execute("SELECT %s FROM group_rules WHERE group_id = %%s ORDER BY id"
                              % ", ".join(RULE_COLUMNS), (group_id,)))


def add_rule(conn, group_id, rule):
    """Insert a checked rule; returns its row.  Raises Refused (too many)."""
    with conn.transaction():
        conn.execute("SELECT id FROM scaling_groups WHERE id = %s FOR UPDATE", (group_id,))
        if len(rules(conn, group_id)) >= MAX_RULES:
            raise Refused(detail="a group has at most %d rules: delete one first" % MAX_RULES)
        return dicts(conn.execute(
            "INSERT INTO group_rules (group_id, metric, agg, op, threshold, periods, change)"
            " VALUES (%%s, %%s, %%s, %%s, %%s, %%s, %%s) RETURNING %s" % ", ".join(RULE_COLUMNS),
            (group_id, rule["metric"], rule["agg"], rule["op"], rule["threshold"],
             rule["periods"], rule["change"])))[0]


def delete_rule(conn, group_id, rule_id):
    """Raises NotFound."""
    if not str(rule_id).isdigit() or conn.execute(
            "DELETE FROM group_rules WHERE group_id = %s AND id = %s",
            (group_id, int(rule_id))).rowcount == 0:
        raise NotFound(what="rule", name=str(rule_id)[:20])
