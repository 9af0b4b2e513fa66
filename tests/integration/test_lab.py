"""lab up / status / exec / down against the real machine."""
import hashlib
import json
import os
from pathlib import Path

from conftest import admin, node_exec, run

from oarcloud_lib import lab as labmod
from oarcloud_lib.server import imagestore
from oarcloud_lib.lab import Lab

DAEMON_COMMS = {"ovsdb-server", "ovs-vswitchd", "libvirtd", "virtlogd", "Almighty", "postgres",
                "sshd", "sleep", "libvirt_lxc", "lxcfs"}
WATCHED_FILES = ["/etc/hosts", "/etc/oar/oar.conf", "/etc/postgresql/15/main/pg_hba.conf",
                 "/var/lib/postgresql/15/main/postgresql.auto.conf", "/etc/oarcloud/oarcloud.conf",
                 "/var/lib/oar/.ssh/config"]


def _digest(path):
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def machine_snapshot():
    """What the lab may touch on this machine, in comparable form."""
    host_ns = os.readlink("/proc/self/ns/net")
    procs, namespaces = [], set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            comm = (p / "comm").read_text().strip()
            ns = os.readlink(p / "ns/net")
            cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ns != host_ns:
            namespaces.add(ns)
        if comm in DAEMON_COMMS or "Almighty" in cmdline:
            procs.append(comm if "Almighty" not in cmdline else "Almighty")
    mounts = [l for l in Path("/proc/mounts").read_text().splitlines()
              if "oarcloud" in l or l.startswith("overlay ")]
    return {
        "links": sorted(l["ifname"] for l in json.loads(run(["ip", "-j", "link"]).stdout)),
        "routes": json.loads(run(["ip", "-j", "route"]).stdout),
        "mounts": mounts,
        "namespaces": sorted(namespaces),
        "processes": sorted(procs),
        "files": {f: _digest(f) for f in WATCHED_FILES},
        "paths": {p: os.path.exists(p) for p in labmod.CREATED_PATHS + (str(labmod.paths.LAB),)},
        "postgres": run(["pg_lsclusters", "--json"]).stdout.count('"running":1'),
    }


def test_lab_lifecycle_leaves_machine_as_before():
    was_up = Lab().state() is not None
    if was_up:
        admin("lab", "down", check=True)
    before = machine_snapshot()
    try:
        up = admin("lab", "up", "--nodes", "2", check=True)
        assert "node-2" in up.stdout
        nodes = json.loads(run(["oarnodes", "-J"], check=True).stdout)
        by_host = {}
        for res in nodes.values():
            by_host.setdefault(res["network_address"], []).append(res)
        assert sorted(by_host) == ["node-1", "node-2"]
        assert all(r["state"] == "Alive" and r["cloud"] == "YES" for rs in by_host.values() for r in rs)

        again = admin("lab", "up", "--nodes", "2", check=True)
        assert "nothing changed" in again.stdout, again.stdout
        assert "changed " not in again.stdout
    finally:
        down = admin("lab", "down")
    assert down.returncode == 0, down.stderr
    after = machine_snapshot()
    assert after == before
    if was_up:
        admin("lab", "up", "--nodes", "2", check=True)


def test_status_reports_every_daemon(lab):
    status = json.loads(admin("lab", "status", "--json", check=True).stdout)
    assert status["lab"] == "up"
    assert status["server"]["postgresql"] and status["server"]["oar-server"]
    assert sorted(status["nodes"]) == ["node-1", "node-2"]
    for name, node in status["nodes"].items():
        for daemon in ("oar-node-sshd", "ovsdb-server", "ovs-vswitchd", "virtlogd", "libvirtd",
                       "lxcfs", "consoles"):
            assert isinstance(node[daemon], int), (name, daemon, node)
        assert node["oar_state"] == ["Alive"]
    table = admin("lab", "status", check=True).stdout
    assert "node-1" in table and "libvirtd" in table


def test_nodes_are_separate_hosts(lab):
    names = {node_exec(n, "hostname", check=True).stdout.strip() for n in ("node-1", "node-2")}
    assert names == {"node-1", "node-2"}
    # Each node has its own Open vSwitch with the bridges setup node made.
    for n, ip in (("node-1", "198.19.0.11"), ("node-2", "198.19.0.12")):
        assert node_exec(n, "ovs-vsctl", "br-exists", "br-int").returncode == 0
        assert node_exec(n, "ovs-vsctl", "list-ports", "br-phy", check=True).stdout.split() == ["eth0"]
        addrs = node_exec(n, "ip", "-j", "-4", "addr", "show", "dev", "br-phy", check=True).stdout
        assert ip in addrs
        assert node_exec(n, "virsh", "-c", "lxc:///system", "version").returncode == 0
        assert node_exec(n, "test", "-x", "/usr/local/lib/oarcloud/hooks/prologue").returncode == 0
    # The nodes reach each other and the server over the underlay.
    assert node_exec("node-1", "ping", "-c", "1", "-W", "2", "198.19.0.12").returncode == 0
    assert node_exec("node-2", "ping", "-c", "1", "-W", "2", "198.19.0.1").returncode == 0


def test_lab_exec_passes_exit_code(lab):
    assert node_exec("node-1", "sh", "-c", "exit 7").returncode == 7
    res = admin("lab", "exec", "node-9", "--", "true")
    assert res.returncode != 0 and "node-9" in res.stderr


def test_node_setup_second_run_changes_nothing(lab):
    res = node_exec("node-1", "/usr/local/bin/oarcloud-admin", "setup", "node", "--name", "node-1",
                    "--cores", "2", "--underlay-if", "eth0", check=True)
    assert "nothing changed" in res.stdout, res.stdout


def test_tiny_image_is_in_catalog_and_store(lab):
    from oarcloud_lib import paths
    from oarcloud_lib.catalog import db, images
    with db.connect() as conn:
        row = images.get(conn, "tiny")
    assert row["visibility"] == "public" and row["format"] == "tar.zst"
    stored = paths.IMAGE_STORE / ("%s.tar.zst" % row["sha256"])
    assert imagestore.sha256_file(stored) == row["sha256"]
    assert stored.stat().st_size == row["size"]
