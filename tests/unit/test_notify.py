"""Notifications: apprise URLs refused or kept, sending to a JSON webhook on
loopback, the retry plan, lifecycle messages.  No network beyond 127.0.0.1."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from oarcloud_lib.server import notify
from oarcloud_lib.errors import Refused


@pytest.mark.parametrize("url", [
    "json://127.0.0.1:8080/", "jsons://hooks.example.org/path", "mailto://u:pw@example.com",
    "mailto://u:pw@example.com?to=a@example.com,b@example.com", "json://host/a,b",
])
def test_good_urls(url):
    assert notify.check_url(url) == url


@pytest.mark.parametrize("url", [
    "", "garbage", "http://x", "nosuch://foo", "json://", "mailto://", "slack://",
    "json://host:abc/",
    # One target per URL: apprise itself would split these into two.
    "json://a/ json://b/", "json://a/,json://b/", "json://a/\njson://b/",
    "json://a/\x00", "json://" + "a" * 3000 + "/", None, 42,
])
def test_bad_urls_are_refused(url):
    with pytest.raises(Refused, match="bad notification URL"):
        notify.check_url(url)


def test_refusal_does_not_echo_secrets():
    with pytest.raises(Refused) as e:
        notify.check_url("json://user:SECRET-TOKEN@host:abc/")
    assert "SECRET-TOKEN" not in str(e.value)


def test_redact():
    assert "pw" not in notify.redact("json://user:pw@127.0.0.1:8080/")
    assert notify.redact("json://user:pw@127.0.0.1:8080/").startswith("json://user:")
    assert notify.redact("nosuch://user:pw@x") == "nosuch://…"
    assert notify.redact("user:pw@x") == "…"
    assert notify.redact(None) == "…"


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.path, json.loads(data)))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(monkeypatch):
    """A JSON webhook on 127.0.0.1: (port, server); server.received lists the posts."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    server.received, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_send_to_a_json_webhook(webhook):
    port, server = webhook
    url = "json://127.0.0.1:%d/alarms" % port
    got = notify.send([url], "Alarm hot", "web1 cpu is 97.3%")
    assert got == [(url, True)]
    assert len(server.received) == 1
    path, payload = server.received[0]
    assert path == "/alarms"
    assert payload["title"] == "Alarm hot"
    assert payload["message"] == "web1 cpu is 97.3%"


def test_send_answers_per_url_and_never_raises(webhook, caplog):
    port, server = webhook
    good = "json://127.0.0.1:%d/" % port
    closed = "json://u:SECRET@127.0.0.1:%d/" % _closed_port()
    urls = [closed, "garbage", None, good]
    got = notify.send(urls, "t", "b")
    assert got == [(closed, False), ("garbage", False), (None, False), (good, True)]
    assert len(server.received) == 1
    assert "SECRET" not in caplog.text


def test_send_counts_an_http_error_as_failed(webhook):
    port, server = webhook
    server.status = 500
    url = "json://127.0.0.1:%d/" % port
    assert notify.send([url], "t", "b") == [(url, False)]
    assert notify.send([], "t", "b") == []


def test_retry_plan():
    now = 1000.0
    assert notify.next_attempt(0, now) == now
    times = [notify.next_attempt(n, now) for n in range(1, len(notify.BACKOFF) + 1)]
    assert times == [now + d for d in notify.BACKOFF]
    assert times == sorted(times)
    assert notify.next_attempt(len(notify.BACKOFF) + 1, now) is None
    assert notify.next_attempt(100, now) is None
    with pytest.raises(Refused):
        notify.next_attempt(-1, now)


def test_event_messages():
    title, body = notify.event_message("running", instance="web1", node="node-1")
    assert title == "Instance web1 is running"
    assert "node-1" in body
    title, body = notify.event_message("failed", instance="web1",
                                       reason="image debian not found\n")
    assert title == "Instance web1 failed"
    assert body == "Instance web1 failed: image debian not found\n"
    title, body = notify.event_message("walltime", instance="web1", minutes=10)
    assert "10 min" in title and "10 minute(s)" in body
    title, body = notify.event_message("saved", instance="web1", image="web-v2")
    assert "web-v2" in title and "web-v2" in body
    title, _ = notify.event_message("node_state", node="node-2", state="Suspected")
    assert title == "Node node-2 is Suspected"
    _, body = notify.event_message("hook_failed", hook="prologue", reason="x" * 5000)
    assert len(body) < 1100 and body.endswith("…\n")
    assert set(notify.ADMIN_EVENTS) <= set(notify.EVENTS)


@pytest.mark.parametrize("kind, fields, why", [
    ("exploded", {"instance": "web1"}, "unknown event"),
    ("failed", {"instance": "web1"}, "needs reason"),
    ("saved", {}, "needs instance, image"),
    ("walltime", {"instance": "web1", "minutes": "ten"}, "bad field"),
])
def test_bad_events_are_refused(kind, fields, why):
    with pytest.raises(Refused, match=why):
        notify.event_message(kind, **fields)


def test_send_one_says_why_and_masks_secrets():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed once the block ends: nobody listens
    url = "json://user:s3cret@127.0.0.1:%d/" % port
    ok, why = notify.send_one(url, "t", "b")
    assert not ok and "s3cret" not in why
    assert why != "the target refused it", why   # apprise's own reason, from this thread
    assert notify.send_one("foo://bar", "t", "b") == (False, "not a URL apprise can parse")
