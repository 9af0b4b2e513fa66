"""Scaling groups, their pure logic: the settings checked before anything is
written, target tracking's recommendation, scale-in stabilization and the
deletion policy (the real thing: tests/integration/test_groups.py)."""
import datetime

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
