"""OAR, through its own commands (argv only) and its configuration file.

Output of OAR commands is parsed in pure functions below the classes.
"""
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from oarcloud_lib import daemons, paths
from oarcloud_lib.tools import oarconf
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import CommandFailed, NotFound, OarcloudError, OarRefused, Refused

LOG = logging.getLogger(__name__)
SERVER_PIDFILE = "/var/run/oar-server.pid"
# /run, not /var/run: pidfiles are also read through /proc/PID/root, where the
# absolute /var/run -> /run symlink would resolve on the reader's side.
NODE_SSHD_PIDFILE = "/run/oar-node_sshd.pid"
NODE_SSHD_CONFIG = "/etc/oar/sshd_config"
TYPES_RULE_TITLE = "# Check if job types are valid"
TYPES_RULE_ANCHOR = "my @types = ("
CLOUD_TYPES_PATTERN = "    qr/^cloud(?:[=.].*)?$/s, # oarcloud: checked in detail by the oarcloud rule"


class OarConf:
    """/etc/oar/oar.conf (mode 0600 oar:root, as the package leaves it)."""

    def __init__(self, path=paths.OAR_CONF):
        self.path = Path(path)

    def values(self):
        return oarconf.parse(self.path.read_text())

    def ensure(self, values):
        """Set keys (None comments a key out); True if the file changed."""
        text = self.path.read_text()
        new = oarconf.update(text, values)
        if new == text:
            return False
        st = self.path.stat()
        tmp = self.path.with_name(self.path.name + ".oarcloud-tmp")
        tmp.write_text(new)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        tmp.replace(self.path)
        return True


class OarServer:
    """The OAR server side: Almighty, properties, admission rules, resources."""

    def __init__(self, runner=LOCAL):
        self.runner = runner

    # -- Almighty
    def running_pid(self):
        return daemons.read_pid(SERVER_PIDFILE)

    def start(self):
        if self.running_pid():
            return False
        self.runner.run(["/etc/init.d/oar-server", "start"],
                        env={"OAR_SERVER_FORCE_START_STOP": "1"}, timeout=60)
        if not daemons.wait_for(self.running_pid, timeout=20):
            raise CommandFailed(code="?", argv="oar-server start",
                                stderr="Almighty did not stay up (see /var/log/oar.log)")
        return True

    def stop(self):
        pid = self.running_pid()
        if not pid:
            return False
        # Almighty takes its children (appendice, bipbip, ...) down on SIGTERM;
        # the init script's stop does not (it only removes the pidfile).
        daemons.stop_pid(pid, timeout=20)
        Path(SERVER_PIDFILE).unlink(missing_ok=True)
        return True

    def restart(self):
        self.stop()
        self.start()

    # -- properties
    def properties(self):
        return set(self.runner.out(["oarproperty", "-l"]).split())

    def ensure_property(self, name, varchar):
        if name in self.properties():
            return False
        argv = ["oarproperty", "-a", name] + (["-c"] if varchar else [])
        self.runner.run(argv)
        return True

    # -- resources
    def nodes(self):
        """host -> list of resource dicts, from `oarnodes -J`."""
        return resources_by_host(self.runner.out(["oarnodes", "-J"]))

    def add_resource(self, host, props, state=None):
        argv = ["oarnodesetting", "-a", "-h", host] + (["-s", state] if state else [])
        for k, v in props.items():
            argv += ["-p", "%s=%s" % (k, v)]
        self.runner.run(argv)

    def remove_resource(self, resource_id):
        """Forget a Dead resource (and its history) for good."""
        self.runner.run(["oarremoveresource", str(int(resource_id))], timeout=60)

    def set_state(self, host, state):
        self.runner.run(["oarnodesetting", "-h", host, "-s", state], timeout=60)

    def set_drain(self, host, on):
        """OAR's drain of every resource of host: its default admission rule
        then keeps new jobs off them (drain='NO'); running jobs go on."""
        self.runner.run(["oarnodesetting", "-h", host, "-d", "on" if on else "off"], timeout=60)

    def set_properties(self, host, props):
        argv = ["oarnodesetting", "-h", host]
        for k, v in props.items():
            argv += ["-p", "%s=%s" % (k, v)]
        self.runner.run(argv)


class AdmissionRules:
    """OAR's admission rules, read from its database and written with oaradmissionrules."""

    def __init__(self, cluster, runner=LOCAL):
        self.cluster = cluster
        self.runner = runner

    def all(self):
        out = self.cluster.psql(
            "SELECT coalesce(json_agg(r ORDER BY priority, id), '[]') FROM "
            "(SELECT id, priority, enabled, rule FROM admission_rules) r", db="oar")
        return json.loads(out)

    def _write(self, argv, text):
        with tempfile.NamedTemporaryFile("w", suffix=".pl", delete=False) as f:
            f.write(text)
        # oaradmissionrules reads it as user oar (through oardodo).
        os.chmod(f.name, 0o644)
        try:
            self.runner.run(argv + ["-r", f.name])
        finally:
            os.unlink(f.name)

    def ensure(self, marker, text, priority):
        """Install or update the rule whose first line is marker; True if changed."""
        text = text.rstrip("\n") + "\n"
        for rule in self.all():
            if rule["rule"].startswith(marker):
                if rule["rule"].rstrip("\n") + "\n" == text and rule["enabled"] == "YES":
                    return False
                self._write(["oaradmissionrules", "-m", str(rule["id"]), "-Y",
                             "-P", str(priority)], text)
                return True
        self._write(["oaradmissionrules", "-n", "-Y", "-P", str(priority)], text)
        return True

    def ensure_types_admitted(self):
        """Let OAR's job-type whitelist rule admit cloud types; True if changed."""
        for rule in self.all():
            if TYPES_RULE_TITLE in rule["rule"]:
                new = admit_cloud_types(rule["rule"])
                if new == rule["rule"]:
                    return False
                self._write(["oaradmissionrules", "-m", str(rule["id"])], new)
                return True
        return False  # no whitelist rule: every type is admitted already


def admit_cloud_types(rule_text):
    """OAR's job-type whitelist rule with the cloud types added (idempotent)."""
    if CLOUD_TYPES_PATTERN in rule_text:
        return rule_text
    if TYPES_RULE_ANCHOR not in rule_text:
        raise Refused(detail="OAR's job-type rule has an unexpected form; add %r to it by hand"
                      % CLOUD_TYPES_PATTERN.strip())
    return rule_text.replace(TYPES_RULE_ANCHOR, TYPES_RULE_ANCHOR + "\n" + CLOUD_TYPES_PATTERN, 1)


def host_state(resources):
    """'Alive' when every resource of a host is, else its states joined
    ('Alive,Suspected'), 'absent' without any resource."""
    states = {r.get("state") for r in resources if r.get("state")}
    return "Alive" if states == {"Alive"} else ",".join(sorted(states)) or "absent"


def resources_by_host(oarnodes_json):
    """Group `oarnodes -J` output by network_address."""
    text = (oarnodes_json or "").strip()
    # With no resources at all, oarnodes -J prints a sentence, not JSON.
    data = json.loads(text) if text.startswith(("{", "[")) else {}
    hosts = {}
    items = data.values() if isinstance(data, dict) else data
    for res in items:
        if isinstance(res, dict) and "network_address" in res:
            hosts.setdefault(res["network_address"], []).append(res)
    return hosts


# The site's maintenance account (server/nodeops.py): OAR refuses jobs of
# root and oar, so maintenance reservations are this system account's.  It
# must exist on the server and on every node (setup server, setup node).
MAINT_USER = "oarmaint"
MAINT_HOME = "/var/lib/oarcloud/maint"


def ensure_maintenance_account(runner=LOCAL):
    """The maintenance account (a locked system account) and its home on
    this machine: each node has its own (OAR runs a window's job there, and
    a lab node's /var/lib/oarcloud is its own); True if either was made."""
    import pwd
    changed = False
    try:
        pw = pwd.getpwnam(MAINT_USER)
    except KeyError:
        runner.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir",
                    MAINT_HOME, "--shell", "/bin/sh", "--comment",
                    "oarcloud maintenance windows", MAINT_USER])
        pw = pwd.getpwnam(MAINT_USER)
        changed = True
    return paths.ensure_dir(MAINT_HOME, 0o700, pw.pw_uid, pw.pw_gid) or changed


# -- jobs: every oarsub, oarstat and oardel of oarcloud is built here -------------

JOB_ID_RE = re.compile(r"^OAR_JOB_ID=([0-9]+)$", re.M)
ENDED = ("Terminated", "Error")


def as_user(user, argv):
    """argv run as user when root runs it (OAR takes a job's owner from the
    Unix user who runs its command); as is otherwise."""
    if user is None or os.geteuid() != 0:
        return argv
    return ["runuser", "-u", user, "--"] + argv


# What oarsub prints that says nothing of why a job was refused.
OARSUB_NOISE = re.compile(
    r"^\s*(\[ADMISSION RULE\] Modify resource description with type constraints"
    r"|\[ADMISSION RULE\] Set default walltime|Generate a job key|OAR_JOB_ID=-?[0-9]*"
    r"|Oh no, something went wrong|\[ERROR\] Oarsub failed, please verify your request syntax\.?"
    r"|\s*)$", re.I)


def refusal(out, err):
    """OAR's own words for a refused oarsub, without its noise, in one line."""
    lines = [ln.strip() for ln in (out + "\n" + err).splitlines() if not OARSUB_NOISE.match(ln)]
    return "; ".join(dict.fromkeys(lines)) or "oarsub exited without a job id"


def submit(types, resources, command, runner=LOCAL, user=None, directory=None, at=None,
           options=None):
    """oarsub a job (as user when root submits for them; at: an advance
    reservation's start, 'YYYY-MM-DD HH:MM:SS'; options: checked `-p`, `-q`,
    `--project` values, by their oarsub switch); returns its id.  Raises
    Refused (OAR's admission rules, or the reservation, said no)."""
    argv = ["oarsub"]
    for t in types:
        argv += ["-t", t]
    if directory:
        argv += ["-d", str(directory)]
    if at:
        argv += ["-r", at]
    for switch, value in sorted((options or {}).items()):
        argv += [switch, value]
    res = runner.run(as_user(user, argv + ["-l", resources, command]), check=False, timeout=60)
    m = JOB_ID_RE.search(res.out)
    if res.code != 0 or not m:
        raise OarRefused(detail=refusal(res.out, res.err))
    return int(m.group(1))


def delete(job_ids, runner=LOCAL, user=None, check=True):
    """oardel jobs (as user when root deletes for them; user "oar" may delete
    any job).  A job already ending is no error."""
    ids = [str(j) for j in job_ids]
    res = runner.run(as_user(user, ["oardel", *ids]), check=False, timeout=60)
    if check and res.code != 0 and "already killed" not in res.out + res.err:
        raise CommandFailed(code=res.code, argv="oardel %s" % " ".join(ids),
                            stderr=(res.err or res.out).strip())
    return res


# What `oarwalltime JOB` prints of a running job's walltime change (h:m:s).
_WALLTIME_FIELDS = {"walltime": "Current walltime", "possible": "Possible increase",
                    "granted": "Already granted", "pending": "Pending/unsatisfied"}


def hms_seconds(text):
    """'1:30:0' or '+1:30:0' (OAR's h:m:s) -> 5400; None for UNLIMITED or what
    is not h:m:s."""
    m = re.match(r"([-+]?)([0-9]+):([0-9]+):([0-9]+)\Z", text.strip())
    if not m:
        return None
    seconds = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + int(m.group(4))
    return -seconds if m.group(1) == "-" else seconds


def walltime_status(job_id, runner=LOCAL, user=None):
    """{walltime, possible (None: unlimited), granted, pending} in seconds of
    a running job's walltime changes (oarwalltime).  Raises Refused."""
    res = runner.run(as_user(user, ["oarwalltime", str(job_id)]), check=False, timeout=60)
    out = {}
    for line in res.out.splitlines():
        key, _, value = line.strip().partition(":")
        for field, label in _WALLTIME_FIELDS.items():
            if key == label:
                out[field] = hms_seconds(value.split("(")[0])
    if res.code != 0 or out.get("walltime") is None:
        raise Refused(detail="no walltime change possible for job %s: %s" % (
            job_id, " ".join((res.err or res.out).split())[:300] or "the job is not running"))
    return out


def walltime_change(job_id, delta, runner=LOCAL, user=None):
    """Ask OAR to change a running job's walltime by delta ('+1:00:00', as
    user); returns OAR's answer.  Raises Refused with OAR's reason."""
    res = runner.run(as_user(user, ["oarwalltime", str(job_id), delta]), check=False, timeout=60)
    text = " ".join((res.out + " " + res.err).split())
    if res.code != 0 or text.lower().startswith(("error", "forbidden")):
        raise Refused(detail="OAR refused the walltime change: %s" % (text[:300] or res.code))
    return text


def current_jobs(runner=LOCAL, user=None, check=True):
    """OAR's jobs that have not ended (of one user): {job_id (text): job dict}.
    Raises CommandFailed when oarstat fails and check (else: none)."""
    argv = ["oarstat", "-J"] + (["-u", user] if user else ["-f"])
    res = runner.run(argv, check=check, timeout=60)
    text = res.out.strip()
    jobs = json.loads(text) if text.startswith("{") else {}
    return {j: job for j, job in jobs.items() if job.get("state") not in ENDED}


WAITING = ("Waiting", "Hold", "toLaunch", "toAckReservation")


def waiting_jobs(user, runner=LOCAL):
    """{job_id (int): full job dict} of user's jobs that have not started yet
    (oarstat -f: with OAR's scheduled start)."""
    return _waiting(runner.run(["oarstat", "-J", "-f", "-u", user], check=False,
                               timeout=60).out)


def waiting_jobs_started(user):
    """waiting_jobs(user), its oarstat started now: a function that returns its
    answer when called (OAR's tenth of a second overlaps the caller's work)."""
    import subprocess
    proc = subprocess.Popen(["oarstat", "-J", "-f", "-u", user], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def answer():
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {}
        return _waiting(out)
    return answer


def _waiting(text):
    text = (text or "").strip()
    jobs = json.loads(text) if text.startswith("{") else {}
    return {int(j): job for j, job in jobs.items() if job.get("state") in WAITING}


def get_job(job_id, runner=LOCAL):
    """The OAR job dict (state, types, owner, events...) from oarstat.  Raises NotFound."""
    res = runner.run(["oarstat", "-fj", str(job_id), "-J"], check=False, timeout=30)
    try:
        return job_info(res.out, job_id)
    except ValueError:
        raise NotFound(what="OAR job", name=job_id) from None


def _read_only_db(conf_path):
    """A connection to OAR's database with its read-only role, as oar.conf names it."""
    import psycopg
    conf = oarconf.parse(Path(conf_path).read_text())
    return psycopg.connect(host=conf.get("DB_HOSTNAME", "127.0.0.1"),
                           port=conf.get("DB_PORT", "5432"),
                           dbname=conf.get("DB_BASE_NAME", "oar"),
                           user=conf.get("DB_BASE_LOGIN_RO", "oar_ro"),
                           password=conf.get("DB_BASE_PASSWD_RO", ""),
                           connect_timeout=5, autocommit=True)


def job_facts(job_id, conf_path=paths.OAR_CONF):
    """{"owner", "state", "types", "resubmit_job_id"} of an OAR job, from OAR's
    database with its read-only role: what `oarstat -fj` says of them without
    its start-up (a seventh of a second, on the path of every `exec` and twice
    in every prologue).  Falls back on oarstat when the database cannot be
    read.  Raises NotFound."""
    import psycopg
    try:
        with _read_only_db(conf_path) as db:
            row = db.execute("SELECT job_user, state, resubmit_job_id FROM jobs"
                             " WHERE job_id = %s", (int(job_id),)).fetchone()
            types = [t for (t,) in db.execute(
                # as OAR reads them: its archived (types_index LOG) rows included
                "SELECT type FROM job_types WHERE job_id = %s ORDER BY job_type_id",
                (int(job_id),))]
    except (OSError, psycopg.Error) as e:
        LOG.debug("OAR database unreadable (%s): asking oarstat", e)
        job = get_job(job_id)
        return {"owner": job.get("owner") or job.get("job_user") or "",
                "state": job.get("state"), "types": job.get("types") or [],
                "resubmit_job_id": int(job.get("resubmit_job_id") or 0)}
    if row is None:
        raise NotFound(what="OAR job", name=job_id)
    return {"owner": row[0], "state": row[1], "types": types,
            "resubmit_job_id": int(row[2] or 0)}


def job_state(job_id, conf_path=paths.OAR_CONF):
    """The OAR job's state ('Running', 'Launching'...).  Raises NotFound."""
    return job_facts(job_id, conf_path)["state"]


def resource_states(conf_path=paths.OAR_CONF, runner=LOCAL):
    """host -> [{'state', 'drain'}] of its resources, from OAR's database (what
    `oarnodes -J` gives, without a Perl start-up every few seconds in the
    monitor and in a rolling update); falls back on oarnodes when the
    database cannot be read."""
    import psycopg
    try:
        with _read_only_db(conf_path) as db:
            rows = db.execute("SELECT network_address, state, drain FROM resources").fetchall()
    except (OSError, psycopg.Error) as e:
        LOG.debug("OAR database unreadable (%s): asking oarnodes", e)
        return OarServer(runner).nodes()
    out = {}
    for host, state, drain in rows:
        out.setdefault(host, []).append({"state": state, "drain": drain})
    return out


def node_properties(hosts, props, conf_path=paths.OAR_CONF, runner=LOCAL):
    """{host: {property: value}} of props on hosts' resources, from OAR's
    database (values as text; a host's resources agree on them), else from
    oarnodes."""
    import psycopg
    from psycopg import sql
    props, hosts = sorted(set(props)), sorted(set(hosts))
    if not props or not hosts:
        return {h: {} for h in hosts}
    try:
        with _read_only_db(conf_path) as db:
            rows = db.execute(sql.SQL("SELECT DISTINCT network_address, {} FROM resources"
                                      " WHERE network_address = ANY(%s)").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(p))
                                   for p in props)), (hosts,)).fetchall()
        out = {h: {} for h in hosts}
        for row in rows:
            out[row[0]].update({p: v for p, v in zip(props, row[1:]) if v is not None})
        return out
    except (OSError, psycopg.Error) as e:
        LOG.debug("OAR database unreadable (%s): asking oarnodes", e)
    nodes = OarServer(runner).nodes()
    return {h: {p: str(r[p]) for r in nodes.get(h, []) for p in props if r.get(p) is not None}
            for h in hosts}


def predicted_ends(host, conf_path=paths.OAR_CONF):
    """When each job OAR runs or has planned on host ends, as epoch seconds,
    sorted: its gantt (the scheduler's own predictions) read from its
    database.  Raises OarcloudError when the database cannot be read."""
    import psycopg
    try:
        with _read_only_db(conf_path) as db:
            rows = db.execute(
                "SELECT DISTINCT g.start_time + m.moldable_walltime FROM gantt_jobs_predictions g"
                " JOIN gantt_jobs_resources r ON r.moldable_job_id = g.moldable_job_id"
                " JOIN resources s ON s.resource_id = r.resource_id"
                " JOIN moldable_job_descriptions m ON m.moldable_id = g.moldable_job_id"
                " WHERE s.network_address = %s", (host,)).fetchall()
    except (OSError, psycopg.Error) as e:
        raise OarcloudError("OAR's schedule could not be read: %s" % e) from None
    return sorted(int(end) for (end,) in rows)


def job_info(jobs_json, job_id):
    """The job dict of `oarstat -fj ID -J` output.  Raises NotFound."""
    data = json.loads(jobs_json or "{}")
    job = data.get(str(job_id))
    if job is None:
        raise NotFound(what="OAR job", name=job_id)
    return job


def job_reason(job):
    """OAR's first event about a job, in one line (why it ended early)."""
    events = [e for e in job.get("events") or [] if e.get("type") != "RESUBMIT_JOB_AUTOMATICALLY"]
    if not events:
        return "no reason given by OAR"
    return ("%s: %s" % (events[0].get("type"), events[0].get("description") or "")).strip()[:300]
