"""The web service's process (docs/web.md): the Flask app (web.app) served
by gunicorn's threaded workers, over HTTPS with the site's certificate, or
the one oarcloud makes (self-signed, EC P-256, for the server's address and
name).  With web_tls false it serves plain HTTP on loopback only, for a
site's proxy in front of it.

The server's services (server/services.py) run it: `python -m
oarcloud_lib.web.service`; `oarcloud-admin web start|stop|status`.
"""
import datetime
import ipaddress
import logging
import os
import socket
import sys

from oarcloud_lib import config, daemons, paths
from oarcloud_lib.errors import NotReady, Refused
from oarcloud_lib.server.monitor import RUN_DIR

LOG = logging.getLogger("oarcloud.web")
PIDFILE = RUN_DIR / "web.pid"
LOGFILE = paths.LOG_DIR / "web.log"
CERT_DIR = paths.ETC / "web"
CERT, KEY = CERT_DIR / "cert.pem", CERT_DIR / "key.pem"
PORT = 8443
CERT_DAYS = 825
WORKERS, THREADS = 2, 16


def listen(conf=None):
    """(host, port) the service binds."""
    conf = conf or config.load()
    text = conf.web_listen or "%s:%d" % ("127.0.0.1" if not conf.web_tls
                                         else conf.server_address, PORT)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Refused(detail="bad web_listen %r in %s: HOST:PORT" % (text, paths.SITE_CONF))
    if not conf.web_tls and not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        raise Refused(detail="web_tls is false: web_listen must be a loopback address (a "
                             "proxy of the site's in front), not %s" % host)
    return host, int(port)


def url(conf=None):
    conf = conf or config.load()
    host, port = listen(conf)
    return "%s://%s:%d/" % ("https" if conf.web_tls else "http", host, port)


def cert_paths(conf=None):
    conf = conf or config.load()
    return (conf.web_cert or str(CERT)), (conf.web_key or str(KEY))


def ensure_cert(conf=None, days=CERT_DAYS):
    """The self-signed certificate (when the site gives none), made once and
    again when it ends within 30 days; True if it was written."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    conf = conf or config.load()
    if not conf.web_tls or conf.web_cert:
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    if CERT.exists() and KEY.exists():
        old = x509.load_pem_x509_certificate(CERT.read_bytes())
        if old.not_valid_after.replace(tzinfo=datetime.timezone.utc) - now \
                > datetime.timedelta(days=30):
            return False
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(socket.gethostname()), x509.DNSName("localhost"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(conf.server_address)))
    except ValueError:
        names.append(x509.DNSName(conf.server_address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, conf.server_address),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "oarcloud")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    CERT_DIR.mkdir(parents=True, exist_ok=True, mode=0o755)
    paths.write_atomic(KEY, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode(), mode=0o600)
    paths.write_atomic(CERT, cert.public_bytes(serialization.Encoding.PEM).decode(), mode=0o644)
    LOG.info("web: self-signed certificate for %s written to %s", conf.server_address, CERT)
    return True


def running_pid():
    return daemons.read_pid(PIDFILE)


def options(conf, pidfile=PIDFILE):
    host, port = listen(conf)
    out = {"bind": "%s:%d" % (host, port), "workers": WORKERS, "worker_class": "gthread",
           "threads": THREADS, "pidfile": str(pidfile), "timeout": 120, "graceful_timeout": 5,
           "errorlog": "-", "accesslog": "-", "proc_name": "oarcloud-web",
           "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'}
    if conf.web_tls:
        out["certfile"], out["keyfile"] = cert_paths(conf)
    return out


def serve(conf, pidfile=PIDFILE, access_log=True):
    """Serve conf's catalog until SIGTERM (gunicorn's master in this process)."""
    from gunicorn.app.base import BaseApplication

    from oarcloud_lib.web.app import create_app
    app, opts = create_app(conf), options(conf, pidfile)
    if not access_log:
        opts.pop("accesslog")

    class Server(BaseApplication):
        def load_config(self):
            for k, v in opts.items():
                self.cfg.set(k, v)

        def load(self):
            return app

    LOG.info("web: serving %s", url(conf))
    Server().run()
    return 0


def main():
    """The service: the site's configuration, its certificate, its pidfile."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    other = running_pid()
    if other and other != os.getpid():
        raise NotReady(detail="the web service already runs (pid %d)" % other)
    conf = config.load()
    ensure_cert(conf)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    return serve(conf)


if __name__ == "__main__":
    sys.exit(main())
