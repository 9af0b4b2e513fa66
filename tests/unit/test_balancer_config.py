"""Load balancers, their pure parts: the check and port syntax, HAProxy's
configuration as rendered (checked by haproxy -c itself), and the parsing of
its runtime API's answers (the real thing: tests/integration/test_balancers.py)."""
import subprocess

import pytest

from oarcloud_lib.errors import Refused
from oarcloud_lib.server import balancers
from oarcloud_lib.tools import haproxy

STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 members 1 web-0 198.19.0.11 2 0 1 1 12 6 3 4 6 0 0 0 - 30000 - 0 0 - - 0
3 members 2 web-1 198.19.0.12 0 8 1 1 0 1 0 2 6 0 0 0 - 30001 - 0 0 - - 0

"""


@pytest.mark.parametrize("text, want", [("tcp", ("tcp", None)), ("http:/", ("http", "/")),
                                        ("http:/health?x=1", ("http", "/health?x=1"))])
def test_checks_are_parsed(text, want):
    assert balancers.parse_check(text) == want


@pytest.mark.parametrize("text", ["", "ftp:/", "http:x", "http:/a b", "http:/%s" % ("a" * 300),
                                  "tcp\n", "http:/\nserver evil 1.2.3.4:80"])
def test_bad_checks_are_refused(text):
    with pytest.raises(Refused, match="bad --check"):
        balancers.parse_check(text)


@pytest.mark.parametrize("port", [0, 65536, -1, "80", None])
def test_bad_ports_are_refused(port):
    with pytest.raises(Refused, match="a port from 1 to 65535"):
        balancers.check_port(port)


def test_servers_state_is_parsed():
    state = haproxy.parse_servers_state(STATE)
    assert state["web-0"] == {"addr": "198.19.0.11", "op": 2, "admin": 0, "port": 30000}
    assert balancers.server_state(state["web-0"]) == "up"
    assert balancers.server_state(state["web-1"]) == "draining"
    assert haproxy.parse_servers_state("1\n# be_id be_name\n") == {}


def test_stat_csv_is_parsed():
    text = ("# pxname,svname,scur,stot,hrsp_5xx,rtime,status,\n"
            "members,web-0,2,100,1,3,UP,\nmembers,BACKEND,2,100,1,3,UP,\n")
    rows = haproxy.parse_stat(text)
    assert rows[0] == {"pxname": "members", "svname": "web-0", "scur": 2, "stot": 100,
                       "hrsp_5xx": 1, "rtime": 3, "status": "UP"}


@pytest.mark.parametrize("check", ["tcp", "http:/index.html"])
def test_the_rendered_configuration_is_one_haproxy_accepts(tmp_path, monkeypatch, check):
    monkeypatch.setattr(balancers, "RUN", tmp_path / "run")
    monkeypatch.setattr(balancers, "STATE", tmp_path / "state")
    kind, path = balancers.parse_check(check)
    lb = {"id": 7, "name": "front", "listen_port": 33007, "check_kind": kind,
          "check_path": path, "algorithm": "leastconn"}

    class Conf:
        server_address = "127.0.0.1"
    text = balancers._render(lb, {"web-0": "198.19.0.11:30000", "web-1": "198.19.0.12:30001"},
                             Conf())
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    res = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [l.strip() for l in text.splitlines()]
    assert "bind 127.0.0.1:33007" in lines and "balance leastconn" in lines
    assert "server web-0 198.19.0.11:30000 %s" % balancers.SERVER_OPTIONS in lines
    assert ("option httpchk GET /index.html" in lines) == (kind == "http")
    assert ("retry-on all-retryable-errors" in lines) == (kind == "http")
    assert "option redispatch 1" in lines and "user haproxy" in lines
