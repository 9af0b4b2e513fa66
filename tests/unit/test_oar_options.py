"""launch --property/--queue/--project/--besteffort, checked before oarsub;
OAR's reasons for a refusal, without its noise."""
import pytest

from oarcloud_lib.errors import Refused
from oarcloud_lib.service import jobs
from oarcloud_lib.tools import oar


@pytest.mark.parametrize("prop", ["cluster='a'", "cluster='a' AND memnode >= 4096",
                                  "(host='node-1' OR host='node-2') AND NOT drain='YES'",
                                  "host LIKE 'node-%'"])
def test_good_properties_pass_as_one_argument(prop):
    assert jobs.oar_options(prop) == {"-p": prop}


@pytest.mark.parametrize("prop", ["", "1=1; DROP TABLE jobs", "a=1 -- c",
                                  "host IN (SELECT host FROM x)", "a=\"b\"", "a=1 UNION b",
                                  "(a=1", "a=`id`", "a=$HOME", "x" * 401, "a\\'=1"])
def test_bad_properties_are_refused(prop):
    with pytest.raises(Refused, match="bad --property"):
        jobs.oar_options(prop)


def test_queue_project_besteffort():
    assert jobs.oar_options(queue="default", project="p-1.x") == {
        "-q": "default", "--project": "p-1.x"}
    assert jobs.oar_options(besteffort=True) == {}
    for kw, match in (({"queue": "a b"}, "bad --queue"), ({"queue": "-x"}, "bad --queue"),
                      ({"project": "a/b"}, "bad --project"),
                      ({"queue": "default", "besteffort": True}, "drop --queue")):
        with pytest.raises(Refused, match=match):
            jobs.oar_options(**kw)


def test_refusal_keeps_oars_reason_and_drops_its_noise():
    out = ("[ADMISSION RULE] Modify resource description with type constraints\n"
           "There are not enough resources for your request\nOAR_JOB_ID=-5\n")
    err = "[ERROR] Oarsub failed, please verify your request syntax.\n"
    assert oar.refusal(out, err) == "There are not enough resources for your request"
    assert oar.refusal("", "") == "oarsub exited without a job id"
    assert oar.refusal("# ADMISSION RULE: bad type\n", "# ADMISSION RULE: bad type\n") == \
        "# ADMISSION RULE: bad type"


@pytest.mark.parametrize("count,cores,nodes,hosts,want", [
    (4, 1, None, [2, 2], 2), (2, 1, None, [2, 2], 1), (3, 2, None, [2, 2, 2], 3),
    (4, 1, 2, [2, 2], 2), (1, 1, None, [], 1), (5, 1, None, [2, 2], 3)])
def test_spread_takes_the_fewest_nodes_that_hold_the_instances(count, cores, nodes, hosts, want):
    from oarcloud_lib.service import lifecycle
    if want > len(hosts) and hosts:
        with pytest.raises(Refused, match="5 instances x 1 core\\(s\\) need 5 cores on 3 nodes "
                                          "of 2; the site has 2 such nodes in service"):
            lifecycle.spread(count, cores, nodes, hosts)
        assert lifecycle.spread(count, cores, nodes, hosts, narrowed=True) == want
    else:
        assert lifecycle.spread(count, cores, nodes, hosts) == want


def test_spread_says_what_is_missing():
    from oarcloud_lib.service import lifecycle
    with pytest.raises(Refused, match="4 instances x 1 core\\(s\\) need 4 cores; a node has 2: "
                                      "add --nodes 2"):
        lifecycle.spread(4, 1, 1, [2, 2])
    with pytest.raises(Refused, match="an instance of 3 cores does not fit: a node has 2"):
        lifecycle.spread(1, 3, None, [2, 2])
