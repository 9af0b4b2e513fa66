"""oarcloud-admin against the real machine: accounts and bad input."""
import hashlib
import json
import pwd
import subprocess

import pytest

from conftest import ADMIN, USER_CLI, admin, run

from oarcloud_lib import paths


def _state_digest():
    try:
        return hashlib.sha256((paths.LAB / "state.json").read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


@pytest.mark.parametrize("nodes,message", [("0", "at least 1"), ("-3", "at least 1"),
                                           ("100000", "can hold at most")])
def test_lab_up_refuses_bad_node_counts(lab, nodes, message):
    before = _state_digest()
    res = admin("lab", "up", "--nodes", nodes)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    assert _state_digest() == before


@pytest.mark.parametrize("argv", [["lab", "up"], ["lab", "down"], ["user", "add", "someone"],
                                  ["setup", "server"]])
def test_admin_refuses_non_root(lab, argv):
    res = run(["runuser", "-u", "nobody", "--", ADMIN, *argv])
    assert res.returncode == 2
    assert "must run as root" in res.stderr


def test_user_cli_refuses_root():
    res = run([USER_CLI, "list"])
    assert res.returncode == 2
    assert "not as root" in res.stderr


@pytest.mark.parametrize("name", ["Bad", "a/b", "..", "a b", "a;id", "x" * 40, "root", "bin"])
def test_user_add_refuses_bad_names(lab, name):
    users_before = {p.pw_name for p in pwd.getpwall()}
    res = admin("user", "add", name)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refused" in res.stderr
    assert {p.pw_name for p in pwd.getpwall()} == users_before


def test_user_add_list_del(make_user):
    name = make_user()
    pw = pwd.getpwnam(name)
    assert pw.pw_uid >= 1000
    again = admin("user", "add", name, check=True)
    assert "nothing changed" in again.stdout
    listed = json.loads(admin("user", "list", "--json", check=True).stdout)
    entry = [u for u in listed if u["name"] == name][0]
    assert entry["role"] == "user" and entry["key_fingerprint"].startswith("SHA256:")
    # the generated key pair belongs to the user
    key = "%s/.ssh/id_oarcloud" % pw.pw_dir
    fp = run(["ssh-keygen", "-l", "-f", key + ".pub"], check=True).stdout.split()[1]
    assert fp == entry["key_fingerprint"]
    admin("user", "delete", name, check=True)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert name not in admin("user", "list", check=True).stdout
    res = admin("user", "del", name)  # the old name, an alias
    assert res.returncode != 0 and "not found" in res.stderr


def test_user_add_with_key_and_admin(make_user, tmp_path):
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = make_user("--key", str(key) + ".pub", "--admin")
    entry = [u for u in json.loads(admin("user", "list", "--json", check=True).stdout)
             if u["name"] == name][0]
    fp = run(["ssh-keygen", "-l", "-f", str(key) + ".pub"], check=True).stdout.split()[1]
    assert entry["key_fingerprint"] == fp and entry["role"] == "admin"


def test_user_add_refuses_private_key(lab, tmp_path):
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    res = admin("user", "add", "octprivkey", "--key", str(key))
    assert res.returncode == 2 and "public key" in res.stderr
    with pytest.raises(KeyError):
        pwd.getpwnam("octprivkey")


def test_setup_server_twice_changes_nothing(lab):
    res = admin("setup", "server", "--address", "198.19.0.1", "--nodes-cidr", "198.19.0.0/16",
                check=True)
    assert "nothing changed" in res.stdout, res.stdout
