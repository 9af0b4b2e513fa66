"""Scaling groups, their pure logic: the settings checked before anything is
written, target tracking's recommendation, scale-in stabilization and the
deletion policy (the real thing: tests/integration/test_groups.py)."""
import datetime
import time

import pytest

from oarcloud_lib.catalog import groups
from oarcloud_lib.errors import Refused


@pytest.mark.parametrize("spec, says", [
    ({"min_size": 3, "max_size": 2}, "--min 3 is above --max 2"),
    ({"min_size": 0}, "needs --max"),
    ({"max_size": 0, "min_size": 0}, "--max must be at least 1"),
    ({"max_size": 4, "desired": 5}, "outside --min 1 and --max 4"),
    ({"max_size": 101}, "from 0 to 100"),
    ({"max_size": 2, "min_size": -1}, "from 0 to 100"),
    ({"max_size": 2, "period": 0}, "--period must be more than 0"),
    ({"max_size": 2, "window_in": -5}, "--window-in must be more than 0"),
    ({"max_size": 2, "cooldown_in": -1}, "--cooldown-in must be 0 or more"),
    ({"max_size": 2, "deletion": "random"}, "bad --deletion"),
    ({"max_size": 2, "target_metric": "cpu"}, "needs both a metric and a value"),
    ({"max_size": 2, "target_metric": "bogus", "target_value": 3.0}, "unknown instance metric"),
    ({"max_size": 2, "networks": ["../x"]}, "bad network name"),
    ({"max_size": 2, "cores": 0}, "--cores"),
    ({"max_size": 2, "cores": 2, "vertical_cores": 1}, "--vertical-cores must be from"),
    ({"max_size": 2, "replace_before": -1}, "--replace-before must be 0 or more"),
])
def test_bad_settings_are_refused(spec, says):
    with pytest.raises(Refused, match=says.replace("(", r"\(").replace(")", r"\)")):
        groups.check_spec(spec)


def test_good_settings_get_their_defaults():
    s = groups.check_spec({"min_size": 2, "max_size": 5})
    assert (s["desired"], s["cores"], s["deletion"], s["cooldown_in"]) == (2, 1, "oldest", 300)
    assert groups.check_spec({"min_size": 0, "max_size": 1})["desired"] == 0


@pytest.mark.parametrize("text, says", [
    ("cpu", "METRIC=VALUE"), ("cpu=0", "above 0"), ("cpu=-3", "above 0"), ("cpu=x", "above 0"),
    ("cpu=nan", "above 0"), ("temperature=3", "unknown instance metric"),
])
def test_bad_targets_are_refused(text, says):
    with pytest.raises(Refused, match=says):
        groups.parse_target(text)


def test_group_names_leave_room_for_their_members():
    assert groups.check_name("web") == "web"
    for bad in ("Web", "a" * 27, "-x", "", None, "a/b"):
        with pytest.raises(Refused, match="bad group name"):
            groups.check_name(bad)


@pytest.mark.parametrize("current, values, want", [
    (1, [100.0], 2),              # one member at 100 % against 50: two
    (2, [90.0, 90.0], 3),         # ceil(2 * 90 / 60) = 3
    (2, [62.0, 58.0], 2),         # within the 10 % tolerance: unchanged
    (4, [10.0, 10.0, 10.0, 10.0], 1),
    (3, [0.0, 0.0, 0.0], 1),      # the minimum
    (2, [500.0, 500.0], 5),       # the maximum
    (2, [None, 90.0], 3),         # a member without samples yet is left out of the mean
])
def test_target_tracking_recommends_within_bounds(current, values, want):
    target = 50.0 if current == 1 else 60.0
    assert groups.recommend(current, values, target, 1, 5) == want


def test_no_data_no_recommendation():
    assert groups.recommend(0, [], 60.0, 1, 5) is None
    assert groups.recommend(2, [None, None], 60.0, 1, 5) is None


def test_scale_in_waits_for_the_whole_window_to_agree():
    recent = [(100.0, 4), (130.0, 2), (160.0, 2)]
    assert groups.stabilized(recent, 170.0, 300) == 4   # a higher one in the window
    assert groups.stabilized(recent, 420.0, 300) == 2   # it left the window
    assert groups.stabilized(recent, 1000.0, 300) is None


def test_deletion_policy_picks_oldest_or_newest():
    t = datetime.datetime(2026, 12, 7, tzinfo=datetime.timezone.utc)
    members = [{"name": "w-%d" % i, "added": t + datetime.timedelta(seconds=i)}
               for i in (2, 0, 1)]
    assert [m["name"] for m in groups.victims(members, 2, "oldest")] == ["w-0", "w-1"]
    assert [m["name"] for m in groups.victims(members, 1, "newest")] == ["w-2"]
    assert groups.victims(members, 0, "oldest") == []


@pytest.mark.parametrize("text", ["", "* * * *", "61 8 * * *", "0 25 * * *", "bogus",
                                  "0 8 * * 1-5 2027", "@reboot", "0 8 * * 1-5; rm -rf /"])
def test_bad_cron_expressions_are_refused(text):
    with pytest.raises(Refused, match="bad --cron"):
        groups.check_cron(text)


def test_cron_expressions_are_kept_in_their_five_fields():
    assert groups.check_cron(" 0  8 * * 1-5 ") == "0 8 * * 1-5"


def test_a_schedule_stays_within_its_bounds():
    group = {"min_size": 1, "max_size": 4}
    assert groups.check_schedule({"desired": 3}, group) == {"desired": 3}
    for s, says in (({}, "sets --desired, --min or --max"),
                    ({"desired": 5}, "outside --min 1 and --max 4"),
                    ({"min_size": 5}, "--min 5 above --max 4"),
                    ({"desired": 6, "max_size": 8, "min_size": 7}, "outside --min 7 and --max 8"),
                    ({"desired": -1}, "from 0 to 100")):
        with pytest.raises(Refused, match=says):
            groups.check_schedule(s, group)


def test_a_cron_schedule_fires_once_per_time_and_a_one_shot_once(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")   # cron reads the server's local time
    time.tzset()
    utc = datetime.timezone.utc
    made = datetime.datetime(2026, 12, 7, 7, 0, tzinfo=utc)
    cron = {"cron": "0 8 * * 1-5", "at": None, "last_run": None, "created": made}
    monday_8 = datetime.datetime(2026, 12, 7, 8, 0, tzinfo=utc)
    assert groups.fired(cron, monday_8.replace(minute=0, second=30)) == monday_8
    assert groups.fired(dict(cron, last_run=monday_8), monday_8.replace(hour=9)) is None
    assert groups.fired(cron, made.replace(minute=30)) is None   # not yet 08:00
    saturday = datetime.datetime(2026, 12, 12, 9, 0, tzinfo=utc)
    assert groups.fired(dict(cron, last_run=datetime.datetime(2026, 12, 11, 8, 0, tzinfo=utc)),
                        saturday) is None                        # weekdays only
    once = {"cron": None, "at": monday_8, "last_run": None, "created": made}
    assert groups.fired(once, made) is None
    assert groups.fired(once, monday_8) == monday_8
    assert groups.fired(dict(once, last_run=monday_8), saturday) is None


def test_a_target_on_the_balancer_is_shared_by_the_members_or_not():
    assert groups.parse_target("lb.rate=50") == ("lb.rate", 50.0)
    assert groups.parse_target("lb.latency=200") == ("lb.latency", 200.0)
    for bad in ("lb.up=1", "lb.cpu=3", "lb.=1", "lbrate=3"):
        with pytest.raises(Refused):
            groups.parse_target(bad)
    assert groups.target_values("lb.rate", 120.0, 3) == [40.0, 40.0, 40.0]
    assert groups.target_values("lb.latency", 80.0, 2) == [80.0, 80.0]
    assert groups.target_values("lb.errors", None, 2) == [None, None]
    # 120 requests a second over 3 members at 50 each: 3 members want to be 3.
    assert groups.recommend(3, groups.target_values("lb.rate", 120.0, 3), 50, 1, 5) == 3
    assert groups.recommend(2, groups.target_values("lb.rate", 240.0, 2), 50, 1, 5) == 5


def test_victims_spare_protected_members_and_old_image_goes_first():
    t = datetime.datetime(2026, 1, 1)
    ms = [{"name": "w-0", "added": t, "image": "v1", "protected": True},
          {"name": "w-1", "added": t + datetime.timedelta(1), "image": "v2", "protected": False},
          {"name": "w-2", "added": t + datetime.timedelta(2), "image": "v1", "protected": False},
          {"name": "w-3", "added": t + datetime.timedelta(3), "image": "v2", "protected": False}]
    names = lambda out: [m["name"] for m in out]
    assert names(groups.victims(ms, 2, "oldest")) == ["w-1", "w-2"]
    assert names(groups.victims(ms, 1, "newest")) == ["w-3"]
    assert names(groups.victims(ms, 2, "old-image", "v2")) == ["w-2", "w-1"]
    assert names(groups.victims(ms, 9, "oldest")) == ["w-1", "w-2", "w-3"]
    assert names(groups.outdated(ms, "v2")) == ["w-2"]
    assert names(groups.outdated(ms + [{"name": "w-4", "image": None}], "v1")) == ["w-1", "w-3"]


def test_step_rules_are_checked():
    rule = groups.check_rule({"metric": "cpu", "agg": "max", "op": "gt", "threshold": "80",
                              "change": "+2"})
    assert rule == {"metric": "cpu", "agg": "max", "op": "gt", "threshold": 80.0, "periods": 1,
                    "change": 2}
    assert groups.check_rule({"metric": "lb.rate", "op": "lt", "threshold": 5,
                              "change": "-1", "periods": "3"})["agg"] == "avg"
    for bad, why in [({"metric": "cpux", "op": "gt", "threshold": 1, "change": "+1"}, "metric"),
                     ({"metric": "cpu", "agg": "sum", "op": "gt", "threshold": 1,
                       "change": "+1"}, "--agg"),
                     ({"metric": "cpu", "op": "eq", "threshold": 1, "change": "+1"}, "--op"),
                     ({"metric": "cpu", "op": "gt", "threshold": "x", "change": "+1"},
                      "threshold"),
                     ({"metric": "cpu", "op": "gt", "threshold": 1, "change": "2"}, "--change"),
                     ({"metric": "cpu", "op": "gt", "threshold": 1, "change": "+0"}, "--change"),
                     ({"metric": "cpu", "op": "gt", "threshold": 1, "change": "+1",
                       "periods": 0}, "--periods"), ("x", "a rule needs")]:
        with pytest.raises(Refused, match=why):
            groups.check_rule(bad)


def test_a_rule_aggregates_the_members_and_every_period_must_breach():
    rule = {"metric": "cpu", "agg": "avg", "op": "gt", "threshold": 50, "periods": 2,
            "change": 1}
    series = [[60, 90], [50, 40]]              # two members, two periods
    assert groups.rule_breached(rule, series)                  # 55, 65
    assert not groups.rule_breached(dict(rule, agg="min"), series)
    assert groups.rule_breached(dict(rule, agg="max"), series)
    assert groups.rule_breached(dict(rule, agg="any"), series)  # the first, both periods
    assert not groups.rule_breached(dict(rule, agg="all"), series)
    assert not groups.rule_breached(rule, [[None, 90], [None, 90]])   # a period without data
    assert groups.rule_breached(rule, [[None, 90], [60, 90]])        # a member without: left out
    assert not groups.rule_breached(rule, [])


def test_the_largest_increase_wins_else_the_smallest_decrease_within_bounds():
    up2, up1, down1, down3 = ({"change": c} for c in (2, 1, -1, -3))
    assert groups.stepped([up1, up2, down1], 3, 1, 10) == ("scale-out", 5)
    assert groups.stepped([up2], 9, 1, 10) == ("scale-out", 10)
    assert groups.stepped([up2], 10, 1, 10) is None
    assert groups.stepped([down1, down3], 3, 1, 10) == ("scale-in", 2)
    assert groups.stepped([down3], 3, 1, 10) == ("scale-in", 1)
    assert groups.stepped([down1], 1, 1, 10) is None
    assert groups.stepped([], 3, 1, 10) is None
