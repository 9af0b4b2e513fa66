"""Alarms (F.u.5, F.a.6): what a rule may be, which state N periods of values
put it in, when its actions fire and what the notification says.

The semantics are OpenStack Aodh's threshold alarms: to 'alarm' only when
every one of the last N periods breaches, back to 'ok' only when every one is
inside, 'insufficient data' when a period has none.  Pure functions; the
catalog tables, the evaluator in the monitor service and the `alarm` commands
build on them (issue 6, in progress: alarms cannot be created yet).
"""
import math
import operator
import re

from oarcloud_lib import metrics
from oarcloud_lib.errors import Refused

OK, ALARM, INSUFFICIENT = "ok", "alarm", "insufficient data"
STATES = (OK, ALARM, INSUFFICIENT)
# A value breaches the rule when OPS[op](value, threshold) holds.
OPS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
MIN_PERIOD = 1
MIN_PERIODS, MAX_PERIODS = 1, 100
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


def transition(old, new, repeat=False):
    """Whether actions fire: on every change of state, and with repeat on every
    evaluation that finds the alarm still in 'alarm'."""
    if old != new:
        return True
    return bool(repeat) and new == ALARM


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
        "%s: %s" % (kind.capitalize(), instance),
        "Metric: %s" % metric,
        "Value: %s" % shown,
        "Threshold: %s" % limit,
        "State: %s%s" % (state, " (was %s)" % old if old and old != state else ""),
    ]
    return title, "\n".join(lines) + "\n"
