"""Quota logic (catalog.quotas): parsing, display, where a limit comes from,
and what require() refuses.  The counting SQL runs against PostgreSQL in
tests/integration/test_quotas.py."""
import contextlib

import pytest

from oarcloud_lib.catalog import quotas
from oarcloud_lib.errors import OverQuota, Refused


@pytest.mark.parametrize("resource,text,value", [
    ("instances", "0", 0), ("instances", "12", 12), ("cores", " 4 ", 4),
    ("memory", "512M", 512 << 20), ("memory", "4G", 4 << 30), ("memory", "2GiB", 2 << 30),
    ("memory", "1t", 1 << 40), ("images-bytes", "1048576", 1 << 20),
    ("images-bytes", "20g", 20 << 30), ("alarms", "none", None), ("targets", "NONE", None),
])
def test_parse_limit(resource, text, value):
    assert quotas.parse_limit(resource, text) == value


@pytest.mark.parametrize("resource,text", [
    ("instances", "-1"), ("instances", "1.5"), ("instances", "4G"), ("cores", ""),
    ("memory", "-1G"), ("memory", "G"), ("memory", "4P"), ("networks", "1e3"),
    ("alarms", "9" * 16), ("vpn-clients", "1; DROP TABLE quotas"),
])
def test_bad_limits_are_refused(resource, text):
    with pytest.raises(Refused, match="bad %s quota" % resource):
        quotas.parse_limit(resource, text)


def test_unknown_resources_are_refused():
    with pytest.raises(Refused, match="unknown quota 'disks': one of instances, cores"):
        quotas.parse_limit("disks", "1")
    with pytest.raises(Refused, match="unknown quota"):
        quotas.set_limits(None, "alice", {"vm-count": 3})


def test_shown():
    assert quotas.shown("memory", 1 << 30) == "1 GiB"
    assert quotas.shown("memory", 768 << 20) == "768 MiB"
    assert quotas.shown("images-bytes", 1536 << 20) == "1.5 GiB"
    assert quotas.shown("images-bytes", 100) == "100 B"
    assert quotas.shown("instances", 3) == "3"
    assert quotas.shown("cores", None) == "none"


class _Conn:
    """Quota rows and use per resource, as the catalog would answer them."""

    def __init__(self, rows=(), used=None):
        self.rows, self.used, self.calls = list(rows), used or {}, []

    def execute(self, sql, args=None):
        self.calls.append((sql, args))
        if sql.startswith("SELECT account, resource, max FROM quotas"):
            return _Cur([r for r in self.rows if r[0] is None or r[0] == args[0]])
        for r, (_, query, _) in quotas.RESOURCES.items():
            if sql == query:
                return _Cur([(self.used.get(r, 0),)])
        return _Cur([])

    @contextlib.contextmanager
    def transaction(self):
        yield


class _Cur:
    def __init__(self, rows):
        self.rows = rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows

    def __iter__(self):
        return iter(self.rows)


def test_an_accounts_own_limit_wins_over_the_sites_default_then_the_built_in_caps():
    conn = _Conn([(None, "instances", 4), ("alice", "instances", 1), (None, "alarms", 5),
                  ("bob", "cores", 8)])
    have = quotas.limits(conn, "alice")
    assert have["instances"] == (1, "account")
    assert have["alarms"] == (5, "site")
    assert have["targets"] == (20, "built-in")
    assert have["cores"] == (None, None)      # bob's limit is bob's
    assert quotas.limits(conn, "bob")["instances"] == (4, "site")


def test_require_refuses_past_the_limit_with_what_is_used_and_the_limit():
    conn = _Conn([("alice", "instances", 2), ("alice", "memory", 1 << 30)],
                 used={"instances": 1, "memory": 768 << 20})
    quotas.require(conn, "alice", {"instances": 1})                    # 2 of 2: passes
    assert conn.calls[0] == ("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             ("oarcloud.quota:alice",))
    with pytest.raises(OverQuota) as e:
        quotas.require(conn, "alice", {"instances": 2})
    assert str(e.value) == ("quota: instances: 1 used of 2, this asks 2 more (live instances):"
                            " free some, or ask the site's admins to raise it")
    with pytest.raises(OverQuota, match=r"memory: 768 MiB used of 1 GiB, this asks 512 MiB"):
        quotas.require(conn, "alice", {"instances": 1, "memory": 512 << 20})
    quotas.require(conn, "alice", {"cores": 1000})                      # no limit on cores


def test_require_counts_only_what_is_limited_and_never_for_the_site():
    conn = _Conn([], used={})
    quotas.require(conn, "alice", {"cores": 5, "networks": 0})
    assert not [s for s, _ in conn.calls if s in {q for _, q, _ in quotas.RESOURCES.values()}]
    conn = _Conn([(None, "instances", 0)])
    quotas.require(conn, None, {"instances": 1})      # the site's objects: no quota
    assert conn.calls == []
    with pytest.raises(OverQuota, match="instances: 0 used of 0"):
        quotas.require(conn, "carol", {"instances": 1})


def test_require_room_refuses_only_when_nothing_is_left():
    conn = _Conn([("alice", "images-bytes", 1 << 30)], used={"images-bytes": 1 << 30})
    with pytest.raises(OverQuota) as e:
        quotas.require_room(conn, "alice", "images-bytes")
    assert str(e.value) == ("quota: images-bytes: 1 GiB used of 1 GiB (bytes of images in the"
                            " store): free some, or ask the site's admins to raise it")
    quotas.require_room(_Conn([("alice", "images-bytes", 1 << 30)], used={"images-bytes": 5}),
                        "alice", "images-bytes")


def test_set_limits_refuses_negative_values_before_touching_the_catalog():
    conn = _Conn()
    with pytest.raises(Refused, match="bad instances quota -1"):
        quotas.set_limits(conn, "alice", {"instances": -1})
    assert conn.calls == []


class _GroupConn(_Conn):
    """_Conn with groups of users: {group: (members, {resource: max})}, and use
    per owner ({resource: {owner: n}})."""

    def __init__(self, rows=(), used=None, groups=None):
        super().__init__(rows)
        self.by_owner, self.groups = used or {}, groups or {}

    def execute(self, sql, args=None):
        if sql.startswith("SELECT usergroup, resource, max FROM quotas"):
            self.calls.append((sql, args))
            return _Cur([(g, r, m) for g, (members, caps) in sorted(self.groups.items())
                         if args[0] in members for r, m in caps.items()])
        if sql.startswith("SELECT account FROM usergroup_members"):
            self.calls.append((sql, args))
            return _Cur([(m,) for m in self.groups[args[0]][0]])
        for r, (_, query, _) in quotas.RESOURCES.items():
            if sql == query:
                self.calls.append((sql, args))
                return _Cur([(sum(self.by_owner.get(r, {}).get(o, 0) for o in args[0]),)])
        return super().execute(sql, args)


def test_a_groups_limit_holds_for_what_its_members_hold_together():
    conn = _GroupConn([("bob", "instances", 5)], used={"instances": {"alice": 2, "bob": 1}},
                      groups={"devs": (["alice", "bob"], {"instances": 3}),
                              "ops": (["bob", "carol"], {"cores": 8})})
    with pytest.raises(OverQuota) as e:
        quotas.require(conn, "bob", {"instances": 1})       # his own 5 allows it, @devs not
    assert str(e.value) == ("quota: instances: 3 used of 3 by group @devs together, this asks"
                            " 1 more (live instances): free some, or ask the site's admins to"
                            " raise it")
    locks = [a[0] for s, a in conn.calls if "advisory" in s]
    assert locks == ["oarcloud.quota:bob", "oarcloud.quota:@devs"]   # the account's first
    conn.by_owner["instances"]["alice"] = 1
    quotas.require(conn, "bob", {"instances": 1, "cores": 8})         # 3 of 3, 8 of 8
    with pytest.raises(OverQuota, match="cores: 0 used of 8 by group @ops together"):
        quotas.require(conn, "carol", {"cores": 9})
    quotas.require(conn, "dave", {"instances": 100})                   # in no group


def test_the_tightest_limit_and_a_report_line_per_group_limit():
    conn = _GroupConn([(None, "group-size", 10)], used={"instances": {"alice": 2, "bob": 1}},
                      groups={"devs": (["alice", "bob"], {"group-size": 4, "instances": 3})})
    assert quotas.tightest(conn, "alice", "group-size") == (4, "@devs")
    assert quotas.tightest(conn, "carol", "group-size") == (10, "site")
    lines = [r for r in quotas.report(conn, "alice") if r["source"] == "@devs"]
    assert [(r["resource"], r["used"], r["limit"]) for r in lines] == [
        ("group-size", 0, 4), ("instances", 3, 3)]


def test_quota_targets_are_a_user_a_group_or_the_site():
    assert quotas._scope(None) == (None, None)
    assert quotas._scope("alice") == ("alice", None)
    assert quotas._scope("@devs") == (None, "devs")
    for bad in ("@", "@Devs", "al ice", "@a;b"):
        with pytest.raises(Refused):
            quotas._scope(bad)
