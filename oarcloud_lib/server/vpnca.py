"""The certificate authorities of the networks' VPN endpoints (F.u.8), on the server.

`oarcloud net vpn NAME --client C` (through the broker) gives the network an
endpoint the first time: a node that hosts the network, a UDP port of that
node, a certificate authority of its own, a tls-crypt key and an empty
revocation list.  Each client is a certificate that authority signs, an
address of the network (a row of nics, kind vpn) and a client file: its key is
in it, shown once, never stored.

- The CA's key is a root-only file of the server (CA_DIR/<network id>.pem,
  0600 in a 0700 directory), never in the catalog: neither the nodes nor
  anyone holding the catalog's credentials can sign a client.  The catalog
  holds what the node's OpenVPN server needs: the CA certificate, the
  server's certificate and key, the tls-crypt key, the CRL.
- tls-crypt: every control packet is authenticated and encrypted with the
  endpoint's key, so a peer without a client file cannot start a TLS
  handshake (nor probe the server's TLS stack, which faces the world).
- Lifetimes: clients `vpn_client_days` (site config; `--days` up to
  `vpn_client_max_days`), the server SERVER_DAYS, renewed when less than
  RENEW_BEFORE is left (at each client operation and by the monitor), the CA
  CA_DAYS.
- Revoking a client puts its serial in vpn_revoked and signs the CRL again;
  the node writes it where OpenVPN re-reads it at each connection, removes
  the client's config file and ends its session (node/vpn.py).  The CRL's
  next update is the CA's end: an expired CRL would lock every client out.
"""
import datetime
import ipaddress
import socket
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from oarcloud_lib import config, paths, templating
from oarcloud_lib.catalog import networks, quotas
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, Refused
from oarcloud_lib.node.vpn import UDP_PORTS, tap_name

CA_DIR = paths.STATE / "vpn-ca"
CA_DAYS = 5 * 365
SERVER_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)
SKEW = datetime.timedelta(minutes=5)  # clocks of clients a little behind the server's
ENDPOINT_COLUMNS = ("network", "node", "udp_port", "ca_cert", "ca_key", "server_cert",
                    "server_key", "tls_crypt", "crl", "ca_expires", "server_expires")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


# -- certificates ----------------------------------------------------------------------------

def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _expires(cert):
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def new_ca(vni, days=CA_DAYS):
    """(certificate, key) of a new CA (EC P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(_name("oarcloud-vpn-%d-ca" % vni)).issuer_name(_name("oarcloud-vpn-%d-ca"
                                                                               % vni))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert, ca_key, cn, usage, days):
    """(certificate, key) for cn, signed by the CA, for usage ("server" or
    "client"); never valid after the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    end = min(now + datetime.timedelta(days=days), _expires(ca_cert))
    eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def crl(ca_cert, ca_key, revoked, number):
    """The CA's revocation list (PEM) of revoked [(serial as hex, when)]."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(_now() - SKEW).next_update(_expires(ca_cert))
               .add_extension(x509.CRLNumber(number), critical=False))
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
            .revocation_date(when).build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def tls_crypt_key():
    """A new OpenVPN static key (tls-crypt), made by openvpn itself."""
    with tempfile.TemporaryDirectory(prefix="oc-vpn-") as tmp:
        path = Path(tmp) / "tls-crypt.key"
        LOCAL.run(["openvpn", "--genkey", "secret", str(path)], timeout=30)
        return path.read_text()


# -- the CA keys: root's files on the server -------------------------------------------------

def ca_key_path(network_id):
    return CA_DIR / ("%d.pem" % network_id)


def _store_ca_key(network_id, pem):
    paths.ensure_dir(CA_DIR, 0o700, 0, 0)
    paths.write_atomic(ca_key_path(network_id), pem, 0o600)


def _ca(conn, ep):
    """(certificate, key) of the endpoint's CA; a key still in the catalog (an
    endpoint made before 0010) moves to its file first."""
    if ep["ca_key"]:
        _store_ca_key(ep["network"], ep["ca_key"])
        conn.execute("UPDATE net_vpns SET ca_key = NULL WHERE network = %s", (ep["network"],))
        ep["ca_key"] = None
    try:
        pem = ca_key_path(ep["network"]).read_bytes()
    except FileNotFoundError:
        raise Refused(detail="the VPN of this network lost its CA key (%s): delete the "
                             "network's VPN clients' files and the network, then make them "
                             "again" % ca_key_path(ep["network"])) from None
    return (x509.load_pem_x509_certificate(ep["ca_cert"].encode()),
            serialization.load_pem_private_key(pem, password=None))


def forget(network_id):
    """A deleted network's CA key goes with it."""
    ca_key_path(network_id).unlink(missing_ok=True)


def sync_ca_keys(conn):
    """Setup server: every CA key still in the catalog moves to its file, the
    endpoints' ends are recorded, and keys of networks gone are removed.
    Returns what it did, for setup's report."""
    moved = 0
    for ep in _rows(conn, "WHERE ca_key IS NOT NULL OR server_expires IS NULL"):
        _ca(conn, ep)
        conn.execute("UPDATE net_vpns SET ca_expires = %s, server_expires = %s WHERE network = %s",
                     (_expires(x509.load_pem_x509_certificate(ep["ca_cert"].encode())),
                      _expires(x509.load_pem_x509_certificate(ep["server_cert"].encode())),
                      ep["network"]))
        moved += 1
    live = {r[0] for r in conn.execute("SELECT network FROM net_vpns")}
    removed = 0
    if CA_DIR.is_dir():
        for path in CA_DIR.glob("*.pem"):
            if path.stem.isdigit() and int(path.stem) not in live:
                path.unlink()
                removed += 1
    return {"updated": moved, "removed": removed}


# -- endpoints and clients -------------------------------------------------------------------

def _rows(conn, where, args=()):
    return [dict(zip(ENDPOINT_COLUMNS, r)) for r in conn.execute(
        "SELECT %s FROM net_vpns %s" % (", ".join(ENDPOINT_COLUMNS), where), args)]


def _renew_server(conn, ep, vni):
    """A new server certificate when the one it has ends within RENEW_BEFORE;
    True if renewed (the node restarts its server for it)."""
    if ep["server_expires"] and ep["server_expires"] - _now() > RENEW_BEFORE:
        return False
    ca_cert, ca_key = _ca(conn, ep)
    cert, key = issue(ca_cert, ca_key, "oarcloud-vpn-%d" % vni, "server", SERVER_DAYS)
    conn.execute("UPDATE net_vpns SET server_cert = %s, server_key = %s, server_expires = %s,"
                 " ca_expires = %s WHERE network = %s",
                 (_cert_pem(cert), _key_pem(key), _expires(cert), _expires(ca_cert),
                  ep["network"]))
    return True


def endpoint(conn, net):
    """The network's endpoint row, made on first use on a node that hosts it."""
    rows = _rows(conn, "WHERE network = %s", (net["id"],))
    if rows:
        if _renew_server(conn, rows[0], net["vni"]):
            rows = _rows(conn, "WHERE network = %s", (net["id"],))
        return rows[0]
    nodes = [r[0] for r in conn.execute(
        "SELECT node FROM nics WHERE network = %s AND kind = 'instance' AND node IS NOT NULL"
        " ORDER BY id LIMIT 1", (net["id"],))]
    if not nodes:
        raise Refused(detail="network %s has no instance yet: its VPN endpoint runs on a node "
                             "that hosts it (launch one with --network %s)"
                      % (net["name"], net["name"]))
    ca_cert, ca_key = new_ca(net["vni"])
    cert, key = issue(ca_cert, ca_key, "oarcloud-vpn-%d" % net["vni"], "server", SERVER_DAYS)
    tls = tls_crypt_key()
    empty = crl(ca_cert, ca_key, [], 1)
    with conn.transaction():
        conn.execute("LOCK TABLE net_vpns IN SHARE ROW EXCLUSIVE MODE")
        if _rows(conn, "WHERE network = %s", (net["id"],)):  # made meanwhile
            return endpoint(conn, net)
        used = {r[0] for r in conn.execute("SELECT udp_port FROM net_vpns WHERE node = %s",
                                           (nodes[0],))}
        port = next((p for p in range(UDP_PORTS[0], UDP_PORTS[1] + 1) if p not in used), None)
        if port is None:
            raise Conflict(what="vpn", detail="no UDP port left on %s" % nodes[0])
        _store_ca_key(net["id"], _key_pem(ca_key))
        conn.execute("INSERT INTO net_vpns (network, node, udp_port, ca_cert, server_cert,"
                     " server_key, tls_crypt, crl, ca_expires, server_expires)"
                     " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (net["id"], nodes[0], port, _cert_pem(ca_cert), _cert_pem(cert),
                      _key_pem(key), tls, empty, _expires(ca_cert), _expires(cert)))
    return _rows(conn, "WHERE network = %s", (net["id"],))[0]


def client_days(days, conf=None):
    """The lifetime of a new client's certificate: days (a string from the
    command line) or the site's default, within its maximum."""
    conf = conf or config.load()
    if days in (None, ""):
        return conf.vpn_client_days
    try:
        n = int(days)
    except ValueError:
        n = 0
    if not 1 <= n <= conf.vpn_client_max_days:
        raise Refused(detail="--days must be a whole number of days from 1 to %d (this site's "
                             "vpn_client_max_days), not %r" % (conf.vpn_client_max_days, days))
    return n


def client_file(conn, owner, name, client, days, apply):
    """A new client of the owner's network: its address, certificate and the
    OpenVPN file (returned); apply(conn, network ids) makes the nodes follow."""
    net = networks.get(conn, owner, name)
    networks.check_name(client)
    days = client_days(days)
    ep = endpoint(conn, net)
    ca_cert, ca_key = _ca(conn, ep)
    cert, key = issue(ca_cert, ca_key, client, "client", days)
    serial = "%x" % cert.serial_number
    cidr = ipaddress.ip_network(net["cidr"])
    with conn.transaction():
        conn.execute("LOCK TABLE nics IN SHARE ROW EXCLUSIVE MODE")
        if conn.execute("SELECT 1 FROM nics WHERE network = %s AND kind = 'vpn' AND client = %s",
                        (net["id"], client)).fetchone():
            raise Conflict(what="vpn client", detail="network %s already has a client %s (its "
                           "file was shown once): pick another --client name, or revoke it "
                           "first (oarcloud net vpn %s --revoke %s)" % (name, client, name,
                                                                       client))
        if conn.execute("SELECT 1 FROM vpn_revoked WHERE network = %s AND client = %s"
                        " AND serial IS NULL", (net["id"], client)).fetchone():
            raise Conflict(what="vpn client", detail="%s was a client of %s certified before "
                           "revocation lists (its old file cannot be revoked): pick another "
                           "--client name" % (client, name))
        quotas.require(conn, owner, {"vpn-clients": 1})
        used = [r[0] for r in conn.execute("SELECT host(ip) FROM nics WHERE network = %s",
                                           (net["id"],))]
        ip = networks.free_addresses(cidr, used, 1, gateway=net["gateway"])[0]
        mac = networks.mac_for(net["vni"], cidr, ip)
        conn.execute("INSERT INTO nics (network, kind, client, ip, mac, port, node, cert_serial,"
                     " cert_expires) VALUES (%s, 'vpn', %s, %s, %s, %s, %s, %s, %s)",
                     (net["id"], client, str(ip), mac, tap_name(net["vni"]), ep["node"], serial,
                      _expires(cert)))
    apply(conn, [net["id"]])
    return templating.render("vpn-client.ovpn.j2", network=net, client=client,
                             remote=socket.gethostbyname(ep["node"]), port=ep["udp_port"],
                             ca=ep["ca_cert"], cert=_cert_pem(cert), key=_key_pem(key),
                             tls_crypt=ep["tls_crypt"], mac=mac, ip=str(ip),
                             netmask=str(cidr.netmask),
                             expires=_expires(cert).strftime("%Y-%m-%d %H:%M UTC")).rstrip("\n")


def revoke(conn, owner, name, client, apply):
    """Revoke a client of the owner's network: its certificate goes in the CRL,
    its address is freed, the node ends its session.  Returns what it did."""
    net = networks.get(conn, owner, name)
    networks.check_name(client)
    rows = _rows(conn, "WHERE network = %s", (net["id"],))
    with conn.transaction():
        row = conn.execute("SELECT id, cert_serial FROM nics WHERE network = %s AND kind = 'vpn'"
                           " AND client = %s FOR UPDATE", (net["id"], client)).fetchone()
        if row is None:
            raise NotFound(what="vpn client", name="%s (of network %s)" % (client, name))
        conn.execute("INSERT INTO vpn_revoked (network, client, serial) VALUES (%s, %s, %s)",
                     (net["id"], client, row[1]))
        conn.execute("DELETE FROM nics WHERE id = %s", (row[0],))
        if rows:
            ca_cert, ca_key = _ca(conn, rows[0])
            revoked = [(s, w) for s, w in conn.execute(
                "SELECT serial, revoked FROM vpn_revoked WHERE network = %s AND serial IS NOT"
                " NULL ORDER BY id", (net["id"],))]
            number = conn.execute("SELECT count(*) FROM vpn_revoked WHERE network = %s",
                                  (net["id"],)).fetchone()[0] + 1
            conn.execute("UPDATE net_vpns SET crl = %s WHERE network = %s",
                         (crl(ca_cert, ca_key, revoked, number), net["id"]))
    applied = apply(conn, [net["id"]], [rows[0]["node"]] if rows else [])
    return "VPN client %s of network %s revoked: %s" % (client, name, applied)


def renew_due(conn):
    """The nodes whose endpoints got a new server certificate (the monitor, hourly)."""
    nodes = set()
    for ep in _rows(conn, "WHERE server_expires IS NULL OR server_expires < %s",
                    (_now() + RENEW_BEFORE,)):
        vni = conn.execute("SELECT vni FROM networks WHERE id = %s",
                           (ep["network"],)).fetchone()[0]
        if _renew_server(conn, ep, vni):
            nodes.add(ep["node"])
    return sorted(nodes)
