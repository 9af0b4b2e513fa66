"""The supervisor's logic (server/services.py) on fake children and a fake
clock: restarts, back-off, what the admins are told.  The real supervisor
restarting a killed monitor is tests/integration/test_server_services.py."""
import pytest

from oarcloud_lib.server import notify, services


class Child:
    pids = iter(range(100, 10000))

    def __init__(self):
        self.pid, self.code, self.terminated = next(Child.pids), None, False

    def poll(self):
        return self.code

    def terminate(self):
        self.terminated, self.code = True, -15

    def wait(self, timeout=None):
        return self.code


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _supervisor():
    clock, told, spawned = Clock(), [], []

    def spawn(name):
        spawned.append(Child())
        return spawned[-1]
    sup = services.Supervisor(["monitor"], spawn, lambda *a: told.append(a), clock)
    return sup, clock, told, spawned


def test_a_dead_child_is_told_and_restarted_slower_while_it_keeps_dying():
    sup, clock, told, spawned = _supervisor()
    assert sup.start_due() is None and len(spawned) == 1
    delays = []
    for i in range(8):
        spawned[-1].code = -9
        sup.reap()
        wait = sup.start_due()
        delays.append(wait)
        assert len(spawned) == i + 1          # not before its time
        clock.now += wait
        assert sup.start_due() is None and len(spawned) == i + 2
        clock.now += 1                        # dies again quickly
    assert delays == [0.5, 1, 2, 5, 10, 30, 30, 30]
    assert told[0] == ("monitor", "killed by signal SIGKILL",
                       "restarting in 0.5s (death 1 in a row)")
    st = sup.status()["monitor"]
    assert st["restarts"] == 8 and st["pid"] == spawned[-1].pid
    assert st["last_death"]["how"] == "killed by signal SIGKILL"


def test_a_child_that_ran_long_enough_restarts_at_once_again():
    sup, clock, told, spawned = _supervisor()
    sup.start_due()
    for _ in range(3):                        # three quick deaths: 2 s now
        spawned[-1].code = 1
        sup.reap()
        clock.now += sup.start_due()
        sup.start_due()
    clock.now += services.STABLE + 1
    spawned[-1].code = 1
    sup.reap()
    assert sup.start_due() == 0.5
    assert told[-1][1:] == ("exited with status 1", "restarting in 0.5s (death 1 in a row)")


def test_a_child_that_cannot_start_is_retried_and_told():
    clock, told = Clock(), []

    def spawn(name):
        raise OSError("no such file")
    sup = services.Supervisor(["monitor"], spawn, lambda *a: told.append(a), clock)
    assert sup.start_due() == 0.5
    assert told == [("monitor", "could not start: no such file",
                     "restarting in 0.5s (death 1 in a row)")]


def test_stop_all_terminates_the_children_and_tells_nobody():
    sup, clock, told, spawned = _supervisor()
    sup.start_due()
    sup.stop_all()
    assert spawned[0].terminated and sup.children == {} and told == []


@pytest.mark.parametrize("code,how", [(-9, "killed by signal SIGKILL"),
                                      (-15, "killed by signal SIGTERM"),
                                      (3, "exited with status 3"), (-200, "killed by signal 200")])
def test_how_it_ended(code, how):
    assert services.how_it_ended(code) == how


def test_systemd_tells_the_admins_only_when_the_unit_did_not_end_well(monkeypatch):
    told = []
    monkeypatch.setattr(services, "died", lambda *a: told.append(a))
    assert services.systemd_died("monitor", {"SERVICE_RESULT": "success"}) is False
    assert services.systemd_died("monitor", {}) is False
    assert services.systemd_died("monitor", {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed",
                                             "EXIT_STATUS": "KILL"})
    assert told == [("monitor", "signal (killed KILL)", "systemd restarts it (Restart=on-failure)")]
    with pytest.raises(Exception, match="unknown service"):
        services.systemd_died("../x", {"SERVICE_RESULT": "signal"})


def test_the_death_message_for_the_admins():
    title, body = notify.event_message("service_died", service="monitor", host="srv",
                                       how="killed by signal SIGKILL",
                                       action="restarting in 0.5s (death 1 in a row)")
    assert title == "Service monitor died on srv"
    assert body == ("oarcloud's monitor service on srv killed by signal SIGKILL: restarting in"
                    " 0.5s (death 1 in a row).\n")
    assert "service_died" in notify.ADMIN_EVENTS


def test_the_unit_restarts_on_failure_and_reports_its_death():
    text = services.templating.render("oarcloud-service.j2", **services.unit_context("monitor"))
    assert "\nRestart=on-failure\n" in text
    assert "\nExecStopPost=/usr/local/bin/oarcloud-admin service died monitor\n" in text
    assert "-I -m oarcloud_lib.server.monitor\n" in text


def test_a_service_turned_off_stops_without_news_or_restart_and_starts_when_on():
    clock, told, spawned, off = Clock(), [], [], set()

    def spawn(name):
        spawned.append((name, Child()))
        return spawned[-1][1]
    sup = services.Supervisor(["monitor", "web"], spawn, lambda *a: told.append(a), clock,
                              wanted=lambda n: n not in off)
    sup.start_due()
    web = dict(spawned)["web"]
    off.add("web")
    sup.refresh()
    assert web.terminated and not dict(spawned)["monitor"].terminated
    sup.reap()
    assert sup.start_due() is None and told == [] and len(spawned) == 2
    assert sup.status()["web"]["pid"] is None and sup.status()["web"]["restarts"] == 0
    off.clear()
    sup.refresh()
    sup.start_due()
    assert [n for n, _ in spawned] == ["monitor", "web", "web"] and told == []


def test_a_service_off_at_the_start_is_not_started():
    clock, spawned = Clock(), []
    sup = services.Supervisor(["monitor", "web"], lambda n: spawned.append(n) or Child(),
                              lambda *a: None, clock, wanted=lambda n: n != "web")
    assert sup.start_due() is None and spawned == ["monitor"]
