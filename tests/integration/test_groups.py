"""Scaling groups on the lab (docs/groups.md): the monitor keeps a group at its
desired size, which CPU load moves up and its end moves down again, within
the cooldowns and the scale-in window; a member that ends is replaced; a
group of own jobs has each member in an OAR job; another user's group is not
found; bad settings create nothing; create/scale/delete cycles leave
nothing behind."""
import json
import subprocess
import time

import pytest

from conftest import admin, wait_job
from test_instances import node_leftovers, oarcloud
from test_monitoring import BURN, wait_for
from webhook import Webhook


def group(user, *args, check=True):
    res = oarcloud(user, "group", *args, check=check)
    return json.loads(res.stdout) if check and "--json" in args else res


def shown(user, name):
    return group(user, "show", name, "--json")


def running(g):
    return sorted(m["name"] for m in g["members"] if m["state"] == "running")


def alloc(user, name, cores=2, nodes=2):
    made = json.loads(oarcloud(user, "alloc", "create", name, "--nodes", str(nodes), "--cores",
                               str(cores), "--walltime", "0:20", "--wait", "--json",
                               check=True).stdout)
    return made["job_id"]


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.stop()


def test_cpu_load_scales_a_group_out_to_its_max_and_back_in_within_its_cooldowns(
        make_user, webhook):
    user = make_user()
    oarcloud(user, "notify", "add", webhook.url("g"), check=True)
    job_id = alloc(user, "pool")
    made = group(user, "create", "web", "--in", "pool", "--min", "1", "--max", "3",
                 "--target", "cpu=40", "--period", "10s", "--cooldown-out", "10s",
                 "--cooldown-in", "20s", "--window-in", "20s", "--json")
    assert (made["min_size"], made["max_size"], made["desired"]) == (1, 3, 1)
    first = wait_for(lambda: running(shown(user, "web")), 30, "the first member")
    assert first == ["web-0"]
    burn = subprocess.Popen(["runuser", "-u", user, "--", "/usr/local/bin/oarcloud", "exec",
                             "web-0", "--", "sh", "-c", BURN % 45], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    try:
        # web-0 near 100 % against 40: the group grows to its max.
        g = wait_for(lambda: (lambda g: len(running(g)) == 3 and g)(shown(user, "web")), 90,
                     "three members under load")
        assert g["desired"] == 3
    finally:
        burn.wait(timeout=90)
    # The load is gone: back to the minimum, oldest first.
    g = wait_for(lambda: (lambda g: g["desired"] == 1 and len(g["members"]) == 1 and g)(
        shown(user, "web")), 120, "one member again")
    assert len(running(g)) == 1 and running(g) != ["web-0"], g   # the oldest went first
    history = g["history"]
    outs = [h for h in history if h["action"] == "scale-out"]
    ins = [h for h in history if h["action"] == "scale-in"]
    assert outs and ins, history
    assert all("cpu" in h["reason"] and "target 40" in h["reason"] for h in outs + ins)
    stamps = [time.mktime(time.strptime(h["at"][:19], "%Y-%m-%dT%H:%M:%S")) for h in outs]
    # (times to the second: a second's slack)
    assert all(b - a >= 9 for a, b in zip(stamps, stamps[1:])), outs    # cooldown out
    first_in = time.mktime(time.strptime(ins[0]["at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert first_in - stamps[-1] >= 19, history                         # cooldown in, window
    # Every step reached the owner's notifications.
    titles = wait_for(lambda: [t for t in webhook.titles("g") if t.startswith("Group web:")],
                      30, "the group's notifications")
    assert any("scale-out" in t for t in titles) and any("scale-in" in t for t in titles)
    # Its members are instances of the allocation, within what it holds.
    shown_alloc = json.loads(oarcloud(user, "alloc", "show", "pool", "--json",
                                      check=True).stdout)
    assert shown_alloc["used"] == 1 and shown_alloc["cores"] == 4
    group(user, "delete", "web")
    assert group(user, "list", "--json") == []
    oarcloud(user, "alloc", "delete", "pool", check=True)
    wait_job(job_id)
    assert node_leftovers("oc%d-" % job_id) == {}


def test_a_member_that_ends_is_replaced_and_the_group_keeps_its_size(make_user):
    user = make_user()
    job_id = alloc(user, "pool", cores=1)
    group(user, "create", "api", "--in", "pool", "--min", "2", "--max", "2")
    wait_for(lambda: len(running(shown(user, "api"))) == 2, 30, "two members")
    oarcloud(user, "delete", "api-0", check=True)
    g = wait_for(lambda: (lambda g: running(g) == ["api-1", "api-2"] and g)(
        shown(user, "api")), 30, "api-0 replaced by api-2")
    assert any(h["action"] == "replace" and "api-0" in h["reason"] for h in g["history"])
    # A desired size the allocation cannot hold: said once, nothing half made.
    res = group(user, "set", "api", "--max", "3", "--desired", "3", check=False)
    assert res.returncode == 2 and "allocation pool holds 2" in res.stderr, res.stderr
    group(user, "delete", "api")
    oarcloud(user, "alloc", "delete", "pool", check=True)
    wait_job(job_id)
    assert node_leftovers("oc%d-" % job_id) == {}


def test_members_of_own_jobs_each_get_an_oar_job_and_go_with_the_group(make_user):
    user = make_user()
    group(user, "create", "solo", "--min", "1", "--max", "2", "--walltime", "0:10")
    g = wait_for(lambda: (lambda g: running(g) == ["solo-0"] and g)(shown(user, "solo")), 90,
                 "a member in its own job")
    job_id = g["members"][0]["job_id"]
    group(user, "set", "solo", "--desired", "2")
    g = wait_for(lambda: (lambda g: len(running(g)) == 2 and g)(shown(user, "solo")), 90,
                 "a second member in its own job")
    assert len({m["job_id"] for m in g["members"]}) == 2
    gone = group(user, "delete", "solo", "--json")
    assert sorted(gone["members"]) == ["solo-0", "solo-1"]
    for m in g["members"]:
        wait_job(m["job_id"])
    assert node_leftovers("oc%d-" % job_id) == {}


def test_another_user_s_group_is_not_found_and_bad_settings_create_nothing(make_user):
    alice, bob = make_user(), make_user()
    alloc(alice, "small", cores=1, nodes=1)
    group(alice, "create", "mine", "--in", "small", "--min", "0", "--max", "1")
    for args in (["show", "mine"], ["set", "mine", "--max", "1"], ["delete", "mine"]):
        res = group(bob, *args, check=False)
        assert res.returncode != 0 and "group not found" in res.stderr, (args, res.stderr)
    assert len(group(alice, "list", "--json")) == 1
    oarcloud(bob, "alloc", "create", "tiny", "--cores", "1", "--walltime", "0:05", "--wait",
             check=True)
    admin("quota", "set", bob, "--instances", "4", check=True)
    for args, says in (
            (["--min", "3", "--max", "2"], "--min 3 is above --max 2"),
            (["--max", "5", "--in", "tiny"], "allocation tiny holds 1"),
            (["--max", "2", "--in", "small"], "allocation not found"),   # alice's
            (["--max", "2", "--target", "heat=3"], "unknown instance metric"),
            (["--max", "2", "--target", "cpu=0"], "above 0"),
            (["--max", "2", "--window-in", "0s"], "--window-in"),
            (["--max", "2", "--period=-5s"], "--period"),
            (["--max", "2", "--deletion", "random"], "--deletion"),
            (["--max", "2", "--image", "nosuch"], "not found"),
            (["--max", "2", "--network", "nosuch"], "not found"),
            (["--min", "x", "--max", "2"], "--min must be a whole number"),
            (["--max", "9"], "your quota is"),
    ):
        res = group(bob, "create", "bad", *args, check=False)
        assert res.returncode != 0 and says in res.stderr, (args, res.stderr)
    res = group(bob, "create", "Bad", "--max", "1", check=False)
    assert res.returncode == 2 and "bad group name" in res.stderr
    assert group(bob, "list", "--json") == []
    group(bob, "create", "one", "--in", "tiny", "--min", "0", "--max", "1")
    res = group(bob, "create", "one", "--in", "tiny", "--min", "0", "--max", "1", check=False)
    assert res.returncode == 2 and "already have a group named one" in res.stderr
    group(bob, "delete", "one")
    group(alice, "delete", "mine")


def test_twenty_create_scale_delete_cycles_leave_nothing_behind(make_user):
    user = make_user()
    job_id = alloc(user, "pool")
    started = time.monotonic()
    for i in range(20):
        name = "c%d" % i
        group(user, "create", name, "--in", "pool", "--min", "1", "--max", "2")
        wait_for(lambda: len(running(shown(user, name))) == 1, 30, "%s's member" % name)
        group(user, "set", name, "--desired", "2")
        wait_for(lambda: len(running(shown(user, name))) == 2, 30, "%s at 2" % name)
        group(user, "delete", name)
    print("20 cycles in %.1f s" % (time.monotonic() - started))
    assert group(user, "list", "--json") == []
    live = [r for r in json.loads(oarcloud(user, "list", "--json", check=True).stdout)
            if r["state"] not in ("deleted", "failed")]
    assert live == []
    assert json.loads(oarcloud(user, "alloc", "show", "pool", "--json", check=True).stdout
                      )["used"] == 0
    oarcloud(user, "alloc", "delete", "pool", check=True)
    wait_job(job_id)
    assert node_leftovers("oc%d-" % job_id) == {}


def test_a_one_shot_schedule_sizes_the_group_and_bad_schedules_are_refused(make_user):
    user, other = make_user(), make_user()
    job_id = alloc(user, "pool", cores=1)
    group(user, "create", "sched", "--in", "pool", "--min", "0", "--max", "2", "--desired", "0")
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 4))
    made = group(user, "schedule", "sched", "--at", at, "--desired", "2", "--json")
    assert made["desired"] == 2 and made["cron"] is None
    g = wait_for(lambda: (lambda g: len(running(g)) == 2 and g)(shown(user, "sched")), 40,
                 "the scheduled size")
    assert g["schedules"][0]["last_run"] and \
        [h for h in g["history"] if h["action"] == "scheduled" and h["after"] == 2]
    weekly = group(user, "schedule", "sched", "--cron", "0 8 * * 1-5", "--desired", "1",
                   "--json")
    for args, says in ((["--cron", "61 * * * *", "--desired", "1"], "bad --cron"),
                       (["--cron", "0 8 * * *", "--at", at, "--desired", "1"], "--at"),
                       (["--desired", "1"], "takes --cron or --at"),
                       (["--cron", "0 8 * * *"], "sets --desired, --min or --max"),
                       (["--cron", "0 8 * * *", "--desired", "5"], "outside --min 0"),
                       (["--cron", "0 8 * * *", "--max", "5"], "allocation pool holds 2"),
                       (["--at", "2001-01-01 10:00", "--desired", "1"], "not in the coming")):
        res = group(user, "schedule", "sched", *args, check=False)
        assert res.returncode != 0 and says in res.stderr, (args, res.stderr)
    res = group(other, "schedule", "sched", "--cron", "0 8 * * *", "--desired", "1",
                check=False)
    assert res.returncode != 0 and "group not found" in res.stderr
    res = group(other, "unschedule", "sched", str(weekly["id"]), check=False)
    assert res.returncode != 0 and "group not found" in res.stderr
    assert len(shown(user, "sched")["schedules"]) == 2
    group(user, "unschedule", "sched", str(weekly["id"]))
    res = group(user, "unschedule", "sched", str(weekly["id"]), check=False)
    assert res.returncode != 0 and "schedule not found" in res.stderr
    group(user, "delete", "sched")
    oarcloud(user, "alloc", "delete", "pool", check=True)
    wait_job(job_id)


def test_vertical_first_grows_a_member_before_adding_one(make_user):
    user = make_user()
    job_id = alloc(user, "pool")
    group(user, "create", "vert", "--in", "pool", "--min", "1", "--max", "2", "--cores", "1",
          "--vertical-cores", "2", "--target", "cpu=60", "--period", "10s", "--cooldown-out",
          "20s", "--cooldown-in", "15s", "--window-in", "15s")
    (member,) = wait_for(lambda: running(shown(user, "vert")), 30, "the member")
    burn = subprocess.Popen(["runuser", "-u", user, "--", "/usr/local/bin/oarcloud", "exec",
                             member, "--", "sh", "-c", BURN % 40], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    try:
        # one busy core against 60 %: 1.7 cores needed, the member grows to 2
        g = wait_for(lambda: (lambda g: [h for h in g["history"] if h["action"] == "scale-up"]
                              and g)(shown(user, "vert")), 60, "the member grown")
    finally:
        burn.wait(timeout=90)
    up_row = next(h for h in g["history"] if h["action"] == "scale-up")
    assert "%s 1 -> 2 cores" % member in up_row["reason"], up_row
    assert [m["cores"] for m in g["members"]] == [2] and g["desired"] == 1
    nproc = oarcloud(user, "exec", member, "--", "nproc", check=True).stdout.strip()
    assert nproc == "2"
    assert not [h for h in g["history"] if h["action"] == "scale-out"], g["history"]
    # The load is gone: the member gives its core back (it stays: desired is the minimum).
    g = wait_for(lambda: (lambda g: [h for h in g["history"] if h["action"] == "scale-down"]
                          and g)(shown(user, "vert")), 60, "the member shrunk back")
    down = next(h for h in g["history"] if h["action"] == "scale-down")
    assert "%s 2 -> 1 cores" % member in down["reason"], down
    assert [m["name"] for m in g["members"]] == [member] and g["members"][0]["cores"] == 1
    assert oarcloud(user, "exec", member, "--", "nproc", check=True).stdout.strip() == "1"
    res = group(user, "create", "bad", "--in", "pool", "--max", "1", "--cores", "2",
                "--vertical-cores", "1", check=False)
    assert res.returncode == 2 and "--vertical-cores must be from" in res.stderr
    group(user, "delete", "vert")
    oarcloud(user, "alloc", "delete", "pool", check=True)
    wait_job(job_id)


def test_step_rules_on_any_and_all_members_scale_out_and_back_in(make_user):
    """docs/groups.md: a step rule adds members while any member runs more
    than 25 processes, another removes them once all run fewer than 15."""
    user = make_user()
    job_id = alloc(user, "pool")
    group(user, "create", "web", "--in", "pool", "--min", "1", "--max", "3", "--period", "5s",
          "--cooldown-out", "5s", "--cooldown-in", "5s")
    wait_for(lambda: running(shown(user, "web")) == ["web-0"], 30, "the first member")
    out = json.loads(oarcloud(user, "group", "rule", "add", "web", "--metric", "procs", "--agg",
                              "any", "--op", "gt", "--threshold", "25", "--change", "+1",
                              "--json", check=True).stdout)
    assert out["condition"] == "any(procs) > 25 for 1 period(s): +1"
    group(user, "rule", "add", "web", "--metric", "procs", "--agg", "all", "--op", "lt",
          "--threshold", "15", "--change", "-1")
    for args, why in [(("--metric", "nosuch", "--op", "gt", "--threshold", "1", "--change",
                        "+1"), "metric"),
                      (("--metric", "procs", "--op", "gt", "--threshold", "1", "--change",
                        "+0"), "--change")]:
        res = group(user, "rule", "add", "web", *args, check=False)
        assert res.returncode == 2 and why in res.stderr, res.stderr
    assert len(shown(user, "web")["rules"]) == 2
    many = subprocess.Popen(["runuser", "-u", user, "--", "/usr/local/bin/oarcloud", "exec",
                             "web-0", "--", "sh", "-c",
                             "for i in $(seq 40); do sleep 90 & done; wait"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd="/tmp")
    try:
        g = wait_for(lambda: (lambda g: len(running(g)) == 3 and g)(shown(user, "web")), 60,
                     "three members while web-0 runs 40 processes")
    finally:
        oarcloud(user, "exec", "web-0", "--", "sh", "-c", "kill $(pidof sleep)")
        many.wait(timeout=30)
    outs = [h for h in g["history"] if h["action"] == "scale-out"]
    assert len(outs) == 2 and all("any(procs) > 25" in h["reason"] for h in outs), outs
    g = wait_for(lambda: (lambda g: g["desired"] == 1 and len(g["members"]) == 1 and g)(
        shown(user, "web")), 60, "back to one member once all run few processes")
    assert [h for h in g["history"] if h["action"] == "scale-in"
            and "all(procs) < 15" in h["reason"]]
    rule_id = g["rules"][0]["id"]
    group(user, "rule", "delete", "web", str(rule_id))
    assert [r["id"] for r in shown(user, "web")["rules"]] != [rule_id] and \
        len(shown(user, "web")["rules"]) == 1
    group(user, "delete", "web")
    oarcloud(user, "alloc", "delete", "pool", check=True)
    wait_job(job_id)


def test_a_member_near_its_walltime_gets_more_from_oar_instead_of_a_replacement(make_user):
    """docs/groups.md: with --extend-by, a member in its own job asks OAR for
    more walltime (at twice --replace-before from its end); granted, it is
    not replaced when --replace-before comes."""
    user = make_user()
    group(user, "create", "short", "--min", "1", "--max", "1", "--walltime", "0:02",
          "--replace-before", "45s", "--extend-by", "10m")
    first = wait_for(lambda: running(shown(user, "short")), 90, "the first member")[0]
    started = time.monotonic()
    g = wait_for(lambda: (lambda g: [h for h in g["history"] if h["action"] == "extend"]
                          and g)(shown(user, "short")), 60, "more walltime asked of OAR")
    (asked,) = [h for h in g["history"] if h["action"] == "extend"]
    assert first in asked["reason"] and "600 s more walltime asked" in asked["reason"], asked
    # Past the time it would have been replaced (120 s - 45 s), it is still the one.
    time.sleep(max(0, 90 - (time.monotonic() - started)))
    g = shown(user, "short")
    assert [m["name"] for m in g["members"]] == [first], g["members"]
    assert not [h for h in g["history"] if h["action"] == "replace"], g["history"]
    res = group(user, "set", "short", "--extend-by", "10s", check=False)
    assert res.returncode == 2 and "--extend-by must be 1 minute to 7 days" in res.stderr
    group(user, "delete", "short")
