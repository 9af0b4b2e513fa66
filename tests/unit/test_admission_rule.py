"""The Perl admission rule, rendered from jobspec, run by real perl: it must
agree with the Python parser on every case."""
import json
import shutil
import subprocess

import pytest

from oarcloud_lib.catalog import jobspec
from oarcloud_lib.server import serversetup
from oarcloud_lib.errors import Refused

HARNESS = r"""
use strict; use warnings;
my $type_list = %s;
my $jobproperties = "";
eval { %s; 1 } or do { print "REFUSED $@"; exit 0; };
print "OK $jobproperties\n";
"""

CASES = [
    ["cloud"], ["cloud=tiny"], ["cloud", "cloud.count=2", "cloud.network=a", "cloud.network=b"],
    ["besteffort"], ["cloudy"], ["cloud=../x"], ["cloud", "cloud.foo=1"],
    ["cloud", "cloud.name=a;rm -rf /"], ["cloud", "cloud.name=$(id)"], ["cloud.image=tiny"],
    ["cloud", "cloud.cores=1", "cloud.cores=2"], ["cloud", "cloud.memory=2G"],
    ["cloud", "cloud.name=x\n"], ["cloud", "cloud.image=a..b"], ["cloud", "cloud.count=1000"],
]


def run_rule(types):
    perl_list = "[" + ", ".join(json.dumps(t).replace("$", "\\$").replace("@", "\\@")
                                for t in types) + "]"
    rule = serversetup.render_admission_rule()
    out = subprocess.run(["perl", "-e", HARNESS % (perl_list, rule)], capture_output=True,
                         text=True, check=True).stdout
    return out


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is part of every Debian")
@pytest.mark.parametrize("types", CASES)
def test_perl_rule_agrees_with_python(types):
    try:
        spec = jobspec.parse_types(types)
        python_ok = True
    except Refused:
        spec, python_ok = None, False
    out = run_rule(types)
    assert out.startswith("OK" if python_ok else "REFUSED"), out
    if python_ok:
        assert ("cloud = 'YES'" in out) == (spec is not None)
    else:
        assert "oarcloud" in out


def test_rule_starts_with_marker():
    assert serversetup.render_admission_rule().startswith(serversetup.RULE_MARKER)
