import pytest

from oarcloud_lib.catalog import accounts, images
from oarcloud_lib.errors import Refused


@pytest.mark.parametrize("name", ["alice", "bob_2", "_svc", "a-b"])
def test_good_user_names(name):
    assert accounts.check_name(name) == name


@pytest.mark.parametrize("name", ["", "Alice", "1abc", "a/b", "..", "a b", "a;b", "x" * 33,
                                  "root", "oar", "postgres", "-a", "a\n"])
def test_bad_user_names(name):
    with pytest.raises(Refused):
        accounts.check_name(name)


@pytest.mark.parametrize("name", ["tiny", "bookworm", "web.v2", "A_1-b"])
def test_good_image_names(name):
    assert images.check_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a..b", ".hidden", "x" * 65, "a b", 3])
def test_bad_image_names(name):
    with pytest.raises(Refused):
        images.check_name(name)


def test_public_key_file_checks(tmp_path):
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n")
    with pytest.raises(Refused):
        accounts.read_public_key(bad)
    two = tmp_path / "two.pub"
    two.write_text("ssh-ed25519 AAAA a\nssh-ed25519 AAAA b\n")
    with pytest.raises(Refused):
        accounts.read_public_key(two)
