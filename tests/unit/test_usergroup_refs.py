"""Groups of users and shared networks: how a user, @GROUP and OWNER/NAME are
read (catalog.usergroups, the cloud.network job type)."""
import re

import pytest

from oarcloud_lib.catalog import jobspec, usergroups
from oarcloud_lib.errors import Refused


@pytest.mark.parametrize("text,parsed", [
    ("alice", ("account", "alice")), ("@physics", ("usergroup", "physics")),
    ("@_ops-2", ("usergroup", "_ops-2")), ("b0b", ("account", "b0b"))])
def test_a_grantee_is_a_user_or_a_group(text, parsed):
    assert usergroups.grantee(text) == parsed
    assert usergroups.shown(*parsed) == text


@pytest.mark.parametrize("text", ["", "@", "@@x", "Alice", "@Physics", "a b", "@a;b", "-x",
                                  "@" + "a" * 33, "../etc", "al/ice"])
def test_bad_grantees_are_refused(text):
    with pytest.raises(Refused):
        usergroups.grantee(text)


def test_the_share_test_names_the_table_and_takes_the_user_twice():
    sql = usergroups.granted("s")
    assert sql.count("%s") == 2 and "s.account" in sql and "s.usergroup" in sql


@pytest.mark.parametrize("ref,ok", [
    ("lab", True), ("alice/lab", True), ("_a-1/lab-2", True), ("default", True),
    ("alice/", False), ("/lab", False), ("a/b/c", False), ("Alice/lab", False),
    ("alice/Lab", False), ("alice/lab;rm", False), ("alice\\/lab", False)])
def test_a_network_job_type_is_name_or_owner_slash_name(ref, ok):
    types = ["cloud", "cloud.network=" + ref]
    if ok:
        assert jobspec.parse_types(types).networks == [ref]
        assert re.fullmatch(jobspec.KEYS["network"], ref)
    else:
        with pytest.raises(Refused):
            jobspec.parse_types(types)


def test_a_node_set_clause_keeps_jobs_off_the_barred_sets_only():
    from oarcloud_lib.catalog import nodesets
    assert nodesets.clause([]) == ""
    assert nodesets.clause([("gpu", "cluster", "gpu"), ("big", "mem", "x1.5")]) == (
        "(cluster IS NULL OR cluster <> 'gpu') AND (mem IS NULL OR mem <> 'x1.5')")
    for bad in [("x", "cluster", "a' OR '1'='1"), ("x", "Cluster", "a"), ("x", "c;d", "a"),
                ("x", "c", "")]:
        with pytest.raises(Refused):
            nodesets.clause([bad])
    assert nodesets.refused_nodes([("gpu", "cluster", "gpu")], {
        "node-1": {"cluster": "gpu"}, "node-2": {"cluster": "cpu"}, "node-3": {}}) == {
        "node-1": "gpu"}
