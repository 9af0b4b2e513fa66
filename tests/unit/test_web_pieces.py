"""Pure pieces of the web service (oarcloud_lib/web, catalog/tokens): token
shapes, where a login may go next, errors to HTTP statuses, where it listens.
The service itself is tested in a real browser: tests/integration/test_web.py."""
import pytest

from oarcloud_lib import config
from oarcloud_lib.catalog import tokens
from oarcloud_lib.errors import (Conflict, Forbidden, NotFound, NotReady, OarcloudError,
                                 OverQuota, Refused)
from oarcloud_lib.web import app, service
from oarcloud_lib.web.data import Viewer


@pytest.mark.parametrize("name", ["", "A", "-x", "a b", "a/b", "é", "x" * 64, None, 7])
def test_bad_token_names_are_refused(name):
    with pytest.raises(Refused):
        tokens.check_name(name)


def test_a_token_has_the_shape_checked_and_only_its_digest_is_kept():
    assert tokens.check_name("ci.bot_1-x") == "ci.bot_1-x"
    assert tokens.TOKEN_RE.match("oct_" + "A" * 43)
    for bad in ("oct_" + "A" * 42, "oct_" + "A" * 44, "OCT_" + "A" * 43, "oct_" + "*" * 43,
                "oct_" + "A" * 43 + "\n"):
        assert not tokens.TOKEN_RE.match(bad)
    d = tokens.digest("oct_" + "A" * 43)
    assert len(d) == 64 and d == tokens.digest("oct_" + "A" * 43) != tokens.digest("oct_x")


def test_check_answers_none_to_a_malformed_token_without_asking_the_catalog():
    class NoCatalog:
        def execute(self, *a):
            raise AssertionError("asked the catalog")
    for bad in (None, "", "Bearer", "oct_short", "x" * 5000):
        assert tokens.check(NoCatalog(), bad) is None


@pytest.mark.parametrize("target,expected", [
    ("/instances?state=running", "/instances?state=running"), ("/nodes/node-1", "/nodes/node-1"),
    ("//evil.example/", None), ("https://evil.example/", None), ("/\\evil", None),
    ("javascript:alert(1)", None), (None, None), ("", None)])
def test_a_login_goes_next_to_a_path_of_this_site_only(target, expected):
    from flask import Flask
    flask_app = Flask("t")
    flask_app.add_url_rule("/", "pages.overview", lambda: "")
    with flask_app.test_request_context("/login"):
        assert app._safe_next(target) == (expected or "/")


def test_errors_map_to_http_statuses():
    assert [app.status_of(e) for e in (
        NotFound(what="x", name="y"), Forbidden(detail="x"), OverQuota(detail="x"),
        Refused(detail="x"), Conflict(what="x", detail="y"), NotReady(detail="x"),
        OarcloudError(detail="x"))] == [404, 403, 403, 400, 409, 503, 500]


def test_roles_see_and_operate_as_documented():
    assert [(Viewer("a", r).sees_all, Viewer("a", r).operates, Viewer("a", r).owner)
            for r in ("user", "viewer", "operator", "admin")] == [
        (False, False, "a"), (True, False, None), (True, True, None), (True, True, None)]


def test_it_listens_on_the_server_s_address_with_tls_and_loopback_only_without():
    conf = config.SiteConfig(server_address="198.19.0.1")
    assert service.listen(conf) == ("198.19.0.1", 8443)
    assert service.url(conf) == "https://198.19.0.1:8443/"
    conf.web_tls = False
    assert service.listen(conf) == ("127.0.0.1", 8443)
    assert service.url(conf) == "http://127.0.0.1:8443/"
    conf.web_listen = "198.19.0.1:8080"
    with pytest.raises(Refused, match="loopback"):
        service.listen(conf)
    for bad in ("nohost", ":80", "h:0", "h:99999", "h:x"):
        conf.web_listen = bad
        with pytest.raises(Refused):
            service.listen(conf)


def test_every_page_renders_whole_and_partly_with_representative_rows():
    """The templates with rows as web.data gives them (no catalog): a page's
    live part alone (X-Partial) is a fragment of the whole page."""
    from flask import render_template
    conf = config.SiteConfig(server_address="198.19.0.1", web_secret="x" * 32)
    flask_app = app.create_app(conf)
    inst = {"name": "web-0", "domain": "oc12-0", "owner": "alice", "state": "running",
            "node": "node-1", "ip": "198.18.0.2", "image": "tiny", "cores": 1,
            "memory": 256 << 20, "disk": 1 << 30, "job_id": 12, "error": None,
            "events": [{"at": "2026-12-07T10:00:00+00:00", "node": "node-1", "level": "INFO",
                        "message": "<script>alert(1)</script>"}]}
    node = {"node": "node-1", "state": "Alive", "drain": "no", "deadline": None, "cores": 2,
            "cores_used": 1, "cores_free": 1, "jobs": [12], "instances": ["web-0"],
            "instance_owners": ["alice"], "memory_used": 3 << 30,
            "maintenance": [{"starts": "2026-12-24T08:00:00+00:00",
                             "ends": "2026-12-24T12:00:00+00:00", "job_id": 9}]}
    group = {"id": 3, "owner": "alice", "name": "web", "size": 2, "running": 2, "desired": 2,
             "min": 1, "max": 4, "target": "cpu=60", "alloc": None,
             "members": [{"name": "web-1", "state": "running", "node": "node-2",
                          "ip": "198.18.0.3", "added": "2026-12-07T10:00:00+00:00"}],
             "history": [{"at": "2026-12-07T10:00:00+00:00", "action": "scale-out",
                          "before": 1, "after": 2, "reason": "cpu 80 > 60 ' \" <"}],
             "balancer": {"id": 1, "name": "front"}}
    overview = {"viewer": {}, "instances": {"running": 1}, "instances_live": 1,
                "alarms_firing": [],
                "events": inst["events"], "quota": [{"resource": "cores", "used": 1,
                                                     "limit": 4, "used_h": "1", "limit_h": "4"}],
                "nodes": {"count": 1, "by_state": {"Alive": 1}, "cores": 2, "cores_used": 1,
                          "cores_free": 1, "list": [dict(node, instances=1)]}}
    pages = [("overview.html", {"o": overview}), ("nodes.html", {"nodes": [node]}),
             ("node.html", {"node": node, "metric_names": ("cpu",)}),
             ("instances.html", {"instances": [inst], "states": ("running",),
                                 "filters": {"state": "", "owner": "", "q": ""}}),
             ("instance.html", {"inst": inst, "metric_names": ("cpu",)}),
             ("group.html", {"group": group}), ("groups.html", {"groups": [group]}),
             ("networks.html", {"networks": []}), ("images.html", {"images": []}),
             ("balancers.html", {"balancers": []}), ("alarms.html", {"alarms": []}),
             ("notifications.html", {"notifications": []})]
    who = Viewer("admin1", "admin")
    units = {"node": {"cpu": "%"}, "instance": {"cpu": "%"}}
    with flask_app.test_request_context("/"):
        for template, context in pages:
            base = dict(title="T", who=who, csrf="c", poll_ms=5000, now=0, span="1h",
                        ranges={"1h": 3600}, units=units, **context)
            whole = render_template(template, partial=False, **base)
            part = render_template(template, partial=True, **base)
            assert whole.startswith("<!doctype html>") and "</html>" in whole, template
            assert "<html" not in part and part.strip() and part.strip() in whole, template
            assert "<script>alert" not in whole, template
    with flask_app.test_request_context("/"):
        page = render_template("group.html", partial=False, **dict(
            title="T", who=who, csrf="c", poll_ms=5000, now=0, span="1h", ranges={},
            units=units, group=group))
        assert "data-history='[" in page and "\\u0027" in page   # quotes escaped in JSON
