"""Public keys users add (oarcloud key add), checked with the real ssh-keygen."""
import subprocess

import pytest

from oarcloud_lib.catalog import accounts
from oarcloud_lib.errors import Refused


@pytest.fixture
def keypair(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "laptop@home",
                    "-f", str(tmp_path / "k")], check=True)
    return (tmp_path / "k.pub").read_text(), (tmp_path / "k").read_text()


def test_a_public_key_is_taken_with_its_fingerprint(keypair):
    pub, _ = keypair
    line, fp, comment = accounts.parse_public_key(pub)
    assert line == pub.strip() and fp.startswith("SHA256:") and comment == "laptop@home"
    assert accounts.parse_public_key("\n  " + pub + "\n\n")[1] == fp


def test_bad_keys_are_refused(keypair):
    pub, private = keypair
    kind, blob, _ = pub.split(None, 2)
    for text, match in [(private, "private key"), (pub + pub, "exactly one"), ("", "exactly one"),
                        ('command="sh" ' + pub, "must start with"),
                        ("ssh-dss AAAA x", "must start with"),
                        ("%s %sXX x" % (kind, blob[:-8]), "ssh-keygen rejects it"),
                        ("%s %s a\x1b[2Jb" % (kind, blob), "control"),
                        ("%s %s" % (kind, "A" * 20000), "exactly one")]:
        with pytest.raises(Refused, match=match):
            accounts.parse_public_key(text)
