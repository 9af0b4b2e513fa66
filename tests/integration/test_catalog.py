"""The catalog schema on real PostgreSQL: a scratch database, one rolled-back
transaction per test."""
import psycopg
import pytest

from oarcloud_lib import config
from oarcloud_lib.catalog import db
from oarcloud_lib.tools.postgres import Cluster

TEST_DB = "oarcloud_test"


@pytest.fixture(scope="module")
def test_db(lab):
    conf = config.load()
    cluster = Cluster()
    cluster.drop_database(TEST_DB)
    cluster.ensure_database(TEST_DB, conf.catalog_user)
    try:
        with db.connect(conf, dbname=TEST_DB) as conn:
            first = db.migrate(conn)
            second = db.migrate(conn)
        yield conf, first, second
    finally:
        cluster.drop_database(TEST_DB)


@pytest.fixture
def conn(test_db):
    conf = test_db[0]
    with db.connect(conf, dbname=TEST_DB, autocommit=False) as conn:
        yield conn
        conn.rollback()


def test_migrations_apply_once(test_db):
    _, first, second = test_db
    assert first == [name for _, name, _ in db.migrations()]
    assert second == []


def test_account_and_image_rows(conn):
    conn.execute("INSERT INTO accounts (name, uid, ssh_pubkey, unix_created)"
                 " VALUES ('alice', 2001, 'ssh-ed25519 AAAA', true)")
    conn.execute("INSERT INTO images (name, owner, format, size, sha256)"
                 " VALUES ('img', 'alice', 'tar.zst', 1, %s)", ("a" * 64,))
    conn.execute("DELETE FROM accounts WHERE name = 'alice'")
    assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == 0


@pytest.mark.parametrize("name", ["../x", "a/b", "a..b", "x" * 65])
def test_bad_image_names_rejected_by_schema(conn, name):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO images (name, format, size, sha256)"
                     " VALUES (%s, 'tar.zst', 1, %s)", (name, "a" * 64))


def test_samples_roll_up_and_expire(conn):
    """Raw samples -> means per minute -> per 15 minutes, each step pruned after
    its retention (metrics.RETENTION), on the catalog's own SQL, with the
    monitor's once-a-minute calls."""
    from oarcloud_lib import metrics
    base = 1_800_000_000.0 - 900          # a 15-minute boundary
    rows = [("node", "n1", None, "cpu", base + i * 5, float(i % 12)) for i in range(180)]
    rows.append(("node", "n1", None, "cpu", base - 7200, 99.0))   # raw, beyond 1 hour
    metrics.store(conn, rows)
    for minute in range(16):
        metrics.rollup(conn, base + 60 * minute + 30)
    means = conn.execute("SELECT count(*), min(value), max(value) FROM samples"
                         " WHERE step = 60 AND subject = 'n1'").fetchone()
    assert means == (15, 5.5, 5.5)
    quarter = conn.execute("SELECT extract(epoch FROM t)::float8, value FROM samples"
                           " WHERE step = 900 AND subject = 'n1'").fetchall()
    assert quarter == [(base, 5.5)]
    raw = conn.execute("SELECT count(*), max(value) FROM samples WHERE step = 0"
                       " AND subject = 'n1'").fetchone()
    assert raw == (180, 11.0)                                     # the old one expired
    assert metrics.period_means(conn, "node", "n1", "cpu", 60, 3, base + 895) == [5.5] * 3
    assert metrics.period_means(conn, "node", "n2", "cpu", 60, 2, base + 900) == [None, None]
    metrics.rollup(conn, base + 930)                              # idempotent
    assert conn.execute("SELECT count(*) FROM samples WHERE step = 60 AND subject = 'n1'"
                        ).fetchone()[0] == 15
