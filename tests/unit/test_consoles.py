"""The console keeper's pure parts (node.consoles): the capped log, the pace,
and the CLI's printing of a log to a terminal."""
import os

from oarcloud_lib.node import consoles


def test_the_log_rotates_at_its_cap_and_keeps_two_files_at_most(tmp_path):
    log = consoles.Log("oc7-0", tmp_path, cap=100)
    log.write(b"lost before open\n")          # not held: nothing is written
    assert consoles.read_log("oc7-0", tmp_path) == b""
    log.open()
    for i in range(30):
        log.write(b"line %02d\n" % i)           # 8 bytes a line
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["oc7-0.log", "oc7-0.log.1"]
    assert all(p.stat().st_size <= 100 + 8 for p in tmp_path.iterdir())
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in tmp_path.iterdir())
    text = consoles.read_log("oc7-0", tmp_path)
    assert text.endswith(b"line 29\n") and text.startswith(b"line ")   # the newest, in order
    assert consoles.logged(None, tmp_path) == ["oc7-0"] == consoles.logged(7, tmp_path)
    assert consoles.logged(8, tmp_path) == []
    consoles.forget("oc7-0", tmp_path)
    assert list(tmp_path.iterdir()) == [] and consoles.read_log("oc7-0", tmp_path) == b""


def test_the_log_never_follows_a_link_planted_in_its_place(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (tmp_path / "oc1-0.log").symlink_to(target)
    log = consoles.Log("oc1-0", tmp_path)
    try:
        log.open()
        raise AssertionError("opened through a link")
    except OSError:
        pass
    assert target.read_text() == "keep\n"


def test_the_pace_waits_out_the_second_once_rate_bytes_are_read():
    now = [100.0]
    bucket = consoles.Bucket(rate=1000, clock=lambda: now[0])
    assert bucket.take(400) == 0 and bucket.take(500) == 0
    now[0] += 0.25
    assert bucket.take(200) == 0.75           # 1100 in the second: wait for its end
    now[0] += 0.75
    assert bucket.take(900) == 0              # a new second
    now[0] += 2
    assert bucket.take(10) == 0


def test_a_log_printed_to_a_terminal_cannot_drive_it():
    from functools import partial
    from oarcloud_cli.common import printable
    printable = partial(printable, keep="\n\t")   # as `console --log` prints
    assert printable("ok\tfine\n") == "ok\tfine\n"
    assert printable("\x1b]0;owned\x07\x1b[2Jx\x9b") == "?]0;owned??[2Jx?"
    assert printable("caf\u00e9 \u2713") == "caf\u00e9 \u2713"


def test_the_keeper_refuses_a_bad_or_unheld_domain_in_one_line(tmp_path):
    import socket
    keeper = consoles.Keeper(tmp_path, tmp_path / "s.sock")
    for line, said in ((b"attach ../etc\n", b"../etc"), (b"attach oc5-0\n", b"oc5-0"),
                       (b"hello\n", b"error: "), (b"attach oc5-0 x\n", b"error: ")):
        mine, theirs = socket.socketpair()
        mine.sendall(line)
        keeper.greet(theirs)
        answer = mine.recv(200)
        assert answer.startswith(b"error: ") and said in answer and answer.endswith(b"\n")
        assert mine.recv(10) == b""        # and it hung up
        mine.close()
    assert keeper.consoles == {}
