"""The site's policy on notification URLs (the isolation issue): schemes,
headers, methods, timeouts, where a host resolves to (a fake resolver: no
DNS), the guard on every connection a send makes (redirects included), and
what users are told of a failure.  No network beyond 127.0.0.0/8."""
import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from oarcloud_lib import config
from oarcloud_lib.server import notify
from oarcloud_lib.errors import Refused

DNS = {
    "hook.example.org": ["93.184.216.34"],
    "v6.example.org": ["2606:4700:4700::1111"],
    "mixed.example.org": ["93.184.216.34", "10.1.2.3"],
    "rebound.example.org": ["127.0.0.1"],
    "smtp.gmail.com": ["142.250.102.108"],
}


def resolve(host):
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return DNS[host]


STRICT = notify.Policy((), (), resolve)
LAB = notify.Policy(notify._networks(["127.0.0.1/32"], "test"), (), resolve)


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("127.1.2.3", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("100.64.0.1", "shared (CGNAT)"), ("100.127.255.254", "shared (CGNAT)"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("0.1.2.3", "reserved"),
    ("198.18.0.5", "reserved"), ("192.0.2.1", "reserved"), ("2001:db8::1", "reserved"),
    # IPv4 inside IPv6
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("2002:a00:1::", "private"), ("64:ff9b::7f00:1", "loopback"),
])
def test_non_global_addresses_are_refused(address, kind):
    assert notify.address_refusal(address) == "a%s %s address" % (
        "n" if kind[0] in "aeiou" else "", kind)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1",
                                     "2606:4700:4700::1111", "::ffff:93.184.216.34",
                                     "64:ff9b::5db8:d822", "2002:5db8:d822::1"])
def test_global_addresses_pass(address):
    assert notify.address_refusal(address) is None


def test_allowed_cidrs_win_and_the_sites_own_are_refused():
    assert notify.address_refusal("127.0.0.1", allow=["127.0.0.1/32"]) is None
    assert notify.address_refusal("127.0.0.2", allow=["127.0.0.1/32"]) == "a loopback address"
    assert notify.address_refusal("10.9.8.7", allow=["10.0.0.0/8", "bogus"]) is None
    assert notify.address_refusal("::ffff:127.0.0.1", allow=["127.0.0.0/8"]) is None
    site = ["93.184.216.0/24"]
    assert "site itself" in notify.address_refusal("93.184.216.34", site=site)
    assert notify.address_refusal("93.184.216.34", allow=["93.184.216.34/32"], site=site) is None
    with pytest.raises(ValueError):
        notify.address_refusal("not-an-address")


def test_the_refusal_says_why_and_how_to_allow_it():
    with pytest.raises(Refused) as e:
        notify.check_destination("json://127.0.0.1:8080/x", resolve)
    assert str(e.value) == (
        "notification URL refused: json://127.0.0.1:8080/x resolves to 127.0.0.1, a loopback"
        " address (an admin may allow it: notify_allow_cidrs in /etc/oarcloud/oarcloud.conf)")


def test_check_destination_resolves_the_host_and_checks_every_address():
    assert notify.check_destination("jsons://hook.example.org/p", resolve) == ["93.184.216.34"]
    assert notify.check_destination("json://v6.example.org/", resolve) == DNS["v6.example.org"]
    with pytest.raises(Refused, match="mixed.example.org/ resolves to 10.1.2.3, a private"):
        notify.check_destination("json://mixed.example.org/", resolve)
    with pytest.raises(Refused, match="host nowhere.example.org does not resolve"):
        notify.check_destination("json://nowhere.example.org/", resolve)
    with pytest.raises(Refused, match="169.254.169.254, a link-local"):
        notify.check_destination("json://169.254.169.254/latest/meta-data", resolve)
    with pytest.raises(Refused, match=r"\[::1\]/ resolves to ::1, a loopback"):
        notify.check_destination("json://[::1]:80/", resolve)
    with pytest.raises(Refused, match="site itself"):
        notify.check_destination("json://hook.example.org/", resolve,
                                 site=["93.184.216.34/32"])
    assert notify.check_destination("json://127.0.0.1:8080/", resolve,
                                    allow=["127.0.0.1/32"]) == ["127.0.0.1"]


def test_a_secret_never_shows_in_a_refusal():
    with pytest.raises(Refused) as e:
        notify.check_destination("json://user:S3CRET@127.0.0.1:8080/x", resolve)
    assert "S3CRET" not in str(e.value) and "127.0.0.1" in str(e.value)


def test_mail_checks_its_smtp_server_and_cloud_services_have_no_host():
    assert notify.check_destination("mailto://u:pw@gmail.com", resolve) == ["142.250.102.108"]
    with pytest.raises(Refused, match="resolves to 10.0.0.1, a private"):
        notify.check_destination("mailto://u:pw@example.com?smtp=10.0.0.1", resolve)
    no_dns = pytest.fail     # never called
    assert notify.check_destination("slack://TokenA/TokenB/TokenC/", no_dns) == []
    assert notify.check_destination("tgram://123456789:abcdefg_hijklmnop/", no_dns) == []
    assert notify.check_destination("ntfy://mytopic", no_dns) == []      # ntfy.sh
    with pytest.raises(Refused, match="10.1.1.1, a private"):
        notify.check_destination("ntfys://user:pw@10.1.1.1/topic", no_dns)


@pytest.mark.parametrize("url, why", [
    ("syslog://", "scheme syslog:// is not one this site sends to"),
    ("rsyslog://10.0.0.1", "scheme rsyslog://"),
    ("dbus://", "scheme dbus://"), ("kde://", "scheme kde://"), ("glib://", "scheme glib://"),
    ("kodi://h", "scheme kodi://"),
    ("json://h/x?+X-Api-Key=1", "HTTP header.s. X-Api-Key: no header but Content-Type"),
    ("xml://h/x?+Host=internal", "HTTP header.s. Host"),
    ("form://h/x?+Authorization=Bearer%20x", "HTTP header.s. Authorization"),
    ("apprises://h/token?+Cookie=a", "HTTP header.s. Cookie"),
    ("json://h/?method=GET", "method GET: only POST"),
    ("form://h/?method=put", "method PUT: only POST"),
    ("xml://h/?method=DELETE", "method DELETE"),
    ("json://h/?rto=3600", r"rto=3600 is over the 10 s cap \(read timeout\)"),
    ("json://h/?rto=inf", "rto=inf is over the 10 s cap"),
    ("json://h/?cto=6", r"cto=6 is over the 5 s cap \(connect timeout\)"),
    ("mailto://u:pw@example.com?cto=30", "cto=30 is over the 10 s cap"),
    ("json://h/?retry=3", "retry=3: oarcloud retries by itself"),
])
def test_schemes_and_options_are_refused(url, why):
    with pytest.raises(Refused, match="^notification URL refused: .*" + why):
        notify.check_url(url)


@pytest.mark.parametrize("url", [
    "json://h/x?+Content-Type=text/plain", "json://h/x?-page=1&:extra=value",
    "json://h/?method=POST", "json://h/?method=post", "json://h/?rto=10&cto=5",
    "mailto://u:pw@example.com?cto=10", "apprise://h/token",   # apprise: method=form (format)
    "slack://TokenA/TokenB/TokenC/", "discord://1234/abcd", "ntfy://topic",
    "gotify://h/token", "mmost://h/tokentokentokentokentokentok", "json://h/?retry=0",
])
def test_options_a_site_accepts(url):
    assert notify.check_url(url) == url


def test_the_integration_urls_pass_once_loopback_is_allowed():
    """The lab's webhook and mail inbox (tests/integration) with notify_allow_cidrs
    ["127.0.0.1/32"]."""
    for url in ("json://127.0.0.1:40123/user",
                "mailto://127.0.0.1:40124?from=oarcloud@example.org&to=u1@example.org"):
        assert notify.check_url(url, LAB) == url
        with pytest.raises(Refused, match="127.0.0.1, a loopback address"):
            notify.check_url(url, STRICT)
    assert notify.check_url("jsons://hook.example.org/p", STRICT)
    # apprise's own checks come first
    with pytest.raises(Refused, match="apprise can parse"):
        notify.check_url("foo://bar", STRICT)


def test_site_policy_reads_the_site_config():
    conf = config.SiteConfig(server_address="93.184.216.34", nodes_cidr="100.100.0.0/16",
                             notify_allow_cidrs=["127.0.0.1/32", "not a cidr", "10.0.0.0/8"])
    policy = notify.site_policy(conf)
    assert [str(n) for n in policy.allow] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert sorted(str(n) for n in policy.site) == ["100.100.0.0/16", "93.184.216.34/32"]
    assert notify.address_refusal("93.184.216.34", policy.allow, policy.site)
    assert notify.address_refusal("10.1.1.1", policy.allow, policy.site) is None
    one = notify.site_policy(config.SiteConfig(notify_allow_cidrs="127.0.0.1/32"))
    assert [str(n) for n in one.allow] == ["127.0.0.1/32"]
    assert [str(n) for n in notify.site_policy(config.SiteConfig()).allow] == []


# -- at send time ------------------------------------------------------------------------

class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append(self.path)
        if self.server.redirect:
            self.send_response(307)
            self.send_header("Location", self.server.redirect)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _server(host, redirect=None):
    server = HTTPServer((host, 0), _Hook)
    server.received, server.redirect = [], redirect
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,127.0.0.2")


def test_send_checks_the_url_again_and_never_connects_when_refused():
    with _server("127.0.0.1") as hook:
        url = "json://127.0.0.1:%d/x" % hook.server_address[1]
        ok, why = notify.send_one(url, "t", "b", STRICT)
        assert not ok and why.startswith("notification URL refused: ") and "loopback" in why
        assert hook.received == []
        assert notify.send_one(url, "t", "b", LAB) == (True, None)
        assert hook.received == ["/x"]
        ok, why = notify.send_one(url + "?+X-Evil=1", "t", "b", LAB)
        assert not ok and "HTTP header" in why and hook.received == ["/x"]
        assert notify.send([url, url + "?method=GET"], "t", "b", LAB) == [(url, True),
                                                                          (url + "?method=GET",
                                                                           False)]


def test_a_redirect_to_a_refused_address_is_never_followed():
    """apprise (requests) follows a 307; the guard checks where it goes, so a
    target allowed by the policy cannot bounce a send elsewhere."""
    with _server("127.0.0.2") as inner:
        target = "http://127.0.0.2:%d/inner" % inner.server_address[1]
        with _server("127.0.0.1", redirect=target) as outer:
            url = "json://127.0.0.1:%d/outer" % outer.server_address[1]
            ok, why = notify.send_one(url, "t", "b", LAB)
            assert not ok and outer.received == ["/outer"] and inner.received == []
            assert notify.public_reason(why) == notify.DELIVERY_FAILED
            # the control: allowed, the same redirect is followed
            wide = notify.Policy(notify._networks(["127.0.0.0/8"], "test"), ())
            assert notify.send_one(url, "t", "b", wide) == (True, None)
            assert inner.received == ["/inner"]


def test_the_guard_holds_within_its_block_only():
    with notify.guarded(STRICT):
        with pytest.raises(socket.gaierror, match="127.0.0.1, a loopback address"):
            socket.getaddrinfo("127.0.0.1", 80)
        other = []   # another thread (another delivery) is not under this policy
        t = threading.Thread(target=lambda: other.append(socket.getaddrinfo("127.0.0.1", 80)))
        t.start()
        t.join(5)
        assert other and other[0]
    assert socket.getaddrinfo("127.0.0.1", 80)
    with notify.guarded(LAB):
        assert socket.getaddrinfo("127.0.0.1", 80)
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("127.0.0.2", 80)


def test_timeouts_are_clamped_when_sent():
    def plugin(url):
        a = notify._parse(url)
        notify._clamp(a[0])
        return a[0]
    p = plugin("apprise://h/token")            # apprise's default read timeout: 30 s
    assert (p.socket_connect_timeout, p.socket_read_timeout) == (4.0, 10.0)
    p = plugin("mailto://u:pw@example.com")   # mail: 15 s for each SMTP exchange
    assert p.socket_connect_timeout == 10.0
    p = plugin("json://h/?rto=3600&cto=100&retry=5")   # stored before the policy
    assert (p.socket_connect_timeout, p.socket_read_timeout, p.retry) == (5.0, 10.0, 0)


# -- what users are told -----------------------------------------------------------------

def test_users_are_told_only_that_a_delivery_failed():
    for why in ("A Connection error occurred sending JSON notification to 127.0.0.1.",
                "Failed to send JSON notification: Internal Server Error - error=500.",
                "Read timed out. (read timeout=4.0)", "the target refused it", ""):
        assert notify.public_reason(why) == "delivery failed"
    refused = notify._refusal("json://h/", "10.0.0.1", "a private address")
    assert notify.public_reason(refused) == refused
    assert notify.public_reason(notify.NOT_PARSED) == notify.NOT_PARSED
    assert notify.public_reason(None) is None


def test_outcome_lines():
    row = {"url": "json://h/", "state": "pending", "attempts": 1,
           "last_error": "Connection refused (port 8080)"}
    assert notify.outcome_line(row) == "failed: json://h/: delivery failed (tried again later)"
    assert notify.outcome_line(row, detail=True) == \
        "failed: json://h/: Connection refused (port 8080) (tried again later)"
    assert notify.outcome_line(dict(row, state="failed", last_error=None)) == \
        "failed: json://h/: delivery failed"
    assert notify.outcome_line(dict(row, state="sent")) == "sent: json://h/"
    assert notify.outcome_line(dict(row, attempts=0)).startswith("not tried yet: json://h/")


class _Conn:
    def __init__(self):
        self.calls = []

    def execute(self, sql, args=None):
        self.calls.append((sql, args))


def test_a_users_row_keeps_only_the_public_reason():
    conn = _Conn()
    why = "Connection refused: [Errno 111] on 203.0.113.5:8443"
    notify.delivered(conn, {"id": 1, "owner": "alice", "attempts": 0}, False, why, 1000.0)
    notify.delivered(conn, {"id": 2, "owner": None, "attempts": 0}, False, why, 1000.0)
    notify.delivered(conn, {"id": 3, "attempts": len(notify.BACKOFF)}, False, why, 1000.0)
    (_, user), (_, admin), (_, unknown) = conn.calls
    assert user[1] == "delivery failed" and admin[1] == why and unknown[1] == "delivery failed"
