"""Alarms: rules refused at creation, Aodh-like states, when actions fire,
what the notification says."""
import pytest

from oarcloud_lib.catalog import alarms
from oarcloud_lib.catalog.alarms import ALARM, INSUFFICIENT, OK
from oarcloud_lib.errors import Refused


def test_good_rule():
    rule = alarms.check_alarm("cpu", "gt", "80", "10s", 3)
    assert rule == {"metric": "cpu", "op": "gt", "threshold": 80.0, "period": 10,
                    "periods": 3}
    assert alarms.check_alarm("memory", "le", 1.5e9, 60, "100")["periods"] == 100
    assert alarms.check_alarm("disk", "ge", -1, 1, 1, kind="node")["threshold"] == -1.0


@pytest.mark.parametrize("args, why", [
    (("gpu", "gt", 80, 10, 3), "unknown instance metric"),
    (("load", "gt", 80, 10, 3), "unknown instance metric"),
    (("cpu", ">", 80, 10, 3), "bad operator"),
    (("cpu", "eq", 80, 10, 3), "bad operator"),
    (("cpu", "gt", "eighty", 10, 3), "not a number"),
    (("cpu", "gt", "", 10, 3), "not a number"),
    (("cpu", "gt", None, 10, 3), "not a number"),
    (("cpu", "gt", True, 10, 3), "not a number"),
    (("cpu", "gt", "nan", 10, 3), "finite"),
    (("cpu", "gt", "inf", 10, 3), "finite"),
    (("cpu", "gt", float("-inf"), 10, 3), "finite"),
    (("cpu", "gt", 80, 0, 3), "bad period"),
    (("cpu", "gt", 80, "0s", 3), "bad duration"),
    (("cpu", "gt", 80, -10, 3), "bad period"),
    (("cpu", "gt", 80, 1.5, 3), "bad period"),
    (("cpu", "gt", 80, "10", 3), "bad duration"),
    (("cpu", "gt", 80, None, 3), "bad period"),
    (("cpu", "gt", 80, 10, 0), "periods"),
    (("cpu", "gt", 80, 10, 101), "periods"),
    (("cpu", "gt", 80, 10, -1), "periods"),
    (("cpu", "gt", 80, 10, "3x"), "periods"),
    (("cpu", "gt", 80, 10, 2.0), "periods"),
    (("cpu", "gt", 80, "1d", 31), "kept"),
])
def test_bad_rules_are_refused(args, why):
    with pytest.raises(Refused, match=why):
        alarms.check_alarm(*args)


def test_node_metrics_are_for_node_alarms():
    with pytest.raises(Refused):
        alarms.check_alarm("load", "gt", 4, 60, 5)
    assert alarms.check_alarm("load", "gt", 4, 60, 5, kind="node")["metric"] == "load"


@pytest.mark.parametrize("name, ok", [("hot", True), ("cpu-high-1", True), ("", False),
                                      ("Hot", False), ("-x", False), ("a b", False),
                                      ("x" * 33, False), (None, False)])
def test_names(name, ok):
    if ok:
        assert alarms.check_name(name) == name
    else:
        with pytest.raises(Refused):
            alarms.check_name(name)


@pytest.mark.parametrize("state, values, new", [
    # Every one of the last N periods breaches: alarm, whatever the state was.
    (OK, [90, 95, 99], ALARM),
    (INSUFFICIENT, [90, 95, 99], ALARM),
    (ALARM, [90, 95, 99], ALARM),
    # Every one inside: ok.
    (ALARM, [10, 20, 30], OK),
    (INSUFFICIENT, [10, 20, 30], OK),
    # A mix keeps the state: a single spike never raises, a single dip never clears.
    (OK, [10, 95, 20], OK),
    (OK, [10, 20, 95], OK),
    (ALARM, [95, 95, 10], ALARM),
    (INSUFFICIENT, [95, 10, 95], INSUFFICIENT),
    # A period without data: insufficient data.
    (ALARM, [95, None, 95], INSUFFICIENT),
    (OK, [10, 20, float("nan")], INSUFFICIENT),
    (OK, [], INSUFFICIENT),
    # The threshold itself is not a breach of gt.
    (OK, [80, 80, 80], OK),
])
def test_evaluate(state, values, new):
    assert alarms.evaluate(state, values, "gt", 80) == new


def test_evaluate_last_n_periods():
    # Only the last 3 periods count; fewer than 3 with data is not enough.
    assert alarms.evaluate(OK, [10, 10, 90, 90, 90], "gt", 80, periods=3) == ALARM
    assert alarms.evaluate(ALARM, [None, 90, 10, 10, 10], "gt", 80, periods=3) == OK
    assert alarms.evaluate(OK, [90, 90], "gt", 80, periods=3) == INSUFFICIENT
    assert alarms.evaluate(OK, [90, 90], "gt", 80, periods=0) == INSUFFICIENT


@pytest.mark.parametrize("op, value, breach", [
    ("gt", 80, False), ("gt", 80.1, True), ("ge", 80, True), ("ge", 79.9, False),
    ("lt", 80, False), ("lt", 79.9, True), ("le", 80, True), ("le", 80.1, False),
])
def test_operators(op, value, breach):
    assert alarms.evaluate(INSUFFICIENT, [value], op, 80) == (ALARM if breach else OK)


def test_a_burn_raises_then_clears():
    """Values of one period each, evaluated after every period, N = 3."""
    state, fired = INSUFFICIENT, []
    series = [5, 6, 5, 99, 100, 5, 99, 99, 99, 100, 40, 3, 2, 2]
    for i in range(len(series)):
        new = alarms.evaluate(state, series[:i + 1], "gt", 80, periods=3)
        if alarms.transition(state, new):
            fired.append((i, new))
        state = new
    assert fired == [(8, ALARM), (12, OK)]


def test_transition():
    assert alarms.transition(OK, ALARM)
    assert alarms.transition(ALARM, OK)
    assert alarms.transition(ALARM, INSUFFICIENT)
    assert alarms.transition(INSUFFICIENT, ALARM)
    assert not alarms.transition(INSUFFICIENT, OK)
    assert not alarms.transition(OK, INSUFFICIENT)
    assert not alarms.transition(OK, OK)
    assert not alarms.transition(ALARM, ALARM)
    assert alarms.transition(ALARM, ALARM, repeat=True, since_notified=30, window=30)
    assert not alarms.transition(ALARM, ALARM, repeat=True, since_notified=29, window=30)
    assert not alarms.transition(OK, OK, repeat=True)
    assert not alarms.transition(INSUFFICIENT, INSUFFICIENT, repeat=True)


def test_message():
    title, body = alarms.message("hot", "web1", "cpu", "gt", 80.0, ALARM, 97.26, old=OK)
    assert title == "Alarm hot: web1 cpu is 97.3% (> 80.0%)"
    assert body.splitlines() == ["Alarm: hot", "Instance: web1", "Metric: cpu",
                                 "Value: 97.3%", "Threshold: > 80.0%",
                                 "State: alarm (was ok)"]
    title, body = alarms.message("hot", "web1", "cpu", "gt", 80.0, OK, 3.0, old=ALARM)
    assert title == "Alarm hot is ok: web1 cpu is 3.0%"
    assert "State: ok (was alarm)" in body
    title, body = alarms.message("mem", "web1", "memory", "ge", 1 << 30, INSUFFICIENT, None)
    assert "no data" in title
    assert "Value: no data" in body and "Threshold: >= 1.0 GiB" in body
    assert body.splitlines()[-1] == "State: insufficient data"
    title, body = alarms.message("busy", "node-1", "load", "gt", 8, ALARM, 12.5, kind="node")
    assert "Node: node-1" in body and "Value: 12.50" in body


def test_a_users_alarm_watches_an_instance_or_a_balancer_and_the_right_one():
    from oarcloud_lib.errors import NotFound
    spec = {"name": "busy", "subject": "front", "kind": "lb", "metric": "rate",
            "threshold": 100}
    with pytest.raises(NotFound, match="balancer not found: front"):
        alarms.create_from_spec(None, "alice", spec, 5, {"instance": {"front"}, "lb": set()})
    with pytest.raises(Refused, match="unknown lb metric 'cpu'"):
        alarms.create_from_spec(None, "alice", dict(spec, metric="cpu"), 5, {"lb": {"front"}})
    with pytest.raises(Refused, match="bad alarm kind 'node'"):
        alarms.create_from_spec(None, "alice", dict(spec, kind="node"), 5, {"node": {"front"}})
    with pytest.raises(Refused, match="bad alarm kind 'lb'"):
        alarms.create_from_spec(None, None, spec, 5, {"lb": {"front"}})
    title, body = alarms.message("busy", "front", "rate", "gt", 100, "alarm", 150.0, kind="lb")
    assert "Balancer: front" in body and "rate is 150" in title
