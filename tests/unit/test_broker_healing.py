"""Pure parts of the broker, the healer and OAR's ssh to nodes."""
import shlex

import pytest

from oarcloud_lib.server import broker, healing
from oarcloud_lib.tools import oarssh
from oarcloud_lib.errors import Refused
from oarcloud_lib.tools.oar import job_reason


def test_agent_argv_quotes_every_word_for_the_remote_shell():
    argv = oarssh.agent_argv("node-9", "exec", "oc1-0", "--", "sh", "-c", "echo $HOME; rm -rf /x'")
    assert argv[:1] == ["ssh"] and "-T" in argv and "node-9" in argv
    remote = " ".join(argv[argv.index("node-9") + 1:])
    words = shlex.split(remote)
    assert words[0] == oarssh.OARDODO
    assert words[-3:] == ["sh", "-c", "echo $HOME; rm -rf /x'"]
    assert "-tt" in oarssh.agent_argv("node-9", "console", "oc1-0", tty=True)


def test_agent_argv_runs_locally_on_this_node():
    argv = oarssh.agent_argv(oarssh.this_node(), "stop", "oc1-0")
    assert argv[1:] == ["-I", "-m", "oarcloud_lib.node.agent", "stop", "oc1-0"]


def test_hosts_from_healing_stdin_are_validated_and_unique():
    text = "1 node-1\n2 node-1\n3 node-2\nbad line here\n4 ;rm -rf\n5 -oProxy\n"
    assert healing.hosts_from_stdin(text) == ["node-1", "node-2"]


@pytest.mark.parametrize("env", [{}, {"SUDO_UID": "0"}, {"SUDO_UID": "x1"}])
def test_broker_caller_comes_from_sudo_only(env):
    with pytest.raises(Refused):
        broker.caller(env)


def test_job_reason_skips_resubmission_events():
    job = {"events": [{"type": "RESUBMIT_JOB_AUTOMATICALLY", "description": "x"},
                      {"type": "PROLOGUE_ERROR", "description": "[bipbip 3] error of oarexec prologue"}]}
    assert job_reason(job) == "PROLOGUE_ERROR: [bipbip 3] error of oarexec prologue"
    assert job_reason({}) == "no reason given by OAR"


@pytest.mark.parametrize("caller,owner,nodes", [
    ("alice", "bob", "1"),        # only OAR's own user asks for another
    ("oar", "root", "1"), ("oar", "oar", "1"), ("oar", "Bad;name", "1"),
    ("oar", "bob", "-1"), ("oar", "bob", "1x"),
])
def test_admit_is_asked_by_oar_only_for_an_ordinary_submitter(caller, owner, nodes):
    with pytest.raises(Refused):
        broker.admit(None, caller, owner, nodes, "cloud")


def test_admit_lets_ordinary_jobs_through_without_the_catalog():
    assert broker.admit(None, "oar", "bob", "1", "besteffort") == "not a cloud job"
