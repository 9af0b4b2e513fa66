"""HAProxy: the one module that starts it and speaks its runtime API (a unix
socket, one command per connection); machine output parsed by pure
functions.  Servers are added, drained and deleted through the API, with no
reload (HAProxy 2.6's dynamic servers)."""
import csv
import io
import socket

from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import CommandFailed

TIMEOUT = 5.0


def start(config, pidfile, runner=LOCAL):
    """Check config, then start a master-worker HAProxy that detaches
    (its master's pid in pidfile).  Raises CommandFailed."""
    runner.run(["haproxy", "-c", "-q", "-f", str(config)], timeout=30)
    runner.run(["haproxy", "-W", "-D", "-f", str(config), "-p", str(pidfile)], timeout=30)


def command(sock_path, line, timeout=TIMEOUT):
    """One runtime API command's answer (text).  Raises CommandFailed."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError as e:
        raise CommandFailed(argv="haproxy API: %s" % line, code=-1, stderr=str(e)) from None
    return b"".join(chunks).decode(errors="replace")


def checked(sock_path, line):
    """command(), its answer refused when HAProxy says it failed."""
    out = command(sock_path, line)
    low = out.lower()
    if any(w in low for w in ("unknown command", "no such", "error", "failed", "not found",
                              "invalid", "require")) and "new server registered" not in low:
        raise CommandFailed(argv="haproxy API: %s" % line, code=1, stderr=out.strip()[:300])
    return out


def parse_stat(text):
    """`show stat` (CSV) -> [{field: value}] (numbers as int, empty as None)."""
    text = text.lstrip("# ")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        out = {}
        for k, v in row.items():
            if k is None or k == "":
                continue
            out[k] = int(v) if v.isdigit() else (v if v != "" else None)
        rows.append(out)
    return rows


def parse_servers_state(text):
    """`show servers state BACKEND` -> {server name: {addr, port, admin, op}}
    (op: 0 stopped, 1 starting, 2 running, 3 stopping; admin: a bit field,
    0x01 forced maintenance, 0x08 draining)."""
    lines = [l for l in text.splitlines() if l.strip() and not l.startswith("#")]
    out = {}
    for line in lines[1:] if lines and lines[0].strip().isdigit() else lines:
        f = line.split()
        if len(f) < 7:
            continue
        out[f[3]] = {"addr": f[4], "op": int(f[5]), "admin": int(f[6]),
                     "port": int(f[18]) if len(f) > 18 and f[18].isdigit() else None}
    return out
