"""Alarms (F.u.5, F.a.6): what a rule may be, which state N periods of values
put it in, when its actions fire and what the notification says.

The semantics are OpenStack Aodh's threshold alarms: to 'alarm' only when
every one of the last N periods breaches, back to 'ok' only when every one is
inside, 'insufficient data' when a period has none.  The rules are
checked here and kept in the catalog (alarms, alarm_history); the monitor
service (oarcloud_lib.server.monitor) evaluates them every cycle.
"""
import math
import operator
import re

from oarcloud_lib import metrics
from oarcloud_lib.catalog import quotas
from oarcloud_lib.catalog.db import dicts
from oarcloud_lib.errors import Conflict, NotFound, Refused

OK, ALARM, INSUFFICIENT = "ok", "alarm", "insufficient data"
STATES = (OK, ALARM, INSUFFICIENT)
# A value breaches the rule when OPS[op](value, threshold) holds.
OPS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
MIN_PERIOD = 1
MIN_PERIODS, MAX_PERIODS = 1, 100
# Alarms per user: the `alarms` quota (catalog.quotas); each alarm notifies at
# most notify.MAX_TARGETS URLs.
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?\Z")
# Values older than the coarsest retention are gone: a rule looking further
# back would never have data.
MAX_WINDOW = max(keep for _, keep in metrics.RETENTION)


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Refused(detail="bad alarm name %r: 1-32 lowercase letters, digits or '-', "
                             "not starting or ending with '-'" % (name,))
    return name


def check_threshold(threshold):
    """A finite number (or its text) -> float.  Raises Refused."""
    if isinstance(threshold, bool):
        raise Refused(detail="bad threshold %r: not a number" % (threshold,))
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise Refused(detail="bad threshold %r: not a number" % (threshold,)) from None
    if not math.isfinite(value):
        raise Refused(detail="bad threshold %r: must be a finite number" % (threshold,))
    return value


def _check_period(period):
    if isinstance(period, str):
        return metrics.parse_duration(period)
    if isinstance(period, bool) or not isinstance(period, int) or period < MIN_PERIOD:
        raise Refused(detail="bad period %r: at least %d second, as 10s or 5m"
                      % (period, MIN_PERIOD))
    return period


def _check_periods(periods):
    if isinstance(periods, str) and re.match(r"^[0-9]{1,4}\Z", periods):
        periods = int(periods)
    if isinstance(periods, bool) or not isinstance(periods, int) \
            or not MIN_PERIODS <= periods <= MAX_PERIODS:
        raise Refused(detail="bad number of periods %r: from %d to %d"
                      % (periods, MIN_PERIODS, MAX_PERIODS))
    return periods


def check_alarm(metric, op, threshold, period, periods, kind="instance"):
    """A rule, checked and normalised: {'metric', 'op', 'threshold' (float),
    'period' (seconds), 'periods'}.  period is seconds or a duration as '10s'.
    Raises Refused."""
    metrics.check_metric(metric, kind)
    if op not in OPS:
        raise Refused(detail="bad operator %r: one of %s" % (op, ", ".join(OPS)))
    rule = {"metric": metric, "op": op, "threshold": check_threshold(threshold),
            "period": _check_period(period), "periods": _check_periods(periods)}
    if rule["period"] * rule["periods"] > MAX_WINDOW:
        raise Refused(detail="%d periods of %d s look further back than the %d days "
                             "values are kept" % (rule["periods"], rule["period"],
                                                  MAX_WINDOW // 86400))
    return rule


def _no_data(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def evaluate(state, values_per_period, op, threshold, periods=None):
    """The state after one evaluation.

    values_per_period holds one value per period (e.g. its mean), oldest
    first, None for a period without data; only the last periods of them
    count (all by default).  Fewer periods than that, or one without data:
    'insufficient data'.  All breaching: 'alarm'; all inside: 'ok'; a mix
    keeps the current state (a flapping value neither raises nor clears)."""
    values = list(values_per_period)
    n = len(values) if periods is None else periods
    last = values[-n:] if n else []
    if n < 1 or len(last) < n or any(_no_data(v) for v in last):
        return INSUFFICIENT
    breach = [OPS[op](v, threshold) for v in last]
    if all(breach):
        return ALARM
    if not any(breach):
        return OK
    return state


def transition(old, new, repeat=False, since_notified=None, window=0):
    """Whether actions fire: on entering 'alarm' and on leaving it (Aodh's alarm
    and ok actions; leaving 'insufficient data' for 'ok' tells nothing); with
    repeat, again every window seconds (since_notified: seconds since the last
    notification) while it stays in 'alarm'."""
    if old != new:
        return ALARM in (old, new)
    return bool(repeat) and new == ALARM and since_notified is not None \
        and since_notified >= window


def message(name, instance, metric, op, threshold, state, value, old=None, kind="instance"):
    """(title, body) of the notification of an alarm's state; value is the last
    period's (None: no data)."""
    unit = metrics.check_metric(metric, kind).unit
    shown = metrics.format_value(value, unit)
    limit = "%s %s" % (SIGNS[op], metrics.format_value(threshold, unit))
    if state == ALARM:
        title = "Alarm %s: %s %s is %s (%s)" % (name, instance, metric, shown, limit)
    elif state == OK:
        title = "Alarm %s is ok: %s %s is %s" % (name, instance, metric, shown)
    else:
        title = "Alarm %s: no data for %s %s" % (name, instance, metric)
    lines = [
        "Alarm: %s" % name,
        "%s: %s" % (KIND_LABELS[kind], instance),
        "Metric: %s" % metric,
        "Value: %s" % shown,
        "Threshold: %s" % limit,
        "State: %s%s" % (state, " (was %s)" % old if old and old != state else ""),
    ]
    return title, "\n".join(lines) + "\n"


# The catalog (migration 0006).  A user's alarm (owner set) watches one of
# their instances by name; an admin's (owner None) watches a node.

COLUMNS = ("id, owner, name, kind, subject, metric, op, threshold, period, periods, repeat,"
           " notify, state, state_since, last_value, evaluated, created")


# What a user's alarm may watch (an admin's watches a node), as --KIND says.
USER_KINDS = ("instance", "lb")
KIND_LABELS = {"node": "Node", "instance": "Instance", "lb": "Balancer"}


def create(conn, owner, name, subject, rule, repeat=False, urls=(), kind=None):
    """A new alarm of owner (None: an admin's, on node subject) from a checked
    rule (check_alarm).  A user's alarms count against their `alarms` quota;
    an alarm notifies at most notify.MAX_TARGETS URLs.  Raises Refused,
    OverQuota, Conflict."""
    from oarcloud_lib.server import notify
    check_name(name)
    urls = list(urls)
    if len(urls) > notify.MAX_TARGETS:
        raise Refused(detail="an alarm notifies at most %d URLs, not %d"
                             % (notify.MAX_TARGETS, len(urls)))
    policy = notify.site_policy() if urls else None
    urls = [notify.check_url(u, policy) for u in urls]
    kind = kind or ("node" if owner is None else "instance")
    if kind not in (USER_KINDS if owner is not None else ("node",)):
        raise Refused(detail="bad alarm kind %r" % (kind,))
    metrics.check_metric(rule["metric"], kind)
    with conn.transaction():
        quotas.lock(conn, owner)    # concurrent creations count one after the other
        if get(conn, owner, name, missing_ok=True):
            raise Conflict(what="alarm", detail="%s already exists" % name)
        quotas.require(conn, owner, {"alarms": 1})
        cur = conn.execute(
            "INSERT INTO alarms (owner, name, kind, subject, metric, op, threshold, period,"
            " periods, repeat, notify) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING " + COLUMNS,
            (owner, name, kind, subject, rule["metric"], rule["op"], rule["threshold"],
             rule["period"], rule["periods"], bool(repeat), urls))
        return dicts(cur)[0]


def get(conn, owner, name, missing_ok=False):
    """owner's alarm called name.  Raises NotFound (unless missing_ok: None)."""
    rows = dicts(conn.execute("SELECT " + COLUMNS + " FROM alarms WHERE owner IS NOT DISTINCT"
                             " FROM %s AND name = %s", (owner, name)))
    if not rows and not missing_ok:
        raise NotFound(what="alarm", name=name)
    return rows[0] if rows else None


def owned(conn, owner):
    """owner's alarms (None: the admins'), by name."""
    return dicts(conn.execute("SELECT " + COLUMNS + " FROM alarms WHERE owner IS NOT DISTINCT"
                             " FROM %s ORDER BY name", (owner,)))


def every(conn):
    return dicts(conn.execute("SELECT " + COLUMNS + " FROM alarms ORDER BY id"))


def delete(conn, owner, name):
    """Raises NotFound."""
    if conn.execute("DELETE FROM alarms WHERE owner IS NOT DISTINCT FROM %s AND name = %s",
                    (owner, name)).rowcount == 0:
        raise NotFound(what="alarm", name=name)


def history(conn, alarm_id, limit=50):
    """The last transitions of an alarm, newest first."""
    return dicts(conn.execute("SELECT at, old_state, new_state, value FROM alarm_history"
                             " WHERE alarm = %s ORDER BY id DESC LIMIT %s", (alarm_id, limit)))


def record(conn, alarm, new, value):
    """Store an evaluation's outcome; a change of state goes to the history."""
    with conn.transaction():
        conn.execute("UPDATE alarms SET state = %s, last_value = %s, evaluated = now(),"
                     " state_since = CASE WHEN state = %s THEN state_since ELSE now() END"
                     " WHERE id = %s", (new, value, new, alarm["id"]))
        if new != alarm["state"]:
            conn.execute("INSERT INTO alarm_history (alarm, old_state, new_state, value)"
                         " VALUES (%s, %s, %s, %s)", (alarm["id"], alarm["state"], new, value))


SPEC_KEYS = {"name", "subject", "kind", "metric", "op", "threshold", "period", "periods",
             "repeat", "notify"}


def create_from_spec(conn, owner, spec, interval, subjects):
    """Check a whole request, then create the alarm: spec holds name, subject
    (for a user an instance's name, or with kind 'lb' a balancer's; a node for
    admins), metric, op, threshold, period, periods, repeat, notify (URLs).
    subjects: {kind: the names the caller may watch}.  A period shorter than
    the monitor's interval is refused: it would often hold no value.  Raises
    Refused, NotFound, Conflict."""
    if not isinstance(spec, dict) or not set(spec) <= SPEC_KEYS or "name" not in spec \
            or "subject" not in spec:
        raise Refused(detail="an alarm needs name, subject, metric, op, threshold, period"
                             " and periods")
    kind = spec.get("kind") or ("node" if owner is None else "instance")
    if kind not in (USER_KINDS if owner is not None else ("node",)):
        raise Refused(detail="bad alarm kind %r: %s" % (str(kind)[:20], " or ".join(
            USER_KINDS if owner is not None else ("node",))))
    check_name(spec["name"])
    rule = check_alarm(spec.get("metric"), spec.get("op", "gt"), spec.get("threshold"),
                       spec.get("period", "%ds" % interval), spec.get("periods", 3), kind)
    if rule["period"] < interval:
        raise Refused(detail="period %d s is shorter than the monitor's interval (%d s):"
                             " use --period %ds or more" % (rule["period"], interval, interval))
    urls = spec.get("notify") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise Refused(detail="notify: a list of URLs")
    if spec["subject"] not in subjects.get(kind, ()):
        raise NotFound(what="balancer" if kind == "lb" else kind, name=str(spec["subject"])[:60])
    return create(conn, owner, spec["name"], spec["subject"], rule,
                  repeat=bool(spec.get("repeat")), urls=urls, kind=kind)


def describe(row):
    """One line of what an alarm watches: 'web cpu > 80.0% for 3 x 10s'."""
    unit = metrics.check_metric(row["metric"], row["kind"]).unit
    return "%s %s %s %s for %d x %ds" % (row["subject"], row["metric"], SIGNS[row["op"]],
                                         metrics.format_value(row["threshold"], unit),
                                         row["periods"], row["period"])
