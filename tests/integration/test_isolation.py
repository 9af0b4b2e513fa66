"""Tenant isolation on the lab (docs/security.md): each test makes an attack the way
an ordinary user would (a shell on a node, root in an instance, psql, the CLI)
and checks that it fails and that nothing else changed.

A job shell on a node is a login of the user in the node's namespaces; the
tests open it with `lab exec NODE -- runuser -u USER` (what oarsh gives a job's
owner: OAR's cpuset manager, which oarsh needs to find the job, is off on
oarcloud sites)."""
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ADMIN, admin, as_user, node_exec, run, wait_job
from test_images import give, image_row, store_files
from test_instances import in_instance, instance_init, launch, oarcloud

from oarcloud_lib import config, paths
from oarcloud_lib.catalog import db, images
from oarcloud_lib.node import idmap, limits
from oarcloud_lib.server import imagestore
from oarcloud_lib.errors import Conflict


def job_shell(node, user, script, cwd="/"):
    """Run a shell script as user on node, in the node's namespaces."""
    return node_exec(node, "runuser", "-u", user, "--", "sh", "-c", "cd %s && %s" % (cwd, script))


def psql(user, sql):
    return run(["runuser", "-u", user, "--", "psql", "-X", "-d", "oarcloud", "-tAc", sql],
               cwd="/tmp")


def id_slot(user):
    with db.connect() as conn:
        return conn.execute("SELECT id_slot FROM accounts WHERE name = %s",
                            (user,)).fetchone()[0]


def proc_uid(pid):
    status = Path("/proc/%s/status" % pid).read_text().splitlines()
    return int([l for l in status if l.startswith("Uid:")][0].split()[1])


def setuid_image(user, name):
    """The tiny image with a setuid-root shell (/bin/rootsh), imported by user."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        src = imagestore.path_of(image_row("tiny")["sha256"])
        subprocess.run("zstd -dcq %s | tar --numeric-owner -x -C %s" % (src, root), shell=True,
                       check=True)
        os.link(root / "bin/busybox", root / "bin/rootsh")
        os.chmod(root / "bin/rootsh", 0o4755)
        out = Path(os.path.expanduser("~%s" % user)) / "suid.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(out), "."],
                       check=True)
    give(user, out)
    oarcloud(user, "image", "import", str(out), "--name", name, check=True)
    return image_row(name)


@pytest.fixture(scope="module")
def tenants(lab):
    """Two real accounts, alice and bob, each with one instance on node-1."""
    names = ["ocz" + os.urandom(3).hex() for _ in range(2)]
    for n in names:
        admin("user", "add", n, check=True)
    alice, bob = names
    try:
        image = setuid_image(alice, "suid-" + alice)
        a = launch(alice, "--name", "a", "--image", image["name"], "--cores", "1")[0]
        b = launch(bob, "--name", "b", "--cores", "1")[0]
        yield dict(alice=alice, bob=bob, image=image, a=a, b=b)
    finally:
        for n in names:
            admin("user", "delete", n)


def domain(row):
    return "oc%d-0" % row["job_id"]


def test_a_flattened_save_keeps_every_entry(make_user):
    user = make_user()
    launch(user, "--name", "deb", "--image", "bookworm", "--cores", "1")
    oarcloud(user, "exec", "deb", "--", "sh", "-c",
             "mkdir -p /srv/d && ln -s /srv/d /srv/l && echo kept > /srv/d/f", check=True)
    oarcloud(user, "image", "save", "deb", "deb-flat", "--flatten", check=True)
    launch(user, "--name", "flat", "--image", "deb-flat", "--cores", "1")
    res = oarcloud(user, "ssh", "flat", "--", "readlink /bin /lib /sbin /srv/l; cat /srv/l/f")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == ["usr/bin", "usr/lib", "usr/sbin", "/srv/d", "kept"]


def test_an_instance_that_cannot_be_frozen_is_not_saved_live(make_user):
    """Root in an instance keeps its processes in uninterruptible sleep (direct
    reads under its own I/O throttle, three at once): the freezer cannot
    freeze it, so a live save is refused with what to do, creates nothing,
    and leaves the instance running (never read unfrozen, nothing of the
    instance's run as root)."""
    user = make_user()
    launch(user, "--name", "busy", "--cores", "1", "--memory", "1G")
    before = json.loads(oarcloud(user, "image", "list", "--json", check=True).stdout)
    oarcloud(user, "exec", "busy", "--", "sh", "-c",
             "dd if=/dev/zero of=/big bs=1M count=256 2>/dev/null && sync && "
             "(exec >/dev/null 2>&1 </dev/null; for i in 1 2 3; do "
             "(while :; do dd if=/big of=/dev/null bs=256M iflag=direct; done) & done)",
             check=True, timeout=120)
    deadline = time.monotonic() + 60
    while int(oarcloud(user, "exec", "busy", "--", "sh", "-c",
                       "grep -l 'State:.*D' /proc/[0-9]*/status 2>/dev/null | wc -l"
                       ).stdout.strip() or 0) < 3:  # the readers in disk sleep
        assert time.monotonic() < deadline
        time.sleep(0.2)
    files = store_files()
    res = oarcloud(user, "image", "save", "busy", "busy-img", timeout=120)
    assert res.returncode != 0, res.stdout
    assert "could not be frozen for the save" in res.stderr and "stop it, then save it" \
        in res.stderr, res.stderr
    assert json.loads(oarcloud(user, "image", "list", "--json").stdout) == before
    assert store_files() == files
    shown = json.loads(oarcloud(user, "show", "busy", "--json", check=True).stdout)
    assert shown["state"] == "running", shown
    assert oarcloud(user, "exec", "busy", "--", "true").returncode == 0  # not left frozen
    oarcloud(user, "delete", "busy", "--wait", check=True)


def tiny_tar(user):
    """The tiny image as a plain tar in user's home."""
    tarball = Path(os.path.expanduser("~%s" % user)) / "t.tar"
    subprocess.run("zstd -dcq %s > %s" % (imagestore.path_of(image_row("tiny")["sha256"]),
                                          tarball), shell=True, check=True)
    return give(user, tarball)


def test_site_image_names_cannot_be_squatted(make_user):
    user = make_user()
    tarball = tiny_tar(user)
    for name in images.SITE_NAMES:
        res = oarcloud(user, "image", "import", str(tarball), "--name", name)
        assert res.returncode != 0 and "reserved for the site" in res.stderr, res.stderr
    # a user's image under a name the site later builds is never adopted as the site's
    mine = "deb99-" + user
    oarcloud(user, "image", "import", str(tarball), "--name", mine, check=True)
    with db.connect() as conn, pytest.raises(Conflict, match="belongs to user"):
        images.ensure_site_image(conn, mine, lambda root: None, "Debian 99")
    assert image_row(mine)["owner"] == user and image_row(mine)["visibility"] == "private"


def test_lesser_holes_are_closed(make_user):
    user = make_user()
    res = oarcloud(user, "net", "create", "pub", "--cidr", "8.8.0.0/16")
    assert res.returncode != 0 and "private range" in res.stderr, res.stderr
    res = oarcloud(user, "image", "import", tiny_tar(user), "--name", "esc",
                   "--description", "nice\x1b]0;owned\x07\x1b[2J")
    assert res.returncode != 0 and "no control characters" in res.stderr, res.stderr
    assert image_row("esc") is None
    for name in ("oar_ro", "oarcloud_users"):
        res = admin("user", "add", name)
        assert res.returncode != 0 and "reserved" in res.stderr, res.stderr
    res = oarcloud(user, "net", "list", "--json", check=True)
    assert json.loads(res.stdout) == [] or all(n["name"] != "pub" for n in json.loads(res.stdout))


def reach(node, dom, host, port):
    """Whether the instance opens a TCP connection to host:port (busybox nc, 2 s)."""
    res = in_instance(node, dom, "sh", "-c", "nc -w 2 %s %s </dev/null && echo open" % (host, port))
    return "open" in res.stdout


# A VXLAN packet carrying an ICMP echo of an instance's network, sent over UDP:
# what anyone with a socket on the underlay can send.
VXLAN_SEND = r"""
import socket, struct, sys
vni, dst_mac, src_mac, src_ip, dst_ip, peer, ident = sys.argv[1:8]
def mac(m): return bytes.fromhex(m.replace(":", ""))
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b + b"\0" * (len(b) % 2)))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
icmp = struct.pack("!BBHHH", 8, 0, 0, int(ident, 16), 1) + b"oarcloud-forged!"
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                 socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frame = mac(dst_mac) + mac(src_mac) + b"\x08\x00" + ip + icmp
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(struct.pack("!II", 0x08000000, int(vni) << 8) + frame, (peer, 4789))
"""


def nic_of(domain_name):
    with db.connect() as conn:
        return dict(zip(("mac", "ip", "node", "vni"), conn.execute(
            "SELECT c.mac, host(c.ip), c.node, n.vni FROM nics c JOIN networks n"
            " ON n.id = c.network WHERE c.domain = %s AND c.idx = 0", (domain_name,)).fetchone()))


def delivered(target, send):
    """Whether the forged echo (ICMP id 0x4f43) reaches target's instance, sent by send()."""
    ident = "%04x" % (0x4f00 + os.getpid() % 0xff)
    init = instance_init(target["node"], target["domain"])
    dump = subprocess.Popen(
        [ADMIN, "lab", "exec", target["node"], "--", "nsenter", "-t", init, "-n", "--",
         "timeout", "8", "tcpdump", "-l", "-n", "-i", "eth0", "-c", "1",
         "icmp and icmp[4:2] = 0x%s" % ident], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        while "listening on" not in dump.stderr.readline():
            if dump.poll() is not None:
                raise AssertionError("tcpdump did not start")
        # A few rounds while tcpdump listens: the sender's node may first have to
        # resolve its peer's address (the negative cases get as many chances).
        for _ in range(6):
            send(ident)
            if dump.poll() is not None:
                break
            time.sleep(0.5)
        out, _ = dump.communicate(timeout=20)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    return dump.returncode == 0 and "ICMP echo request" in out


# Its control (a well-formed packet sent by root on the peer node's own socket,
# which must arrive) was lost now and then in sessions 9 and 10: the peer's
# kernel had learnt the node's address with the MAC of its underlay interface
# (which answered ARP too, beside br-phy), and the userspace datapath takes for
# a tunnel only what is sent to br-phy's MAC.  `setup node` sets arp_ignore=1
# on the underlay interface (docs/design.md, "Node").
def test_vxlan_cannot_be_injected_into_another_tenants_network(make_user):
    """alice's network spans both nodes.  bob, with a shell on node-1, and a
    machine on the underlay that is no node send VXLAN into it: nothing arrives.
    Root on node-1 (the node's own tunnel end) gets through, but only with the
    identity of alice's instance on node-1, never a forged one."""
    alice, bob = make_user(), make_user()
    rows = launch(alice, "--name", "v", "--count", "2", "--nodes", "2")
    src, dst = (dict(nic_of(domain_of(r)), domain=domain_of(r)) for r in rows)
    assert src["node"] != dst["node"]
    peer = run(["getent", "ahostsv4", dst["node"]], check=True).stdout.split()[0]

    def sender(who, src_ip=src["ip"], where=src["node"]):
        def send(ident):
            argv = ["python3", "-I", "-c", VXLAN_SEND, str(dst["vni"]), dst["mac"], src["mac"],
                    src_ip, dst["ip"], peer, ident]
            if where is None:  # the lab's host: on the underlay, not a node
                run(argv, check=True)
            elif who == "root":
                node_exec(where, *argv, check=True)
            else:  # the node refuses to send it (EPERM): fine, so long as nothing arrives
                node_exec(where, "runuser", "-u", who, "--", *argv)
        return send
    assert delivered(dst, sender("root"))                       # the packet is well formed
    assert not delivered(dst, sender(bob))                      # a job shell on node-1
    assert not delivered(dst, sender("root", where=None))       # the underlay, not a node
    assert not delivered(dst, sender("root", src_ip="198.18.9.9"))  # a forged identity



def domain_of(row):
    return "oc%d-%d" % (row["job_id"], int(row["name"].rsplit("-", 1)[1]))


def test_a_fork_bomb_stops_at_its_instances_limit(make_user):
    """Root in an instance starts processes until fork fails: it stops at the
    instance's pids limit, and the node and another tenant's instance go on."""
    user, other = make_user(), make_user()
    row = launch(user, "--name", "bomb", "--cores", "1", "--memory", "1G")[0]
    calm = launch(other, "--name", "calm", "--cores", "1")[0]
    node, dom = row["node"], "oc%d-0" % row["job_id"]
    d = limits.pids_dir(instance_init(node, dom))
    maximum = config.load().instance_pids_max
    assert node_exec(node, "cat", str(d / "pids.max")).stdout.strip() == str(maximum)
    # (its processes hold no stream of exec's: exec returns while they run)
    oarcloud(user, "exec", "bomb", "--", "sh", "-c", "exec >/dev/null 2>&1 </dev/null; i=0; "
             "while [ $i -lt %d ]; do sleep 600 & i=$((i+1)); done; true" % (maximum + 500),
             timeout=300)
    current = int(node_exec(node, "cat", str(d / "pids.current")).stdout)
    assert maximum - 50 <= current <= maximum, current
    assert node_exec(node, "sh", "-c", "sleep 0 & wait").returncode == 0
    assert oarcloud(other, "exec", "calm", "--", "true").returncode == 0
    assert calm["state"] == "running"
    oarcloud(user, "delete", "bomb", "--wait", check=True)


def test_an_instances_disk_io_is_throttled_and_it_cannot_lift_the_throttle(make_user):
    """The instance's blkio cgroup carries the site's throttles times its cores
    on its own disk's (loop) device; root in the instance does direct I/O,
    which is counted there, and cannot raise its own limits."""
    conf = config.load()
    user = make_user()
    row = launch(user, "--name", "io", "--cores", "2")[0]
    node, dom = row["node"], "oc%d-0" % row["job_id"]
    majmin = node_exec(node, "/opt/oarcloud/venv/bin/python", "-I", "-c", (
        "import os; from oarcloud_lib import paths; from oarcloud_lib.node import limits; "
        "r = os.stat(limits.io_device(paths.INSTANCES / %r)).st_rdev; " % dom +
        "assert os.major(r) == 7, 'not a loop device'; "
        "print('%d:%d' % (os.major(r), os.minor(r)))"), check=True).stdout.strip()
    d = Path("/sys/fs/cgroup/blkio") / limits._groups(instance_init(node, dom),
                                                      "/proc")["blkio"].strip("/")
    want = {"read_bps_device": conf.io_read_bytes_per_core * 2,
            "write_bps_device": conf.io_write_bytes_per_core * 2,
            "read_iops_device": conf.io_read_iops_per_core * 2,
            "write_iops_device": conf.io_write_iops_per_core * 2}
    for name, value in want.items():
        got = node_exec(node, "cat", str(d / ("blkio.throttle." + name))).stdout.split()
        assert got == [majmin, str(value)], (name, got)

    def written():
        lines = node_exec(node, "cat", str(d / "blkio.throttle.io_service_bytes")).stdout
        return sum(int(v) for dev, op, v in (ln.split() for ln in lines.splitlines()
                                             if ln.count(" ") == 2)
                   if dev == majmin and op == "Write")
    before = written()
    res = oarcloud(user, "exec", "io", "--", "sh", "-c",
                   "dd if=/dev/zero of=/io.test bs=64k count=64 oflag=direct 2>&1; sync")
    assert res.returncode == 0, res.stdout + res.stderr
    assert written() - before >= 4 << 20  # the 4 MiB went through the throttled cgroup
    # root in the instance cannot lift its throttle, nor leave its cgroup
    for attack in ("echo '%s 0' > /sys/fs/cgroup/blkio/blkio.throttle.write_bps_device" % majmin,
                   "echo $$ > /sys/fs/cgroup/blkio/../cgroup.procs",
                   "mkdir -p /tmp/cg && mount -t cgroup -o blkio none /tmp/cg && "
                   "echo '%s 0' > /tmp/cg/blkio.throttle.write_bps_device" % majmin):
        oarcloud(user, "exec", "io", "--", "sh", "-c", attack + " 2>/dev/null")
    for name, value in want.items():
        got = node_exec(node, "cat", str(d / ("blkio.throttle." + name))).stdout.split()
        assert got == [majmin, str(value)], (name, got)
    oarcloud(user, "delete", "io", "--wait", check=True)


def test_deleting_a_user_keeps_the_images_others_run(make_user):
    """alice publishes an image and shares another; bob runs the public one.
    Deleting alice hands both to the site: bob's instance and his next launch go on."""
    alice, bob = make_user(), make_user()
    tarball = tiny_tar(alice)
    for name in ("pub-" + alice, "shr-" + alice, "own-" + alice):
        oarcloud(alice, "image", "import", tarball, "--name", name, check=True)
    oarcloud(alice, "image", "publish", "pub-" + alice, check=True)
    oarcloud(alice, "image", "share", "shr-" + alice, bob, check=True)
    launch(bob, "--name", "user-of", "--image", "pub-" + alice, "--cores", "1")
    admin("user", "delete", alice, check=True)
    assert image_row("pub-" + alice)["owner"] is None
    assert image_row("shr-" + alice)["owner"] is None
    assert image_row("own-" + alice) is None
    assert imagestore.path_of(image_row("pub-" + alice)["sha256"]).exists()
    assert oarcloud(bob, "exec", "user-of", "--", "true").returncode == 0
    launch(bob, "--name", "again", "--image", "shr-" + alice, "--cores", "1")


def _job_id(oarsub_out):
    return [l.split("=", 1)[1] for l in oarsub_out.splitlines() if l.startswith("OAR_JOB_ID=")][0]


def test_a_refused_cloud_job_leaves_its_nodes_in_service(make_user):
    """A cloud job that was admitted but whose request no longer holds when it
    starts (its network was deleted meanwhile): the prologue refuses it and
    ends it, and its node is not made Suspected (which would take it from
    every other user until healed)."""
    user = make_user()
    oarcloud(user, "net", "create", "gone", "--cidr", "10.78.0.0/24", check=True)
    # It starts after a first job of the user's ends: time to delete the network.
    first = as_user(user, ["oarsub", "-l", "nodes=1,walltime=0:05:00", "sleep 3"], check=True)
    res = as_user(user, ["oarsub", "-t", "cloud", "-t", "cloud.network=gone", "-a",
                         _job_id(first.stdout), "-l", "nodes=1,walltime=0:05:00", "sleep 60"],
                  check=True)
    job_id = _job_id(res.stdout)
    oarcloud(user, "net", "delete", "gone", check=True)
    job = wait_job(job_id)
    assert job["state"] in ("Error", "Terminated"), job
    states = json.loads(run(["oarnodes", "-s", "-J"], check=True).stdout)
    assert {s for node in states.values() for s in node.values()} == {"Alive"}, states
    with db.connect() as conn:
        messages = [r[0] for r in conn.execute("SELECT message FROM job_events WHERE job_id = %s",
                                               (int(job_id),))]
    assert any("network not found: gone" in m for m in messages), messages


def test_notifications_cannot_aim_at_the_sites_own_services(make_user):
    """A user's notification URL is sent by root from the server: it may not point
    at loopback (but the lab's allowed 127.0.0.1), link-local, private or the
    site's addresses, set headers or long timeouts; `notify test` tells the user
    whether it was delivered, never why not (no port scanner)."""
    user = make_user()
    server = config.load().server_address
    for url, why in (("json://127.0.0.2:5432/", "loopback"),
                     ("json://169.254.169.254/latest/", "link-local"),
                     ("json://10.1.2.3/", "private"),
                     ("json://%s:5432/" % server, "address"),
                     ("json://example.org/?+X-Api-Key=1", "header"),
                     ("json://example.org/?rto=3600", "cap"),
                     ("windows://", "notification URL")):
        res = oarcloud(user, "notify", "add", url)
        assert res.returncode != 0 and why in res.stderr, (url, res.stderr)
        assert "Traceback" not in res.stderr
    assert json.loads(oarcloud(user, "notify", "list", "--json", check=True).stdout) == []
    # an allowed address where nothing listens: the user hears "failed", not the reason
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    oarcloud(user, "notify", "add", "json://127.0.0.1:%d/" % closed, check=True)
    res = oarcloud(user, "notify", "test", timeout=120)
    assert "failed" in res.stdout + res.stderr, res.stdout + res.stderr
    assert "refused" not in (res.stdout + res.stderr).lower(), res.stdout + res.stderr


def test_an_images_setuid_file_is_no_door_on_the_node(tenants):
    alice, bob, a, b = tenants["alice"], tenants["bob"], tenants["a"], tenants["b"]
    sha = tenants["image"]["sha256"]
    node = a["node"]
    cached = "%s/%s/rootfs/bin/rootsh" % (paths.CACHE, sha)
    # In the instance the file is setuid root, as its owner built it ...
    assert in_instance(node, domain(a), "stat", "-c", "%u %a", "/bin/rootsh").stdout.split() \
        == ["0", "4755"]
    # ... on the node, root of alice's instance is alice's own range, not shared.
    a_base = idmap.tenant_base(id_slot(alice))
    b_base = idmap.tenant_base(id_slot(bob))
    assert proc_uid(instance_init(node, domain(a))) == a_base
    assert proc_uid(instance_init(b["node"], domain(b))) == b_base
    assert abs(a_base - b_base) >= idmap.COUNT
    st = node_exec(node, "stat", "-c", "%u %a", cached, check=True).stdout.split()
    assert st == [str(idmap.CACHE_BASE), "4755"]  # neither root's nor a tenant's
    # bob, with a shell on the node, cannot reach the file (nor list the cache) ...
    for path in (cached, "%s/%s/root/bin/rootsh" % (paths.INSTANCES, domain(a))):
        res = job_shell(node, bob, "%s -c 'id -u'" % path)
        assert res.returncode != 0 and "Permission denied" in res.stderr, res.stdout + res.stderr
    for d in (paths.CACHE, paths.INSTANCES, "%s/%s" % (paths.INSTANCES, domain(a))):
        res = job_shell(node, bob, "ls %s" % d)
        assert res.returncode != 0 and "Permission denied" in res.stderr, d
    # ... and alice herself only gets root of her own instance's range, nothing more.
    res = job_shell(node, alice, "%s -c 'id -u'" % cached)
    assert res.returncode != 0 and "Permission denied" in res.stderr


def test_no_tenant_file_is_readable_from_a_node(tenants):
    alice, bob, a = tenants["alice"], tenants["bob"], tenants["a"]
    node = a["node"]
    oarcloud(alice, "exec", "a", "--", "sh", "-c", "echo s3cret > /root/secret", check=True)
    store_file = imagestore.path_of(tenants["image"]["sha256"])
    for who in (bob, alice):
        for path in ("%s/%s/upper/root/secret" % (paths.INSTANCES, domain(a)), store_file,
                     "%s/hooks.log" % paths.LOG_DIR):
            res = job_shell(node, who, "cat %s" % path)
            assert res.returncode != 0 and "Permission denied" in res.stderr, (who, path)
        for d in (paths.IMAGE_STORE, paths.KEPT, paths.LOG_DIR):
            res = job_shell(node, who, "ls %s" % d)
            assert res.returncode != 0 and "Permission denied" in res.stderr, (who, d)
    assert oct(store_file.stat().st_mode & 0o777) == oct(0o600)
    # the server's users cannot either
    res = as_user(bob, ["cat", str(store_file)])
    assert res.returncode != 0 and "Permission denied" in res.stderr


def test_the_catalog_helpers_cannot_be_shadowed(tenants):
    alice, bob = tenants["alice"], tenants["bob"]
    oarcloud(alice, "net", "create", "priv", "--cidr", "10.77.0.0/24", check=True)
    oarcloud(alice, "net", "rule", "add", "priv", "--direction", "ingress", "--proto", "tcp",
             "--port", "5432", "--remote", "10.77.0.0/24", check=True)
    # bob's temporary table would shadow `networks` in network_owner() (search_path)
    res = psql(bob, "CREATE TEMP TABLE networks AS SELECT id, current_user::text AS owner"
                    " FROM generate_series(1, 100000) id; SELECT count(*) FROM net_rules")
    assert res.returncode != 0 and "permission denied" in res.stderr, res.stdout + res.stderr
    res = psql(bob, "CREATE TABLE public.networks (id int, owner text)")
    assert res.returncode != 0 and "permission denied" in res.stderr
    mine = "SELECT count(*) FROM net_rules WHERE port_low = 5432"
    assert psql(bob, mine).stdout.strip() == "0"
    assert psql(alice, mine).stdout.strip() == "1"
    # every SECURITY DEFINER function of the catalog searches pg_temp last
    res = psql("postgres", "SELECT count(*), count(*) FILTER (WHERE array_to_string(proconfig,"
                           " ',') LIKE '%search_path=%pg_temp') FROM pg_proc WHERE prosecdef"
                           " AND pronamespace = 'public'::regnamespace")
    total, pinned = res.stdout.strip().split("|")
    assert int(total) >= 4 and total == pinned, res.stdout + res.stderr


def test_root_never_runs_code_from_the_callers_directory(tenants):
    alice, a = tenants["alice"], tenants["a"]
    node = a["node"]
    home = Path(os.path.expanduser("~%s" % alice))
    mark = "/tmp/pwned-%s" % alice
    evil = home / "evil" / "oarcloud_lib"
    evil.mkdir(parents=True)
    payload = "import os\nopen(%r, 'w').write(str(os.geteuid()))\n" % mark
    (evil / "node").mkdir()
    for module in ("__init__.py", "node/__init__.py", "node/access.py", "node/agent.py",
                   "node/relay.py"):
        (evil / module).write_text(payload)
    give(alice, evil.parent)
    for p in [evil] + list(evil.rglob("*")):
        give(alice, p)
    # the broker runs on this node (the instance's): root's `python -m` starts here
    res = job_shell(node, alice, "/usr/local/bin/oarcloud exec a -- true", cwd=evil.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    res = job_shell(node, alice, "/usr/local/bin/oarcloud stop a && "
                    "/usr/local/bin/oarcloud start a", cwd=evil.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert node_exec(node, "test", "-e", mark).returncode != 0
    assert not Path(mark).exists()


def test_instances_do_not_reach_the_sites_own_services(tenants):
    """From root in an instance: the server's PostgreSQL, another node's and its own
    node's OAR sshd are the site's, not the tenants'.  The node itself reaches them
    (they are up); the instance's connections are dropped."""
    b = tenants["b"]
    node, dom = b["node"], domain(b)
    other = [n for n in ("node-1", "node-2") if n != node][0]
    addresses = {n: run(["getent", "ahostsv4", n], check=True).stdout.split()[0]
                 for n in (node, other)}
    server = config.load().server_address
    for host, port in ((server, 5432), (addresses[other], 6667), (addresses[node], 6667)):
        up = node_exec(node, "timeout", "3", "bash", "-c",
                       "exec 3<>/dev/tcp/%s/%s && echo open" % (host, port))
        assert "open" in up.stdout, (host, port, up.stderr)
        assert not reach(node, dom, host, port), (host, port)
    # the instance still reaches its own network (its gateway answers pings)
    res = in_instance(node, dom, "sh", "-c", "ip route | awk '/default/ {print $3}'")
    gateway = res.stdout.strip()
    assert in_instance(node, dom, "ping", "-c", "1", "-W", "2", gateway).returncode == 0
