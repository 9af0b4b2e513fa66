"""The oarcloud catalog: its own PostgreSQL database, reached with psycopg.

Schema changes are numbered SQL files in oarcloud_lib/migrations, applied in
order once each and recorded in schema_migrations.
"""
import contextlib
import logging
from importlib import resources

import psycopg
import psycopg.rows

from oarcloud_lib import config
from oarcloud_lib.errors import NotReady

LOG = logging.getLogger(__name__)


def conninfo(conf=None, dbname=None):
    conf = conf or config.load()
    host = conf.server_address
    return psycopg.conninfo.make_conninfo(
        host=host, dbname=dbname or conf.catalog_db, user=conf.catalog_user,
        password=conf.catalog_password, connect_timeout=10)


def connect(conf=None, dbname=None, autocommit=True):
    """A connection to the catalog as the oarcloud role.  Raises NotReady.

    Autocommit: each statement stands alone unless grouped in
    `with conn.transaction():`, so that other processes (the nodes) see a
    write as soon as the call that made it returns.
    """
    try:
        return psycopg.connect(conninfo(conf, dbname), autocommit=autocommit)
    except psycopg.OperationalError as e:
        raise NotReady(detail="catalog database unreachable: %s" % str(e).strip()) from None


def dicts(cur):
    """The rows of an executed cursor as dicts (psycopg's dict_row factory)."""
    cur.row_factory = psycopg.rows.dict_row
    return cur.fetchall()


def session(conn=None):
    """Context manager: the caller's connection as it is, or a new one closed after."""
    return contextlib.nullcontext(conn) if conn is not None else connect()


def migrations():
    """[(version, name, sql)] of the shipped migrations, in order."""
    files = sorted(p for p in resources.files("oarcloud_lib.catalog.migrations").iterdir()
                   if p.name.endswith(".sql"))
    return [(int(p.name.split("_", 1)[0]), p.name, p.read_text()) for p in files]


def migrate(conn):
    """Apply the migrations this database lacks; returns the names applied."""
    applied = []
    with conn.transaction():
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version integer PRIMARY KEY, name text NOT NULL,"
                     " applied timestamptz NOT NULL DEFAULT now())")
        # One migrator at a time.
        conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            LOG.info("applying catalog migration %s", name)
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (version, name))
            applied.append(name)
    return applied
