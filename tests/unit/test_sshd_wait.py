"""An instance is called running once its sshd listens (images that have one):
the port check reads the instance's /proc/INIT/net tables, here this process's."""
import os
import socket

import pytest

from oarcloud_lib.node import driver, lifecycle
from oarcloud_lib.errors import NotReady


class HereGuest(driver.LxcGuest):
    """A guest whose "init" is this test process (its network namespace, its root)."""

    def __init__(self, name="oc1-0", pid=None):
        self._name, self._pid = name, pid or os.getpid()

    @property
    def name(self):
        return self._name

    def init_pid(self):
        if self._pid < 0:
            raise NotReady(detail="instance %s has no init process" % self._name)
        return self._pid


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"),
                                          (socket.AF_INET6, "::1")])
def test_listens_sees_a_listening_socket_and_not_a_bound_one(family, host):
    with socket.socket(family) as lst, socket.socket(family) as bound:
        lst.bind((host, 0))
        lst.listen()
        bound.bind((host, 0))
        guest = HereGuest()
        assert guest.listens(lst.getsockname()[1])
        assert not guest.listens(bound.getsockname()[1])


def test_has_file_looks_in_the_instances_root(tmp_path):
    guest = HereGuest()
    assert guest.has_file(str(tmp_path))
    assert not guest.has_file(str(tmp_path / "nothing"))
    (tmp_path / "link").symlink_to(tmp_path / "nothing")
    assert guest.has_file(str(tmp_path / "link"))  # a dangling link is not followed


class FakeGuest:
    def __init__(self, name, sshd, listen_after, gone=False):
        self.name, self.sshd, self.left, self.gone = name, sshd, listen_after, gone
        self.asked = 0

    def has_file(self, path):
        assert path == "/usr/sbin/sshd"
        if self.gone:
            raise NotReady(detail="instance %s has no init process" % self.name)
        return self.sshd

    def listens(self, port):
        assert port == 22
        self.asked += 1
        return self.asked > self.left


def test_wait_for_sshd_waits_for_each_instance_that_has_one(caplog):
    caplog.set_level("INFO")
    late, never, nossh, gone = (FakeGuest("late", True, 3), FakeGuest("never", True, 10**9),
                                FakeGuest("nossh", False, 0), FakeGuest("gone", True, 0, True))
    lifecycle.wait_for_sshd([late, never, nossh, gone], timeout=0.5)
    assert late.asked == 4 and never.asked > 4 and nossh.asked == gone.asked == 0
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == "never: its sshd does not listen on port 22 after 0.5 s"
    assert said[1].startswith("sshd listening in 1 instance(s) after ")
