"""Groups of users on the lab (docs/accounts.md): images and networks shared
with @GROUP reach its members and nobody else, whatever path an outsider
tries; a network shared with others stays its owner's; a group's quota holds
for its members together, at every path and under concurrent launches; bad
input changes nothing."""
import json
import time

from conftest import admin, as_user, run, wait_job
from test_images import tiny_tarball
from test_instances import launch, oarcloud
from test_private_networks import sh
from test_quotas import _jobs, _live, quota, refused, settle, submit_at_once

from oarcloud_lib.catalog import db, joblog


def usergroup(*args, check=False):
    return admin("usergroup", *args, check=check)


def not_found(res, what):
    assert res.returncode == 3 and "%s not found" % what in res.stderr, res.stdout + res.stderr


def test_images_and_networks_shared_with_a_group_reach_its_members_only(make_user):
    alice, bob, carol = make_user(), make_user(), make_user()
    group = "g" + alice
    usergroup("create", group, alice, bob, check=True)
    image = "img-" + alice
    oarcloud(alice, "image", "import", tiny_tarball(alice), "--name", image, check=True)
    oarcloud(alice, "net", "create", "shr", "--cidr", "10.77.0.0/24", check=True)
    for what in ("image", "net"):
        out = json.loads(oarcloud(alice, what, "share", image if what == "image" else "shr",
                                  "@" + group, "--json", check=True).stdout)
        assert out["changed"] and out["shared_with"] == "@" + group
    ref = "%s/shr" % alice
    # Members see them; an outsider sees nothing and gets "not found" at every path.
    assert image in [i["name"] for i in json.loads(
        oarcloud(bob, "image", "list", "--json", check=True).stdout)]
    assert ref in [n["name"] for n in json.loads(
        oarcloud(bob, "net", "list", "--json", check=True).stdout)]
    assert image not in oarcloud(carol, "image", "list", "--json", check=True).stdout
    assert json.loads(oarcloud(carol, "net", "list", "--json", check=True).stdout) == []
    not_found(oarcloud(carol, "net", "show", ref), "network")
    not_found(oarcloud(carol, "launch", "--walltime", "0:05", "--network", ref), "network")
    not_found(oarcloud(carol, "launch", "--walltime", "0:05", "--image", image), "image")
    res = as_user(carol, ["oarsub", "-t", "cloud", "-t", "cloud.network=" + ref,
                          "-l", "nodes=1,walltime=0:05:00", "sleep 60"])
    assert res.returncode != 0 and "network not found: %s" % ref in res.stdout + res.stderr
    assert _jobs(carol) == {}
    # A member attaches an instance of the shared image to the shared network.
    (a,) = launch(alice, "--name", "a", "--network", "shr", "--cores", "1")
    (b,) = launch(bob, "--name", "b", "--network", ref, "--image", image, "--cores", "1")
    assert a["ip"].startswith("10.77.0.") and b["ip"].startswith("10.77.0.")
    assert sh(bob, "b", "ping -c 2 -W 2 %s" % a["ip"]).returncode == 0
    # The network stays alice's: bob may not change it, publish on it or see her instances.
    rules_before = oarcloud(alice, "net", "rule", "list", "shr", "--json", check=True).stdout
    for args in (["net", "rule", "add", ref, "--direction", "ingress", "--proto", "any"],
                 ["net", "delete", ref], ["net", "share", ref, carol], ["net", "vpn", ref],
                 ["net", "expose", "b", "80"]):
        res = oarcloud(bob, *args)
        assert res.returncode != 0, (args, res.stdout)
    assert "shared with you: publish ports from a network of your own" in res.stderr
    assert oarcloud(alice, "net", "rule", "list", "shr", "--json", check=True).stdout \
        == rules_before
    seen = json.loads(oarcloud(bob, "net", "show", ref, "--json", check=True).stdout)
    assert [m["ip"] for m in seen["members"]] == [b["ip"]] and seen["owner"] == alice
    mine = json.loads(oarcloud(alice, "net", "show", "shr", "--json", check=True).stdout)
    assert mine["shared_with"] == ["@" + group] and len(mine["members"]) == 2
    # Deleting alice would cut bob's instance off: refused with the reason, nothing changed.
    res = admin("user", "delete", alice)
    assert res.returncode == 4 and "instances of %s are on its network shr" % bob in res.stderr
    assert alice in admin("user", "list", check=True).stdout and _live(alice)
    # Unshared: new attachments are refused, what runs keeps its address.
    oarcloud(alice, "net", "share", "shr", "@" + group, "--off", check=True)
    not_found(oarcloud(bob, "launch", "--walltime", "0:05", "--network", ref), "network")
    assert sh(bob, "b", "ping -c 1 -W 2 %s" % a["ip"]).returncode == 0
    oarcloud(alice, "image", "share", image, "@" + group, "--off", check=True)
    assert image not in oarcloud(bob, "image", "list", "--json", check=True).stdout
    for user, name in ((bob, "b"), (alice, "a")):
        oarcloud(user, "delete", name, "--wait", check=True)
    usergroup("delete", group, check=True)


def test_a_group_quota_holds_for_its_members_together(make_user):
    alice, bob = make_user(), make_user()
    group = "q" + alice
    usergroup("create", group, alice, bob, check=True)
    quota("set", "@" + group, "--instances", "1", check=True)
    # Concurrent submissions of two members at a limit of one: exactly one runs.
    ids = submit_at_once([alice, bob])
    assert len(ids) == 2
    ended = settle(ids, 1)
    assert len(ended) == 1, ended
    assert len(_live(alice)) + len(_live(bob)) == 1
    # Then every path refuses either member, with the group's figures.
    for user in (alice, bob):
        refused(oarcloud(user, "launch", "--walltime", "0:05", "--cores", "1"),
                "instances", 1, "1 by group @%s together" % group)
    lines = [r for r in json.loads(oarcloud(bob, "quota", "--json", check=True).stdout)
             if r["source"] == "@" + group]
    assert [(r["resource"], r["used"], r["limit"]) for r in lines] == [("instances", 1, 1)]
    shown = {r["resource"]: r for r in json.loads(
        quota("show", "@" + group, "--json", check=True).stdout)}
    assert (shown["instances"]["used"], shown["instances"]["limit"]) == (1, 1)
    assert "@" + group in quota("list", check=True).stdout
    # Out of the group, bob's own limits alone hold.
    usergroup("remove", group, bob, check=True)
    assert not [r for r in json.loads(oarcloud(bob, "quota", "--json", check=True).stdout)
                if r["source"] == "@" + group]
    run(["runuser", "-u", "oar", "--", "oardel", *ids])
    usergroup("delete", group, check=True)
    assert "@" + group not in quota("list", check=True).stdout


def test_bad_group_input_is_refused_and_changes_nothing(make_user):
    alice = make_user()
    group = "b" + alice
    created = json.loads(usergroup("create", group, alice, "--json", check=True).stdout)
    assert created["created"] and created["members"] == [alice]
    again = json.loads(usergroup("create", group, alice, "--json", check=True).stdout)
    assert again["created"] is False and again["added"] == []          # idempotent
    before = usergroup("list", "--json", check=True).stdout
    for args, code, message in [
            (("create", "Bad;Name"), 2, "bad group name"),
            (("create", "@" + group + "x", "nosuch" + alice), 3, "oarcloud user not found"),
            (("create", alice), 4, "is a user's name"),
            (("add", "nosuch" + group, alice), 3, "group of users not found"),
            (("add", group, "nosuch" + alice), 3, "oarcloud user not found"),
            (("show", "nosuch" + group), 3, "group of users not found")]:
        res = usergroup(*args)
        assert res.returncode == code and message in res.stderr, (args, res.stderr)
    assert usergroup("list", "--json", check=True).stdout == before
    res = quota("set", "@nosuch" + group, "--cores", "1")
    assert res.returncode == 3 and "group of users not found" in res.stderr
    oarcloud(alice, "net", "create", "n1", "--cidr", "10.78.0.0/24", check=True)
    for args in (["net", "share", "n1", "@nosuch" + group], ["net", "share", "n1", "@B!"],
                 ["launch", "--walltime", "0:05", "--network", "Bad/n1"]):
        res = oarcloud(alice, *args)
        assert res.returncode in (2, 3), (args, res.stderr)
    assert json.loads(oarcloud(alice, "net", "show", "n1", "--json", check=True).stdout)[
        "shared_with"] == []
    assert _jobs(alice) == {}
    assert json.loads(usergroup("delete", group, "--json", check=True).stdout)["deleted"]


def _reservation(user, start, node):
    """A plain cloud reservation of user's on node at start ('YYYY-MM-DD HH:MM:SS')."""
    res = as_user(user, ["oarsub", "-t", "cloud", "-t", "cloud.cores=1", "-r", start,
                         "-p", "network_address='%s'" % node, "-l", "nodes=1,walltime=0:05:00"])
    ids = [l.split("=")[1] for l in res.stdout.splitlines() if l.startswith("OAR_JOB_ID=")]
    assert res.returncode == 0 and ids, res.stdout + res.stderr
    return ids[0]


def test_a_node_set_is_kept_for_those_granted_it_at_admission_and_in_the_prologue(make_user):
    alice, bob = make_user(), make_user()
    group = "n" + alice
    usergroup("create", group, alice, check=True)
    run(["oarproperty", "-a", "ocset", "-c"], check=True)
    try:
        run(["oarnodesetting", "-h", "node-2", "-p", "ocset=kept"], check=True)
        # A reservation of bob's on node-2, admitted before the set exists.
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 25))
        early = _reservation(bob, start, "node-2")
        res = admin("nodeset", "create", "kept", "--property", "ocset=kept", "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["created"], res.stderr
        assert admin("nodeset", "grant", "kept", "@" + group, "--json",
                     check=True).returncode == 0
        # Admission: bob's jobs are kept off node-2, alice's (through her group) are not.
        res = oarcloud(bob, "launch", "--walltime", "0:05", "--property",
                       "network_address='node-2'")
        assert res.returncode != 0 and "not enough resources" in res.stderr.lower(), res.stderr
        assert _jobs(bob).keys() == {early}
        (row,) = launch(alice, "--name", "k", "--property", "network_address='node-2'",
                        "--cores", "1")
        assert row["node"] == "node-2"
        # The prologue: bob's reservation reaches node-2 and is refused there, nothing made.
        state = wait_job(early, states=("Terminated", "Error"), timeout=120)["state"]
        assert state in ("Terminated", "Error")
        assert _live(bob) == []
        with db.connect() as conn:
            said = " ".join(e["message"] for e in joblog.events(conn, int(early)))
        assert "node-2: node set kept is kept for other users" in said, said
        listed = json.loads(admin("nodeset", "list", "--json", check=True).stdout)
        assert {"name": "kept", "property": "ocset", "value": "kept",
                "granted": ["@" + group]}.items() <= next(
            s for s in listed if s["name"] == "kept").items()
        # Bad input changes nothing.
        for args, message in [(("create", "x", "--property", "nosuchprop=1"), "no property"),
                              (("create", "Bad!", "--property", "ocset=a"), "bad node set"),
                              (("create", "other", "--property", "ocset=kept"), "already"),
                              (("grant", "nosuch", alice), "node set not found"),
                              (("grant", "kept", "@nosuch" + group), "not found")]:
            res = admin("nodeset", *args)
            assert res.returncode != 0 and message in res.stderr, (args, res.stderr)
        assert json.loads(admin("nodeset", "list", "--json", check=True).stdout) == listed
        oarcloud(alice, "delete", "k", "--wait", check=True)
    finally:
        admin("nodeset", "delete", "kept")
        usergroup("delete", group)
        run(["oarproperty", "-d", "ocset"])
