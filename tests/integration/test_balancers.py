"""Load balancers on the lab (docs/balancers.md): a real HAProxy on the server
in front of a scaling group, a real HTTP load tool (h2load, a steady request
rate) through it: no request fails while the group scales out and in; a
member whose server dies is out of the balancer within 3 s, requests go on,
and it is replaced; another user's balancer is not found; bad input creates
nothing; a deleted balancer leaves no HAProxy, published port or rule."""
import json
import re
import subprocess
import time

import pytest

from conftest import admin, run, wait_job
from test_groups import alloc, group, running, shown
from test_images import tiny_tarball
from test_instances import node_leftovers, oarcloud
from test_monitoring import wait_for

SERVE = ("#!/bin/sh\nmkdir -p /www\nhostname > /www/index.html\n"
         "busybox httpd -f -p 8080 -h /www </dev/null >/dev/null 2>&1 &\n"
         "echo $! > /run/httpd.pid\n")


def lb(user, *args, check=True):
    res = oarcloud(user, "lb", *args, check=check)
    return json.loads(res.stdout) if check and "--json" in args else res


def up(user, name):
    return sorted(m["name"] for m in lb(user, "show", name, "--json")["members"]
                  if m["state"] == "up")


def load(url, rate, seconds):
    """h2load at a steady rate over HTTP/1.1 (started; .wait() for its report)."""
    return subprocess.Popen(["h2load", "--h1", "-c", "4", "--rps", str(rate // 4 or 1), "-D",
                             str(seconds), "-T", "5", url], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def front(user, group_name="web", members=2):
    """Balancer `front` (HTTP check of /index.html) on group_name's port 8080,
    once members of it are up; its address."""
    address = lb(user, "create", "front", "--group", group_name, "--port", "8080", "--check",
                 "http:/index.html", "--json")["address"]
    if members:
        wait_for(lambda: len(up(user, "front")) == members, 30, "%d member(s) up" % members)
    return address


def report(proc):
    out = proc.communicate(timeout=120)[0]
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m and codes, out
    total, _, done, ok, failed, errored, timeout = map(int, m.groups())
    return {"total": total, "done": done, "succeeded": ok, "failed": failed,
            "errored": errored, "timeout": timeout, "2xx": int(codes.group(1)),
            "5xx": int(codes.group(4)), "text": out}


def home_script(user, name, text):
    """A user-data script written into user's home, theirs: its path."""
    path = "/home/%s/%s" % (user, name)
    run(["sh", "-c", "umask 022; cat > %s" % path], input=text, check=True)
    run(["chown", user, path], check=True)
    return path


@pytest.fixture
def served(make_user):
    """A user, an allocation, a group of two HTTP members on port 8080."""
    user = make_user()
    script = home_script(user, "serve.sh", SERVE)
    job_id = alloc(user, "pool")
    group(user, "create", "web", "--in", "pool", "--min", "1", "--max", "3", "--desired", "2",
          "--user-data", script)
    wait_for(lambda: len(running(shown(user, "web"))) == 2, 60, "two members")
    oarcloud(user, "net", "rule", "add", "default", "--direction", "ingress", "--proto", "tcp",
             "--port", "8080", check=True)
    yield user, job_id
    oarcloud(user, "lb", "delete", "front")
    oarcloud(user, "group", "delete", "web")
    oarcloud(user, "alloc", "delete", "pool")


def test_a_balancer_follows_its_group_and_loses_no_request_while_it_scales(served):
    user, job_id = served
    made = lb(user, "create", "front", "--group", "web", "--port", "8080", "--check",
              "http:/index.html", "--json")
    address = made["address"]
    assert re.match(r"^198\.19\.0\.1:33\d{3}$", address), made
    wait_for(lambda: len(up(user, "front")) == 2, 30, "two members up")
    url = "http://%s/index.html" % address
    answers = {run(["curl", "-s", "-m", "3", url]).stdout.strip() for _ in range(6)}
    assert len(answers) == 2, answers     # both members answer, in turn
    # Scale out, then in, under a steady 40 requests a second.
    proc = load(url, 40, 40)
    time.sleep(3)
    group(user, "set", "web", "--desired", "3")
    wait_for(lambda: len(up(user, "front")) == 3, 30, "three members up")
    group(user, "set", "web", "--desired", "1")
    wait_for(lambda: len(up(user, "front")) == 1 and len(shown(user, "web")["members"]) == 1,
             40, "one member left")
    got = report(proc)
    print("scale-out and in under load: %(total)d requests, %(succeeded)d succeeded, "
          "%(failed)d failed, %(errored)d errored" % got)
    assert got["total"] > 500 and got["failed"] == got["errored"] == got["timeout"] == 0, \
        got["text"]
    assert got["2xx"] == got["total"]
    shown_lb = lb(user, "show", "front", "--json")
    assert shown_lb["group"] == "web" and shown_lb["running"]
    assert shown_lb["metrics"].get("rate", 0) >= 0 and "latency" in shown_lb["metrics"]
    # Deleting it leaves no HAProxy of it, and the group goes on.
    pid_file = "/run/oarcloud/lb/%d/haproxy.pid"
    lb(user, "delete", "front")
    assert run(["sh", "-c", "ls /run/oarcloud/lb 2>/dev/null"]).stdout.split() == [] or \
        not any(run(["test", "-e", pid_file % int(d)]).returncode == 0
                for d in run(["ls", "/run/oarcloud/lb"]).stdout.split())
    assert run(["curl", "-s", "-m", "3", url]).returncode != 0
    assert len(running(shown(user, "web"))) == 1


def test_the_balancers_request_rate_fires_an_alarm_and_drives_the_groups_target(served):
    """HAProxy's figures as metrics (docs/balancers.md): an alarm on the
    balancer's request rate, and the group's target on it (lb.rate: requests
    a second per member)."""
    user, _ = served
    address = front(user)
    oarcloud(user, "alarm", "create", "busy", "--lb", "front", "--metric", "rate", "--op",
             "gt", "--threshold", "15", "--period", "5s", "--periods", "2", check=True)
    res = oarcloud(user, "alarm", "create", "x", "--lb", "nosuch", "--metric", "rate",
                   "--threshold", "1")
    assert res.returncode == 3 and "balancer not found: nosuch" in res.stderr, res.stderr
    group(user, "set", "web", "--target", "lb.rate=10", "--period", "5s", "--cooldown-out",
          "5s")

    def alarm_state():
        return json.loads(oarcloud(user, "alarm", "show", "busy", "--json",
                                   check=True).stdout)["state"]
    proc = load("http://%s/index.html" % address, 40, 40)
    try:
        wait_for(lambda: alarm_state() == "alarm", 30, "the alarm on 40 requests a second")
        g = wait_for(lambda: (lambda g: len(running(g)) == 3 and g)(shown(user, "web")), 40,
                     "a third member for 40 requests a second at 10 each")
        out = [h for h in g["history"] if h["action"] == "scale-out"][-1]
        assert "lb.rate" in out["reason"] and out["after"] == 3, g["history"]
    finally:
        got = report(proc)
    assert got["failed"] == got["errored"] == got["timeout"] == 0, got["text"]
    wait_for(lambda: alarm_state() == "ok", 60, "the alarm back to ok once the load stops")
    oarcloud(user, "alarm", "delete", "busy", check=True)


def test_a_new_image_renews_members_one_at_a_time_and_protected_ones_stay(served):
    """Rolling replacement (docs/groups.md): under a steady request rate, a new
    image renews the unprotected members one at a time behind the balancer,
    with no failed request; a protected member keeps its image and is not
    scaled in; old-image deletion then removes the old one first."""
    user, _ = served
    image = "t2-" + user
    oarcloud(user, "image", "import", tiny_tarball(user), "--name", image, check=True)
    address = front(user, members=0)
    group(user, "set", "web", "--desired", "3")
    wait_for(lambda: len(up(user, "front")) == 3, 40, "three members up")
    old = shown(user, "web")
    kept = old["members"][0]["name"]
    group(user, "protect", "web", kept, check=True)
    proc = load("http://%s/index.html" % address, 40, 60)
    most = []

    def renewed():
        g = shown(user, "web")
        most.append(len(g["members"]))
        ms = {m["name"]: m for m in g["members"]}
        return (len(ms) == 3 and ms.get(kept, {}).get("image") == old["image"]
                and all(m["image"] == image and m["state"] == "running"
                        for n, m in ms.items() if n != kept)
                and len(up(user, "front")) == 3 and g)
    try:
        time.sleep(2)
        group(user, "set", "web", "--image", image)
        g = wait_for(renewed, 120, "the two unprotected members renewed")
    finally:
        got = report(proc)
    print("rolling image replacement under load: %(total)d requests, %(failed)d failed" % got)
    assert got["failed"] == got["errored"] == got["timeout"] == 0, got["text"]
    assert got["2xx"] == got["total"]
    assert max(most) <= 4, most                      # one at a time: at most one extra
    assert len([h for h in g["history"] if h["action"] == "replace"
                and "on image" in h["reason"]]) == 2, g["history"]
    # Scale-in never takes the protected member, even as the oldest.
    group(user, "set", "web", "--desired", "2", "--deletion", "oldest")
    g = wait_for(lambda: (lambda g: len(g["members"]) == 2 and g)(shown(user, "web")), 40,
                 "two members")
    assert kept in [m["name"] for m in g["members"]]
    # Unprotected, it is the first to go with old-image deletion.
    group(user, "protect", "web", kept, "--off", check=True)
    group(user, "set", "web", "--desired", "1", "--deletion", "old-image")
    g = wait_for(lambda: (lambda g: len(g["members"]) == 1 and g)(shown(user, "web")), 40,
                 "one member")
    assert g["members"][0]["name"] != kept and g["members"][0]["image"] == image
    res = group(user, "protect", "web", "nosuch-9", check=False)
    assert res.returncode == 3 and "not found" in res.stderr


def test_draining_a_node_replaces_its_members_elsewhere_first_and_loses_no_request(served):
    """docs/nodes.md: a drained node's group members are replaced on the
    allocation's other node, behind the balancer, before they go."""
    user, _ = served
    address = front(user)
    members = shown(user, "web")["members"]
    host = members[0]["node"]
    assert {m["node"] for m in members} == {"node-1", "node-2"}, members
    url = "http://%s/index.html" % address
    proc = load(url, 40, 30)
    time.sleep(2)
    admin("node", "drain", host, check=True)
    try:
        wait_for(lambda: all(m["node"] != host for m in shown(user, "web")["members"])
                 and len(shown(user, "web")["members"]) == 2 and len(up(user, "front")) == 2,
                 60, "the drained node's member replaced on the other node")
    finally:
        admin("node", "undrain", host, check=True)
    got = report(proc)
    print("drain under load: %(total)d requests, %(failed)d failed" % got)
    assert got["total"] > 400 and got["failed"] == got["errored"] == got["timeout"] == 0, \
        got["text"]
    assert got["2xx"] == got["total"]
    history = shown(user, "web")["history"]
    assert any("is drained: replaced elsewhere first" in h["reason"] for h in history), history


def test_a_dead_member_is_ejected_within_3_s_requests_go_on_and_it_is_replaced(served):
    user, job_id = served
    address = front(user)
    url = "http://%s/index.html" % address
    victim = running(shown(user, "web"))[0]
    proc = load(url, 40, 20)
    time.sleep(3)
    killed = time.monotonic()
    oarcloud(user, "exec", victim, "--", "sh", "-c", "kill $(cat /run/httpd.pid)", check=True)
    wait_for(lambda: victim not in up(user, "front"), 10, "the dead member out")
    ejected = time.monotonic() - killed
    print("dead member out of the balancer %.2f s after its server was killed" % ejected)
    assert ejected <= 3.5
    got = report(proc)
    print("a member killed under load: %(total)d requests, %(failed)d failed, %(errored)d "
          "errored" % got)
    assert got["failed"] == got["errored"] == got["timeout"] == 0, got["text"]
    # Replaced: a new member, and the balancer has two up again.
    g = wait_for(lambda: (lambda g: victim not in [m["name"] for m in g["members"]]
                          and len(running(g)) == 2 and g)(shown(user, "web")), 60,
                 "the dead member replaced")
    assert any(h["action"] == "replace" and victim in h["reason"] for h in g["history"])
    wait_for(lambda: len(up(user, "front")) == 2, 30, "two members up again")


def test_bad_balancers_and_another_user_s_are_refused_and_change_nothing(served, make_user):
    user, _ = served
    other = make_user()
    for args, says in ((["--group", "web", "--port", "0"], "a port from 1 to 65535"),
                       (["--group", "web", "--port", "70000"], "a port from 1 to 65535"),
                       (["--group", "web", "--port", "x"], "a port from 1 to 65535"),
                       (["--group", "web", "--port", "8080", "--check", "ftp:/"], "bad --check"),
                       (["--group", "web", "--port", "8080", "--check", "http:x"], "bad --check"),
                       (["--group", "web", "--port", "9090"], "no ingress rule"),
                       (["--group", "nosuch", "--port", "8080"], "group not found")):
        res = lb(user, "create", "bad", *args, check=False)
        assert res.returncode != 0 and says in res.stderr, (args, res.stderr)
    res = lb(user, "create", "Bad", "--group", "web", "--port", "8080", check=False)
    assert res.returncode == 2 and "bad balancer name" in res.stderr
    assert lb(user, "list", "--json") == []
    lb(user, "create", "front", "--group", "web", "--port", "8080")
    res = lb(user, "create", "again", "--group", "web", "--port", "8080", check=False)
    assert res.returncode == 2 and "already has balancer front" in res.stderr
    res = group(user, "delete", "web", check=False)
    assert res.returncode == 2 and "lb delete front first" in res.stderr
    for args in (["show", "front"], ["delete", "front"]):
        res = lb(other, *args, check=False)
        assert res.returncode != 0 and "balancer not found" in res.stderr, res.stderr
    res = lb(other, "create", "mine", "--group", "web", "--port", "8080", check=False)
    assert res.returncode != 0 and "group not found" in res.stderr
    assert len(lb(user, "list", "--json")) == 1


def test_a_member_near_its_walltime_is_replaced_first_and_no_request_fails(make_user):
    user = make_user()
    script = home_script(user, "serve.sh", SERVE)
    # Each member in an OAR job of 2 minutes, replaced 100 s before its end.
    group(user, "create", "short", "--min", "1", "--max", "1", "--walltime", "0:02",
          "--replace-before", "100s", "--user-data", script)
    first = wait_for(lambda: running(shown(user, "short")), 90, "the first member")[0]
    oarcloud(user, "net", "rule", "add", "default", "--direction", "ingress", "--proto", "tcp",
             "--port", "8080", check=True)
    address = front(user, "short", members=1)
    assert up(user, "front") == [first]
    proc = load("http://%s/index.html" % address, 20, 45)
    try:
        g = wait_for(lambda: (lambda g: first not in [m["name"] for m in g["members"]]
                              and len(running(g)) == 1 and g)(shown(user, "short")), 90,
                     "the first member replaced before its walltime")
    finally:
        got = report(proc)
    print("walltime replacement under load: %(total)d requests, %(failed)d failed, "
          "%(errored)d errored" % got)
    assert got["failed"] == got["errored"] == got["timeout"] == 0, got["text"]
    assert got["2xx"] == got["total"] > 0
    assert any(h["action"] == "replace" and first in h["reason"] and "ends in" in h["reason"]
               for h in g["history"]), g["history"]
    lb(user, "delete", "front")
    gone = group(user, "delete", "short", "--json")["members"]
    assert gone and first not in gone


# A CGI that costs the member some CPU per request (with its Content-Length:
# without one, HAProxy closes to end the body and keep-alive clients wait).
BUSY = SERVE + """mkdir -p /www/cgi-bin
cat > /www/cgi-bin/work <<'END'
#!/bin/sh
i=0; while [ $i -lt %d ]; do i=$((i+1)); done
h=$(hostname)
echo Content-Type: text/plain
echo Content-Length: $((${#h} + 1))
echo
echo $h
END
chmod 755 /www/cgi-bin/work
"""


def test_http_load_through_the_balancer_scales_the_group_out_and_back_in(make_user):
    user = make_user()
    script = home_script(user, "busy.sh", BUSY % 15000)
    job_id = alloc(user, "pool")
    group(user, "create", "web", "--in", "pool", "--min", "1", "--max", "2", "--target",
          "cpu=30", "--period", "10s", "--cooldown-out", "10s", "--cooldown-in", "15s",
          "--window-in", "15s", "--user-data", script)
    (first,) = wait_for(lambda: running(shown(user, "web")), 30, "the first member")
    oarcloud(user, "net", "rule", "add", "default", "--direction", "ingress", "--proto", "tcp",
             "--port", "8080", check=True)
    address = front(user, members=1)
    assert up(user, "front") == [first]
    # Requests that each cost the member some CPU, at a steady rate.
    proc = load("http://%s/cgi-bin/work" % address, 20, 60)
    try:
        g = wait_for(lambda: (lambda g: len(running(g)) == 2 and g)(shown(user, "web")), 60,
                     "a second member under HTTP load")
        assert any(h["action"] == "scale-out" for h in g["history"])
        wait_for(lambda: len(up(user, "front")) == 2, 30, "both members behind the balancer")
    finally:
        got = report(proc)
    print("HTTP load through the balancer: %(total)d requests, %(failed)d failed" % got)
    assert got["failed"] == got["errored"] == got["timeout"] == 0, got["text"]
    # The load is over: back to one member, through a drain.
    g = wait_for(lambda: (lambda g: len(g["members"]) == 1 and g)(shown(user, "web")), 90,
                 "one member again")
    assert any(h["action"] == "scale-in" for h in g["history"]), g["history"]
    lb(user, "delete", "front")
    group(user, "delete", "web")
    oarcloud(user, "alloc", "delete", "pool", check=True)
    wait_job(job_id)
