"""The VPN endpoints' certificates and revocation lists (server/vpnca.py),
checked with openssl's own verifier; the config templates they feed."""
import datetime
import subprocess

import pytest

from oarcloud_lib import config, templating
from oarcloud_lib.errors import Refused
from oarcloud_lib.server import vpnca


def _verify(tmp_path, ca, cert, crl=None):
    (tmp_path / "ca.pem").write_text(vpnca._cert_pem(ca))
    (tmp_path / "cert.pem").write_text(vpnca._cert_pem(cert))
    argv = ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem")]
    if crl:
        (tmp_path / "crl.pem").write_text(crl)
        argv += ["-crl_check", "-CRLfile", str(tmp_path / "crl.pem")]
    return subprocess.run(argv + [str(tmp_path / "cert.pem")], capture_output=True, text=True)


def test_clients_verify_until_revoked(tmp_path):
    ca, ca_key = vpnca.new_ca(7)
    client, _ = vpnca.issue(ca, ca_key, "laptop", "client", 90)
    other, _ = vpnca.issue(ca, ca_key, "phone", "client", 90)
    empty = vpnca.crl(ca, ca_key, [], 1)
    assert _verify(tmp_path, ca, client, empty).returncode == 0
    when = vpnca._now()
    revoked = vpnca.crl(ca, ca_key, [("%x" % client.serial_number, when)], 2)
    res = _verify(tmp_path, ca, client, revoked)
    assert res.returncode != 0 and "revoked" in res.stdout + res.stderr
    assert _verify(tmp_path, ca, other, revoked).returncode == 0
    # another network's CA signs nothing of this one
    ca2, key2 = vpnca.new_ca(8)
    foreign, _ = vpnca.issue(ca2, key2, "laptop", "client", 90)
    assert _verify(tmp_path, ca, foreign).returncode != 0


def test_lifetimes_are_short_and_bounded_by_the_ca():
    ca, ca_key = vpnca.new_ca(7, days=10)
    now = vpnca._now()
    client, _ = vpnca.issue(ca, ca_key, "laptop", "client", 90)
    assert vpnca._expires(client) == vpnca._expires(ca)  # never past its CA
    server, _ = vpnca.issue(*vpnca.new_ca(7), "oarcloud-vpn-7", "server", vpnca.SERVER_DAYS)
    assert vpnca._expires(server) - now <= datetime.timedelta(days=vpnca.SERVER_DAYS, seconds=5)
    assert vpnca._expires(vpnca.new_ca(7)[0]) - now <= datetime.timedelta(days=vpnca.CA_DAYS,
                                                                           seconds=5)
    # the CRL lasts as long as the CA: an expired one would lock every client out
    from cryptography import x509
    crl = x509.load_pem_x509_crl(vpnca.crl(ca, ca_key, [], 1).encode())
    assert crl.next_update == ca.not_valid_after


def test_usages_match_remote_cert_tls(tmp_path):
    ca, ca_key = vpnca.new_ca(7)
    for usage, want in (("server", "TLS Web Server Authentication"),
                        ("client", "TLS Web Client Authentication")):
        cert, _ = vpnca.issue(ca, ca_key, "x", usage, 1)
        (tmp_path / "c.pem").write_text(vpnca._cert_pem(cert))
        text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in",
                               str(tmp_path / "c.pem")], capture_output=True, text=True).stdout
        assert want in text and "Digital Signature" in text and "CA:FALSE" in text


@pytest.mark.parametrize("days,want", [(None, 90), ("", 90), ("1", 1), ("365", 365)])
def test_client_days(days, want):
    assert vpnca.client_days(days, config.SiteConfig()) == want


@pytest.mark.parametrize("days", ["0", "366", "-3", "1.5", "ten", "9" * 30])
def test_bad_client_days_are_refused(days):
    with pytest.raises(Refused, match="--days must be a whole number of days from 1 to 365"):
        vpnca.client_days(days, config.SiteConfig())


def test_tls_crypt_key_is_openvpns():
    key = vpnca.tls_crypt_key()
    assert "-----BEGIN OpenVPN Static key V1-----" in key and key != vpnca.tls_crypt_key()


def test_server_config_has_crl_tls_crypt_and_a_root_only_management_socket():
    ep = {"vni": 5, "udp_port": 40000, "ca_cert": "CA", "server_cert": "C", "server_key": "K",
          "tls_crypt": "TLS", "crl": "CRL"}
    conf = templating.render("vpn-server.conf.j2", ep=ep, dir="/run/x", tap="vpn-000005",
                             user="nobody", group="nogroup")
    assert "crl-verify /run/x/crl.pem" in conf and "<tls-crypt>\nTLS\n</tls-crypt>" in conf
    assert "management /run/x/mgmt unix\nmanagement-client-user root" in conf
    legacy = templating.render("vpn-server.conf.j2", ep=dict(ep, tls_crypt=None, crl=None),
                               dir="/run/x", tap="t", user="nobody", group="nogroup")
    assert "<tls-crypt>" not in legacy and "crl-verify" not in legacy
