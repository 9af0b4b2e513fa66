"""The instance driver: a small interface, and libvirt's LXC driver behind it.

Driver and Guest (typing protocols) are all the node agent knows of domains:
define (and start) one, look one up, list them, remove one; a Guest starts,
stops with grace, is destroyed, frozen and thawed, and tells its state and
its stats.  LxcDriver is libvirt's LXC driver behind them; the fake one in
oarcloud_lib.node.fakedriver keeps domains in memory, for unit tests.

A Guest wraps one libvirt domain (Nova's libvirt guest wrapper is the model):
libvirt's states map to ours through one table, and libvirt's errors become
ours inside this module, so libvirt never leaks to callers.
"""
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Protocol
from xml.etree import ElementTree

import libvirt

from oarcloud_lib.errors import CommandFailed, Conflict, NotFound, NotReady, OarcloudError

LOG = logging.getLogger(__name__)
URI = "lxc:///system"

# libvirt domain state -> oarcloud instance state.
STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",    # LXC: idle processes
    libvirt.VIR_DOMAIN_PAUSED: "paused",      # frozen (freezer cgroup)
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}


@dataclass
class DomainSpec:
    """Everything a domain is rendered from (validated by the caller)."""

    name: str
    job_id: int
    owner: str
    cores: int
    memory: int          # bytes
    rootfs: str
    nics: list           # dicts: bridge, mac, port, ip, prefix, gateway
    uid_base: int
    uid_count: int = 65536
    init: str = "/sbin/init"
    io: dict = None      # <blkiotune> device: path and throttles (limits.io_tune)
    cpuset: str = None   # the node's CPUs it runs on (limits.pick_cpus), e.g. "0-1"
    views: tuple = ()    # (node file, the instance's path) bound over its own: lxcfs's

    def xml(self):
        from oarcloud_lib import templating
        return templating.render("domain.xml.j2", **self.__dict__)


class Guest(Protocol):
    """One instance's domain, as the node agent uses it."""

    name: str

    def state(self) -> str: ...          # one of STATES' values
    def info(self) -> dict: ...          # state, memory, cores, cpu_time_ns
    def init_pid(self) -> int: ...       # the host pid of its init
    def nic_count(self) -> int: ...
    def listens(self, port: int) -> bool: ...
    def has_file(self, path: str) -> bool: ...
    def start(self) -> None: ...
    def stop(self, grace: float) -> None: ...   # signal init, force after grace s
    def destroy(self) -> None: ...       # at once, idempotent
    def kill(self) -> bool: ...
    def suspend(self) -> None: ...
    def resume(self) -> None: ...
    def undefine(self) -> None: ...


class Driver(Protocol):
    """Domains on this node."""

    def define(self, spec: "DomainSpec") -> Guest: ...  # define and start
    def get(self, name: str) -> Guest: ...              # raises NotFound
    def names(self, prefix: str = "") -> list: ...
    def running(self, prefix: str = "") -> list: ...
    def remove(self, name: str, at_once: bool = False) -> bool: ...


def _quiet(ctx, err):
    """libvirt prints every error on stderr by default; we raise ours instead."""


libvirt.registerErrorHandler(_quiet, None)


def _wrap(e, what, name):
    code = e.get_error_code()
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(what=what, name=name)
    if code in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_DOM_EXIST):
        return Conflict(what=what, detail="%s: %s" % (name, e.get_error_message()))
    return CommandFailed(code=code, argv="libvirt %s %s" % (what, name),
                         stderr=e.get_error_message())


class LxcGuest:
    """One LXC domain."""

    def __init__(self, dom):
        self._dom = dom

    @property
    def name(self):
        return self._dom.name()

    def state(self):
        try:
            return STATES.get(self._dom.state()[0], "unknown")
        except libvirt.libvirtError as e:
            raise _wrap(e, "domain", self.name) from None

    def init_pid(self):
        """The host pid of the instance's init (for entering its namespaces)."""
        ctl = self._dom.ID()
        if ctl < 0:
            raise Conflict(what="instance", detail="%s is not running" % self.name)
        try:
            with open("/proc/%d/task/%d/children" % (ctl, ctl)) as f:
                children = f.read().split()
        except OSError:
            children = []
        if not children:
            raise NotReady(detail="instance %s has no init process" % self.name)
        return int(children[0])

    def nic_count(self):
        return len(self.ports())

    def listens(self, port):
        """Whether a process of the instance listens on TCP port (in the
        instance's own network namespace, as /proc/INIT/net shows it)."""
        want = ":%04X" % port
        pid = self.init_pid()
        for table in ("tcp", "tcp6"):
            try:
                with open("/proc/%d/net/%s" % (pid, table)) as f:
                    next(f, None)
                    for line in f:
                        fields = line.split()
                        if len(fields) > 3 and fields[1].endswith(want) and fields[3] == "0A":
                            return True
            except OSError:
                continue
        return False

    def has_file(self, path):
        """Whether path exists in the instance's root (not followed if a symlink)."""
        return os.path.lexists("/proc/%d/root/%s" % (self.init_pid(), path.lstrip("/")))

    def ports(self):
        """Host-side names of the instance's network interfaces (its veths)."""
        xml = self._call("describe", self._dom.XMLDesc, 0)
        return [t.get("dev") for t in ElementTree.fromstring(xml).findall(
            "./devices/interface/target") if t.get("dev")]

    def controller_pid(self):
        """The pid of its libvirt_lxc controller (the domain's id), None when stopped."""
        ctl = self._dom.ID()
        return ctl if ctl > 0 else None

    def info(self):
        state, max_mem, mem, vcpus, cpu_time = self._dom.info()
        return {"state": STATES.get(state, "unknown"), "memory": mem * 1024,
                "cores": vcpus, "cpu_time_ns": cpu_time}

    def _call(self, what, fn, *args):
        try:
            return fn(*args)
        except libvirt.libvirtError as e:
            raise _wrap(e, what, self.name) from None

    def _if_there(self, fn):
        """Call fn; a domain that is gone (or already stopped) is not an error."""
        try:
            fn()
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                          libvirt.VIR_ERR_OPERATION_INVALID):
                raise _wrap(e, "domain", self.name) from None

    def destroy(self):
        """Stop at once (idempotent)."""
        self._if_there(self._dom.destroy)

    def kill(self):
        """SIGKILL the instance's init: the kernel ends every process of its pid
        namespace.  libvirt's destroy alone sends SIGTERM and polls every 0.2 s,
        up to 3 s, before it kills (1.8 s for an init that ignores SIGTERM).
        True if there was an init to kill."""
        try:
            os.kill(self.init_pid(), signal.SIGKILL)
        except (Conflict, NotReady, ProcessLookupError):
            return False
        return True

    def shutdown(self):
        self._call("shutdown", self._dom.shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_SIGNAL)

    def stop(self, grace):
        """Signal init (SIGTERM: an orderly shutdown), then force it off after
        grace seconds."""
        try:
            self.shutdown()
        except OarcloudError:  # already stopping, or gone
            pass
        deadline = time.monotonic() + grace
        while self.state() == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        self.destroy()

    def reboot(self):
        self._call("reboot", self._dom.reboot, 0)

    def suspend(self):
        """Freeze every process (the freezer cgroup), e.g. for a consistent save."""
        self._call("suspend", self._dom.suspend)

    def resume(self):
        self._if_there(self._dom.resume)

    def start(self):
        self._call("start", self._dom.create)

    def undefine(self):
        self._if_there(self._dom.undefine)


class LxcDriver:
    """create / get / list / destroy LXC domains on this node."""

    def __init__(self, uri=URI, conn=None):
        self._uri = uri
        self._conn = conn

    @property
    def conn(self):
        if self._conn is None:
            try:
                self._conn = libvirt.open(self._uri)
            except libvirt.libvirtError as e:
                raise NotReady(detail="libvirtd unreachable at %s: %s"
                               % (self._uri, e.get_error_message())) from None
        return self._conn

    def close(self):
        """Drop the connection (the next call opens a new one: after libvirtd restarted)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    def define(self, spec):
        """Define (persistent, so stop/start work within the job) and start."""
        try:
            dom = self.conn.defineXML(spec.xml())
        except libvirt.libvirtError as e:
            raise _wrap(e, "domain", spec.name) from None
        guest = LxcGuest(dom)
        guest.start()
        return guest

    def get(self, name):
        try:
            return LxcGuest(self.conn.lookupByName(name))
        except libvirt.libvirtError as e:
            raise _wrap(e, "instance", name) from None

    def running(self, prefix=""):
        """Guests of the running domains whose name starts with prefix."""
        try:
            doms = self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as e:
            raise _wrap(e, "domains", "*") from None
        return [LxcGuest(d) for d in doms if d.name().startswith(prefix)]

    def names(self, prefix=""):
        try:
            doms = self.conn.listAllDomains()
        except libvirt.libvirtError as e:
            raise _wrap(e, "domains", "*") from None
        return sorted(d.name() for d in doms if d.name().startswith(prefix))

    def remove(self, name, at_once=False):
        return remove_guest(self, name, at_once)


def remove_guest(driver, name, at_once=False):
    """Destroy a driver's domain (at_once: kill its processes first, no grace)
    and undefine it; True if it existed."""
    try:
        guest = driver.get(name)
    except NotFound:
        return False
    if at_once:
        guest.kill()
    guest.destroy()
    guest.undefine()
    return True
