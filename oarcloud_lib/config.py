"""Site configuration (/etc/oarcloud/oarcloud.conf): addresses and generated secrets.

Written by `oarcloud-admin setup server`; nodes need the same file (the lab's
nodes see the server's; a real site copies it, mode 0600, to each node).
"""
import json
import os
import secrets
from dataclasses import asdict, dataclass, field, fields

from oarcloud_lib import paths
from oarcloud_lib.errors import NotReady


@dataclass
class SiteConfig:
    server_address: str = "127.0.0.1"
    nodes_cidr: str = ""
    oar_db_password: str = ""
    oar_db_ro_password: str = ""
    catalog_password: str = ""
    catalog_db: str = "oarcloud"
    catalog_user: str = "oarcloud"
    default_image: str = "tiny"
    hook_timeout: int = 120
    # Bytes of unpacked images a node keeps in its cache (least recently used go first).
    node_cache_budget: int = 20 << 30
    # Who may make an image public: its owner ("owner") or only admins ("admin").
    image_publish_policy: str = "owner"
    # Each user's default network (created on their first launch); every user
    # gets the same range, isolated from the others'.
    default_network_cidr: str = "198.18.0.0/20"
    # The monitor service: seconds between readings, where it serves
    # Prometheus (host:port), minutes before a walltime's end users are told.
    monitor_interval: int = 5
    monitor_listen: str = "127.0.0.1:9465"
    # What Prometheus sends (Authorization: Bearer ...): any user of the server
    # can reach the port, and the metrics are every tenant's.  Also in
    # /etc/oarcloud/monitor.token, for Prometheus' credentials_file.
    monitor_token: str = ""
    walltime_warning: int = 10
    # Seconds of walltime a user may add to a running job (`oarcloud extend`,
    # OAR's WALLTIME_MAX_INCREASE): -1 no limit (OAR still grants only what
    # delays no other job), 0 users may not extend.
    walltime_max_increase: int = -1
    # Processes an instance may have (its pids cgroup), and memory an instance
    # may have per core it holds: OAR schedules cores, so memory per core
    # bounds what the instances of a node take together (set it to the nodes'
    # memory per core, less what the node itself needs).
    instance_pids_max: int = 4096
    memory_per_core: int = 4 << 30
    # Disk I/O an instance may do per core it holds, on the disk of the
    # instances' roots (0: no limit): bytes and operations a second.  With
    # cgroup v1 (OAR 2.5's), buffered writes are flushed by the kernel outside
    # any instance's cgroup and escape the write throttles; reads, direct and
    # synchronous writes do not.
    io_read_bytes_per_core: int = 100 << 20
    io_write_bytes_per_core: int = 100 << 20
    io_read_iops_per_core: int = 2000
    io_write_iops_per_core: int = 2000
    # Instance disks (docs/storage.md): what an instance's root may hold when
    # its launch gives no --disk, the most it may ask for, and whether a
    # node reserves each disk's blocks ("reserved": instances never take each
    # other's space; a node without room refuses) or takes them as written
    # ("sparse": for nodes whose disks hold every instance's full size).
    disk_default: int = 4 << 30
    disk_max: int = 256 << 30
    disk_allocation: str = "reserved"
    # Isolation (docs/security.md).  Instances may not reach the site's own
    # ranges (the nodes' underlay, the server, link-local) unless listed here
    # ("CIDR" or "CIDR:PORT" or "CIDR:PORT/PROTO").
    egress_allow: list = field(default_factory=list)
    # More of the site's own ranges instances may not reach (CIDRs): its
    # management network, storage servers, internal services.
    egress_deny: list = field(default_factory=list)
    # Notification URLs may not point to loopback, link-local, private or the
    # site's own ranges unless their address is in one of these CIDRs.
    notify_allow_cidrs: list = field(default_factory=list)
    # Days a VPN client's certificate lasts (`oarcloud net vpn --days` may ask
    # for up to vpn_client_max_days); a client past its end makes a new one.
    vpn_client_days: int = 90
    vpn_client_max_days: int = 365
    # The web service (docs/web.md): HTTPS on host:port (empty: the server's
    # address, port 8443) with a certificate of its own (web_cert, web_key:
    # empty for the self-signed one oarcloud makes), or plain HTTP when
    # web_tls is false, for a site's proxy in front (loopback only then).
    web_listen: str = ""
    web_tls: bool = True
    web_cert: str = ""
    web_key: str = ""
    # Signs the web sessions' cookies (generated).
    web_secret: str = ""

    def fill_secrets(self):
        for name in ("oar_db_password", "oar_db_ro_password", "catalog_password",
                     "monitor_token", "web_secret"):
            if not getattr(self, name):
                setattr(self, name, secrets.token_hex(16))


def load(path=None, missing_ok=False):
    """The site config; raises NotReady when the server was never set up."""
    path = path or paths.SITE_CONF
    try:
        data = json.loads(open(path).read())
    except FileNotFoundError:
        if missing_ok:
            return SiteConfig()
        raise NotReady(detail="%s is missing: run `oarcloud-admin setup server` first" % path) from None
    known = {f.name for f in fields(SiteConfig)}
    return SiteConfig(**{k: v for k, v in data.items() if k in known})


def save(conf, path=None):
    """Write the config atomically, readable by root only; True if it changed."""
    path = path or paths.SITE_CONF
    text = json.dumps(asdict(conf), indent=2, sort_keys=True) + "\n"
    try:
        if open(path).read() == text:
            return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = "%s.tmp" % path
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True
