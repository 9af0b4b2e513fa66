"""The monitor service (F.u.4, F.u.5, F.a.5, F.a.6): `oarcloud-admin monitor run`,
kept running by server/services.py, a systemd unit or the supervisor where no
systemd runs (pidfile, log in /var/log/oarcloud/monitor.log).

Every `monitor_interval` seconds (site config) it:

- reads each node's probe (`nodeagent probe`, one long-lived OAR ssh per
  node streaming a JSON line per cycle) and stores the values in the
  catalog's samples table, rolled up and pruned as metrics.RETENTION says;
- watches OAR's node states (admins are told of every change);
- turns the catalog's lifecycle changes into user notifications: instance
  running, failed (with the reason), walltime ending soon, image saved;
- evaluates every alarm and queues its notifications on transitions;
- brings every scaling group to its desired size, moved by its target
  (service/groups.py: launches and removes members for their owners);
- serves the last values in Prometheus text format on `monitor_listen`.

Queued notifications are delivered by a thread pool of this process, each
target on its own, retried on notify.BACKOFF: producers (hooks included)
only ever INSERT a row.  Owners take turns (pick): PER_OWNER deliveries in
flight per user at most, ADMIN_THREADS kept for the admins' messages, so
that one user's slow targets delay only that user.  Each URL passes the
site's policy again when sent (notify.site_policy, re-read every
POLICY_EVERY seconds).

Every PRUNE_EVERY seconds it deletes what is older than its retention
(prune): delivered or failed notifications after KEEP_NOTIFICATIONS, the
events of jobs ended KEEP_JOB_EVENTS ago, alarm transitions after
KEEP_ALARM_HISTORY; PRUNE_BATCH rows per table per run at most, so a run
stays short (a full batch runs again at the next cycle).  Every VPN_EVERY
seconds it renews the VPN endpoints' server certificates near their end
(server/vpnca.py) and has their nodes restart them, and every
VOLUMES_EVERY seconds it deletes the volume store's files that no volume
names (server/volumestore.py: sweep).
"""
import collections
import concurrent.futures
import hmac
import http.server
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from oarcloud_lib import config, daemons, metrics, paths
from oarcloud_lib.catalog import alarms, db
from oarcloud_lib.server import nodeops, notify
from oarcloud_lib.tools import oar, oarssh
from oarcloud_lib.errors import NotReady, OarcloudError

LOG = logging.getLogger("oarcloud.monitor")
RUN_DIR = Path("/run/oarcloud")
JOB_END_TTL = 60  # seconds a job's walltime end is trusted
PIDFILE = RUN_DIR / "monitor.pid"
STATUS = RUN_DIR / "monitor.json"
LOGFILE = paths.LOG_DIR / "monitor.log"
ROLLUP_EVERY = 60.0
STREAM_RETRY = 10.0
DELIVERY_THREADS = 8
# Deliveries in flight at once per user; the admins' messages (owner None)
# have ADMIN_THREADS of the DELIVERY_THREADS, which users never take.
PER_OWNER = 2
ADMIN_THREADS = 2
POLICY_EVERY = 60.0
PRUNE_EVERY = 300.0
VPN_EVERY = 3600.0
VOLUMES_EVERY = 600.0  # the volume store's sweep (orphan files only: rare)
PRUNE_BATCH = 10000
KEEP_NOTIFICATIONS = 14 * 86400
KEEP_JOB_EVENTS = 30 * 86400
KEEP_ALARM_HISTORY = 30 * 86400
# What prune deletes: (table, seconds kept, which rows older than %(before)s go).
PRUNE = (
    ("notifications", KEEP_NOTIFICATIONS,
     "state IN ('sent', 'failed') AND created < to_timestamp(%(before)s)"),
    # Of jobs without an instance alive or ended since.
    ("job_events", KEEP_JOB_EVENTS,
     "at < to_timestamp(%(before)s) AND NOT EXISTS (SELECT 1 FROM instances i"
     " WHERE i.job_id = job_events.job_id AND (i.state NOT IN ('deleted', 'failed')"
     " OR i.updated >= to_timestamp(%(before)s)))"),
    ("alarm_history", KEEP_ALARM_HISTORY, "at < to_timestamp(%(before)s)"),
)
# OAR states in which a node is worth probing.
PROBED = ("Alive", "Suspected")


class NodeStream:
    """`nodeagent probe` on one node over OAR's ssh: a JSON reading per cycle."""

    def __init__(self, node, interval, log):
        self.node, self.interval, self.log = node, interval, log
        self.proc, self.buf, self.retry_at = None, b"", 0.0
        self.last = None     # time of the last reading
        self.cpu_seconds = None

    def ensure(self, mono):
        """Start the probe unless it runs; after it ended, wait STREAM_RETRY."""
        if self.proc is not None:
            if self.proc.poll() is None:
                return
            LOG.warning("probe of %s ended (exit %s)", self.node, self.proc.returncode)
            self.stop()
            self.retry_at = mono + STREAM_RETRY
        if mono < self.retry_at:
            return
        argv = oarssh.agent_argv(self.node, "probe", str(self.interval))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log, start_new_session=True)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""

    def fileno(self):
        return self.proc.stdout.fileno()

    def readings(self):
        """The complete readings received so far."""
        try:
            data = os.read(self.fileno(), 1 << 20)
        except BlockingIOError:
            return []
        if not data:  # ended: ensure() restarts it
            self.proc.poll()
            return []
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            try:
                reading = json.loads(line)
            except ValueError:
                LOG.warning("probe of %s: unreadable line %r", self.node, line[:200])
                continue
            if isinstance(reading, dict):
                out.append(reading)
        return out

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc = None


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def host_states(nodes):
    """{host: oar.host_state} from {host: [resource dicts]} (oar.resource_states)."""
    return {host: oar.host_state(resources) for host, resources in nodes.items()}


def pick(due, inflight, threads=DELIVERY_THREADS, per_owner=PER_OWNER,
         admin_threads=ADMIN_THREADS):
    """Which of the due rows (dicts with id and owner, oldest first) to send
    now, given the rows in flight -> a list of due's rows.  At most threads in
    flight in all, per_owner of each user's, admin_threads of the admins'
    (owner None), which users never take; owners take turns, one row each,
    the owner of the oldest row first."""
    counts = collections.Counter(r["owner"] for r in inflight)
    busy = {r["id"] for r in inflight}
    free = threads - len(busy)
    users_free = threads - admin_threads - sum(n for o, n in counts.items() if o is not None)
    queues = {}     # owner -> their rows not in flight; owners in order of their oldest
    for row in due:
        if row["id"] not in busy:
            queues.setdefault(row["owner"], []).append(row)
    picked = []
    took = True
    while free > 0 and took:
        took = False
        for owner, rows in queues.items():
            if free == 0 or not rows or counts[owner] >= (
                    admin_threads if owner is None else per_owner) \
                    or (owner is not None and users_free <= 0):
                continue
            picked.append(rows.pop(0))
            counts[owner] += 1
            free -= 1
            if owner is not None:
                users_free -= 1
            took = True
    return picked


def prune(conn, now, limit=PRUNE_BATCH):
    """Delete at most limit rows of each PRUNE table that are older than it keeps
    them -> {table: rows deleted}; a table at limit may have more left.
    Raises psycopg.Error."""
    deleted = {}
    for table, keep, where in PRUNE:
        cur = conn.execute("DELETE FROM " + table + " WHERE id IN (SELECT id FROM " + table
                           + " WHERE " + where + " LIMIT %(limit)s)",
                           {"before": now - keep, "limit": limit})
        deleted[table] = cur.rowcount
    return deleted


class Monitor:
    def __init__(self, conf=None, interval=None, listen=None):
        self.conf = conf or config.load()
        self.interval = int(interval or self.conf.monitor_interval)
        self.listen = listen if listen is not None else self.conf.monitor_listen
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.latest = {}        # (kind, subject) -> (time, labels, {metric: value})
        self.alive = {}         # node -> 1.0 when OAR has it Alive, else 0.0
        self.streams = {}       # node -> NodeStream
        self.node_state = {}    # node -> OAR state last seen
        self.instances = {}     # domain -> (owner, name) of running instances
        self.job_ends = {}      # job id -> epoch of its walltime's end
        self.job_ends_read = 0.0
        self.notified_at = {}   # alarm id -> time of its last notification
        self.last_rollup = 0.0
        self.last_prune = 0.0
        self.last_vpn = self.last_volumes = 0.0
        self.http = None
        self.scaler = None      # service.groups.Scaler, made at its first cycle
        self.log = open(LOGFILE, "ab") if LOGFILE.parent.is_dir() else subprocess.DEVNULL

    # -- readings ----------------------------------------------------------------------

    def _instance(self, conn, domain):
        if domain not in self.instances:
            row = conn.execute("SELECT owner, name FROM instances WHERE domain = %s",
                               (domain,)).fetchone()
            if row is None:
                return None
            self.instances[domain] = tuple(row)
        return self.instances[domain]

    def take(self, conn, node, reading):
        """Store one reading of node's probe and keep it for Prometheus."""
        now = time.time()
        rows, latest = [], {}
        values = {m: v for m, v in (reading.get("node") or {}).items()
                  if m in metrics.METRICS["node"] and _number(v)}
        rows += [("node", node, None, m, now, float(v)) for m, v in values.items()]
        latest[("node", node)] = (now, {"node": node}, values)
        for domain, got in (reading.get("instances") or {}).items():
            inst = self._instance(conn, domain) if isinstance(got, dict) else None
            if inst is None:
                continue
            owner, name = inst
            values = {m: v for m, v in got.items()
                      if m in metrics.METRICS["instance"] and _number(v)}
            rows += [("instance", domain, owner, m, now, float(v)) for m, v in values.items()]
            latest[("instance", domain)] = (now, {"domain": domain, "instance": name,
                                                  "owner": owner, "node": node}, values)
        metrics.store(conn, rows)
        with self.lock:
            self.latest.update(latest)
        stream = self.streams.get(node)
        if stream:
            stream.last = now
            if _number(reading.get("cpu_seconds")):
                stream.cpu_seconds = reading["cpu_seconds"]

    def prometheus(self):
        """The last values, in Prometheus text format: OAR's state of every node,
        and the readings of the last few cycles (older ones are forgotten)."""
        horizon = time.time() - 3 * self.interval - 5
        samples = [("node", "alive", {"node": n}, v) for n, v in sorted(self.alive.items())]
        with self.lock:
            for key in [k for k, (t, _, _) in self.latest.items() if t < horizon]:
                del self.latest[key]
            for (kind, _), (_, labels, values) in sorted(self.latest.items()):
                samples += [(kind, m, labels, v) for m, v in sorted(values.items())]
        return metrics.render_prometheus(samples)

    # -- every cycle ---------------------------------------------------------------------

    def watch_nodes(self, conn, now):
        """Follow OAR's node states: probes on the nodes, admins told of changes."""
        states = host_states(oar.resource_states())
        mono = time.monotonic()
        rows = []
        for host, state in sorted(states.items()):
            stream = self.streams.setdefault(host, NodeStream(host, self.interval, self.log))
            if state in PROBED:
                stream.ensure(mono)
            old = self.node_state.get(host)
            if old is None:
                conn.execute("INSERT INTO node_states (node, state) VALUES (%s, %s)"
                             " ON CONFLICT (node) DO UPDATE SET state = EXCLUDED.state,"
                             " since = now()", (host, state))
            elif old != state:
                LOG.info("node %s: %s -> %s", host, old, state)
                conn.execute("UPDATE node_states SET state = %s, since = now() WHERE node = %s",
                             (state, host))
                notify.enqueue_event(conn, None, "node_state", node=host, state=state)
            self.node_state[host] = state
            self.alive[host] = 1.0 if state == "Alive" else 0.0
            rows.append(("node", host, None, "alive", now, self.alive[host]))
        for host in set(self.streams) - set(states):
            self.streams.pop(host).stop()
            self.alive.pop(host, None)
        metrics.store(conn, rows)

    def lifecycle(self, conn, now):
        """Instances that came to run or failed, walltimes ending, saved images."""
        cur = conn.execute("SELECT domain, job_id, name, owner, node, state, error FROM instances"
                           " WHERE state IN ('running', 'failed')"
                           " AND notified IS DISTINCT FROM state ORDER BY job_id, idx")
        failed_jobs = {}
        for domain, job_id, name, owner, node, state, error in cur.fetchall():
            if state == "running":
                notify.enqueue_event(conn, owner, "running", instance=name, node=node)
            else:
                reason = error or "no reason given"
                notify.enqueue_event(conn, owner, "failed", instance=name, reason=reason)
                failed_jobs.setdefault(job_id, reason)
            conn.execute("UPDATE instances SET notified = %s WHERE domain = %s", (state, domain))
        for job_id, reason in failed_jobs.items():
            notify.enqueue_event(conn, None, "hook_failed", hook="prologue of job %d" % job_id,
                                 reason=reason)
        self._walltimes(conn, now)
        nodeops.enforce(conn, now)
        cur = conn.execute("SELECT s.id, s.owner, s.image, s.state, s.error,"
                           " coalesce(i.name, s.domain) FROM image_saves s"
                           " LEFT JOIN instances i ON i.domain = s.domain"
                           " WHERE s.state IN ('done', 'failed') AND NOT s.notified")
        for save_id, owner, image, state, error, name in cur.fetchall():
            if state == "done":
                notify.enqueue_event(conn, owner, "saved", instance=name, image=image)
            else:
                notify.enqueue_event(conn, owner, "save_failed", instance=name, image=image,
                                     reason=error or "no reason given")
            conn.execute("UPDATE image_saves SET notified = true WHERE id = %s", (save_id,))

    def _job_ends(self, job_ids, now):
        """{job id: when its walltime ends}, from one oarstat of every job, read
        again once a minute (`oarcloud extend` moves an end) or for a new job."""
        if now - self.job_ends_read > JOB_END_TTL or set(job_ids) - set(self.job_ends):
            try:
                jobs = oar.current_jobs()
            except OarcloudError:
                return self.job_ends
            self.job_ends = {int(j): int(job["startTime"]) + int(job["walltime"])
                             for j, job in jobs.items()
                             if str(job.get("startTime") or "").isdigit()
                             and str(job.get("walltime") or "").isdigit()}
            self.job_ends_read = now
        return self.job_ends

    def _walltimes(self, conn, now):
        warn = self.conf.walltime_warning * 60
        rows = conn.execute("SELECT domain, job_id, name, owner, walltime_warned FROM instances"
                            " WHERE state = 'running'").fetchall()
        ends = self._job_ends({r[1] for r in rows}, now) if rows else {}
        for domain, job_id, name, owner, warned in rows:
            end = ends.get(job_id)
            if end is not None and warned and end - now > warn:   # extended: warn again
                conn.execute("UPDATE instances SET walltime_warned = false WHERE domain = %s",
                             (domain,))
            if warned or end is None or end - now > warn:
                continue
            notify.enqueue_event(conn, owner, "walltime", instance=name,
                                 minutes=max(0, math.ceil((end - now) / 60)))
            conn.execute("UPDATE instances SET walltime_warned = true WHERE domain = %s",
                         (domain,))

    def evaluate(self, conn, now):
        """Every alarm, on the samples of its periods; notifications on transitions."""
        running = {(o, n): d for d, o, n in conn.execute(
            "SELECT domain, owner, name FROM instances WHERE state = 'running'").fetchall()}
        for gone in set(self.instances) - set(running.values()):  # ended: forget them
            del self.instances[gone]
        lbs = {(o, n): str(i) for i, o, n in conn.execute(
            "SELECT id, owner, name FROM balancers").fetchall()}
        for a in alarms.every(conn):
            # What the samples are kept under: a node's name, an instance's
            # domain, a balancer's id.
            subject = a["subject"] if a["kind"] == "node" else (
                lbs if a["kind"] == "lb" else running).get((a["owner"], a["subject"]))
            values = (metrics.period_means(conn, a["kind"], subject, a["metric"], a["period"],
                                           a["periods"], now)
                      if subject else [None] * a["periods"])
            new = alarms.evaluate(a["state"], values, a["op"], a["threshold"], a["periods"])
            value = values[-1]
            since = now - self.notified_at[a["id"]] if a["id"] in self.notified_at else None
            fire = alarms.transition(a["state"], new, a["repeat"], since,
                                     a["period"] * a["periods"])
            alarms.record(conn, a, new, value)
            if fire:
                LOG.info("alarm %s of %s: %s -> %s (%s)", a["name"], a["owner"] or "admins",
                         a["state"], new, value)
                title, body = alarms.message(a["name"], a["subject"], a["metric"], a["op"],
                                             a["threshold"], new, value, old=a["state"],
                                             kind=a["kind"])
                notify.enqueue(conn, a["owner"], "alarm", title, body, urls=a["notify"] or None)
                self.notified_at[a["id"]] = now

    def tick(self, conn):
        now = time.time()
        for step in (self.watch_nodes, self.lifecycle, self.evaluate, self.scale_groups,
                     self.prune_old, self.renew_vpns, self.sweep_volumes):
            try:
                step(conn, now)
            except psycopg.OperationalError:
                raise
            except Exception:  # noqa: BLE001 - one failing step must not stop the others
                LOG.exception("monitor: %s failed", step.__name__)
        if now - self.last_rollup >= ROLLUP_EVERY:
            metrics.rollup(conn, now)
            self.last_rollup = now
        self.write_status(conn, now)

    def scale_groups(self, conn, now, domains=None):
        """Every scaling group to its desired size (service.groups), as root
        for each owner, with the owner's rights and quotas; domains: only the
        groups with a target and a member among them (fresh samples)."""
        from oarcloud_lib.service import groups
        if self.scaler is None:
            self.scaler = groups.Scaler(self.conf, notify=notify.enqueue_event)
        try:
            self.scaler.tick(conn, now, domains)
        except psycopg.OperationalError:
            raise
        except Exception:  # noqa: BLE001 - the readings go on
            LOG.exception("monitor: scaling failed")

    def write_status(self, conn, now):
        pending = conn.execute("SELECT count(*) FROM notifications WHERE state = 'pending'"
                               ).fetchone()[0]
        status = {"pid": os.getpid(), "interval": self.interval, "listen": self.listen,
                  "updated": now, "pending_notifications": pending,
                  "nodes": {n: {"state": self.node_state.get(n),
                                "probing": bool(s.proc and s.proc.poll() is None),
                                "last_reading": s.last, "probe_cpu_seconds": s.cpu_seconds}
                            for n, s in sorted(self.streams.items())}}
        tmp = STATUS.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, STATUS)

    # -- delivery and HTTP ---------------------------------------------------------------

    def deliver(self):
        """Deliver due notifications until stopped: DELIVERY_THREADS at once at
        most, owners taking turns (pick), each URL checked against the site's
        policy again (notify.site_policy)."""
        inflight = {}   # notification id -> (row, future)
        conn = None
        policy, policy_at = notify.site_policy(self.conf), time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(DELIVERY_THREADS) as pool:
            while not self.stopping.is_set():
                try:
                    if time.monotonic() - policy_at >= POLICY_EVERY:
                        policy, policy_at = self.send_policy(policy), time.monotonic()
                    conn = conn or db.connect(self.conf)
                    for nid in [n for n, (_, f) in inflight.items() if f.done()]:
                        row, future = inflight.pop(nid)
                        ok, why = future.result()
                        notify.delivered(conn, row, ok, why, time.time())
                    if len(inflight) < DELIVERY_THREADS:
                        due = notify.due(conn, 100, per_owner=2 * max(PER_OWNER, ADMIN_THREADS))
                        for row in pick(due, [r for r, _ in inflight.values()]):
                            inflight[row["id"]] = (row, pool.submit(
                                notify.send_one, row["url"], row["title"], row["body"], policy))
                except (psycopg.Error, NotReady) as e:
                    LOG.warning("delivery: catalog: %s", e)
                    conn = None
                    self.stopping.wait(5)
                self.stopping.wait(0.2)

    def send_policy(self, current):
        """The site's notification policy, from the site config as it is now
        (an admin may have changed notify_allow_cidrs); current if unreadable."""
        try:
            return notify.site_policy(config.load())
        except (OarcloudError, OSError, ValueError, TypeError) as e:
            LOG.warning("delivery: site config: %s (the last policy stays)", e)
            return current

    def prune_old(self, conn, now):
        """Every PRUNE_EVERY seconds, and again at the next cycle while a batch
        was full: what is older than its retention (prune)."""
        if now - self.last_prune < PRUNE_EVERY:
            return
        self.last_prune = now
        deleted = prune(conn, now)
        if any(deleted.values()):
            LOG.info("pruned %s", ", ".join("%d %s" % (n, t) for t, n in deleted.items() if n))
        if max(deleted.values(), default=0) >= PRUNE_BATCH:
            self.last_prune = now - PRUNE_EVERY

    def renew_vpns(self, conn, now):
        """Every VPN_EVERY seconds: new server certificates for the VPN endpoints
        whose certificate ends soon, applied on their nodes."""
        if now - self.last_vpn < VPN_EVERY:
            return
        self.last_vpn = now
        from oarcloud_lib.server import vpnca
        from oarcloud_lib.service import fanout
        nodes = vpnca.renew_due(conn)
        if nodes:
            errors = fanout.sync_nodes(nodes)
            LOG.info("VPN server certificates renewed on %s%s", ", ".join(nodes),
                     " (not applied on %s yet)" % ", ".join(sorted(errors)) if errors else "")

    def sweep_volumes(self, conn, now):
        """Every VOLUMES_EVERY seconds (and at start): the volume store's files
        that no volume names, deleted."""
        if now - self.last_volumes < VOLUMES_EVERY:
            return
        self.last_volumes = now
        from oarcloud_lib.server import volumestore
        removed = volumestore.sweep(conn)
        if removed:
            LOG.info("volume store: %d file(s) no volume names deleted: %s", len(removed),
                     ", ".join(removed))

    def authorized(self, header):
        """Whether an Authorization header carries the site's monitor token (every
        user of the server reaches the port; the metrics are every tenant's)."""
        token = self.conf.monitor_token
        scheme, _, given = header.partition(" ")
        return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode())

    def serve_http(self):
        host, _, port = self.listen.rpartition(":")
        monitor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "see /metrics")
                    return
                if not monitor.authorized(self.headers.get("Authorization", "")):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Bearer realm="oarcloud"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = monitor.prometheus().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                LOG.debug("http: " + fmt, *args)

        self.http = http.server.ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()

    # -- the loop ------------------------------------------------------------------------

    def run(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.serve_http()
        deliverer = threading.Thread(target=self.deliver, name="deliver", daemon=True)
        deliverer.start()
        conn = waker = None
        next_tick = time.monotonic()
        LOG.info("monitor: every %d s, Prometheus on http://%s/metrics", self.interval,
                 self.listen)
        try:
            while not self.stopping.is_set():
                try:
                    if conn is None:
                        conn = db.connect(self.conf)
                        self.node_state = dict(conn.execute(
                            "SELECT node, state FROM node_states").fetchall())
                    if waker is None:  # a group changed: scale it now, not next cycle
                        from oarcloud_lib.service import groups
                        waker = db.connect(self.conf)
                        waker.execute("LISTEN %s" % groups.CHANNEL)
                    if time.monotonic() >= next_tick:
                        self.tick(conn)
                        next_tick = max(next_tick + self.interval, time.monotonic())
                    streams = [s for s in self.streams.values() if s.proc is not None]
                    timeout = max(0.0, min(next_tick - time.monotonic(), 1.0))
                    ready, _, _ = select.select(streams + [waker], [], [], timeout)
                    if waker in ready and _woken(waker):
                        self.scale_groups(conn, time.time())
                    fresh = set()
                    for stream in ready:
                        if stream is waker:
                            continue
                        for reading in stream.readings():
                            self.take(conn, stream.node, reading)
                            fresh |= set(reading.get("instances") or ())
                    if fresh:  # a group's target may be breached now: not next cycle
                        self.scale_groups(conn, time.time(), fresh)
                except (psycopg.Error, NotReady) as e:
                    LOG.warning("monitor: catalog: %s (again in %d s)", e, self.interval)
                    for c in (conn, waker):
                        if c is not None:
                            c.close()
                    conn = waker = None
                    self.stopping.wait(self.interval)
        finally:
            for stream in self.streams.values():
                stream.stop()
            if self.http:
                self.http.shutdown()
            deliverer.join(timeout=20)
        return 0


def _woken(conn):
    """Whether a NOTIFY came on conn's LISTEN (read without blocking)."""
    conn.pgconn.consume_input()
    got = False
    while conn.pgconn.notifies() is not None:
        got = True
    return got


# -- the background service ------------------------------------------------------------

def running_pid():
    return daemons.read_pid(PIDFILE)


def status():
    """The running monitor's last status (monitor.json), or None if it is not running."""
    if running_pid() is None:
        return None
    try:
        return json.loads(STATUS.read_text())
    except (OSError, ValueError):
        return {"pid": running_pid()}


def main(interval=None):
    """Run the monitor in this process, as the one running (pidfile)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    other = running_pid()
    if other and other != os.getpid():
        raise NotReady(detail="a monitor already runs (pid %d): `oarcloud-admin monitor stop`"
                              " first" % other)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    PIDFILE.write_text("%d\n" % os.getpid())
    try:
        return Monitor(interval=interval).run()
    finally:
        if running_pid() == os.getpid():
            PIDFILE.unlink()


if __name__ == "__main__":
    sys.exit(main())
