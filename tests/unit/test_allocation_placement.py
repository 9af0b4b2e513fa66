"""Allocations, their pure logic: the job type that names one, and where
instances launched in one go (the real thing:
tests/integration/test_allocations.py)."""
import pytest

from oarcloud_lib.catalog import jobspec
from oarcloud_lib.errors import Refused
from oarcloud_lib.service import allocations


def test_an_allocation_is_a_cloud_job_type_with_its_cores_only():
    spec = jobspec.parse_types(["cloud", "cloud.alloc=pool", "cloud.cores=2"])
    assert (spec.alloc, spec.cores) == ("pool", 2)
    assert jobspec.parse_types(spec.to_types()) == spec
    for extra in ("cloud=tiny", "cloud.count=2", "cloud.name=x", "cloud.network=n"):
        with pytest.raises(Refused, match="holds no instance of its own"):
            jobspec.parse_types(["cloud", "cloud.alloc=pool", extra])
    with pytest.raises(Refused, match="bad value for alloc"):
        jobspec.parse_types(["cloud", "cloud.alloc=../x"])


@pytest.mark.parametrize("name", ["", "Pool", "a" * 40, "-x", "x y", None])
def test_bad_allocation_names_are_refused(name):
    with pytest.raises(Refused, match="bad allocation name"):
        allocations.check_name(name)


def test_instances_go_where_most_cores_are_free_and_never_past_them():
    capacity = {"node-1": {"cores": 2, "used": 0}, "node-2": {"cores": 2, "used": 1}}
    assert allocations.place(1, 1, capacity) == ["node-1"]
    assert allocations.place(3, 1, capacity) == ["node-1", "node-1", "node-2"]
    assert allocations.place(1, 2, capacity) == ["node-1"]
    with pytest.raises(Refused, match=r"2 instance\(s\) of 2 core\(s\) do not fit in the "
                                      r"allocation: free cores node-1 2, node-2 1"):
        allocations.place(2, 2, capacity)
    with pytest.raises(Refused, match="free cores none"):
        allocations.place(1, 1, {})
