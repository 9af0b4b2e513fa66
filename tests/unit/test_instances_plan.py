import pytest

from oarcloud_lib.catalog import instances, jobspec
from oarcloud_lib.errors import Refused


def test_nodes_from_nodefile_keeps_order_and_counts_cores():
    assert instances.nodes_from_nodefile("node-2\nnode-2\nnode-1\n\n") == {"node-2": 2, "node-1": 1}


def test_default_plan_one_instance_per_node_with_its_cores():
    rows = instances.plan(7, "alice", jobspec.CloudSpec(), {"n1": 2, "n2": 1}, "tiny")
    assert [(r["domain"], r["node"], r["cores"], r["name"]) for r in rows] == \
        [("oc7-0", "n1", 2, "oc7-0"), ("oc7-1", "n2", 1, "oc7-1")]
    assert all(r["image"] == "tiny" and r["memory"] == instances.DEFAULT_MEMORY for r in rows)


def test_count_spreads_round_robin_and_names_are_suffixed():
    spec = jobspec.parse_types(["cloud=img", "cloud.count=3", "cloud.name=web"])
    rows = instances.plan(8, "bob", spec, {"n1": 4, "n2": 4}, "tiny")
    assert [(r["node"], r["name"], r["cores"]) for r in rows] == \
        [("n1", "web-0", 2), ("n2", "web-1", 4), ("n1", "web-2", 2)]


def test_cores_that_do_not_fit_are_refused():
    spec = jobspec.parse_types(["cloud", "cloud.count=2", "cloud.cores=2"])
    with pytest.raises(Refused):
        instances.plan(9, "bob", spec, {"n1": 2, "n2": 1}, "tiny")


def test_domain_name():
    assert instances.domain_name(12, 3) == "oc12-3"


def test_walltime_left():
    from oarcloud_lib.service import jobs
    job = {"state": "Running", "startTime": 1000, "walltime": 600}
    assert jobs.walltime_left(job, now=1100) == 500
    assert jobs.walltime_left(job, now=5000) == 0
    assert jobs.walltime_left(dict(job, state="Waiting"), now=1100) is None


def test_memory_is_bounded_by_the_cores_an_instance_holds():
    spec = jobspec.parse_types(["cloud", "cloud.count=2", "cloud.cores=1", "cloud.memory=5G"])
    with pytest.raises(Refused, match="at most 4096 MiB per core"):
        instances.plan(1, "alice", spec, {"n1": 2}, "tiny", memory_per_core=4 << 30)
    spec = jobspec.parse_types(["cloud", "cloud.count=1", "cloud.cores=2", "cloud.memory=8G"])
    assert instances.plan(1, "alice", spec, {"n1": 2}, "tiny", 4 << 30)[0]["memory"] == 8 << 30


def test_disk_is_the_launch_s_or_the_site_s_default_within_bounds():
    from oarcloud_lib.config import SiteConfig
    conf = SiteConfig(disk_default=2 << 30, disk_max=8 << 30)
    rows = instances.plan(1, "alice", jobspec.CloudSpec(), {"n1": 2}, "tiny", conf=conf)
    assert rows[0]["disk"] == 2 << 30
    spec = jobspec.parse_types(["cloud", "cloud.disk=512M"])
    assert spec.disk == 512 << 20 and "cloud.disk=512M" in spec.to_types()
    assert instances.plan(1, "alice", spec, {"n1": 2}, "tiny", conf=conf)[0]["disk"] == 512 << 20
    assert instances.needs(instances.plan(1, "a", jobspec.parse_types(
        ["cloud", "cloud.count=2", "cloud.disk=1G"]), {"n1": 2}, "tiny"))["disk"] == 2 << 30
    with pytest.raises(Refused, match="above the site's 8 GiB per instance"):
        instances.disk_size(jobspec.parse_types(["cloud", "cloud.disk=9G"]), conf)
    with pytest.raises(Refused, match="below the 32 MiB"):
        instances.disk_size(jobspec.parse_types(["cloud", "cloud.disk=16M"]), conf)
    # Without the site's configuration (a user's own check): the built-in bounds.
    assert instances.disk_size(jobspec.CloudSpec()) == instances.DEFAULT_DISK
    with pytest.raises(Refused, match="above"):
        instances.disk_size(jobspec.parse_types(["cloud", "cloud.disk=17T"]))
    for bad in ("0", "-1G", "1.5G", "1P", "G", "99999999G"):
        with pytest.raises(Refused):
            jobspec.parse_types(["cloud", "cloud.disk=%s" % bad])
