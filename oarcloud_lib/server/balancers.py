"""Load balancers (F.u.7, docs/balancers.md): one HAProxy per balancer on the
OAR server, in front of the running members of one scaling group.

    create(conn, owner, name, group, port, check, algorithm) / delete(conn, owner, name)
        (root: the broker, for owner)
    get(conn, owner, name) / owned(conn, owner) / describe(conn, row)
    reconcile(conn, lb, members)     (root: the monitor's scaler, each cycle)
    drain(lb, member)                (before the scaler removes a member)
    sample(conn, lb, now)            (its request rate, 5xx rate, latency as metrics)

The balancer listens on the server's address (server_address), on a port of
LISTEN_PORTS given at its creation: `lb show` gives it as HOST:PORT,
reachable from the server and from the nodes.  Each member is reached at
the port it publishes on its node for the balancer's port (an exposure, as
`oarcloud net expose` makes; it counts against the owner's published-ports
quota): HAProxy needs no leg in the tenant's network, and the member's
network rules (an ingress rule for the port) apply to what it sends.

HAProxy runs master-worker, drops root for the haproxy user once its socket
is bound, and is changed through its runtime API only (add server, drain,
del server): no reload.  Each change also rewrites its configuration and
saves its servers' state (server-state-file), so that a restart or reload
finds the same servers in the same states.
"""
import logging
import re
import shutil
import socket
import time
from pathlib import Path

from oarcloud_lib import config, daemons, paths, templating
from oarcloud_lib.catalog import groups as group_rows, instances, networks
from oarcloud_lib.catalog.db import dicts
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
from oarcloud_lib.tools import haproxy

LOG = logging.getLogger("oarcloud.balancers")
RUN = Path("/run/oarcloud/lb")         # per balancer: admin socket, pidfile
STATE = paths.STATE / "lb"             # per balancer: configuration, servers' state
LISTEN_PORTS = (33000, 33999)
ALGORITHMS = ("roundrobin", "leastconn")
CHECK_RE = re.compile(r"^(?:tcp|http:(/[A-Za-z0-9._~/?=&%+-]{0,200}))\Z")
# Health checks: a dead member is out after two failed checks a second apart
# (at most ~2.5 s with the check's own 1 s timeout), back after two good ones.
SERVER_OPTIONS = "check inter 1s fastinter 500ms downinter 1s fall 2 rise 2"
DRAIN_TIMEOUT = 10.0   # s a drained member's sessions may take to end
COLUMNS = ("id", "owner", "name", "group_id", "port", "check_kind", "check_path", "algorithm",
           "listen_port", "created")


def parse_check(text):
    """'tcp' -> ('tcp', None), 'http:/health' -> ('http', '/health').  Raises Refused."""
    m = CHECK_RE.match(text or "")
    if not m:
        raise Refused(detail="bad --check %r: tcp, or http:/PATH" % str(text)[:60])
    return ("http", m.group(1)) if m.group(1) else ("tcp", None)


def check_port(port):
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise Refused(detail="bad --port %r: a port from 1 to 65535" % (port,))
    return port


def _dir(lb_id):
    return RUN / str(lb_id)


def _files(lb_id):
    run, state = _dir(lb_id), STATE / str(lb_id)
    return {"run": run, "state_dir": state, "config": state / "haproxy.cfg",
            "state_file": state / "servers.state", "pidfile": run / "haproxy.pid",
            "admin_socket": run / "admin.sock"}


# -- the catalog ------------------------------------------------------------------------

def get(conn, owner, name):
    """owner's balancer name.  Raises NotFound (another user's is not found either)."""
    group_rows.check_name(name, "balancer")
    rows = dicts(conn.execute("SELECT %s FROM balancers WHERE owner = %%s AND name = %%s"
                              % ", ".join(COLUMNS), (owner, name)))
    if not rows:
        raise NotFound(what="balancer", name=name)
    return rows[0]


def of_group(conn, group_id):
    rows = dicts(conn.execute("SELECT %s FROM balancers WHERE group_id = %%s"
                              % ", ".join(COLUMNS), (group_id,)))
    return rows[0] if rows else None


def owned(conn, owner=None):
    where, args = ("WHERE owner = %s", (owner,)) if owner is not None else ("", ())
    return dicts(conn.execute("SELECT %s FROM balancers %s ORDER BY owner, name"
                              % (", ".join(COLUMNS), where), args))


def address(lb, conf=None):
    return "%s:%d" % ((conf or config.load()).server_address, lb["listen_port"])


def create(conn, owner, name, group_name, port, check="tcp", algorithm="roundrobin"):
    """A balancer of owner's in front of their group group_name on port (the
    members' port).  Returns its row.  Raises Refused, NotFound."""
    from oarcloud_lib.service import groups
    group_rows.check_name(name, "balancer")
    check_port(port)
    kind, path = parse_check(check)
    if algorithm not in ALGORITHMS:
        raise Refused(detail="bad --algorithm %r: %s" % (algorithm, " or ".join(ALGORITHMS)))
    group = group_rows.get(conn, owner, group_name)
    # The members' network must let the balancer in: the owner's own rule.
    net_name = (group["networks"] or [networks.DEFAULT_NAME])[0]
    try:
        net = networks.get(conn, owner, net_name)
        rules = networks.rules(conn, [net["id"]])[net["id"]]
    except NotFound:
        rules = []
    if not networks.allows_ingress(rules, "tcp", port):
        raise Refused(detail="no ingress rule of network %s lets port %d in: oarcloud net rule "
                             "add %s --direction ingress --proto tcp --port %d"
                      % (net_name, port, net_name, port))
    with conn.transaction():
        conn.execute("LOCK TABLE balancers IN SHARE ROW EXCLUSIVE MODE")
        if conn.execute("SELECT 1 FROM balancers WHERE owner = %s AND name = %s",
                        (owner, name)).fetchone():
            raise Refused(detail="you already have a balancer named %s" % name)
        other = of_group(conn, group["id"])
        if other:
            raise Refused(detail="group %s already has balancer %s" % (group_name, other["name"]))
        used = {r[0] for r in conn.execute("SELECT listen_port FROM balancers")}
        free = next((p for p in range(LISTEN_PORTS[0], LISTEN_PORTS[1] + 1) if p not in used),
                    None)
        if free is None:
            raise Conflict(what="balancer", detail="the server has no balancer port left")
        conn.execute("INSERT INTO balancers (owner, name, group_id, port, check_kind,"
                     " check_path, algorithm, listen_port) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                     " %s)", (owner, name, group["id"], port, kind, path, algorithm, free))
    groups.wake_scaler(conn)
    LOG.info("balancer %s of %s: group %s port %d on %d", name, owner, group_name, port, free)
    return get(conn, owner, name)


def delete(conn, owner, name, runner=LOCAL):
    """Stop the balancer and remove it; its members' published ports go too."""
    from oarcloud_lib.service import fanout, groups
    lb = get(conn, owner, name)
    with groups.group_lock(conn, lb["group_id"]):
        stop(lb["id"])
        nodes = set()
        for m in group_rows.members(conn, lb["group_id"]):
            if m["state"] in ("running", "stopped"):
                try:
                    networks.unexpose(conn, instances.of_domain(conn, m["domain"]), lb["port"])
                    nodes.add(m["node"])
                except NotFound:
                    pass
        conn.execute("DELETE FROM balancers WHERE id = %s", (lb["id"],))
    fanout.sync_nodes(sorted(nodes))
    return lb


def describe(conn, lb, conf=None):
    """The balancer as `lb show` gives it: address, group, members and their
    health as HAProxy sees them, its last metrics."""
    group = conn.execute("SELECT name FROM scaling_groups WHERE id = %s",
                         (lb["group_id"],)).fetchone()
    out = dict(lb, address=address(lb, conf), group=group[0] if group else None,
               check="http:%s" % lb["check_path"] if lb["check_kind"] == "http" else "tcp")
    out["members"] = []
    try:
        state = _servers(lb)
    except OarcloudError:
        state = {}
    for name, s in sorted(state.items()):
        out["members"].append({"name": name, "address": "%s:%s" % (s["addr"], s["port"]),
                               "state": server_state(s)})
    out["running"] = bool(daemons.read_pid(_files(lb["id"])["pidfile"]))
    return out


def health(lb):
    """{member: up, down, draining, maint...} as the balancer's HAProxy sees
    them ({} when it does not run)."""
    if not _files(lb["id"])["admin_socket"].exists():
        return {}
    try:
        state = _servers(lb)
    except OarcloudError:
        return {}
    return {name: server_state(s) for name, s in state.items()}


def _servers(lb):
    """{member: its server as HAProxy's `show servers state` gives it}."""
    return haproxy.parse_servers_state(haproxy.command(_files(lb["id"])["admin_socket"],
                                                       "show servers state members"))


def server_state(s):
    """HAProxy's state of a server in one word: up, down, draining, maint."""
    if s["admin"] & 0x01 or s["admin"] & 0x02 or s["admin"] & 0x04 or s["admin"] & 0x20:
        return "maint"
    if s["admin"] & 0x08 or s["admin"] & 0x10:
        return "draining"
    return {0: "down", 1: "starting", 2: "up", 3: "stopping"}.get(s["op"], str(s["op"]))


# -- HAProxy ------------------------------------------------------------------------------

def _render(lb, servers, conf=None):
    f = _files(lb["id"])
    return templating.render(
        "haproxy.cfg.j2", name=lb["name"], address=(conf or config.load()).server_address,
        listen_port=lb["listen_port"], mode=lb["check_kind"], check_path=lb["check_path"],
        algorithm=lb["algorithm"], pidfile=f["pidfile"], admin_socket=f["admin_socket"],
        state_file=f["state_file"], server_options=SERVER_OPTIONS,
        servers=[{"name": n, "address": a} for n, a in sorted(servers.items())])


def _save(lb, servers, conf=None):
    """The configuration as it now is, and the servers' state, for a reload."""
    f = _files(lb["id"])
    f["state_dir"].mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.write_atomic(f["config"], _render(lb, servers, conf))
    try:
        state = haproxy.command(f["admin_socket"], "show servers state")
        paths.write_atomic(f["state_file"], state)
    except OarcloudError as e:
        LOG.warning("balancer %s: servers' state not saved: %s", lb["name"], e)


def ensure_running(lb, servers, runner=LOCAL, conf=None):
    """The balancer's HAProxy, started with servers ({name: host:port}) if
    it does not run.  Returns True when it was started."""
    f = _files(lb["id"])
    if daemons.read_pid(f["pidfile"]) and f["admin_socket"].exists():
        return False
    f["run"].mkdir(parents=True, exist_ok=True, mode=0o700)
    f["state_dir"].mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.write_atomic(f["config"], _render(lb, servers, conf))
    haproxy.start(f["config"], f["pidfile"], runner)
    if not daemons.wait_for(lambda: f["admin_socket"].exists(), timeout=10):
        raise OarcloudError("balancer %s: HAProxy started but its socket did not come"
                            % lb["name"])
    LOG.info("balancer %s of %s: HAProxy started on %s", lb["name"], lb["owner"],
             address(lb, conf))
    return True


def stop(lb_id):
    f = _files(lb_id)
    pid = daemons.read_pid(f["pidfile"])
    if pid:
        daemons.stop_pid(pid)
    shutil.rmtree(f["run"], ignore_errors=True)
    shutil.rmtree(f["state_dir"], ignore_errors=True)


def stop_all():
    """Every balancer's HAProxy on this server (lab down); returns how many."""
    count = 0
    for d in (RUN.iterdir() if RUN.is_dir() else []):
        if d.name.isdigit():
            stop(int(d.name))
            count += 1
    return count


def sweep(conn):
    """Stop the HAProxy of balancers the catalog no longer has (an account
    deleted with its balancers)."""
    known = {r[0] for r in conn.execute("SELECT id FROM balancers")}
    for d in (RUN.iterdir() if RUN.is_dir() else []):
        if d.name.isdigit() and int(d.name) not in known:
            LOG.info("balancer %s: gone from the catalog, stopping its HAProxy", d.name)
            stop(int(d.name))


def _published(conn, lb, members):
    """{member name: node address:node port} of members, their balancer port
    published on their nodes (made where missing); returns it and the nodes
    whose networking must follow."""
    wanted, nodes = {}, set()
    for m in members:
        row = instances.of_domain(conn, m["domain"])
        exp, added = networks.expose(conn, row, lb["port"])
        if added:
            nodes.add(row["node"])
        wanted[m["name"]] = "%s:%d" % (socket.gethostbyname(row["node"]), exp["node_port"])
    return wanted, nodes


def reconcile(conn, lb, members, runner=LOCAL, conf=None):
    """HAProxy's servers made the group's running members: the new ones
    added (after their node publishes their port), the gone ones drained and
    deleted.  Returns (added, removed) names."""
    from oarcloud_lib.service import fanout
    f = _files(lb["id"])
    running = [m for m in members if m["state"] == "running"]
    up = daemons.read_pid(f["pidfile"]) and f["admin_socket"].exists()
    current = _servers(lb) if up else {}
    # Only the members HAProxy does not have yet are published and looked up.
    wanted = {n: "%s:%s" % (s["addr"], s["port"]) for n, s in current.items()
              if any(m["name"] == n for m in running)}
    new, nodes = _published(conn, lb, [m for m in running if m["name"] not in current])
    if nodes:
        errors = fanout.sync_nodes(sorted(nodes))
        for node in errors:   # not published there yet: next cycle
            new = {n: a for n, a in new.items()
                   if not any(m["name"] == n and m["node"] == node for m in running)}
    wanted.update(new)
    if ensure_running(lb, wanted, runner, conf):
        current = _servers(lb)
    added, removed = [], []
    for name, addr in sorted(wanted.items()):
        if name in current:
            continue
        haproxy.checked(f["admin_socket"], "add server members/%s %s %s"
                        % (name, addr, SERVER_OPTIONS))
        # Down until its checks pass (rise 2): no request before it serves.
        haproxy.command(f["admin_socket"], "set server members/%s health down" % name)
        haproxy.checked(f["admin_socket"], "enable health members/%s" % name)
        haproxy.checked(f["admin_socket"], "enable server members/%s" % name)
        added.append(name)
    for name in sorted(set(current) - set(wanted)):
        _remove_server(lb, name)
        removed.append(name)
    if added or removed:
        _save(lb, wanted, conf)
        LOG.info("balancer %s: added %s, removed %s", lb["name"], added or "-", removed or "-")
    return added, removed


def _sessions(lb, name):
    rows = haproxy.parse_stat(haproxy.command(_files(lb["id"])["admin_socket"], "show stat"))
    row = next((r for r in rows if r.get("pxname") == "members" and r.get("svname") == name),
               None)
    return (row.get("scur") or 0) if row else 0


def _remove_server(lb, name, timeout=DRAIN_TIMEOUT):
    """Drain a server (no new request, its sessions finish), then delete it."""
    sock = _files(lb["id"])["admin_socket"]
    haproxy.command(sock, "set server members/%s state drain" % name)
    daemons.wait_for(lambda: _sessions(lb, name) == 0, timeout=timeout, interval=0.1)
    haproxy.command(sock, "set server members/%s state maint" % name)
    haproxy.command(sock, "shutdown sessions server members/%s" % name)
    haproxy.checked(sock, "del server members/%s" % name)


def drain(lb, member_name):
    """Take member_name out of the balancer before it is removed: drained,
    then deleted from HAProxy (the configuration follows).  Best effort: a
    balancer that does not run has nothing to drain."""
    f = _files(lb["id"])
    if not f["admin_socket"].exists():
        return False
    try:
        current = _servers(lb)
        if member_name not in current:
            return False
        _remove_server(lb, member_name)
        kept = {n: "%s:%s" % (s["addr"], s["port"]) for n, s in current.items()
                if n != member_name}
        _save(lb, kept)
        return True
    except OarcloudError as e:
        LOG.warning("balancer %s: %s not drained: %s", lb["name"], member_name, e)
        return False


# -- metrics -------------------------------------------------------------------------------

class Sampler:
    """A balancer's metrics from HAProxy's counters: requests a second, 5xx
    answers a second, mean response time (ms), members up."""

    def __init__(self):
        self.prev = {}   # lb id -> (t, requests total, 5xx total)

    def sample(self, lb, now):
        f = _files(lb["id"])
        if not f["admin_socket"].exists():
            return None
        rows = haproxy.parse_stat(haproxy.command(f["admin_socket"], "show stat"))
        backend = next((r for r in rows if r.get("pxname") == "members"
                        and r.get("svname") == "BACKEND"), None)
        if backend is None:
            return None
        total = backend.get("stot") or 0
        errors = backend.get("hrsp_5xx") or 0
        up = sum(1 for r in rows if r.get("pxname") == "members"
                 and r.get("svname") not in ("BACKEND", "FRONTEND")
                 and str(r.get("status") or "").startswith("UP"))
        out = {"latency": float(backend.get("rtime") or 0), "up": float(up)}
        prev = self.prev.get(lb["id"])
        self.prev[lb["id"]] = (now, total, errors)
        if prev and now > prev[0]:
            dt = now - prev[0]
            out["rate"] = max(0, total - prev[1]) / dt
            out["errors"] = max(0, errors - prev[2]) / dt
        return out
