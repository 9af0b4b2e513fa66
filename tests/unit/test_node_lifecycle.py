"""The node agent's create, destroy, power and sweep on the fake driver: every
partial state a crash, a killed prologue or a lost libvirtd can leave is
cleaned by destroy, destroy is idempotent, and power keeps the state machine.
The real driver's behaviour is proven on the lab (tests/integration)."""
import pytest

from oarcloud_lib import paths
from oarcloud_lib.node import volumes
from oarcloud_lib.config import SiteConfig
from oarcloud_lib.errors import CommandFailed, NotFound
from oarcloud_lib.names import port_name
from oarcloud_lib.node import consoles, lifecycle, limits, netnode, nodesetup, power, resize, rootfs, sweep
from oarcloud_lib.node.fakedriver import FakeDriver, FakeNode
from oarcloud_lib.names import INTEGRATION_BRIDGE


class Catalog:
    """The few writes create_one makes (instance states), recorded."""

    def __init__(self):
        self.states = {}

    rowcount = 0

    def execute(self, sql, args=()):
        if sql.startswith("UPDATE instances SET state"):
            self.states[args[2]] = args[0]
        return self

    def fetchall(self):  # no volumes, no saves
        return []


class Userns:
    base = 1065536


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A node whose instance directories are under tmp_path, its OVS a FakeNode,
    its domains a FakeDriver; netnode (tested on the lab) and the cgroup writes
    of limits are recorded instead."""
    monkeypatch.setattr(paths, "INSTANCES", tmp_path / "instances")
    monkeypatch.setattr(paths, "KEPT", tmp_path / "kept")
    monkeypatch.setattr(paths, "DISKS", tmp_path / "disks")
    monkeypatch.setattr(consoles, "CONSOLES", tmp_path / "consoles")
    monkeypatch.setattr(nodesetup, "ensure_consoles", lambda runner: False)
    synced, pids = [], []
    monkeypatch.setattr(netnode, "sync_quietly", lambda conn, runner: synced.append(1) or True)
    monkeypatch.setattr(netnode, "clear", lambda runner: synced.append("clear"))
    monkeypatch.setattr(limits, "limit_pids", lambda pid, maximum: pids.append((pid, maximum)))
    monkeypatch.setattr(limits, "release", lambda domain: 0)
    monkeypatch.setattr(volumes, "attach", lambda domain, **kw: 0)  # the lab's tests
    # CPU claims in tmp_path; the cgroup writes of a resize (tested on the lab) recorded
    monkeypatch.setattr(resize, "CLAIMS", tmp_path / "cpus")
    monkeypatch.setattr(resize, "online_cpus", lambda: [0, 1, 2, 3])
    sizes = []
    monkeypatch.setattr(resize, "apply", lambda guest, cores, memory, defined:
                        sizes.append((guest.name, cores, memory)))
    monkeypatch.setattr(power, "_row_of", lambda domain: {"cores": 2, "memory": 512 << 20})

    def prepare(domain, lowers, layers, uid_base, base=None, runner=None, userns=None,
                disk=None):
        root = rootfs.instance_dir(domain) / "root"
        (root / "etc").mkdir(parents=True)
        (rootfs.instance_dir(domain) / "upper").mkdir()
        return root
    monkeypatch.setattr(rootfs, "prepare", prepare)
    monkeypatch.setattr(rootfs, "add_account", lambda root, owner, key: None)
    fake = FakeNode()
    driver = FakeDriver(fake)
    driver.pids, driver.sizes = pids, sizes
    return driver


def row(job_id, idx, nics=1):
    domain = "oc%d-%d" % (job_id, idx)
    return {"domain": domain, "name": "vm-%d" % idx, "cores": 1, "memory": 256 << 20,
            "state": "allocated"}, [
        {"mac": "02:00:00:00:%02x:%02x" % (idx, i), "port": port_name(domain, i),
         "ip": "10.0.%d.%d" % (i, idx + 2), "prefix": 24, "gateway": "10.0.%d.1" % i}
        for i in range(nics)]


def create(driver, job_id, idx, nics=1, conn=None):
    r, n = row(job_id, idx, nics)
    return lifecycle.create_one(job_id, r, n, conn or Catalog(), driver, "alice", "ssh-ed25519 K",
                                "127.0.0.1 localhost\n", ([], []), Userns(), SiteConfig(),
                                driver.node)


def leftovers(driver, prefix="oc"):
    """Everything of oarcloud's on the node: domains, ports, directories."""
    dirs = sorted(p.name for p in paths.INSTANCES.glob(prefix + "*")) \
        if paths.INSTANCES.exists() else []
    ports = sorted(p for ports in driver.node.ports.values() for p in ports
                   if p.startswith(prefix))
    return {"domains": driver.names(prefix), "ports": ports, "dirs": dirs}


NOTHING = {"domains": [], "ports": [], "dirs": []}


def test_create_makes_a_running_domain_its_ports_and_root(node):
    conn = Catalog()
    r, guest, timings = create(node, 7, 0, nics=2, conn=conn)
    assert guest.state() == "running" and conn.states == {"oc7-0": "creating"}
    assert leftovers(node) == {"domains": ["oc7-0"], "ports": ["oc7-0", "oc7-0n1"],
                               "dirs": ["oc7-0"]}
    hostname = rootfs.instance_dir("oc7-0") / "root" / "etc" / "hostname"
    assert hostname.read_text() == "vm-0\n"
    # the NICs are tuned inside the instance, its processes capped
    assert ["nsenter", "-t", str(guest.init_pid()), "-n", "--", "ip", "link", "set", "dev",
            "eth1", "mtu", "1450"] in node.node.calls
    assert node.pids == [(guest.init_pid(), 4096)]


def test_destroy_removes_a_whole_job_and_is_idempotent(node):
    for idx in range(3):
        create(node, 7, idx, nics=2)
    create(node, 8, 0)
    assert lifecycle.destroy_local(7, runner=node.node, driver=node) == [
        "oc7-0", "oc7-1", "oc7-2"]
    assert leftovers(node, "oc7-") == NOTHING
    assert leftovers(node, "oc8-")["domains"] == ["oc8-0"]  # another job's: kept
    assert lifecycle.destroy_local(7, runner=node.node, driver=node) == []


PARTIAL = {
    # what a crash between two steps of create (or of destroy) leaves
    "directory only (root prepared, domain not defined)": dict(dirs=True),
    "running domain without its directory": dict(domain="running"),
    "stopped domain (its ports gone with it)": dict(domain="stopped", dirs=True, ports=False),
    "ports only (domain gone, ports left on br-int)": dict(ports=True),
    "second NIC's port only": dict(ports=["oc7-0n1"]),
    "everything": dict(domain="running", dirs=True),
}


@pytest.mark.parametrize("state", PARTIAL.values(), ids=list(PARTIAL))
def test_destroy_cleans_any_partial_state(node, state):
    if state.get("domain"):
        node.add("oc7-0", running=state["domain"] == "running", nics=2)
    if state.get("dirs"):
        (rootfs.instance_dir("oc7-0") / "upper").mkdir(parents=True)
    ports = state.get("ports")
    if ports:
        node.node.ports.setdefault(INTEGRATION_BRIDGE, set()).update(
            ports if isinstance(ports, list) else ["oc7-0", "oc7-0n1"])
    assert lifecycle.destroy_local(7, runner=node.node, driver=node) == ["oc7-0"]
    assert leftovers(node) == NOTHING


def test_destroy_without_libvirt_removes_the_rest_then_says_so(node):
    create(node, 7, 0)
    node.node.ports[INTEGRATION_BRIDGE].add("oc7-0n1")
    node.down = True
    with pytest.raises(CommandFailed):
        lifecycle.destroy_local(7, runner=node.node, driver=node)
    node.down = False
    assert leftovers(node) == {"domains": ["oc7-0"], "ports": [], "dirs": []}
    # the domain goes once libvirt is back
    lifecycle.destroy_local(7, runner=node.node, driver=node)
    assert leftovers(node) == NOTHING


def test_a_failed_define_leaves_what_destroy_removes(node):
    node.fail["define"] = {"oc7-1"}
    create(node, 7, 0)
    with pytest.raises(CommandFailed):
        create(node, 7, 1)
    assert leftovers(node)["dirs"] == ["oc7-0", "oc7-1"]
    lifecycle.destroy_local(7, runner=node.node, driver=node)
    assert leftovers(node) == NOTHING


def test_destroy_all_removes_every_job_and_clears_networking(node):
    create(node, 7, 0)
    create(node, 9, 0)
    assert lifecycle.destroy_local(None, runner=node.node, driver=node) == ["oc7-0", "oc9-0"]
    assert leftovers(node) == NOTHING


def test_power_stop_start_reboot(node):
    _, guest, _ = create(node, 7, 0, nics=2)
    assert power.power("oc7-0", "stop", grace=3, driver=node, runner=node.node) == "stopped"
    assert guest.events[-2:] == ["stop 3", "destroy"]
    assert node.node.ports[INTEGRATION_BRIDGE] == set()
    # stopping a stopped instance changes nothing
    assert power.power("oc7-0", "stop", driver=node, runner=node.node) == "stopped"
    assert power.power("oc7-0", "start", driver=node, runner=node.node,
                       pids_max=100) == "running"
    assert node.node.ports[INTEGRATION_BRIDGE] == {"oc7-0", "oc7-0n1"}
    assert node.pids[-1] == (guest.init_pid(), 100)
    # with the cores and memory the catalog has (a resize while it was defined)
    assert node.sizes[-1] == ("oc7-0", 2, 512 << 20)
    # starting a running one too
    assert power.power("oc7-0", "start", driver=node, runner=node.node) == "running"
    first = guest.init_pid()
    assert power.power("oc7-0", "reboot", driver=node, runner=node.node,
                       pids_max=100) == "running"
    assert guest.init_pid() != first


def test_power_refuses_what_is_not_a_domain_name_and_finds_no_missing_one(node):
    from oarcloud_lib.errors import Refused
    with pytest.raises(Refused):
        power.power("../etc", "stop", driver=node, runner=node.node)
    with pytest.raises(NotFound):
        power.power("oc7-0", "stop", driver=node, runner=node.node)


def test_sweep_removes_only_the_jobs_not_running(node, monkeypatch):
    stopped = []  # the agents of those jobs (none here: never kill a real process)
    monkeypatch.setattr(sweep, "stop_agents", stopped.append)
    create(node, 7, 0)
    create(node, 8, 0)
    (rootfs.instance_dir("oc9-0") / "upper").mkdir(parents=True)  # a crashed create
    assert sweep.sweep([8], driver=node, runner=node.node) == []
    assert leftovers(node) == {"domains": ["oc8-0"], "ports": ["oc8-0"], "dirs": ["oc8-0"]}
    assert stopped == [7, 9]


def test_sweep_says_when_libvirt_does_not_answer(node):
    node.down = True
    problems = sweep.sweep([], driver=node, runner=node.node)
    assert len(problems) == 1 and problems[0].startswith("libvirt:")
