"""Instances' consoles on a node: one keeper holds them all, so that what an
instance prints is logged while nobody is attached, and `oarcloud console`
attaches through it (libvirt's LXC driver keeps no console log and serves one
client per console: a logger of its own would steal the user's console).

    python -m oarcloud_lib.node.consoles serve    (the keeper; `setup node` starts it)

The keeper, root's, one per node (PIDFILE):
- holds the console stream of every running oarcloud instance, opened when
  libvirt says the instance started (and for those running when it starts);
- appends what each prints to CONSOLES/DOMAIN.log, which is capped: past
  LOG_CAP bytes it becomes DOMAIN.log.1 (the one before is dropped);
- reads at most RATE bytes a second of each console: a flood waits in the
  instance's own console buffer, never in the keeper or on the node's disk;
- relays one attached client per console over SOCKET (root's alone): the
  client writes "attach DOMAIN\\n" and reads "ok\\n" or "error: ...\\n", then
  bytes both ways.  A new client replaces the attached one; a slow client
  is dropped rather than waited for.

Until the keeper reads it, libvirt's controller holds what an instance prints
and the instance's writes wait: the boot's first lines are not lost while the
keeper starts.
"""
import errno
import logging
import os
import socket
import sys
import time
from pathlib import Path

from oarcloud_lib import paths
from oarcloud_lib.names import DOMAIN_RE, job_prefix

LOG = logging.getLogger("oarcloud.consoles")
CONSOLES = paths.STATE / "consoles"
SOCKET = Path("/run/oarcloud/consoles.sock")
PIDFILE = Path("/run/oarcloud/consoles.pid")
LOG_CAP = 1 << 20            # per file: a console keeps at most twice this
RATE = 512 << 10             # bytes a second read from one console
CLIENT_BACKLOG = 256 << 10   # bytes waiting for an attached client before it is dropped
INPUT_BACKLOG = 64 << 10     # bytes of a client's keys waiting for the console
RETAKE = 2.0                 # seconds between tries to take a lost console again
URI = "lxc:///system"


def log_files(domain, root=None):
    """The console log's files, the older first."""
    root = root or CONSOLES
    return [Path(root, domain + ".log.1"), Path(root, domain + ".log")]


def read_log(domain, root=None):
    """All the console log has kept of domain (bytes; empty when it printed
    nothing).  The caller has checked domain (DOMAIN_RE)."""
    out = b""
    for f in log_files(domain, root):
        try:
            out += f.read_bytes()
        except FileNotFoundError:
            pass
    return out


def forget(domain, root=None):
    """Remove domain's console log (its instance is gone)."""
    for f in log_files(domain, root):
        f.unlink(missing_ok=True)


def logged(job_id=None, root=None):
    """The domains with a console log here (of job_id, or every one)."""
    prefix = job_prefix(job_id)
    return sorted({f.name.split(".log")[0] for f in Path(root or CONSOLES).glob(prefix + "*.log*")})


class Log:
    """One console's capped log file, open while the keeper holds the console
    (what comes after, as the instance is torn down, is not written: a log
    removed with its instance is never made again)."""

    def __init__(self, domain, root=None, cap=LOG_CAP):
        self.path = Path(root or CONSOLES, domain + ".log")
        self.cap = cap
        self.f = None

    def open(self):
        if self.f is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            self.f = os.fdopen(fd, "ab", buffering=0)

    def write(self, data):
        if self.f is None:
            return
        self.f.write(data)
        if self.f.tell() >= self.cap:
            self.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self.open()

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


class Bucket:
    """At most rate bytes a second: take(n) -> seconds to wait before reading on."""

    def __init__(self, rate=RATE, clock=time.monotonic):
        self.rate, self.clock = rate, clock
        self.since, self.used = clock(), 0

    def take(self, n):
        now = self.clock()
        if now - self.since >= 1.0:
            self.since, self.used = now, 0
        self.used += n
        return max(0.0, 1.0 - (now - self.since)) if self.used >= self.rate else 0.0


# -- the keeper (libvirt's event loop: streams, the socket and timers on one thread) ----

class Console:
    """One instance's console as the keeper holds it."""

    def __init__(self, keeper, domain):
        self.keeper, self.domain = keeper, domain
        self.log = Log(domain, keeper.root)
        self.bucket = Bucket()
        self.stream = None
        self.paused = False
        self.client = None        # the attached client's socket
        self.client_watch = None
        self.to_client = b""
        self.to_console = b""

    # the instance's side
    def open(self):
        import libvirt
        self.close_stream()
        dom = self.keeper.conn.lookupByName(self.domain)
        stream = self.keeper.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, stream, 0)   # the LXC driver takes no flags
        self.stream, self.paused = stream, False
        self.log.open()
        stream.eventAddCallback(self._stream_events(), self._on_stream, None)
        LOG.info("%s: console held", self.domain)

    def _stream_events(self):
        import libvirt
        events = 0 if self.paused else libvirt.VIR_STREAM_EVENT_READABLE
        if self.to_console:
            events |= libvirt.VIR_STREAM_EVENT_WRITABLE
        return events | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP

    def _update_stream(self):
        if self.stream is not None:
            self.stream.eventUpdateCallback(self._stream_events())

    def _on_stream(self, stream, events, _opaque):
        import libvirt
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self.lost()
            return
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            try:
                data = stream.recv(16384)
            except libvirt.libvirtError:
                data = b""
            if data == -2:
                return
            if not data:
                self.lost()
                return
            self.log.write(data)
            self._to_client(data)
            wait = self.bucket.take(len(data))
            if wait:
                self.paused = True
                self._update_stream()
                self.keeper.later(wait, self._resume)
        if events & libvirt.VIR_STREAM_EVENT_WRITABLE and self.to_console:
            try:
                n = stream.send(self.to_console)
            except libvirt.libvirtError:
                n = 0
            if n > 0:
                self.to_console = self.to_console[n:]
            self._update_stream()
            self._update_client()

    def lost(self):
        """The stream ended while the instance may still run: taken again
        (its stop event releases it meanwhile if it is gone)."""
        self.close_stream()
        self.keeper.later(RETAKE, lambda: self.keeper.retake(self.domain))

    def _resume(self):
        self.paused = False
        self._update_stream()

    def close_stream(self):
        if self.stream is not None:
            try:
                self.stream.eventRemoveCallback()
                self.stream.abort()
            except Exception:  # already gone with its domain
                pass
            self.stream = None
        self.log.close()

    # the client's side
    def attach(self, sock):
        import libvirt
        self.detach()
        sock.setblocking(False)
        self.client = sock
        self.client_watch = libvirt.virEventAddHandle(sock.fileno(), self._client_events(),
                                                      self._on_client, None)

    def _client_events(self):
        import libvirt
        events = libvirt.VIR_EVENT_HANDLE_READABLE if len(self.to_console) < INPUT_BACKLOG else 0
        return events | (libvirt.VIR_EVENT_HANDLE_WRITABLE if self.to_client else 0)

    def _update_client(self):
        import libvirt
        if self.client_watch is not None:
            libvirt.virEventUpdateHandle(self.client_watch, self._client_events())

    def _to_client(self, data):
        if self.client is None:
            return
        self.to_client += data
        if len(self.to_client) > CLIENT_BACKLOG:
            LOG.warning("%s: console client too slow, dropped", self.domain)
            self.detach()
            return
        self._update_client()

    def _on_client(self, _watch, _fd, events, _opaque):
        import libvirt
        try:
            if events & libvirt.VIR_EVENT_HANDLE_READABLE:
                data = self.client.recv(4096)
                if not data:
                    self.detach()
                    return
                if self.stream is not None:
                    self.to_console += data
                    self._update_stream()
            if events & libvirt.VIR_EVENT_HANDLE_WRITABLE and self.to_client:
                n = self.client.send(self.to_client)
                self.to_client = self.to_client[n:]
            if events & (libvirt.VIR_EVENT_HANDLE_ERROR | libvirt.VIR_EVENT_HANDLE_HANGUP):
                self.detach()
                return
        except BlockingIOError:
            pass
        except OSError:
            self.detach()
            return
        self._update_client()

    def detach(self):
        import libvirt
        if self.client_watch is not None:
            libvirt.virEventRemoveHandle(self.client_watch)
            self.client_watch = None
        if self.client is not None:
            self.client.close()
            self.client = None
        self.to_client = self.to_console = b""

    def close(self):
        self.detach()
        self.close_stream()


class Keeper:
    def __init__(self, root=None, sock_path=None):
        self.root, self.sock_path = Path(root or CONSOLES), Path(sock_path or SOCKET)
        self.conn = None
        self.consoles = {}
        self.closed = False

    def later(self, seconds, fn):
        import libvirt

        def fire(timer, _opaque):
            libvirt.virEventRemoveTimeout(timer)
            fn()
        libvirt.virEventAddTimeout(max(1, int(seconds * 1000)), fire, None)

    def hold(self, domain):
        if not DOMAIN_RE.match(domain):
            return
        console = self.consoles.get(domain) or self.consoles.setdefault(domain,
                                                                        Console(self, domain))
        try:
            console.open()
        except Exception as e:  # libvirt's error: the instance stopped meanwhile
            LOG.warning("%s: console not opened: %s", domain, e)

    def retake(self, domain):
        console = self.consoles.get(domain)
        if console is None or console.stream is not None or self.conn is None:
            return
        try:
            console.open()
        except Exception as e:  # still taken, or the instance is gone
            if not self._active(domain):
                self.release(domain)
                return
            LOG.info("%s: console not taken back yet: %s", domain, e)
            self.later(RETAKE, lambda: self.retake(domain))

    def _active(self, domain):
        try:
            return bool(self.conn.lookupByName(domain).isActive())
        except Exception:
            return False

    def release(self, domain):
        console = self.consoles.pop(domain, None)
        if console is not None:
            console.close()

    def _on_lifecycle(self, _conn, dom, event, _detail, _opaque):
        import libvirt
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            self.hold(dom.name())
        elif event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
            self.release(dom.name())

    def _on_close(self, _conn, _reason, _opaque):
        self.closed = True

    def connect(self):
        import libvirt
        self.conn = libvirt.open(URI)
        self.closed = False
        self.conn.registerCloseCallback(self._on_close, None)
        self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                         self._on_lifecycle, None)
        for dom in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            self.hold(dom.name())

    def disconnect(self):
        for domain in list(self.consoles):
            self.release(domain)
        try:
            self.conn.close()
        except Exception:
            pass
        self.conn = None

    def listen(self):
        import libvirt
        self.sock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sock_path.unlink(missing_ok=True)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            srv.bind(str(self.sock_path))
        finally:
            os.umask(old)
        srv.listen(16)
        srv.setblocking(False)
        self.srv = srv
        libvirt.virEventAddHandle(srv.fileno(), libvirt.VIR_EVENT_HANDLE_READABLE,
                                  self._on_accept, None)

    def _on_accept(self, _watch, _fd, _events, _opaque):
        try:
            sock, _ = self.srv.accept()
        except OSError:
            return
        try:
            self.greet(sock)
        except OSError as e:
            LOG.warning("console client: %s", e)
            sock.close()

    def greet(self, sock):
        """Read the client's "attach DOMAIN" line and attach it, or say why not."""
        sock.settimeout(5)
        line = b""
        while not line.endswith(b"\n") and len(line) < 64:
            chunk = sock.recv(64 - len(line))
            if not chunk:
                break
            line += chunk
        words = line.decode("ascii", "replace").split()
        domain = words[1] if len(words) == 2 and words[0] == "attach" else ""
        console = self.consoles.get(domain) if DOMAIN_RE.match(domain) else None
        if console is None or console.stream is None:
            sock.sendall(b"error: %s has no console here (is it running?)\n"
                         % domain[:40].encode())
            sock.close()
            return
        sock.sendall(b"ok\n")
        console.attach(sock)

    def serve(self):
        """Hold the consoles until killed; a libvirtd restart (node update) is
        waited out and every console taken again."""
        import libvirt
        libvirt.virEventRegisterDefaultImpl()
        libvirt.registerErrorHandler(lambda *_: None, None)  # errors are raised, not printed
        self.listen()   # (CONSOLES is made root's 0700 by nodesetup.ensure_consoles)
        tries = 0
        while True:
            try:
                self.connect()
            except libvirt.libvirtError as e:
                if tries % 60 == 0:   # once a minute while libvirtd is away
                    LOG.warning("libvirt: %s; trying again every second", e)
                tries += 1
                time.sleep(1)
                continue
            tries = 0
            while not self.closed:
                libvirt.virEventRunDefaultImpl()
            LOG.warning("libvirt closed the connection; taking the consoles again")
            self.disconnect()


# -- a client: `oarcloud console` on the node (node.access) ----------------------------

ESCAPE = b"\x1d"   # Ctrl-]


def attach(domain, stdin=0, stdout=1, sock_path=None):
    """Relay this terminal to domain's console through the keeper until Ctrl-]
    or the console ends.  Raises OSError (no keeper), RuntimeError (its refusal)."""
    import select
    import termios
    import tty
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(sock_path or SOCKET))
    sock.sendall(b"attach %s\n" % domain.encode())
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        answer += chunk
    if answer != b"ok\n":
        raise RuntimeError(answer.decode("ascii", "replace").strip()
                           .removeprefix("error: ") or "the console keeper hung up")
    os.write(2, b"Connected to %s's console (leave with Ctrl-])\r\n" % domain.encode())
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    if saved is not None:
        tty.setraw(stdin)
    try:
        while True:
            ready, _, _ = select.select([stdin, sock], [], [])
            if sock in ready:
                data = sock.recv(16384)
                if not data:
                    return "the console closed"
                _write_all(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    return "input ended"
                if ESCAPE in data:
                    sock.sendall(data.split(ESCAPE, 1)[0])
                    return "left"
                sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()


def _write_all(fd, data):
    while data:
        try:
            data = data[os.write(fd, data):]
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno != errno.EAGAIN:
                raise


def main(argv):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s consoles %(levelname)s %(message)s")
    if argv != ["serve"]:
        print(__doc__, file=sys.stderr)
        return 2
    PIDFILE.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    PIDFILE.write_text("%d\n" % os.getpid())
    Keeper().serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
