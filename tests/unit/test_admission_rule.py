"""The Perl admission rule, rendered from jobspec, run by real perl: it must
agree with the Python parser on every case."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from oarcloud_lib.catalog import jobspec
from oarcloud_lib.server import serversetup
from oarcloud_lib.errors import Refused

HARNESS = r"""
use strict; use warnings;
my $type_list = %s;
my $ref_resource_list = %s;
my $user = "alice";
my $jobproperties = "";
eval { %s; 1 } or do { print "REFUSED $@"; exit 0; };
print "OK $jobproperties\n";
"""
# What OAR passes for -l /host=2/core=1+/cpu=1 (moldables of [groups, walltime]).
TWO_HOSTS = ("[[[{resources => [{resource => 'host', value => '2'},"
             " {resource => 'core', value => '1'}], property => ''},"
             " {resources => [{resource => 'cpu', value => '1'}], property => ''}], 3600]]")
# The broker's stand-in: records its arguments, refuses when told to.
FAKE_BROKER = """#!/bin/sh
printf '%s\\n' "$@" > "$0.args"
if [ -e "$0.refuse" ]; then cat "$0.refuse" >&2; exit 1; fi
echo admitted
if [ -e "$0.say" ]; then cat "$0.say"; fi
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    path = tmp_path_factory.mktemp("admit") / "broker"
    path.write_text(FAKE_BROKER)
    path.chmod(0o755)
    return path

CASES = [
    ["cloud"], ["cloud=tiny"], ["cloud", "cloud.count=2", "cloud.network=a", "cloud.network=b"],
    ["besteffort"], ["cloudy"], ["cloud=../x"], ["cloud", "cloud.foo=1"],
    ["cloud", "cloud.name=a;rm -rf /"], ["cloud", "cloud.name=$(id)"], ["cloud.image=tiny"],
    ["cloud", "cloud.cores=1", "cloud.cores=2"], ["cloud", "cloud.memory=2G"],
    ["cloud", "cloud.name=x\n"], ["cloud", "cloud.image=a..b"], ["cloud", "cloud.count=1000"],
]


def run_rule(types, broker, resources=TWO_HOSTS):
    perl_list = "[" + ", ".join(json.dumps(t).replace("$", "\\$").replace("@", "\\@")
                                for t in types) + "]"
    rule = serversetup.render_admission_rule([str(broker), "admit"])
    out = subprocess.run(["perl", "-e", HARNESS % (perl_list, resources, rule)],
                         capture_output=True, text=True, check=True).stdout
    return out


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is part of every Debian")
@pytest.mark.parametrize("types", CASES)
def test_perl_rule_agrees_with_python(types, broker):
    try:
        spec = jobspec.parse_types(types)
        python_ok = True
    except Refused:
        spec, python_ok = None, False
    out = run_rule(types, broker)
    assert out.startswith("OK" if python_ok else "REFUSED"), out
    if python_ok:
        assert ("cloud = 'YES'" in out) == (spec is not None)
    else:
        assert "oarcloud" in out


def test_rule_starts_with_marker():
    assert serversetup.render_admission_rule().startswith(serversetup.RULE_MARKER)


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is part of every Debian")
def test_rule_asks_the_broker_with_owner_nodes_and_cloud_types_only(broker):
    Path(str(broker) + ".refuse").unlink(missing_ok=True)
    out = run_rule(["cloud=tiny", "besteffort", "cloud.name=web", "cloud.network=n"], broker)
    assert out.startswith("OK"), out
    args = Path(str(broker) + ".args").read_text().splitlines()
    assert args == ["admit", "alice", "2", "cloud=tiny", "cloud.name=web", "cloud.network=n"]


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is part of every Debian")
def test_rule_refuses_with_the_brokers_one_line_reason(broker):
    Path(str(broker) + ".refuse").write_text(
        "a warning first\noarcloud admit: error: image 'nope' not found\n")
    try:
        out = run_rule(["cloud=nope"], broker)
    finally:
        Path(str(broker) + ".refuse").unlink()
    assert out == "REFUSED [ADMISSION RULE] oarcloud: image 'nope' not found\n"


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is part of every Debian")
def test_rule_fails_closed_when_the_broker_cannot_answer(broker):
    Path(str(broker) + ".refuse").write_text("sudo: a password is required\n")
    try:
        out = run_rule(["cloud"], broker)
    finally:
        Path(str(broker) + ".refuse").unlink()
    assert out.startswith("REFUSED [ADMISSION RULE] oarcloud: cannot check the cloud job now"
                          " (sudo: a password is required)"), out
    out = run_rule(["cloud"], "/nonexistent/broker")
    assert out.startswith("REFUSED [ADMISSION RULE] oarcloud: cannot check"), out


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is part of every Debian")
def test_ordinary_jobs_never_ask_the_broker():
    out = run_rule(["besteffort"], "/nonexistent/broker")
    assert out == "OK \n"


def test_admission_command_words_are_plain():
    with pytest.raises(ValueError):
        serversetup.render_admission_rule(["/bin/sh", "-c", "id;true"])


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is part of every Debian")
def test_the_node_set_clause_is_taken_only_in_its_own_grammar(broker):
    say = Path(str(broker) + ".say")
    try:
        say.write_text("properties: (cluster IS NULL OR cluster <> 'gpu') AND "
                       "(rack IS NULL OR rack <> 'r-1.2')\n")
        assert run_rule(["cloud"], broker).strip() == (
            "OK (cloud = 'YES') AND ((cluster IS NULL OR cluster <> 'gpu') AND "
            "(rack IS NULL OR rack <> 'r-1.2'))")
        for forged in ["properties: x <> 'y' OR 'a' <> 'b'",
                       "properties: (c IS NULL OR c <> 'v')) OR ((1 IS NULL OR 1 <> 'a')",
                       "properties: (c IS NULL OR c <> 'v') OR (d IS NULL OR d <> 'w')",
                       "properties: (c IS NULL OR c <> 'v'); DROP TABLE jobs"]:
            say.write_text(forged + "\n")
            assert run_rule(["cloud"], broker).strip() == "OK cloud = 'YES'", forged
    finally:
        say.unlink(missing_ok=True)
