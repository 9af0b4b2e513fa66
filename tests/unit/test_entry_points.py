"""Entry points: the node agent's verb table takes only well-formed calls, and
an error from a library (psycopg, the OS) reaches a user as one line with an
exit code, never a traceback."""
import psycopg
import pytest

from oarcloud_cli.common import Command
from oarcloud_lib.errors import from_foreign
from oarcloud_lib.node import agent
from oarcloud_lib.server import broker


@pytest.mark.parametrize("argv", [
    ["prologue", "12", "/var/lib/oar/12"], ["create", "12"], ["destroy-all"], ["net-sync"],
    ["probe", "5"], ["sweep"], ["sweep", "3", "4"], ["stop", "oc12-0"], ["save", "oc12-0"],
    ["save", "oc12-0", "flatten"], ["export-kept", "oc1-2", "flatten"], ["drop-kept", "oc1-2"],
    ["resize", "oc12-0", "2", "536870912"],
])
def test_the_agent_takes_its_verbs(argv):
    assert agent.parse(argv) is not None


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["create"], ["create", "12", "13"], ["create", "-1"], ["create", "1e3"],
    ["stop", "../../etc"], ["stop", "oc12-0", "now"], ["save", "oc12-0", "everything"],
    ["save", "oc12-0", "flatten", "flatten"], ["sweep", "3", "x"], ["probe", "0"],
    ["destroy-all", "now"], ["prologue", "12"], ["start", "oc12-0\n"],
    ["resize", "oc12-0", "0", "536870912"], ["resize", "oc12-0", "2", "-1"],
    ["resize", "oc12-0", "2"], ["resize", "oc12-0", "2", "1G"], ["resize", "../x", "2", "1"],
])
def test_the_agent_refuses_anything_else(argv):
    assert agent.parse(argv) is None


def test_every_broker_verb_has_a_function_and_bounds():
    for verb, (run, low, high) in broker.VERBS.items():
        assert callable(run) and 0 <= low <= high, verb


@pytest.mark.parametrize("exc, words", [
    (psycopg.errors.InsufficientPrivilege("permission denied for table accounts\nHINT: x"),
     "the catalog failed: permission denied for table accounts"),
    (psycopg.OperationalError("connection to server on socket failed"),
     "the catalog failed: connection to server"),
    (FileNotFoundError(2, "No such file or directory", "/etc/oarcloud/oarcloud.conf"),
     "No such file or directory (/etc/oarcloud/oarcloud.conf)"),
])
def test_foreign_errors_become_one_line(exc, words):
    ours = from_foreign(exc)
    assert str(ours).startswith(words) and "\n" not in str(ours) and ours.exit_code == 1


def test_a_bug_keeps_its_traceback():
    assert from_foreign(KeyError("x")) is None


class Failing(Command):
    PROGNAME = "oarcloud"

    def run_command(self):
        raise psycopg.errors.InsufficientPrivilege("permission denied for table instances")


def test_the_cli_prints_one_line_for_a_catalog_error(capsys):
    code = Failing.run(["failing"], exit=False)[1]
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("oarcloud: error: the catalog failed: permission denied")
