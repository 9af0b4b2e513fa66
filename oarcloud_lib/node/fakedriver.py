"""A fake instance driver: domains in memory, for unit tests of the node agent.

It keeps the Driver and Guest protocols of oarcloud_lib.node.driver and the
behaviour the agent relies on: define starts the domain, a missing domain is
NotFound, stopping a stopped one or removing a missing one is no error.
What libvirt does to Open vSwitch (a started domain's ports appear on the
bridge, a destroyed one's go) is done on a FakeNode's ports, the node's
`ovs-vsctl` as a runner that tests pass to the agent's functions.

Failures are injected by name: FakeDriver(fail={"define": {"oc1-1"}}) makes
the definition of oc1-1 fail as libvirt would, after its domain was defined.
Never used outside tests: nothing in the agent imports it.
"""
import itertools
from dataclasses import dataclass, field

from oarcloud_lib.errors import CommandFailed, Conflict, NotFound
from oarcloud_lib.names import port_name
from oarcloud_lib.node.driver import remove_guest

_PIDS = itertools.count(4000000)  # above any real pid_max: never a real process


@dataclass
class Result:
    code: int = 0
    out: str = ""
    err: str = ""


@dataclass
class FakeNode:
    """What a node's Open vSwitch holds (ports per bridge), as a runner: the
    ovs-vsctl commands of oarcloud_lib.tools.ovs change it; every other
    command is recorded and succeeds."""

    ports: dict = field(default_factory=dict)   # bridge -> set of port names
    calls: list = field(default_factory=list)

    def run(self, argv, check=True, timeout=None, stdin=None):
        self.calls.append(list(argv))
        if argv and argv[0] == "ovs-vsctl":
            return Result(out=self._vsctl([a for a in argv[1:] if not a.startswith("--")]))
        return Result()

    def out(self, argv, timeout=None, stdin=None):
        return self.run(argv, timeout=timeout, stdin=stdin).out

    def _vsctl(self, args):
        verb = args[0] if args else ""
        if verb == "list-ports":
            return "".join(p + "\n" for p in sorted(self.ports.get(args[1], ())))
        if verb == "del-port":
            for ports in self.ports.values():
                ports.discard(args[-1])
        elif verb == "add-port":
            self.ports.setdefault(args[1], set()).add(args[2])
        return ""


class FakeGuest:
    """One fake domain."""

    def __init__(self, driver, spec):
        self._driver, self.spec = driver, spec
        self.name = spec.name
        self._state, self._pid = "stopped", None
        self.events = []

    def _node_ports(self):
        return {n["port"] for n in self.spec.nics} if self.spec.nics else {self.name}

    def state(self):
        if self.name not in self._driver.domains:
            raise NotFound(what="domain", name=self.name)
        return self._state

    def info(self):
        return {"state": self.state(), "memory": self.spec.memory, "cores": self.spec.cores,
                "cpu_time_ns": 0}

    def init_pid(self):
        if self.state() != "running":
            raise Conflict(what="instance", detail="%s is not running" % self.name)
        return self._pid

    def nic_count(self):
        return len(self.spec.nics)

    def listens(self, port):
        return self.state() == "running"

    def has_file(self, path):
        return path in self._driver.files

    def start(self):
        if self.state() == "running":
            raise Conflict(what="start", detail="%s: domain is already running" % self.name)
        self._driver.check("start", self.name)
        self._state, self._pid = "running", next(_PIDS)
        for port in self._node_ports():
            self._driver.node.ports.setdefault(self._driver.bridge, set()).add(port)
        self.events.append("start")

    def stop(self, grace):
        self.events.append("stop %g" % grace)
        self.destroy()

    def destroy(self):
        if self.name in self._driver.domains and self._state == "running":
            self._state, self._pid = "stopped", None
            for ports in self._driver.node.ports.values():
                ports -= self._node_ports()
            self.events.append("destroy")

    def kill(self):
        if self.name in self._driver.domains and self._state == "running":
            self.events.append("kill")
            return True
        return False

    def suspend(self):
        self._driver.check("suspend", self.name)
        if self.state() != "running":
            raise Conflict(what="suspend", detail="%s is not running" % self.name)
        self._state = "paused"

    def resume(self):
        if self.name in self._driver.domains and self._state == "paused":
            self._state = "running"

    def undefine(self):
        self._driver.domains.pop(self.name, None)


@dataclass
class Spec:
    """The least of a DomainSpec a fake guest needs (tests that define a
    domain without going through the agent)."""

    name: str
    cores: int = 1
    memory: int = 256 << 20
    nics: list = field(default_factory=list)


class FakeDriver:
    """Fake domains on a FakeNode; the same calls as LxcDriver."""

    def __init__(self, node=None, fail=None, bridge="br-int", files=()):
        self.node = node or FakeNode()
        self.domains = {}
        self.fail = {verb: set(names) for verb, names in (fail or {}).items()}
        self.bridge = bridge
        self.files = set(files)   # paths every instance root has (e.g. /usr/sbin/sshd)
        self.down = False         # libvirtd unreachable

    def check(self, verb, name):
        if self.down:
            raise CommandFailed(code=38, argv="libvirt %s %s" % (verb, name),
                                stderr="Failed to connect socket")
        if name in self.fail.get(verb, ()):
            raise CommandFailed(code=1, argv="libvirt %s %s" % (verb, name),
                                stderr="injected failure")

    def define(self, spec):
        self.check("define", spec.name)
        guest = self.domains.get(spec.name) or FakeGuest(self, spec)
        guest.spec = spec
        self.domains[spec.name] = guest
        guest.start()
        return guest

    def add(self, name, running=True, nics=1):
        """A domain as a crash or an older agent may have left it."""
        spec = Spec(name, nics=[{"port": port_name(name, i)} for i in range(nics)])
        guest = FakeGuest(self, spec)
        self.domains[name] = guest
        if running:
            guest.start()
        return guest

    def get(self, name):
        self.check("lookup", "*")
        try:
            return self.domains[name]
        except KeyError:
            raise NotFound(what="instance", name=name) from None

    def running(self, prefix=""):
        self.check("list", "*")
        return [g for n, g in sorted(self.domains.items())
                if n.startswith(prefix) and g._state == "running"]

    def names(self, prefix=""):
        self.check("list", "*")
        return sorted(n for n in self.domains if n.startswith(prefix))

    def remove(self, name, at_once=False):
        self.check("remove", name)
        return remove_guest(self, name, at_once)
