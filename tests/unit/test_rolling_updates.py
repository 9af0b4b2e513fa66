"""The rolling update's choices (server/updates.py) on OAR node lists given
here: capacity in service, and which nodes may go out now.  The run on the
lab's real nodes is tests/integration/test_node_updates.py."""
from oarcloud_lib.server import updates


def hosts(**cores):
    """{host: resources}: name=cores, Alive and not drained unless the name ends
    with _dead or _drained."""
    out = {}
    for name, n in cores.items():
        state = "Dead" if name.endswith("_dead") else "Alive"
        drain = "YES" if name.endswith("_drained") else "NO"
        out[name] = [{"state": state, "drain": drain} for _ in range(n)]
    return out


def run(max_unavailable=1, min_capacity=50):
    return {"max_unavailable": max_unavailable, "min_capacity": min_capacity}


def test_capacity_counts_the_cores_of_nodes_alive_and_not_drained():
    h = hosts(a=4, b=4, c_dead=4, d_drained=4)
    assert updates.capacity(h, set()) == (8, 16)
    assert updates.capacity(h, {"a"}) == (4, 16)
    assert updates.capacity(h, set(), out={"a", "b"}) == (0, 16)


def test_a_wave_takes_at_most_max_unavailable_nodes():
    h = hosts(a=2, b=2, c=2, d=2)
    assert updates.next_wave(["a", "b", "c", "d"], [], h, set(), run(2, 0)) == (["a", "b"], None)
    assert updates.next_wave(["c", "d"], ["a"], h, set(), run(2, 0)) == (["c"], None)
    assert updates.next_wave(["c", "d"], ["a", "b"], h, set(), run(2, 0)) == ([], None)


def test_a_wave_never_drops_capacity_below_the_floor():
    h = hosts(a=2, b=2, c=2, d=2)
    # 75 % of 8 cores: 6 must stay in service, so one node at a time.
    wave, why = updates.next_wave(["a", "b", "c"], [], h, set(), run(3, 75))
    assert wave == ["a"] and "below the floor of 75% (6)" in why
    # A node already drained by an admin counts as out.
    wave, why = updates.next_wave(["a", "b"], [], h, {"d"}, run(3, 75))
    assert wave == [] and "taking a out would leave 4 of 8 cores" in why


def test_two_nodes_at_half_capacity_go_one_after_the_other():
    h = hosts(n1=2, n2=2)
    assert updates.next_wave(["n1", "n2"], [], h, set(), run(2, 50)) == (
        ["n1"], "taking n2 out would leave 0 of 4 cores in service, below the floor of 50% (2)")
