"""`oarcloud-admin setup server`: PostgreSQL, the OAR server and the catalog.

Every step checks before it acts, so a second run changes nothing.
"""
import logging
import os
import re
from pathlib import Path

from oarcloud_lib import config, paths, templating
from oarcloud_lib.catalog import db, jobspec
from oarcloud_lib.server import services, vpnca
from oarcloud_lib.web import service as web
from oarcloud_lib.tools import oar, oarssh
from oarcloud_lib.commands import LOCAL, require_commands
from oarcloud_lib.errors import NotReady
from oarcloud_lib.node.nodesetup import ensure_hooks, ensure_log_dir
from oarcloud_lib.tools.oar import AdmissionRules, OarConf, OarServer
from oarcloud_lib.tools.postgres import Cluster
from oarcloud_lib.progress import Progress

LOG = logging.getLogger(__name__)
RULE_MARKER = "# oarcloud: cloud job types (managed by oarcloud-admin setup server)"
# Just before OAR's job-type whitelist (priority 16) and after the default walltime.
RULE_PRIORITY = 15
SERVER_COMMANDS = ("pg_lsclusters", "pg_ctlcluster", "oar-database", "oaradmissionrules",
                   "oarproperty", "oarnodesetting", "oarnodes", "Almighty", "visudo", "haproxy")
# Resource properties oarcloud relies on: name -> is varchar.
PROPERTIES = {"cloud": True, "host": True, "cpu": False, "core": False}
SUDOERS = Path("/etc/sudoers.d/oarcloud")
HOOK_FILES = {"PROLOGUE_EXEC_FILE": "prologue", "EPILOGUE_EXEC_FILE": "epilogue"}


def oar_settings(conf):
    """The oar.conf keys oarcloud sets (None: commented out)."""
    db_host = "127.0.0.1" if conf.server_address in ("localhost", "127.0.0.1") \
        else conf.server_address
    return {
        "DB_HOSTNAME": db_host,
        "SERVER_HOSTNAME": db_host,
        "DB_BASE_PASSWD": conf.oar_db_password,
        "DB_BASE_PASSWD_RO": conf.oar_db_ro_password,
        "PROLOGUE_EXEC_FILE": str(paths.HOOKS_INSTALL_DIR / "prologue"),
        "EPILOGUE_EXEC_FILE": str(paths.HOOKS_INSTALL_DIR / "epilogue"),
        "PROLOGUE_EPILOGUE_TIMEOUT": str(conf.hook_timeout),
        # Instances get their cgroup limits from libvirt; OAR's cpuset job
        # resource manager would create one cgroup per job on every node and
        # emulated nodes share one kernel (see docs/design.md).
        "JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD": None,
        # Nodes a failed hook left Suspected come back once clean (oarcloud_lib.server.healing).
        "SUSPECTED_HEALING_EXEC_FILE": str(paths.HOOKS_INSTALL_DIR / "heal-nodes"),
        "SUSPECTED_HEALING_TIMEOUT": "10",
        # --save-on-exit: the epilogue keeps an instance's changes, the server's
        # saver (started here, detached) stores them (oarcloud_lib.server.saves).
        "SERVER_EPILOGUE_EXEC_FILE": str(paths.HOOKS_INSTALL_DIR / "server-epilogue"),
        "FINAUD_FREQUENCY": "30",
        # Schedule at once on each submission (default: at most every 5 s), and
        # keep 1 s (not 60) between a job's predicted end and the next start.
        "SCHEDULER_MIN_TIME_BETWEEN_2_CALLS": "0",
        "SCHEDULER_JOB_SECURITY_TIME": "1",
        # `oarcloud extend` (oarwalltime): granted when it delays no other job.
        "WALLTIME_CHANGE_ENABLED": "yes",
        "WALLTIME_MAX_INCREASE": str(conf.walltime_max_increase),
    }


def ensure_token_file(conf, path=paths.MONITOR_TOKEN):
    """The monitor's token alone in a file (0600) for Prometheus' credentials_file;
    True if changed."""
    if path.exists() and path.read_text().strip() == conf.monitor_token \
            and path.stat().st_mode & 0o077 == 0:
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(conf.monitor_token + "\n")
    os.chmod(path, 0o600)
    return True


def ensure_store(store=paths.IMAGE_STORE):
    """The image store, read by root on the nodes only: the directory 0700, its
    files 0600 (also those an older version wrote 0644); True if changed."""
    changed = paths.ensure_dir(store, 0o700, 0, 0)
    for f in store.iterdir():
        if f.is_file() and f.stat().st_mode & 0o077:
            os.chmod(f, 0o600)
            changed = True
    return changed


def ensure_sudoers(runner=LOCAL, path=SUDOERS):
    """Users may run the broker as root (it checks what they own); checked by visudo."""
    content = templating.render("sudoers.j2", broker=paths.HOOKS_INSTALL_DIR / "broker")
    if path.exists() and path.read_text() == content:
        return False
    tmp = path.with_name(".oarcloud.tmp")  # sudo ignores names with a dot
    tmp.write_text(content)
    os.chmod(tmp, 0o440)
    res = runner.run(["visudo", "-c", "-f", str(tmp)], check=False)
    if res.code != 0:
        tmp.unlink()
        raise NotReady(detail="generated sudoers rule refused by visudo: %s" % res.err.strip())
    tmp.replace(path)
    return True


def admit_command():
    """What the admission rule runs, as OAR's user, to ask the broker whether a
    cloud job may be submitted (its arguments follow: owner, nodes, types)."""
    return ["/usr/bin/timeout", "20", "/usr/bin/sudo", "-n",
            str(paths.HOOKS_INSTALL_DIR / "broker"), "admit"]


def render_admission_rule(command=None):
    command = admit_command() if command is None else command
    if not all(re.fullmatch(r"[A-Za-z0-9_./-]+", word) for word in command):
        raise ValueError("admission command words must be plain paths and flags")
    return templating.render("admission_rule.pl.j2", marker=RULE_MARKER,
                             keys=jobspec.KEYS, repeatable=sorted(jobspec.REPEATABLE),
                             admit_command=command)


def setup_server(address="127.0.0.1", nodes_cidr="", progress=None, runner=LOCAL,
                 notify_allow=None, disk_allocation=None):
    """Bring PostgreSQL, the OAR server and the catalog to the wanted state;
    notify_allow (CIDRs), when given, is where notifications may go despite the
    URL policy (the lab's own webhook and mail servers on loopback);
    disk_allocation, when given, how nodes allocate instance disks.

    Returns the list of changed steps.  Raises NotReady, CommandFailed.
    """
    own = progress is None
    progress = progress or Progress("setup server")
    require_commands(SERVER_COMMANDS)
    cluster = Cluster(runner)
    progress.step("postgresql running", cluster.start())
    progress.step("postgresql listens on %s" % address, cluster.ensure_listen(address))
    conf = config.load(missing_ok=True)
    oarconf = OarConf()
    existing = oarconf.values()
    conf.server_address, conf.nodes_cidr = address, nodes_cidr
    if notify_allow is not None:
        conf.notify_allow_cidrs = list(notify_allow)
    if disk_allocation is not None:
        conf.disk_allocation = disk_allocation
    # Keep passwords an admin already put in oar.conf.
    conf.oar_db_password = conf.oar_db_password or existing.get("DB_BASE_PASSWD", "")
    conf.oar_db_ro_password = conf.oar_db_ro_password or existing.get("DB_BASE_PASSWD_RO", "")
    conf.fill_secrets()
    progress.step("site config %s" % paths.SITE_CONF, config.save(conf))
    progress.step("Prometheus token %s" % paths.MONITOR_TOKEN, ensure_token_file(conf))
    # Nodes (and this server through its cluster address) log in as OAR's
    # and the catalog's roles only, with a password.
    hba = ["host all oar,oar_ro,%s %s scram-sha-256" % (conf.catalog_user, nodes_cidr)] \
        if nodes_cidr else []
    progress.step("postgresql admits nodes from %s" % (nodes_cidr or "this host only"),
                  cluster.ensure_hba(hba))

    conf_changed = oarconf.ensure(oar_settings(conf))
    progress.step("oar.conf (database, hooks, timeouts)", conf_changed)
    progress.step("OAR ssh client: x25519 key exchange first", oarssh.ensure_client_config())

    if cluster.database_exists("oar"):
        progress.step("OAR database", False)
    else:
        runner.run(["oar-database", "--create", "--db-is-local", "-y"], timeout=300)
        progress.step("OAR database", True, "created")

    server = OarServer(runner)
    for name, varchar in PROPERTIES.items():
        progress.step("resource property %s" % name, server.ensure_property(name, varchar))
    rules = AdmissionRules(cluster, runner)
    progress.step("admission rule: cloud job types validated",
                  rules.ensure(RULE_MARKER, render_admission_rule(), RULE_PRIORITY))
    progress.step("admission rule: cloud job types admitted", rules.ensure_types_admitted())

    if conf_changed and server.running_pid():
        server.restart()
        progress.step("OAR server restarted (oar.conf changed)", True)
    else:
        progress.step("OAR server running", server.start())

    # CREATEROLE: accounts get a login role of their own (peer authentication).
    progress.step("catalog role", cluster.ensure_role(conf.catalog_user, conf.catalog_password,
                                                      createrole=True))
    progress.step("catalog database", cluster.ensure_database(conf.catalog_db, conf.catalog_user))
    with db.connect(conf) as conn:
        applied = db.migrate(conn)
        progress.step("catalog schema", bool(applied), ", ".join(applied))
        done = vpnca.sync_ca_keys(conn)
        progress.step("VPN CA keys in %s (root's alone)" % vpnca.CA_DIR, any(done.values()),
                      "%(updated)d moved out of the catalog, %(removed)d of deleted networks "
                      "removed" % done)
    progress.step("OAR account %s for maintenance windows" % oar.MAINT_USER,
                  oar.ensure_maintenance_account(runner))
    progress.step("hooks, broker and healer in %s" % paths.HOOKS_INSTALL_DIR, ensure_hooks())
    progress.step("sudo rule for the instance broker", ensure_sudoers(runner))
    progress.step("directory %s" % paths.STATE, paths.ensure_dir(paths.STATE, 0o755))
    progress.step("log directory %s (OAR's and root's alone)" % paths.LOG_DIR, ensure_log_dir())
    progress.step("image store %s (root's alone)" % paths.IMAGE_STORE, ensure_store())
    progress.step("logrotate rule %s" % paths.LOGROTATE, templating.ensure_logrotate())
    progress.step("web service certificate %s" % web.CERT, web.ensure_cert(conf))
    progress.step("services (the monitor, the web service on %s) under %s" % (
        web.url(conf), "systemd" if services.systemd_runs() else "oarcloud's supervisor"),
        services.ensure_running())
    return progress.done() if own else progress.changes
