"""Pure parts of the launch path's shortcuts: the job's facts handed to the
hook scripts, one ovs-vsctl call for interfaces and port tags, OAR's ssh
client configuration, and the fast process exit."""
import json
import subprocess
import sys

import pytest

from oarcloud_lib.node import netnode
from oarcloud_lib.service import coordinator
from oarcloud_lib.tools import oarssh
from oarcloud_lib.commands import Result
from oarcloud_lib.errors import Refused

FACTS = {"owner": "alice", "state": "Launching", "types": ["cloud", "cloud.count=2"],
         "resubmit_job_id": 0}


def test_load_job_takes_the_facts_the_dispatcher_passed(monkeypatch):
    monkeypatch.setenv("OARCLOUD_JOB_ID", "42")
    monkeypatch.setenv("OARCLOUD_JOB", json.dumps(FACTS))
    monkeypatch.setattr(coordinator, "job_facts", lambda job_id: pytest.fail("asked OAR again"))
    owner, spec, original = coordinator.load_job(42)
    assert (owner, spec.count, original) == ("alice", 2, 0)


@pytest.mark.parametrize("env_id, env_job", [
    ("41", json.dumps(FACTS)),          # another job's facts
    ("42", "{not json"),                # unreadable
    ("42", "[1, 2]"),                   # not an object
    (None, None),                       # run by hand: nothing passed
])
def test_load_job_asks_oar_when_the_facts_are_not_this_jobs(monkeypatch, env_id, env_job):
    for name, value in (("OARCLOUD_JOB_ID", env_id), ("OARCLOUD_JOB", env_job)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    asked = []
    monkeypatch.setattr(coordinator, "job_facts", lambda job_id: asked.append(job_id) or FACTS)
    assert coordinator.load_job(42)[0] == "alice"
    assert asked == [42]


@pytest.mark.parametrize("facts", [
    dict(FACTS, owner="../root"), dict(FACTS, owner=["alice"]), dict(FACTS, types=["deploy"]),
])
def test_load_job_refuses_odd_owners_and_non_cloud_jobs(monkeypatch, facts):
    monkeypatch.setenv("OARCLOUD_JOB_ID", "42")
    monkeypatch.setenv("OARCLOUD_JOB", json.dumps(facts))
    with pytest.raises(Refused):
        coordinator.load_job(42)


class VsctlOut:
    """A runner answering ovs-vsctl's two-table listing."""

    def __init__(self, out):
        self.out_text, self.argv = out, None

    def run(self, argv, **kwargs):
        self.argv = argv
        return Result(0, self.out_text, "")

    def out(self, argv, **kwargs):
        return self.run(argv, **kwargs).out


def test_interfaces_reads_ofports_ids_and_port_tags_in_one_call():
    interfaces = {"data": [["gw-001000", 23, ["map", [["oc-tag", "1"], ["oc-vni", "4096"]]]],
                           ["oc9-0", 22, ["map", []]], ["vx-c613000c", ["set", []], ["map", []]],
                           ["br-int", 65534, ["map", []]]],
                  "headings": ["name", "ofport", "external_ids"]}
    ports = {"data": [["br-int", ["set", []]], ["oc9-0", 1], ["gw-001000", 1],
                      ["vx-c613000c", ["set", []]]], "headings": ["name", "tag"]}
    runner = VsctlOut(json.dumps(interfaces) + "\n" + json.dumps(ports) + "\n")
    got = netnode.interfaces(runner)
    assert runner.argv.count("list") == 2
    assert got["oc9-0"] == {"ofport": 22, "external_ids": {}, "tag": 1}
    assert got["gw-001000"]["external_ids"]["oc-vni"] == "4096"
    assert got["vx-c613000c"] == {"ofport": -1, "external_ids": {}, "tag": None}
    assert got["br-int"]["tag"] is None


def test_interfaces_of_an_empty_answer_is_empty():
    assert netnode.interfaces(VsctlOut("")) == {}


def test_client_config_gets_the_key_exchange_line_once(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host *\nForwardX11 no\nAddressFamily inet")  # no final newline
    config.chmod(0o644)
    assert oarssh.ensure_client_config(config) is True
    assert oarssh.ensure_client_config(config) is False
    lines = config.read_text().splitlines()
    assert lines[:3] == ["Host *", "ForwardX11 no", "AddressFamily inet"]
    assert lines.count(oarssh.KEX_LINE) == 1 and lines[-1] == oarssh.KEX_LINE
    assert config.stat().st_mode & 0o777 == 0o644


def test_exit_now_flushes_what_was_printed_and_keeps_the_code():
    code = ("import logging, sys\nfrom oarcloud_lib import commands\n"
            "logging.basicConfig(stream=sys.stderr)\nprint('out', end='')\n"
            "logging.getLogger('x').warning('logged')\ncommands.exit_now(3)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert (res.returncode, res.stdout) == (3, "out")
    assert "logged" in res.stderr
