"""Node operations' pure parts (server/nodeops.py): deadlines, host names,
OAR's job lists.  Draining on the real OAR is tests/integration/test_nodes.py."""
import datetime

import pytest

from oarcloud_lib.errors import NotFound, Refused
from oarcloud_lib.server import nodeops

NOW = 1_800_000_000.0


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("30m", 1800), ("2h", 7200),
                                          ("1d", 86400), (" 5m ", 300)])
def test_durations(text, seconds):
    assert nodeops.parse_deadline(text, NOW).timestamp() == NOW + seconds


def test_times_are_utc_unless_they_say():
    at = datetime.datetime.fromtimestamp(NOW + 3600, datetime.timezone.utc)
    assert nodeops.parse_deadline(at.strftime("%Y-%m-%dT%H:%M:%S"), NOW) == at
    plus2 = (at + datetime.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    assert nodeops.parse_deadline(plus2, NOW) == at


@pytest.mark.parametrize("text", ["-5m", "0s", "yesterday", "5 minutes", "400d", "2020-01-01",
                                  "5w", "", "1h; rm -rf /"])
def test_bad_deadlines_are_refused(text):
    with pytest.raises(Refused, match="deadline"):
        nodeops.parse_deadline(text, NOW)


def test_hosts_are_checked_against_oar():
    hosts = {"node-1": [{}]}
    assert nodeops.check_host("node-1", hosts) == "node-1"
    with pytest.raises(NotFound, match="node-9"):
        nodeops.check_host("node-9", hosts)
    for bad in ("-h", "a b", "../x", "", None, "x" * 300):
        with pytest.raises(Refused, match="bad host name"):
            nodeops.check_host(bad, hosts)


@pytest.mark.parametrize("value,ids", [(47, [47]), ("47", [47]), ("47,48", [47, 48]),
                                       ([5, "6"], [5, 6]), ("", [])])
def test_job_ids_of_oarnodes(value, ids):
    assert nodeops._job_ids(value) == ids


@pytest.mark.parametrize("text,seconds", [("1m", 60), ("4h", 14400), ("30d", 2592000)])
def test_maintenance_spans(text, seconds):
    assert nodeops.parse_span(text) == seconds


@pytest.mark.parametrize("text", ["30s", "31d", "0m", "-1h", "4 h", "", "2h;true"])
def test_bad_maintenance_spans_are_refused(text):
    with pytest.raises(Refused, match="--for"):
        nodeops.parse_span(text)


def test_node_properties_are_names_oar_has_and_plain_values():
    known = {"rack", "gpu", "cloud", "host"}
    assert nodeops.parse_properties(["rack=r12", "gpu=no"], known) == {"rack": "r12",
                                                                        "gpu": "no"}
    for bad, why in (("rack", "NAME=VALUE"), ("Rack=1", "NAME=VALUE"), ("rack=", "NAME=VALUE"),
                     ("rack=a b", "NAME=VALUE"), ("rack=x';drop", "NAME=VALUE"),
                     ("cloud=NO", "own"), ("host=other", "own"), ("room=2", "oarproperty -a")):
        with pytest.raises(Refused, match=why):
            nodeops.parse_properties([bad], known)
