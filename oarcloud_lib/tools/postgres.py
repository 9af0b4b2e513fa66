"""The PostgreSQL server OAR uses, seen as an administrator (Debian's cluster tools).

Only bootstrap work happens here (roles, databases, listening, pg_hba); the
catalog itself is reached with psycopg in oarcloud_lib.catalog.db.
"""
import json
import logging
import re
from pathlib import Path

from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import NotReady, Refused

LOG = logging.getLogger(__name__)
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
HBA_BEGIN = "# BEGIN oarcloud"
HBA_END = "# END oarcloud"


def _ident(name):
    if not _IDENT.match(name):
        raise Refused(detail="not a safe SQL identifier: %r" % name)
    return '"%s"' % name


def _literal(value):
    return "'%s'" % str(value).replace("'", "''")


class Cluster:
    """One Debian PostgreSQL cluster (the first one pg_lsclusters shows)."""

    def __init__(self, runner=LOCAL):
        self.runner = runner

    def info(self):
        clusters = json.loads(self.runner.out(["pg_lsclusters", "--json"]) or "[]")
        if not clusters:
            raise NotReady(detail="no PostgreSQL cluster (pg_createcluster first)")
        return clusters[0]

    @property
    def ident(self):
        info = self.info()
        return str(info["version"]), info["cluster"]

    def running(self):
        return bool(self.info()["running"])

    def start(self):
        """Start the cluster; True if it was not running."""
        if self.running():
            return False
        self.runner.run(["pg_ctlcluster", *self.ident, "start"], timeout=120)
        return True

    def stop(self):
        if not self.running():
            return False
        self.runner.run(["pg_ctlcluster", *self.ident, "stop", "-m", "fast"], timeout=120)
        return True

    def restart(self):
        self.runner.run(["pg_ctlcluster", *self.ident, "restart", "-m", "fast"], timeout=120)

    def reload(self):
        self.runner.run(["pg_ctlcluster", *self.ident, "reload"])

    def psql(self, sql, db="postgres"):
        """Run SQL as the postgres superuser; returns psql's unaligned output."""
        return self.runner.out(["runuser", "-u", "postgres", "--", "psql", "-X", "-q",
                                "-v", "ON_ERROR_STOP=1", "-At", "-d", db], stdin=sql)

    def role_exists(self, name):
        return self.psql("SELECT 1 FROM pg_roles WHERE rolname = %s" % _literal(name)).strip() == "1"

    def database_exists(self, name):
        return self.psql("SELECT 1 FROM pg_database WHERE datname = %s" % _literal(name)).strip() == "1"

    def ensure_role(self, name, password, createrole=False):
        """Create the login role, or reset its password; True if it was created."""
        verb = "ALTER" if self.role_exists(name) else "CREATE"
        self.psql("%s ROLE %s LOGIN %s PASSWORD %s" % (
            verb, _ident(name), "CREATEROLE" if createrole else "NOCREATEROLE", _literal(password)))
        return verb == "CREATE"

    def ensure_database(self, name, owner):
        if self.database_exists(name):
            return False
        self.psql("CREATE DATABASE %s OWNER %s" % (_ident(name), _ident(owner)))
        return True

    def drop_database(self, name):
        if not self.database_exists(name):
            return False
        self.psql("DROP DATABASE %s WITH (FORCE)" % _ident(name))
        return True

    def drop_role(self, name):
        """Drop the role and the databases it owns."""
        if not self.role_exists(name):
            return False
        owned = self.psql("SELECT datname FROM pg_database d JOIN pg_roles r ON d.datdba = r.oid"
                          " WHERE r.rolname = %s" % _literal(name)).split()
        for db in owned:
            self.drop_database(db)
        self.psql("DROP ROLE %s" % _ident(name))
        return True

    def ensure_listen(self, address):
        """Make the server listen on localhost and address; True if it had to restart."""
        wanted = "localhost" if address in ("localhost", "127.0.0.1") else "localhost,%s" % address
        current = self.psql("SHOW listen_addresses").strip()
        if current == wanted:
            return False
        self.psql("ALTER SYSTEM SET listen_addresses = %s" % _literal(wanted))
        self.restart()
        return True

    def hba_path(self):
        return Path(self.info()["config"]["hba_file"])

    def ensure_hba(self, lines):
        """Keep exactly `lines` in oarcloud's block of pg_hba.conf; True if changed."""
        path = self.hba_path()
        text = path.read_text()
        new = set_block(text, lines)
        if new == text:
            return False
        path.write_text(new)
        self.reload()
        return True


def set_block(text, lines):
    """Replace (or add, or with no lines remove) oarcloud's marked block in text."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.strip() == HBA_BEGIN:
            skipping = True
            continue
        if line.strip() == HBA_END:
            skipping = False
            continue
        if not skipping:
            out.append(line)
    if lines:
        # Our lines go first: pg_hba.conf is first-match.
        head = [HBA_BEGIN, *lines, HBA_END]
        first = next((i for i, l in enumerate(out) if l.strip() and not l.lstrip().startswith("#")),
                     len(out))
        out = out[:first] + head + out[first:]
    return "\n".join(out) + "\n"
