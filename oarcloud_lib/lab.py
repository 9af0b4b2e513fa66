"""The all-in-one lab: this machine is the OAR server, N emulated nodes run beside it.

An emulated node is a network + mount + UTS namespace held open by one
`sleep` process (its pid is the node's handle).  Inside it: its own hostname,
/sys for its own network devices, a tmpfs /run, and per-node state
directories bind-mounted (or overlaid) on the usual paths, so that the node's
sshd, Open vSwitch, libvirtd and oarcloud keep separate state.  Nodes reach
each other and the server through a Linux bridge (the underlay) with
addresses in 198.19.0.0/16.  The node setup that runs inside is the same
`oarcloud-admin setup node` a real node runs.

Everything the lab changes on the machine is recorded in its state file
first, so that `lab down` puts it back.
"""
import ipaddress
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import psycopg

from oarcloud_lib import daemons, paths
from oarcloud_lib.catalog import db, images
from oarcloud_lib.node import nodesetup
from oarcloud_lib.server import serversetup, services
from oarcloud_lib.tools import netdev, oarssh
from oarcloud_lib.commands import LOCAL, Runner, require_commands
from oarcloud_lib.errors import NotFound, NotReady, Refused
from oarcloud_lib.tools.oar import OarServer
from oarcloud_lib.tools.postgres import Cluster
from oarcloud_lib.progress import Progress

LOG = logging.getLogger(__name__)
BRIDGE = "oclab0"
UNDERLAY = ipaddress.ip_network("198.19.0.0/16")
SERVER_IP = "198.19.0.1"
SERVER_NAME = "oarcloud-server"
NODE_PREFIX = "node-"
NODE_IP_BASE = 10           # node-i has 198.19.0.(10 + i)
MAX_NODES = 200
# Measured per emulated node at rest (sshd, ovsdb-server, ovs-vswitchd,
# virtlogd, libvirtd): about 60 MiB; room is kept for instances.
NODE_MEMORY = 256 << 20
SERVER_RESERVE = 1 << 30
DEFAULT_CORES = 2
HOSTS_FILE = Path("/etc/hosts")
HOSTS_BEGIN = "# BEGIN oarcloud lab"
HOSTS_END = "# END oarcloud lab"
# Per-node state: plain directories bind-mounted over these paths...
NODE_BINDS = ("/var/log", "/etc/openvswitch", "/var/lib/openvswitch", "/var/lib/oarcloud", "/tmp")
# ...and these, overlaid on the machine's own content (packaged config and keys).
NODE_OVERLAYS = ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/lib/oar")
# Paths the lab (or the setup it runs) may create; removed by `down` if absent before.
CREATED_PATHS = ("/etc/oarcloud", "/usr/local/lib/oarcloud", "/var/lib/oarcloud", "/var/log/oarcloud",
                 "/srv/oarcloud", "/etc/sudoers.d/oarcloud", "/run/oarcloud")
LAB_DATABASES = ("oar", "oarcloud")
LAB_ROLES = ("oar", "oar_ro", "oarcloud", "oarcloud_users")


def node_name(i):
    return "%s%d" % (NODE_PREFIX, i)


def node_ip(i):
    return str(UNDERLAY.network_address + NODE_IP_BASE + i)


def mem_available():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def max_nodes(available=None):
    """How many emulated nodes this machine can hold."""
    available = mem_available() if available is None else available
    return max(0, min(MAX_NODES, (available - SERVER_RESERVE) // NODE_MEMORY))


def hosts_lines(count):
    return ["%s %s" % (SERVER_IP, SERVER_NAME)] + \
        ["%s %s" % (node_ip(i), node_name(i)) for i in range(1, count + 1)]


def set_hosts_block(text, lines):
    """/etc/hosts text with the lab's block replaced (no lines: removed)."""
    out, skip = [], False
    for line in text.splitlines():
        if line.strip() == HOSTS_BEGIN:
            skip = True
        elif line.strip() == HOSTS_END:
            skip = False
        elif not skip:
            out.append(line)
    if lines:
        out += [HOSTS_BEGIN, *lines, HOSTS_END]
    return "\n".join(out) + "\n"


def _netns_id(pid):
    try:
        return os.readlink("/proc/%d/ns/net" % pid)
    except OSError:
        return None


class Lab:
    def __init__(self, root=paths.LAB, runner=LOCAL, out=None):
        self.root = Path(root)
        self.runner = runner
        self.out = out
        self.state_file = self.root / "state.json"

    # -- state
    def state(self):
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def _save(self, state):
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    def node_pid(self, name):
        state = self.state() or {}
        node = state.get("nodes", {}).get(name)
        if node is None:
            raise NotFound(what="lab node", name=name)
        pid = node["pid"]
        if not daemons.alive(pid) or _netns_id(pid) != node.get("netns"):
            raise NotReady(detail="lab node %s is not running (run `oarcloud-admin lab up`)" % name)
        return pid

    def node_runner(self, name):
        pid = self.node_pid(name)
        return Runner(prefix=["nsenter", "-t", str(pid), "--net", "--mount", "--uts", "--"],
                      name=name)

    # -- the machine as it was
    def _record_before(self):
        """Remember what lab up will change, so that down can restore it."""
        cluster = Cluster(self.runner)
        info = cluster.info()
        files = [str(HOSTS_FILE), str(paths.OAR_CONF), info["config"]["hba_file"],
                 str(Path(info["pgdata"]) / "postgresql.auto.conf"), str(paths.SITE_CONF),
                 str(paths.MONITOR_TOKEN), str(oarssh.OAR_SSH_CONFIG)]
        backup = self.root / "backup"
        backup.mkdir(parents=True, exist_ok=True)
        saved = {}
        for f in files:
            if os.path.exists(f):
                dst = backup / f.strip("/").replace("/", "__")
                shutil.copy2(f, dst)
                saved[f] = str(dst)
            else:
                saved[f] = None
        pg_running = cluster.running()
        return {
            "files": saved,
            "created_paths": [p for p in CREATED_PATHS if not os.path.exists(p)],
            "postgres_running": pg_running,
            "oar_server_running": bool(OarServer(self.runner).running_pid()),
            "databases": [d for d in LAB_DATABASES if pg_running and cluster.database_exists(d)],
            "roles": [r for r in LAB_ROLES if pg_running and cluster.role_exists(r)],
        }

    # -- up
    def up(self, nodes, cores=DEFAULT_CORES, with_debian=False, progress=None):
        """Bring the lab to `nodes` running nodes; returns the changed steps."""
        progress = progress or Progress("lab up", out=self.out)
        if os.geteuid() != 0:
            raise Refused(detail="the lab needs root")
        if not isinstance(nodes, int) or nodes < 1:
            raise Refused(detail="--nodes must be at least 1")
        limit = max_nodes()
        if nodes > limit:
            raise Refused(detail="--nodes %d: this machine can hold at most %d emulated nodes "
                                 "(%d MiB available, about %d MiB per node)"
                          % (nodes, limit, mem_available() >> 20, NODE_MEMORY >> 20))
        if not 1 <= cores <= 64:
            raise Refused(detail="--cores must be between 1 and 64")
        state = self.state()
        if state and len(state["nodes"]) > nodes:
            raise Refused(detail="the lab has %d nodes; run `oarcloud-admin lab down` first "
                                 "to go down to %d" % (len(state["nodes"]), nodes))
        require_commands(serversetup.SERVER_COMMANDS + nodesetup.NODE_COMMANDS
                                     + ("nsenter", "unshare"))
        if state is None:
            self._check_underlay_free()
            state = {"before": self._record_before(), "nodes": {}, "cores": cores}
            self._save(state)
            progress.step("recorded the machine's state for `lab down`", True)
        progress.step("underlay bridge %s (%s)" % (BRIDGE, UNDERLAY), self._ensure_bridge())
        progress.step("names in /etc/hosts", self._ensure_hosts(max(nodes, len(state["nodes"]))))
        progress.say("server:")
        # The tests' webhook and SMTP servers listen on 127.0.0.1 (nothing else of
        # loopback: the isolation tests aim at the rest).  The emulated nodes
        # share this machine's disk, and the tests and benches launch more
        # instances than it would hold at their full disk size: sparse disks.
        serversetup.setup_server(SERVER_IP, str(UNDERLAY), progress=progress, runner=self.runner,
                                 notify_allow=["127.0.0.1/32"], disk_allocation="sparse")
        for i in range(1, nodes + 1):
            name = node_name(i)
            progress.say("%s:" % name)
            progress.step("namespaces, mounts and underlay link", self._ensure_node(state, i, cores))
            self._setup_node(name, cores, progress)
        progress.step("nodes Alive in OAR", self._wait_alive([node_name(i) for i in range(1, nodes + 1)]))
        progress.say("images:")
        with db.connect() as conn:
            progress.step("image tiny (busybox)", images.ensure_site_image(
                conn, "tiny", images.build_busybox_rootfs, "busybox, for tests"))
            if with_debian:
                if images.get(conn, "bookworm") is None:
                    progress.say("  building bookworm with debootstrap (a few minutes)...")
                progress.step("image bookworm (debootstrap, sshd)", images.ensure_site_image(
                    conn, "bookworm", images.build_debootstrap_rootfs, "Debian 12 with sshd"))
        return progress.done()

    def _check_underlay_free(self):
        for r in netdev.routes_matching(SERVER_IP, self.runner):
            if r.get("dst") != "default" and r.get("dev") != BRIDGE:
                raise Refused(detail="%s is already routed on this machine (dev %s): "
                                     "the lab would clash with it" % (r.get("dst"), r.get("dev")))

    def _ensure_bridge(self):
        links = netdev.links(self.runner)
        changed = False
        if BRIDGE not in links:
            netdev.add_bridge(BRIDGE, self.runner)
            changed = True
        want = "%s/%d" % (SERVER_IP, UNDERLAY.prefixlen)
        if want not in netdev.addresses(BRIDGE, self.runner):
            netdev.replace_address(BRIDGE, want, self.runner)
            changed = True
        netdev.set_up(BRIDGE, self.runner)
        return changed

    def _ensure_hosts(self, count):
        text = HOSTS_FILE.read_text()
        new = set_hosts_block(text, hosts_lines(count))
        if new == text:
            return False
        HOSTS_FILE.write_text(new)
        return True

    def _node_dir(self, name):
        return self.root / "nodes" / name

    def _ensure_node(self, state, i, cores):
        """Create node i's namespaces if its holder is gone; True if created."""
        name = node_name(i)
        node = state["nodes"].get(name)
        if node and daemons.alive(node["pid"]) and _netns_id(node["pid"]) == node.get("netns"):
            return False
        if node:  # left over from a crash or a reboot
            self._destroy_node(name, node)
        d = self._node_dir(name)
        for sub in NODE_BINDS:
            (d / "bind" / sub.strip("/")).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "bind" / "tmp", 0o1777)
        for sub in NODE_OVERLAYS:
            upper = d / "upper" / sub.strip("/")
            upper.mkdir(parents=True, exist_ok=True)
            (d / "work" / sub.strip("/")).mkdir(parents=True, exist_ok=True)
            # An overlay's top directory takes owner and mode from the upper
            # one: keep the machine's (/var/lib/oar belongs to oar).
            st = os.stat(sub)
            os.chown(upper, st.st_uid, st.st_gid)
            os.chmod(upper, st.st_mode & 0o7777)
        (d / "cgroup").mkdir(exist_ok=True)
        holder = self.runner.spawn(["unshare", "--net", "--mount", "--uts", "--propagation",
                                    "private", "sleep", "infinity"])
        our_ns = _netns_id(os.getpid())
        if not daemons.wait_for(lambda: _netns_id(holder.pid) not in (None, our_ns), timeout=5):
            raise NotReady(detail="could not create the namespaces of %s" % name)
        node = {"pid": holder.pid, "netns": _netns_id(holder.pid), "ip": node_ip(i),
                "veth": "oclv%d" % i, "cores": cores}
        state["nodes"][name] = node
        self._save(state)
        r = self.node_runner(name)
        r.run(["hostname", name])
        # /sys of the node's own network namespace, keeping the cgroup mounts.
        r.run(["mount", "--rbind", "/sys/fs/cgroup", str(d / "cgroup")])
        r.run(["mount", "-t", "sysfs", "sysfs", "/sys"])
        r.run(["mount", "--move", str(d / "cgroup"), "/sys/fs/cgroup"])
        r.run(["mount", "-t", "tmpfs", "-o", "mode=755,nosuid,nodev", "tmpfs", "/run"])
        r.run(["mkdir", "-p", "/run/lock"])
        for sub in NODE_BINDS:
            r.run(["mount", "--bind", str(d / "bind" / sub.strip("/")), sub])
        for sub in NODE_OVERLAYS:
            r.run(["mount", "-t", "overlay", "overlay", "-o",
                   "lowerdir=%s,upperdir=%s,workdir=%s" % (sub, d / "upper" / sub.strip("/"),
                                                           d / "work" / sub.strip("/")), sub])
        # Mounts made later on the node (instance roots) reach libvirtd's namespace.
        r.run(["mount", "--make-rshared", "/"])
        veth = node["veth"]
        netdev.delete(veth, self.runner)
        netdev.add_veth_into(veth, holder.pid, "eth0", self.runner)
        # The node side of this veth feeds an OVS userspace datapath, which
        # does not complete checksums the kernel left to the hardware.
        netdev.tx_offload_off(veth, self.runner)
        netdev.attach(veth, BRIDGE, self.runner)
        netdev.set_up("lo", r)
        netdev.replace_address("eth0", "%s/%d" % (node["ip"], UNDERLAY.prefixlen), r)
        netdev.set_up("eth0", r)
        return True

    def _setup_node(self, name, cores, progress):
        r = self.node_runner(name)
        res = r.run([sys.executable, "-I", "-m", "oarcloud_cli.admin", "setup", "node",
                     "--name", name, "--cores", str(cores), "--underlay-if", "eth0"],
                    timeout=300, check=False)
        for line in res.out.splitlines():
            if line.startswith("  "):
                progress.say(line)
                if line.split()[0] == "changed":
                    progress.changes.append("%s: %s" % (name, line.split(None, 1)[1]))
        if res.code != 0:
            raise NotReady(detail="setup node %s failed: %s" % (name, (res.err or res.out).strip()))

    def _wait_alive(self, names):
        server = OarServer(self.runner)

        def all_alive():
            nodes = server.nodes()
            return all(nodes.get(n) and all(r.get("state") == "Alive" for r in nodes[n])
                       for n in names)
        if all_alive():
            return False
        if not daemons.wait_for(all_alive, timeout=60, interval=0.5):
            raise NotReady(detail="nodes did not become Alive in OAR: %s" % ", ".join(names))
        return True

    # -- down
    def down(self, progress=None):
        progress = progress or Progress("lab down", out=self.out)
        if os.geteuid() != 0:
            raise Refused(detail="the lab needs root")
        state = self.state()
        if state is None:
            progress.say("no lab here (%s missing)" % self.state_file)
            return progress.done()
        progress.step("server services stopped", services.stop())
        from oarcloud_lib.server import balancers
        progress.step("load balancers stopped", bool(balancers.stop_all()))
        progress.step("lab accounts removed", self._remove_accounts())
        for name in sorted(state["nodes"], reverse=True):
            progress.step("%s stopped and removed" % name,
                          self._destroy_node(name, state["nodes"][name]))
            del state["nodes"][name]
            self._save(state)
        before = state["before"]
        if not before["oar_server_running"]:
            progress.step("OAR server stopped", OarServer(self.runner).stop())
        cluster = Cluster(self.runner)
        if cluster.running():
            for name in LAB_DATABASES:
                if name not in before["databases"]:
                    progress.step("database %s dropped" % name, cluster.drop_database(name))
            for role in LAB_ROLES:
                if role not in before["roles"]:
                    progress.step("role %s dropped" % role, cluster.drop_role(role))
        for f, saved in before["files"].items():
            progress.step("%s restored" % f, self._restore(f, saved))
        if cluster.running():
            if before["postgres_running"]:
                cluster.restart()
                progress.step("postgresql restarted with its own configuration", True)
            else:
                progress.step("postgresql stopped", cluster.stop())
        for p in before["created_paths"]:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
                progress.step("%s removed" % p, True)
            elif os.path.lexists(p):
                os.unlink(p)
                progress.step("%s removed" % p, True)
        if BRIDGE in netdev.links(self.runner):
            netdev.delete(BRIDGE, self.runner)
            progress.step("underlay bridge %s removed" % BRIDGE, True)
        shutil.rmtree(self.root)
        progress.step("%s removed" % self.root, True)
        return progress.done()

    def _remove_accounts(self):
        """Delete the accounts made in the lab (and their Unix accounts)."""
        from oarcloud_lib.service import accounts
        try:
            with db.connect() as conn:
                names = [r[0] for r in conn.execute("SELECT name FROM accounts")]
        except (NotReady, psycopg.Error):
            return False
        for name in names:
            accounts.delete(name, runner=self.runner)
        return bool(names)

    @staticmethod
    def _restore(path, saved):
        if saved is None:
            if os.path.exists(path):
                os.unlink(path)
                return True
            return False
        if os.path.exists(path) and Path(path).read_bytes() == Path(saved).read_bytes():
            return False
        shutil.copy2(saved, path)
        return True

    def _destroy_node(self, name, node):
        """Stop everything in a node and remove it; True if anything was there."""
        pid, netns = node["pid"], node.get("netns")
        found = False
        if daemons.alive(pid) and _netns_id(pid) == netns:
            found = True
            root = "/proc/%d/root" % pid
            if daemons.read_pid(nodesetup.DAEMONS["libvirtd"], root):
                # Instances first, while libvirtd and OVS still answer.
                res = self.node_runner(name).run(
                    [sys.executable, "-I", "-m", "oarcloud_lib.node.agent", "destroy-all"],
                    check=False, timeout=120)
                if res.code != 0:
                    LOG.warning("%s: instance teardown: %s", name, res.err.strip())
            for daemon in reversed(list(nodesetup.DAEMONS)):
                daemons.stop_pid(daemons.read_pid(nodesetup.DAEMONS[daemon], root))
            daemons.stop_pid(pid)
        # Anything still inside the node's network namespace was started there
        # by the lab or its jobs: it goes with the node.
        if netns:
            for p in Path("/proc").iterdir():
                if p.name.isdigit() and _netns_id(int(p.name)) == netns:
                    LOG.warning("%s: stopping leftover pid %s", name, p.name)
                    daemons.stop_pid(int(p.name), timeout=3)
                    found = True
        if node.get("veth") in netdev.links(self.runner):
            netdev.delete(node["veth"], self.runner)
            found = True
        d = self._node_dir(name)
        if d.exists():
            shutil.rmtree(d)
            found = True
        return found

    # -- status
    def status(self):
        """The daemons of the server and of every node, as a dict."""
        state = self.state()
        if state is None:
            return {"lab": "down", "server": {}, "nodes": {}}
        cluster = Cluster(self.runner)
        server = {"postgresql": cluster.running(),
                  "oar-server": OarServer(self.runner).running_pid()}
        try:
            oar_nodes = OarServer(self.runner).nodes()
        except Exception:  # noqa: BLE001 - status must report, not fail
            oar_nodes = {}
        nodes = {}
        for name, node in sorted(state["nodes"].items()):
            up = daemons.alive(node["pid"]) and _netns_id(node["pid"]) == node.get("netns")
            entry = {"namespace": node["pid"] if up else None, "ip": node["ip"],
                     "oar_state": sorted({r.get("state") for r in oar_nodes.get(name, [])})}
            if up:
                entry.update(nodesetup.daemon_status("/proc/%d/root" % node["pid"]))
            nodes[name] = entry
        return {"lab": "up", "server": server, "nodes": nodes}
