"""The web dashboard and the JSON API (oarcloud_lib/web, docs/web.md) on the
lab: a real HTTPS client and Debian's headless chromium (selenium) against
the web service the lab runs.  Screenshots go to build/artifacts/web/."""
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import admin, run
from test_instances import launch, oarcloud

from oarcloud_lib import daemons

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts" / "web"


@pytest.fixture(scope="module")
def web(lab):
    st = json.loads(admin("web", "status", "--json", check=True).stdout)
    assert st["running"] and st["url"].startswith("https://"), st
    return st


class Client:
    """A real HTTPS client that trusts the service's own certificate only."""

    def __init__(self, web, token=None):
        self.base = web["url"].rstrip("/")
        self.ctx = ssl.create_default_context(cafile=web["certificate"])
        self.token = token

    def call(self, method, path, body=None, headers=None):
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                return resp.status, _decoded(resp)
        except urllib.error.HTTPError as e:
            return e.code, _decoded(e)

    def get(self, path):
        return self.call("GET", path)


def _decoded(resp):
    text = resp.read().decode()
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(text)
    return text


def token_of(user, name="web"):
    res = oarcloud(user, "token", "create", name, "--json", check=True)
    out = json.loads(res.stdout)
    assert out["token"].startswith("oct_") and out["name"] == name
    return out["token"]


def admin_token(make_user, role):
    who = make_user("--role", role)
    out = json.loads(admin("token", "create", "dash", "--user", who, "--json", check=True).stdout)
    return who, out["token"]


@pytest.fixture
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--user-data-dir=/tmp/oarcloud-chromium-%d"
                % os.getpid()):
        opts.add_argument(arg)
    opts.binary_location = "/usr/bin/chromium"
    opts.accept_insecure_certs = True   # the service's self-signed certificate
    drv = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()
    run(["rm", "-rf", "/tmp/oarcloud-chromium-%d" % os.getpid()])


def shot(drv, name):
    path = ARTIFACTS / ("%s.png" % name)
    drv.save_screenshot(str(path))
    return path


def wait_until(drv, what, timeout=20):
    """what(drv) true within timeout; an element the page's live refresh
    (every 5 s) replaced meanwhile is looked up again."""
    return WebDriverWait(drv, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
                             lambda d: what(d))


def test_an_admin_logs_in_sees_the_nodes_and_a_new_instance_with_data_in_its_plots(
        web, make_user, browser):
    user = make_user()
    (inst,) = launch(user, "--name", "webbox")
    domain = "oc%d-0" % inst["job_id"]
    who, token = admin_token(make_user, "admin")
    drv = browser
    drv.get(web["url"])
    assert "/login" in drv.current_url
    drv.find_element(By.ID, "token").send_keys(token)
    drv.find_element(By.ID, "login").click()
    wait_until(drv, lambda d: d.find_elements(By.ID, "card-nodes"))
    assert drv.find_element(By.ID, "who").text.startswith(who)
    nodes = drv.find_element(By.ID, "overview-nodes").text
    assert "node-1" in nodes and "node-2" in nodes, nodes
    shot(drv, "overview-admin")
    drv.get(web["url"] + "instances?q=webbox")
    row = wait_until(drv, lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "#instances tr")
                                     if "webbox" in r.text])
    assert user in row[0].text and "running" in row[0].text
    # A node's plot has data points (the monitor's samples, through the API).
    drv.get(web["url"] + "nodes/" + inst["node"])
    canvas = drv.find_element(By.CSS_SELECTOR, "canvas[data-metric=cpu]")
    wait_until(drv, lambda d: (canvas.get_attribute("data-points") or "0") not in ("", "0"))
    drawn = drv.execute_script("return Chart.getChart(arguments[0]).data.datasets[0].data.length",
                               canvas)
    assert drawn >= 2, drawn
    shot(drv, "node-admin")
    # The instance's page: its plot fills as its samples come, its hook log shows.
    drv.get(web["url"] + "instances/" + domain)
    assert "running" in drv.find_element(By.ID, "instance-state").text
    assert drv.find_element(By.ID, "hook-log").get_attribute("data-rows") != "0"
    cpu = drv.find_element(By.CSS_SELECTOR, "canvas[data-metric=cpu]")
    wait_until(drv, lambda d: (cpu.get_attribute("data-points") or "0") not in ("", "0"), 30)
    shot(drv, "instance-admin")


def test_the_drain_action_works_and_shows_then_undrain(web, make_user, browser):
    who, token = admin_token(make_user, "operator")
    drv = browser
    drv.get(web["url"] + "nodes/node-2?token=" + token)
    assert "token=" not in drv.current_url    # the link's token does not stay in the URL
    assert drv.find_element(By.ID, "node-drain").text.startswith("no")
    try:
        drv.find_element(By.ID, "drain").click()
        wait_until(drv, lambda d: d.find_element(By.ID, "node-drain").text.startswith("yes"))
        assert "drained" in drv.find_element(By.CSS_SELECTOR, ".flash.ok").text
        shot(drv, "node-drained")
        nodes = json.loads(admin("node", "list", "--json", check=True).stdout)
        assert [n["drain"] for n in nodes if n["node"] == "node-2"] == ["yes"]
        # The overview shows it among the drained.
        drv.get(web["url"])
        assert "drained" in drv.find_element(By.ID, "card-nodes").text
    finally:
        admin("node", "undrain", "node-2", check=True)
    drv.get(web["url"] + "nodes/node-2")
    assert drv.find_element(By.ID, "node-drain").text.startswith("no")


def test_a_user_sees_neither_another_s_instance_nor_its_metrics_page_or_api(
        web, make_user, browser):
    alice, bob = make_user(), make_user()
    (a,) = launch(alice, "--name", "secret")
    a["domain"] = "oc%d-0" % a["job_id"]
    bob_token = token_of(bob)
    api = Client(web, bob_token)
    # Through the API: lists, by id, by name, metrics; all refused alike.
    code, rows = api.get("/api/v1/instances")
    assert code == 200 and all(r["owner"] == bob for r in rows), rows
    assert api.get("/api/v1/instances/" + a["domain"])[0] == 404
    assert api.get("/api/v1/instances/secret")[0] == 404
    assert api.get("/api/v1/metrics?kind=instance&metric=cpu&subject=" + a["domain"])[0] == 404
    assert api.get("/api/v1/nodes")[0] == 403
    assert api.get("/api/v1/metrics?kind=node&metric=cpu&subject=node-1")[0] == 403
    code, out = api.call("DELETE", "/api/v1/instances/" + a["domain"])
    assert code == 404, out
    code, nets = api.get("/api/v1/networks")
    assert code == 200 and {n["owner"] for n in nets} <= {bob}
    alice_net = Client(web, token_of(alice, "nets")).get("/api/v1/networks/default")[1]
    assert api.get("/api/v1/networks/%d" % alice_net["id"])[0] == 404
    code, over = api.get("/api/v1/overview")
    assert code == 200 and "nodes" not in over and not over["instances"], over
    assert over["instances_live"] == 0
    assert all(e["job_id"] != a["job_id"] for e in over["events"])
    # alice's instance still runs; she deletes it through the API, by its name.
    own = Client(web, token_of(alice))
    code, mine = own.get("/api/v1/instances/" + a["domain"])
    assert code == 200 and mine["state"] == "running"
    code, gone = own.call("DELETE", "/api/v1/instances/secret")
    assert code == 200 and gone == dict(gone, domain=a["domain"], deleted=True), gone
    assert daemons.wait_for(lambda: own.get("/api/v1/instances/" + a["domain"])[1]["state"]
                            in ("deleted", "deleting"), timeout=60, interval=0.5)
    # In the browser: bob's pages show nothing of alice's.
    drv = browser
    drv.get(web["url"] + "instances?token=" + bob_token)
    assert "secret" not in drv.find_element(By.ID, "instances").text
    assert "Nodes" not in drv.find_element(By.TAG_NAME, "nav").text
    drv.get(web["url"] + "instances/" + a["domain"])
    assert "not found" in drv.find_element(By.ID, "error").text
    shot(drv, "instance-of-another-user")
    drv.get(web["url"] + "nodes")
    assert "admins, operators and viewers" in drv.find_element(By.ID, "error").text


def test_a_group_s_size_set_from_its_page_grows_it_and_the_history_plot_shows_it(
        web, make_user, browser):
    from test_groups import alloc, group, running, shown
    user = make_user()
    alloc(user, "pool", cores=1, nodes=1)
    group(user, "create", "web", "--in", "pool", "--min", "0", "--max", "1", "--desired", "0")
    group_id = next(g["id"] for g in Client(web, token_of(user)).get("/api/v1/groups")[1]
                    if g["name"] == "web")
    drv = browser
    drv.get(web["url"] + "groups/%d?token=%s" % (group_id, token_of(user, "page")))
    field = drv.find_element(By.NAME, "desired")
    field.clear()
    field.send_keys("1")
    drv.find_element(By.ID, "set-desired").click()
    assert "desired size 1" in drv.find_element(By.CSS_SELECTOR, ".flash.ok").text
    assert daemons.wait_for(lambda: len(running(shown(user, "web"))) == 1, timeout=60,
                            interval=0.5)
    drv.get(web["url"] + "groups/%d" % group_id)
    wait_until(drv, lambda d: "running" in d.find_element(By.ID, "members").text)
    plot = drv.find_element(By.CSS_SELECTOR, "canvas.history")
    wait_until(drv, lambda d: (plot.get_attribute("data-points") or "0") not in ("", "0"))
    shot(drv, "group")
    oarcloud(user, "group", "delete", "web", check=True)
    oarcloud(user, "alloc", "delete", "pool", check=True)


def test_refusals_no_token_a_revoked_token_csrf_and_bad_input_change_nothing(web, make_user):
    user = make_user()
    token = token_of(user, "first")
    anon = Client(web)
    code, out = anon.get("/api/v1/instances")
    assert code == 401 and "token" in out["error"]
    assert Client(web, "oct_" + "x" * 43).get("/api/v1/whoami")[0] == 401
    assert Client(web, "not-a-token").get("/api/v1/whoami")[0] == 401
    api = Client(web, token)
    assert api.get("/api/v1/whoami") == (200, {"account": user, "role": "user",
                                               "sees_all": False, "operates": False})
    # A user may not drain a node; bad input is refused before anything.
    code, out = api.call("POST", "/api/v1/nodes/node-1/drain", {})
    assert code == 403, out
    for path in ("/api/v1/instances?state=bogus", "/api/v1/metrics?kind=disk&metric=cpu",
                 "/api/v1/metrics?kind=node&metric=nope&subject=x", "/api/v1/groups/x;drop",
                 "/api/v1/events?since=-1"):
        code, out = api.get(path)
        assert code in (400, 403, 404), (path, code, out)
    nodes = json.loads(admin("node", "list", "--json", check=True).stdout)
    assert all(n["drain"] == "no" for n in nodes)
    # Bad token names and a duplicate are refused by the CLI.
    res = oarcloud(user, "token", "create", "Bad Name")
    assert res.returncode != 0 and "bad token name" in res.stderr
    res = oarcloud(user, "token", "create", "first")
    assert res.returncode != 0 and "you have one of that name" in res.stderr
    listed = json.loads(oarcloud(user, "token", "list", "--json", check=True).stdout)
    assert [t["name"] for t in listed] == ["first"] and "oct_" not in json.dumps(
        [t["hint"][4:] for t in listed])
    # The event stream answers as server-sent events.
    req = urllib.request.Request(api.base + "/api/v1/events/stream",
                                 headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, context=api.ctx, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.readline().decode() == "retry: 2000\n"
    # Revoked: refused from the next request on.
    oarcloud(user, "token", "revoke", "first", check=True)
    assert api.get("/api/v1/whoami")[0] == 401
    res = oarcloud(user, "token", "revoke", "first")
    assert res.returncode != 0 and "not found" in res.stderr


def test_a_session_needs_its_csrf_token_for_actions(web, make_user):
    """A cookie alone does not act: another site's form cannot post for you."""
    import http.cookiejar
    who, token = admin_token(make_user, "admin")
    jar = http.cookiejar.CookieJar()
    ctx = ssl.create_default_context(cafile=web["certificate"])
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                         urllib.request.HTTPSHandler(context=ctx))
    base = web["url"].rstrip("/")
    with opener.open(base + "/?token=" + token, timeout=30) as resp:
        assert resp.status == 200 and "card-nodes" in resp.read().decode()
    assert [c.name for c in jar] == ["oarcloud_session"]
    cookie = next(iter(jar))
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    req = urllib.request.Request(base + "/api/v1/nodes/node-1/drain", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(req, timeout=30)
    assert e.value.code == 403 and "CSRF" in e.value.read().decode()
    nodes = json.loads(admin("node", "list", "--json", check=True).stdout)
    assert all(n["drain"] == "no" for n in nodes)


def test_the_service_stops_and_starts_and_is_kept_running(web):
    url = web["url"]
    out = json.loads(admin("web", "stop", "--json", check=True).stdout)
    try:
        assert out["changed"] and not out["running"]
        assert admin("web", "status").returncode == 1
        st = json.loads(admin("service", "status", "--json", check=True).stdout)
        assert st["services"]["monitor"]["pid"] and not st["services"]["web"]["pid"]
        assert admin("service", "status").returncode == 0   # stopped on purpose
    finally:
        out = json.loads(admin("web", "start", "--json", check=True).stdout)
    assert out["running"] and out["url"] == url
    assert not json.loads(admin("web", "start", "--json", check=True).stdout)["changed"]
    # Killed, it is back (the supervisor), serving again.
    pid = out["pid"]
    os.kill(pid, 9)
    from oarcloud_lib.web import service
    assert daemons.wait_for(lambda: (service.running_pid() or pid) != pid, timeout=10,
                            interval=0.05)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if Client(web).get("/api/v1/whoami")[0] == 401:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the web service did not answer again")
