"""`oarcloud-admin setup node`: what a cloud node runs, and its registration in OAR.

Runs on the node itself (the lab runs it inside each emulated node): the
oar-node sshd, Open vSwitch with br-int and the underlay bridge, libvirtd with
its LXC driver, oarcloud's hooks, and the node's resources in OAR with
cloud=YES.  Every step checks before it acts.  Nothing here knows whether the
node is emulated.
"""
import logging
import os
import pwd
import socket
import sys
from pathlib import Path

from oarcloud_lib import daemons, paths, templating
from oarcloud_lib.names import INTEGRATION_BRIDGE, UNDERLAY_BRIDGE
from oarcloud_lib.node import consoles
from oarcloud_lib.tools import netdev, oar, oarssh, ovs
from oarcloud_lib.commands import LOCAL, require_commands
from oarcloud_lib.errors import NotReady, Refused
from oarcloud_lib.tools.oar import NODE_SSHD_CONFIG, NODE_SSHD_PIDFILE, OarServer
from oarcloud_lib.progress import Progress

LOG = logging.getLogger(__name__)
# The daemons a node runs, by the pidfile that makes them ours.
DAEMONS = {
    "oar-node-sshd": NODE_SSHD_PIDFILE,
    "ovsdb-server": ovs.PIDFILES["ovsdb-server"],
    "ovs-vswitchd": ovs.PIDFILES["ovs-vswitchd"],
    "virtlogd": "/run/virtlogd.pid",
    "libvirtd": "/run/libvirtd.pid",
    "lxcfs": "/run/lxcfs.pid",
    "consoles": str(consoles.PIDFILE),   # after libvirtd
}
NODE_COMMANDS = ("sshd", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovsdb-tool",
                 "libvirtd", "virtlogd", "ethtool", "ip", "sysctl", "unshare", "oarnodesetting",
                 "mkfs.ext4", "losetup", "lxcfs")
CGROUP_UNIFIED = "/sys/fs/cgroup/unified"


def daemon_status(root="/"):
    """name -> pid or None, read from the pidfiles under root."""
    return {name: daemons.read_pid(pidfile, root) for name, pidfile in DAEMONS.items()}


def hybrid_cgroups():
    """True when cgroup v1 controllers and a cgroup2 'unified' mount coexist.

    libvirt's LXC driver fails there ("Unable to create directory
    /sys/fs/cgroup/unified"), so libvirtd gets a mount namespace without it.
    """
    return os.path.ismount(CGROUP_UNIFIED) and os.path.ismount("/sys/fs/cgroup/memory")


def ensure_sshd(runner):
    if daemons.read_pid(NODE_SSHD_PIDFILE):
        return False
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    daemons.spawn_and_wait(runner, ["/usr/sbin/sshd", "-f", NODE_SSHD_CONFIG,
                                    "-o", "PidFile=%s" % NODE_SSHD_PIDFILE],
                           NODE_SSHD_PIDFILE, "oar-node sshd")
    return True


def ensure_ovs(runner):
    changed = ovs.ensure_daemons(runner)
    if changed:
        paths.UNDERLAY_FLOWS_DIGEST.unlink(missing_ok=True)  # a new vswitchd has no flows
    return changed


def ensure_underlay(iface, datapath, runner):
    """Put iface on the underlay bridge and move its addresses there.

    The userspace datapath only tunnels (VXLAN) from addresses that sit on an
    OVS bridge, so the node's underlay address lives on br-phy.
    """
    changed = ovs.ensure_bridge(UNDERLAY_BRIDGE, datapath, runner)
    if iface not in netdev.links(runner):
        raise Refused(detail="underlay interface %r does not exist on this node" % iface)
    if datapath == "netdev" and netdev.tx_offload_on(iface, runner):
        netdev.tx_offload_off(iface, runner)
        changed = True
    changed |= ovs.ensure_port(UNDERLAY_BRIDGE, iface, runner)
    netdev.set_up(iface, runner)
    changed |= netdev.move_addresses(iface, UNDERLAY_BRIDGE, runner)
    # The kernel still sees what arrives on iface (the userspace datapath reads
    # a copy): left alone it answers ARP for the node's address with iface's
    # MAC too, and a peer that believes it sends VXLAN the bridge never takes
    # for a tunnel (it goes up the kernel's stack and is lost).
    changed |= netdev.ensure_sysctl("net/ipv4/conf/%s/arp_ignore" % iface, "1", runner)
    netdev.set_up(UNDERLAY_BRIDGE, runner)
    return changed


def ensure_libvirtd(runner):
    changed = False
    os.makedirs("/var/log/libvirt", exist_ok=True)
    os.makedirs("/run/libvirt", exist_ok=True)
    if not daemons.read_pid(DAEMONS["virtlogd"]):
        daemons.spawn_and_wait(runner, ["virtlogd", "-d", "-p", DAEMONS["virtlogd"]],
                               DAEMONS["virtlogd"], "virtlogd")
        changed = True
    if not daemons.read_pid(DAEMONS["libvirtd"]):
        argv = ["libvirtd", "-d", "-p", DAEMONS["libvirtd"]]
        if hybrid_cgroups():
            # Slave propagation: libvirtd still sees the mounts made later
            # on the node (instance root filesystems).
            argv = ["unshare", "--mount", "--propagation", "slave", "--",
                    sys.executable, "-I", "-m", "oarcloud_lib.node.umount_exec",
                    "--umount", CGROUP_UNIFIED, "--"] + argv
        daemons.spawn_and_wait(runner, argv, DAEMONS["libvirtd"], "libvirtd")
        changed = True
    ok = daemons.wait_for(lambda: runner.run(["virsh", "-c", "lxc:///system", "version"],
                                             check=False, timeout=10).code == 0, timeout=20)
    if not ok:
        raise NotReady(detail="libvirtd runs but does not answer on lxc:///system")
    return changed


def ensure_lxcfs(runner, mountpoint=paths.LXCFS):
    """lxcfs: the /proc files (meminfo, cpuinfo, stat, uptime...) an instance
    sees, computed for the reader from its own cgroups, so that `free`,
    `nproc`, `top` inside follow its limits, also after a live resize.  Every
    instance started afterwards gets them (node.lifecycle); lxcfs must
    outlive them (a dead lxcfs leaves their reads failing until restarted)."""
    pid = daemons.read_pid(DAEMONS["lxcfs"])
    if pid and os.path.isfile(os.path.join(mountpoint, "proc/meminfo")):
        return False
    if pid:  # ours (its pidfile), serving nothing
        daemons.stop_pid(pid)
    try:
        os.stat(mountpoint)
    except FileNotFoundError:
        pass
    except OSError:  # a dead lxcfs's mount: "not connected"
        runner.run(["umount", "-l", mountpoint], timeout=30)
    os.makedirs(mountpoint, mode=0o755, exist_ok=True)
    # --enable-cfs: its CPUs follow the instance's CPU quota too, not only its
    # cpuset.  It detaches itself, but keeps its output open a while: spawned.
    runner.spawn(["lxcfs", "-p", DAEMONS["lxcfs"], "--enable-cfs", "--enable-pidfd", "-l",
                  mountpoint], log_path=paths.LOG_DIR / "lxcfs.log")
    if not daemons.wait_for(lambda: daemons.read_pid(DAEMONS["lxcfs"]), timeout=15):
        raise NotReady(detail="lxcfs did not start (see %s)" % (paths.LOG_DIR / "lxcfs.log"))
    if not daemons.wait_for(lambda: os.path.isfile(os.path.join(mountpoint, "proc/meminfo")),
                            timeout=15):
        raise NotReady(detail="lxcfs runs but serves nothing on %s" % mountpoint)
    return True


def ensure_consoles(runner):
    """The console keeper (node.consoles): every instance's console held and
    logged, `oarcloud console` attached through it.  Started after libvirtd,
    whose restarts it waits out."""
    changed = paths.ensure_dir(consoles.CONSOLES, 0o700, 0, 0)
    if daemons.read_pid(DAEMONS["consoles"]) and consoles.SOCKET.exists():
        return changed
    daemons.stop_pid(daemons.read_pid(DAEMONS["consoles"]))  # ours, serving nothing
    runner.spawn([sys.executable, "-I", "-m", "oarcloud_lib.node.consoles", "serve"],
                 log_path=paths.LOG_DIR / "consoles.log")
    if not daemons.wait_for(lambda: daemons.read_pid(DAEMONS["consoles"])
                            and consoles.SOCKET.exists(), timeout=15):
        raise NotReady(detail="the console keeper did not start (see %s)"
                       % (paths.LOG_DIR / "consoles.log"))
    return True


def ensure_hooks(src=None, dst=paths.HOOKS_INSTALL_DIR):
    """Copy the hooks (dispatcher + prologue.d/ + epilogue.d/) into place."""
    src = Path(src or paths.hooks_source_dir())
    changed = False
    for f in sorted(src.rglob("*")):
        if f.is_dir() or "__pycache__" in f.parts:
            continue
        target = Path(dst) / f.relative_to(src)
        content = hook_content(f.read_bytes())
        mode = 0o755 if os.access(f, os.X_OK) else 0o644
        if target.exists() and target.read_bytes() == content \
                and target.stat().st_mode & 0o777 == mode:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(content)
        os.chmod(tmp, mode)
        tmp.replace(target)
        changed = True
    for d in ("prologue.d", "epilogue.d"):
        for target in sorted((Path(dst) / d).glob("*")):
            if not (src / d / target.name).exists():
                target.unlink()
                changed = True
    return changed


def ensure_log_dir(path=paths.LOG_DIR, owner="oar"):
    """The directory hooks log to (they run as OAR's user), readable by no one else."""
    pw = pwd.getpwnam(owner)
    return paths.ensure_dir(path, 0o700, pw.pw_uid, pw.pw_gid)


def ensure_private_dirs():
    """The node's image cache (root's alone), instances (no listing), kept
    changes and disks (root's alone), also where an older version made them 0755."""
    changed = False
    for path, mode in ((paths.CACHE, 0o700), (paths.INSTANCES, 0o711), (paths.KEPT, 0o700),
                       (paths.DISKS, 0o700)):
        changed |= paths.ensure_dir(path, mode, 0, 0)
    return changed


def hook_content(data):
    """A hook file as installed: Python hooks run with this oarcloud's interpreter,
    isolated (-I: they run as root, from whatever directory their caller was in)."""
    if data.startswith(b"#!/usr/bin/env python3\n"):
        return b"#!" + sys.executable.encode() + b" -I" + data[len(b"#!/usr/bin/env python3"):]
    return data


def ensure_registered(name, cores, runner):
    """The node's resources in OAR (one per core) with cloud=YES, and Alive."""
    server = OarServer(runner)
    changed = False
    have = server.nodes().get(name, [])
    cores_have = {int(r.get("core") or 0) for r in have}
    for core in range(1, cores + 1):
        if core not in cores_have:
            server.add_resource(name, {"host": name, "cpu": 1, "core": core, "cloud": "YES"})
            changed = True
    if any(r.get("cloud") != "YES" for r in have):
        server.set_properties(name, {"cloud": "YES"})
        changed = True
    have = server.nodes().get(name, [])
    if any(r.get("state") != "Alive" for r in have):
        server.set_state(name, "Alive")
        changed = True
    return changed


def ensure_checklogs(path=None):
    """The directory OAR's node checks (oarnodecheckrun) log failures to,
    OAR's; True if it was made."""
    from oarcloud_lib.node import upkeep
    path = path or upkeep.CHECKLOGS
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode=0o755)
    pw = pwd.getpwnam("oar")
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return True


def setup_node(name=None, cores=None, underlay_if=None, progress=None, runner=LOCAL):
    """Bring this machine to a working cloud node.  Returns the changed steps."""
    name = name or socket.gethostname()
    cores = cores or os.cpu_count()
    if not 1 <= cores <= 1024:
        raise Refused(detail="--cores must be between 1 and 1024")
    progress = progress or Progress("setup node %s" % name)
    require_commands(NODE_COMMANDS)
    progress.step("oar-node sshd (port 6667)", ensure_sshd(runner))
    progress.step("OAR ssh client: x25519 key exchange first", oarssh.ensure_client_config())
    progress.step("open vswitch daemons", ensure_ovs(runner))
    datapath = ovs.datapath()
    progress.step("bridge %s (%s datapath)" % (INTEGRATION_BRIDGE, datapath),
                  ovs.ensure_bridge(INTEGRATION_BRIDGE, datapath, runner))
    netdev.set_up(INTEGRATION_BRIDGE, runner)
    if underlay_if:
        progress.step("underlay %s on %s" % (underlay_if, UNDERLAY_BRIDGE),
                      ensure_underlay(underlay_if, datapath, runner))
    progress.step("libvirtd (lxc driver)", ensure_libvirtd(runner))
    progress.step("hooks in %s" % paths.HOOKS_INSTALL_DIR, ensure_hooks())
    progress.step("OAR account %s for maintenance windows" % oar.MAINT_USER,
                  oar.ensure_maintenance_account(runner))
    progress.step("OAR's node checks' log directory", ensure_checklogs())
    progress.step("hook log directory %s" % paths.LOG_DIR, ensure_log_dir())
    progress.step("lxcfs on %s (instances' /proc)" % paths.LXCFS, ensure_lxcfs(runner))
    progress.step("console keeper (instances' console logs)", ensure_consoles(runner))
    progress.step("logrotate rule %s" % paths.LOGROTATE, templating.ensure_logrotate())
    progress.step("image cache, instances and kept changes private", ensure_private_dirs())
    progress.step("registered in OAR (%d cores, cloud=YES, Alive)" % cores,
                  ensure_registered(name, cores, runner))
    return progress.done()
