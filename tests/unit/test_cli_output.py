"""-f table|json|yaml|csv|value and -c on the commands that print listings
(through the real plumbum applications, App.run(..., exit=False))."""
import json

import pytest
import yaml
from plumbum import cli

from oarcloud_cli import common
from oarcloud_cli.common import Command, machine, print_json, print_table

ROWS = [{"name": "web-0", "state": "running", "memory": 268435456, "memory_h": "256M",
         "tags": ["a", "b"]},
        {"name": "db", "state": "stopped", "memory": 536870912, "memory_h": "512M",
         "tags": []}]
COLUMNS = [("name", "NAME"), ("state", "STATE"), ("memory_h", "MEMORY")]


class Listing(Command):
    """A listing like `oarcloud list`."""

    PROGNAME = "oarcloud list"
    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        if self.json:
            print_json([machine(r) for r in ROWS])
        else:
            print_table(ROWS, COLUMNS)


class Plain(Command):
    PROGNAME = "oarcloud delete"

    def run_command(self):
        print("deleted")


def run(app, *argv):
    common.OUTPUT.update(format="table", columns=[])
    return app.run(["x", *argv], exit=False)[1]


def test_table_and_columns(capsys):
    assert run(Listing) in (0, None)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "STATE", "MEMORY"] and out[1].split()[2] == "256M"
    run(Listing, "-c", "state", "-c", "NAME")
    assert [ln.split() for ln in capsys.readouterr().out.splitlines()] == [
        ["STATE", "NAME"], ["running", "web-0"], ["stopped", "db"]]


@pytest.mark.parametrize("args", [["--json"], ["-f", "json"], ["--format", "json"]])
def test_json(capsys, args):
    run(Listing, *args)
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["memory"] == 268435456 and "memory_h" not in rows[0]


def test_yaml_csv_value(capsys):
    run(Listing, "-f", "yaml")
    assert yaml.safe_load(capsys.readouterr().out)[1] == {
        "name": "db", "state": "stopped", "memory": 536870912, "tags": []}
    run(Listing, "-f", "csv", "-c", "name", "-c", "tags")
    assert capsys.readouterr().out.splitlines() == ["name,tags", "web-0,\"a,b\"", "db,"]
    run(Listing, "-f", "value", "-c", "name")
    assert capsys.readouterr().out.split() == ["web-0", "db"]


def test_one_object_as_csv_is_field_value(capsys):
    common.OUTPUT.update(format="csv", columns=[])
    print_json({"name": "web-0", "cores": 2})
    assert capsys.readouterr().out.splitlines() == ["field,value", "name,web-0", "cores,2"]
    common.OUTPUT.update(format="value", columns=["cores"])
    print_json({"name": "web-0", "cores": 2})
    assert capsys.readouterr().out.strip() == "2"
    common.OUTPUT.update(format="table", columns=[])


def test_bad_format_column_or_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        run(Listing, "-f", "xml")
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and "not 'xml'" in err, err
    with pytest.raises(SystemExit, match="no column nope here"):
        run(Listing, "-c", "nope")
    assert run(Plain, "-f", "json") == 2
    assert "-f and -c are for commands that print listings" in capsys.readouterr().err


def _commands(app, path=()):
    """(argv, application) of every command under app, depth first."""
    yield path, app
    for name, sub in sorted(app("x")._subcommands.items()):
        yield from _commands(sub.get(), path + (name,))


@pytest.mark.parametrize("top", ["oarcloud_cli.user:User", "oarcloud_cli.admin:Admin"])
def test_every_command_has_help_with_its_arguments_named(top, capsys):
    import importlib
    module, name = top.split(":")
    app = getattr(importlib.import_module(module), name)
    seen = 0
    for path, sub in _commands(app):
        inst, code = app.run(["x", *path, "--help"], exit=False)
        out = capsys.readouterr().out
        assert code == 0 and "Usage:" in out, (path, code, out[:200])
        assert "args..." not in out, (path, out)
        seen += 1
    assert seen > 20


def test_tables_fit_the_terminal_the_widest_column_giving_way_first():
    from oarcloud_cli.common import clip, fit
    assert fit([10, 40, 6], 80) == [10, 40, 6]
    got = fit([10, 40, 6], 40, [4, 2, 5])
    assert sum(got) + 4 <= 40 and got[0] == 10 and got[2] == 6 and got[1] == 20
    # never below 8 (or the header): the terminal wraps what is left
    assert fit([30, 30], 10, [4, 12]) == [8, 12]
    assert clip("abcdefghij", 5) == "abcd\u2026" and clip("abc", 5) == "abc"


# Commands that change nothing, or whose output is a session or a stream.
NO_JSON = {("console",), ("exec",), ("ssh",), ("ssh-config",), ("lab", "exec"),
           ("monitor", "run"), ("service", "died")}


@pytest.mark.parametrize("top", ["oarcloud_cli.user:User", "oarcloud_cli.admin:Admin"])
def test_every_command_takes_json_but_sessions(top):
    import importlib
    module, name = top.split(":")
    app = getattr(importlib.import_module(module), name)
    lacking = []
    for path, sub in _commands(app):
        inst = sub("x")
        if inst._subcommands or path in NO_JSON:
            continue
        if not any("json" in s.names for s in inst._switches_by_func.values()):
            lacking.append(" ".join(path))
    assert lacking == []


def test_delete_is_the_verb_and_del_its_alias(capsys):
    from oarcloud_cli.user import User
    for group in (("key",), ("notify",), ("net", "rule")):
        for verb in ("delete", "del"):
            _, code = User.run(["x", *group, verb, "--help"], exit=False)
            assert code == 0
    assert "The old name of `delete`" in capsys.readouterr().out


def test_a_changing_broker_verb_answers_in_json_when_asked():
    from oarcloud_lib.server.broker import Done
    done = Done("network n created: 10.0.0.0/24", name="n", cidr="10.0.0.0/24")
    assert done.said(False) == "network n created: 10.0.0.0/24"
    assert json.loads(done.said(True)) == {"name": "n", "cidr": "10.0.0.0/24"}
