"""The monitor's fair delivery (owners take turns, admins keep their share),
its pruning (the statements, on a fake connection: the SQL itself runs in the
integration tests), and the per-user limits on targets and alarms."""
import contextlib
import itertools

import pytest

from oarcloud_lib.catalog import alarms, quotas
from oarcloud_lib.server import monitor, notify
from oarcloud_lib.errors import OverQuota, Refused
from oarcloud_lib.server.monitor import pick

_ids = itertools.count(1)


def rows(owner, n):
    return [{"id": next(_ids), "owner": owner} for _ in range(n)]


def owners(picked):
    return [r["owner"] for r in picked]


def test_one_owner_gets_per_owner_threads_at_most():
    due = rows("alice", 50)
    assert len(pick(due, [])) == monitor.PER_OWNER == 2
    assert pick(due, due[:2]) == []              # both in flight: alice waits her turn
    assert pick(due, due[:1]) == [due[1]]         # one done: the next one


def test_owners_take_turns_the_longest_waiting_first():
    alice, bob, carol = rows("alice", 20), rows("bob", 3), rows("carol", 1)
    due = sorted(alice + bob + carol, key=lambda r: r["id"])
    picked = pick(due, [])
    assert owners(picked) == ["alice", "bob", "carol", "alice", "bob"]
    assert [r["id"] for r in picked if r["owner"] == "alice"] == [alice[0]["id"], alice[1]["id"]]


def test_users_never_take_the_admins_share():
    users = [rows("u%d" % i, 5) for i in range(6)]
    due = [r for u in users for r in u]
    picked = pick(due, [])
    assert len(picked) == monitor.DELIVERY_THREADS - monitor.ADMIN_THREADS == 6
    # the admins' messages (owner None) still go while users fill their threads
    admins = rows(None, 5)
    assert owners(pick(due + admins, picked)) == [None, None]
    assert pick(due + admins, picked + admins[:2]) == []
    # and admins never take more than their share either
    assert owners(pick(admins, [])) == [None, None]


def test_busy_threads_and_rows_in_flight_count():
    alice, bob = rows("alice", 3), rows("bob", 3)
    inflight = alice[:2]
    assert owners(pick(alice + bob, inflight)) == ["bob", "bob"]
    assert pick(alice + bob, inflight, threads=3, admin_threads=0) == [bob[0]]
    assert pick(alice + bob, [], threads=1, admin_threads=0) == [alice[0]]
    assert pick([], []) == []


def test_a_slow_owner_delays_only_themselves():
    """A simulation: alice has 40 targets that each take 10 rounds, bob 4 that
    take 1: bob's all go out within a few rounds while alice's crawl."""
    alice, bob = rows("alice", 40), rows("bob", 4)
    pending = sorted(alice + bob, key=lambda r: r["id"])
    inflight, done_at = {}, {}
    for now in range(200):
        for rid, (row, end) in list(inflight.items()):
            if end <= now:
                del inflight[rid]
                pending.remove(row)
                done_at[rid] = now
        for row in pick(pending, [r for r, _ in inflight.values()]):
            inflight[row["id"]] = (row, now + (10 if row["owner"] == "alice" else 1))
        assert sum(1 for r, _ in inflight.values() if r["owner"] == "alice") <= 2
    assert max(done_at[r["id"]] for r in bob) <= 3
    assert len([r for r in alice if r["id"] in done_at]) < 40


# -- pruning -------------------------------------------------------------------------------

class _Cur:
    def __init__(self, rows=(), rowcount=0):
        self.rows, self.rowcount, self.row_factory = list(rows), rowcount, None

    def fetchall(self):
        return self.rows

    def fetchone(self):
        return self.rows[0] if self.rows else None


class _Conn:
    """Answers each statement with answer(sql, args) (a _Cur), and records it."""

    def __init__(self, answer=lambda sql, args: _Cur()):
        self.answer, self.calls = answer, []

    def execute(self, sql, args=None):
        self.calls.append((sql, args))
        return self.answer(sql, args)

    @contextlib.contextmanager
    def transaction(self):
        yield


def test_prune_deletes_a_bounded_batch_of_each_table():
    assert monitor.PRUNE_BATCH == 10000
    conn = _Conn(lambda sql, args: _Cur(rowcount=7))
    now = 2_000_000_000.0
    assert monitor.prune(conn, now) == {"notifications": 7, "job_events": 7, "alarm_history": 7}
    keep = {"notifications": 14 * 86400, "job_events": 30 * 86400, "alarm_history": 30 * 86400}
    for (sql, args), table in zip(conn.calls, keep):
        assert sql.startswith("DELETE FROM %s WHERE id IN (SELECT id FROM %s WHERE "
                              % (table, table))
        assert sql.endswith(" LIMIT %(limit)s)")
        assert args == {"before": now - keep[table], "limit": monitor.PRUNE_BATCH}
    notifications, events, history = (sql for sql, _ in conn.calls)
    assert "state IN ('sent', 'failed')" in notifications     # never a pending one
    assert "NOT EXISTS" in events and "'deleted', 'failed'" in events   # ended jobs only
    assert "at < to_timestamp(%(before)s)" in history


def test_prune_runs_every_few_minutes_and_again_while_batches_are_full():
    m = monitor.Monitor.__new__(monitor.Monitor)
    m.last_prune = 0.0
    full = [False]
    conn = _Conn(lambda sql, args: _Cur(rowcount=monitor.PRUNE_BATCH if full[0] else 3))
    now = 1_000_000.0
    m.prune_old(conn, now)
    assert len(conn.calls) == 3
    m.prune_old(conn, now + 5)                       # not yet
    assert len(conn.calls) == 3
    m.prune_old(conn, now + monitor.PRUNE_EVERY)
    assert len(conn.calls) == 6
    full[0] = True
    m.prune_old(conn, now + 2 * monitor.PRUNE_EVERY)
    m.prune_old(conn, now + 2 * monitor.PRUNE_EVERY + 5)   # more left: at the next cycle
    assert len(conn.calls) == 12


def test_due_keeps_each_owner_to_a_few_rows():
    conn = _Conn()
    notify.due(conn, 100, per_owner=4)
    sql, args = conn.calls[0]
    assert "PARTITION BY owner" in sql and "n.owner" in sql and args == (4, 100)
    notify.due(conn, 20)
    assert "owner" in conn.calls[1][0] and conn.calls[1][1] == (20,)


# -- limits --------------------------------------------------------------------------------

LAB = notify.Policy(notify._networks(["127.0.0.1/32"], "test"), ())


def _targets_conn(have):
    urls = ["json://127.0.0.1:%d/" % (8000 + i) for i in range(have)]

    def answer(sql, args):
        if sql.startswith("SELECT id, url, created FROM notify_targets"):
            return _Cur([{"id": i + 1, "url": u, "created": None} for i, u in enumerate(urls)])
        if sql.startswith("SELECT count(*) FROM notify_targets"):
            return _Cur([(have,)])
        if sql.startswith("INSERT INTO notify_targets"):
            return _Cur([{"id": have + 1, "url": args[1], "created": None}])
        return _Cur()
    return _Conn(answer), urls


def test_a_user_has_at_most_20_targets_unless_the_site_sets_a_quota():
    assert quotas.BUILTIN["targets"] == 20
    conn, _ = _targets_conn(19)
    row, added = notify.add_target(conn, "alice", "json://127.0.0.1:9999/", LAB)
    assert added and row["id"] == 20
    assert "pg_advisory_xact_lock" in conn.calls[0][0]
    assert conn.calls[0][1] == ("oarcloud.quota:alice",)
    conn, urls = _targets_conn(20)
    with pytest.raises(OverQuota) as e:
        notify.add_target(conn, "alice", "json://127.0.0.1:9999/", LAB)
    assert str(e.value) == ("quota: targets: 20 used of 20, this asks 1 more (notification"
                            " targets): free some, or ask the site's admins to raise it")
    assert not [s for s, _ in conn.calls if s.startswith("INSERT")]
    assert notify.add_target(conn, "alice", urls[3], LAB)[1] is False   # already there: fine
    conn, _ = _targets_conn(50)                     # admins: no limit
    assert notify.add_target(conn, None, "json://127.0.0.1:9999/", LAB)[1]
    assert not [s for s, _ in conn.calls if "pg_advisory" in s]


def test_add_target_applies_the_policy_before_anything():
    conn, _ = _targets_conn(0)
    with pytest.raises(Refused, match="loopback"):
        notify.add_target(conn, "alice", "json://127.0.0.1:9999/", notify.Policy((), ()))
    assert conn.calls == []


RULE = {"metric": "cpu", "op": "gt", "threshold": 80.0, "period": 10, "periods": 3}


def _alarms_conn(have):
    def answer(sql, args):
        if sql.startswith("SELECT count(*) FROM alarms"):
            return _Cur([(have,)])
        if sql.startswith("INSERT INTO alarms"):
            return _Cur([{"id": have + 1, "name": args[1]}])
        return _Cur()
    return _Conn(answer)


def test_a_user_has_at_most_100_alarms_unless_the_site_sets_a_quota():
    assert quotas.BUILTIN["alarms"] == 100
    assert alarms.create(_alarms_conn(99), "alice", "hot", "web", RULE)["id"] == 100
    conn = _alarms_conn(100)
    with pytest.raises(OverQuota) as e:
        alarms.create(conn, "alice", "hot", "web", RULE)
    assert str(e.value) == ("quota: alarms: 100 used of 100, this asks 1 more (alarms):"
                            " free some, or ask the site's admins to raise it")
    assert not [s for s, _ in conn.calls if s.startswith("INSERT")]
    node_rule = dict(RULE, metric="load")
    assert alarms.create(_alarms_conn(500), None, "busy", "node-1", node_rule)["id"] == 501


def test_an_alarm_notifies_at_most_max_targets_urls(monkeypatch):
    # the site's policy is the unit under test elsewhere (test_notify_policy)
    monkeypatch.setattr(notify, "site_policy", lambda conf=None: None)
    urls = ["json://127.0.0.1:%d/" % (8000 + i) for i in range(21)]
    with pytest.raises(Refused, match="an alarm notifies at most 20 URLs, not 21"):
        alarms.create(_alarms_conn(0), "alice", "hot", "web", RULE, urls=urls)
    assert alarms.create(_alarms_conn(0), "alice", "hot", "web", RULE, urls=urls[:20])
