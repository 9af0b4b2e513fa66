"""`oarcloud extend`'s parts without OAR: the extension's grammar, OAR's h:m:s
and its oarwalltime status.  The real extension is in
tests/integration/test_instance_time_and_access.py."""
import pytest

from oarcloud_lib.commands import Result
from oarcloud_lib.errors import Refused
from oarcloud_lib.service import lifecycle
from oarcloud_lib.tools import oar

STATUS = """Walltime change status for job 12 (job is running):
  Current walltime:      1:0:0
  Possible increase:  UNLIMITED
  Already granted:      +0:30:0 (forced: 0:10:0)
  Pending/unsatisfied: 0:15:0 (will possibly delay next jobs)
"""


@pytest.mark.parametrize("text,seconds", [("+1:00", 3600), ("+0:30", 1800),
                                          ("+2:15:30", 8130), ("+100:00", 360000)])
def test_extensions(text, seconds):
    assert lifecycle.check_extension(text) == seconds


@pytest.mark.parametrize("text", ["1:00", "+0:00", "-1:00", "+1", "+1:60", "+1:00:60", "",
                                  None, "+1:00; id", "+99999:00"])
def test_bad_extensions_are_refused(text):
    with pytest.raises(Refused, match="bad extension"):
        lifecycle.check_extension(text)


def test_hms():
    assert oar.hms_seconds("1:0:0") == 3600
    assert oar.hms_seconds(" 0:30:5 ") == 1805
    assert oar.hms_seconds("-0:1:0") == -60
    assert oar.hms_seconds("+0:30:0") == 1800
    assert oar.hms_seconds("UNLIMITED") is None


class Runner:
    def __init__(self, result):
        self.result, self.argv = result, None

    def run(self, argv, **kwargs):
        self.argv = argv
        return self.result


def test_walltime_status_reads_oarwalltime():
    runner = Runner(Result(0, STATUS, ""))
    assert oar.walltime_status(12, runner) == {"walltime": 3600, "possible": None,
                                               "granted": 1800, "pending": 900}
    assert runner.argv[-2:] == ["oarwalltime", "12"]


def test_walltime_status_and_change_refuse_with_oars_reason():
    with pytest.raises(Refused, match="job is not running"):
        oar.walltime_status(12, Runner(Result(0, "Walltime change status for job 12 (job is not"
                                                 " running yet):\n  N/A\n", "")))
    with pytest.raises(Refused, match="OAR refused the walltime change: Error: walltime change"
                                      " is not enabled"):
        oar.walltime_change(12, "+1:00:00", Runner(Result(1, "", "Error: walltime change is"
                                                                 " not enabled.\n")))
    assert oar.walltime_change(12, "+1:00:00", Runner(Result(0, "Accepted: walltime change"
                                                                " request updated.", ""))) \
        .startswith("Accepted")


class _Conn:
    def __init__(self, rows):
        self.rows, self.calls = rows, []

    def execute(self, sql, args=None):
        self.calls.append((sql, args))
        rows = self.rows if sql.startswith("SELECT domain, job_id") else []

        class Cur:
            def fetchall(self):
                return rows
        return Cur()


def test_the_walltime_warning_follows_an_extended_end(monkeypatch):
    from oarcloud_lib import config
    from oarcloud_lib.server import monitor, notify
    now = 1_800_000_000.0
    told = []
    monkeypatch.setattr(notify, "enqueue_event", lambda conn, owner, kind, **f: told.append(f))
    ends = {"7": {"startTime": int(now) - 3000, "walltime": 3600, "state": "Running"}}
    reads = []
    monkeypatch.setattr(oar, "current_jobs", lambda: reads.append(1) or ends)
    mon = monitor.Monitor(conf=config.SiteConfig(walltime_warning=10))
    conn = _Conn([("oc7-0", 7, "web", "alice", False)])
    mon._walltimes(conn, now)                                  # 600 s left: warned
    assert told == [{"instance": "web", "minutes": 10}]
    assert any("SET walltime_warned = true" in s for s, _ in conn.calls)
    ends["7"]["walltime"] = 3600 + 1800                        # extended by 30 min
    conn = _Conn([("oc7-0", 7, "web", "alice", True)])
    mon._walltimes(conn, now + 30)                             # within the minute: trusted
    assert len(reads) == 1 and not [s for s, _ in conn.calls if "false" in s]
    mon._walltimes(conn, now + monitor.JOB_END_TTL + 1)        # read again: warn again later
    assert len(reads) == 2
    assert any("SET walltime_warned = false" in s for s, _ in conn.calls)
    assert len(told) == 1


def test_advance_reservation_starts():
    import datetime
    from oarcloud_lib.service import jobs
    now = datetime.datetime(2026, 12, 2, 18, 0).timestamp()
    assert jobs.check_start("2026-12-02 19:30", now) == "2026-12-02 19:30:00"
    assert jobs.check_start(" 2026-12-03 08:00:15 ", now) == "2026-12-03 08:00:15"
    for bad in ("2026-12-02 17:00", "2028-01-01 00:00", "tomorrow", "2026-12-02T19:30",
                "2026-12-02 19:30; id", "", None):
        with pytest.raises(Refused, match="start"):
            jobs.check_start(bad, now)
