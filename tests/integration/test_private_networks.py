"""Private networks on the lab (issue 5): per-user networks over VXLAN between two
nodes, isolation of two users with the same CIDR, live stateful rules,
anti-spoofing, the gateway and its NAT, published ports, VPN, clean teardown,
and refusals of bad input."""
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import admin, node_exec, run
from test_instances import NODES, instance_init, launch, oarcloud


def sh(user, instance, script, check=False, timeout=60):
    """Run a shell script as root in the user's instance."""
    return oarcloud(user, "exec", instance, "--", "sh", "-c", script, check=check,
                    timeout=timeout)


def http_get(user, instance, ip, port, wait=2):
    """The body busybox httpd serves at ip:port/hostname, seen from instance ('' if none)."""
    res = sh(user, instance, "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | busybox nc -w %d %s %d"
             % (wait, ip, port))
    return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""


def listen(user, instance, port, path):
    """A TCP listener in the instance writing what it receives to path (its stdin
    stays open: busybox nc would close its side at the end of it)."""
    sh(user, instance, "(sleep 120 | busybox nc -l -p %d > %s) </dev/null >/dev/null 2>&1 & sleep 0.2"
       % (port, path), check=True)


def serve(user, instance, port):
    sh(user, instance, "busybox httpd -p %d -h /etc" % port, check=True)


def sniffer(row, expr, seconds=8):
    """tcpdump (the node's) on the instance's eth0 for a few seconds: a Popen whose
    output lists the IPv4 packets matching expr that reached the instance."""
    domain = "oc%d-%d" % (row["job_id"], int(row["name"].rsplit("-", 1)[1]))
    init = instance_init(row["node"], domain)
    proc = subprocess.Popen(["oarcloud-admin", "lab", "exec", row["node"], "--", "nsenter",
                             "-t", init, "-n", "--", "timeout", str(seconds), "tcpdump", "-i", "eth0",
                             "-Q", "in", "-nn", "-l", expr], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # listening
    return proc


def net_leftovers():
    """Gateways, tunnels, flows beyond the defaults and NAT chains left on the nodes."""
    left = {}
    for n in NODES:
        ports = node_exec(n, "ovs-vsctl", "list-ports", "br-int").stdout.split()
        links = [x["ifname"] for x in json.loads(node_exec(n, "ip", "-j", "link").stdout)]
        netns = node_exec(n, "ip", "netns", "list").stdout.split()
        flows = [l for l in node_exec(n, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows",
                                      "br-int").stdout.splitlines()
                 if "priority=" in l and "priority=0 " not in l
                 and not re.search(r"table=(20|21|40|41),.*priority=(100|200),(ip|ct_state=\+(est|rel))", l)]
        nat = [l for l in node_exec(n, "iptables-save").stdout.splitlines() if "OC-" in l]
        vpn = node_exec(n, "sh", "-c", "ls /run/oarcloud/vpn 2>/dev/null").stdout.split()
        items = ([p for p in ports if p.startswith(("oc", "vx-", "gw-", "vpn"))]
                 + [x for x in links if x.startswith(("gw-", "gx-", "vpn"))]
                 + [x for x in netns if x.startswith("ocgw")] + flows + nat + vpn)
        if items:
            left[n] = items
    return left


@pytest.fixture
def two_node_pair(make_user):
    """A user with two instances on two nodes in their default network."""
    user = make_user()
    rows = launch(user, "--name", "n", "--nodes", "2")
    assert len({r["node"] for r in rows}) == 2
    yield user, rows
    oarcloud(user, "delete", "n-0", "--wait")


def test_default_network_across_nodes_ping_tcp_and_gateway(two_node_pair):
    user, rows = two_node_pair
    nets = json.loads(oarcloud(user, "net", "list", "--json", check=True).stdout)
    assert [n["name"] for n in nets] == ["default"] and nets[0]["in_use"] == 2
    a, b = rows
    assert sh(user, "n-0", "ping -c 2 -W 2 %s" % b["ip"]).returncode == 0
    assert sh(user, "n-1", "ping -c 2 -W 2 %s" % a["ip"]).returncode == 0
    # TCP across nodes: 2 MB through, byte for byte
    listen(user, "n-1", 7001, "/tmp/got")
    sh(user, "n-0", "head -c 2000000 /dev/urandom > /tmp/f && busybox nc -w 3 %s 7001 < /tmp/f"
       % b["ip"])
    sums = [sh(user, n, "md5sum < /tmp/%s" % f, check=True).stdout.split()[0]
            for n, f in (("n-0", "f"), ("n-1", "got"))]
    assert sums[0] == sums[1]
    # out through the gateway, NATed to the node's address: the lab server answers
    gw = json.loads(oarcloud(user, "net", "show", "default", "--json", check=True).stdout)
    assert sh(user, "n-0", "ping -c 1 -W 2 %s" % gw["gateway"]).returncode == 0
    assert sh(user, "n-0", "ping -c 2 -W 2 198.19.0.1").returncode == 0


def test_two_users_with_the_same_cidr_are_isolated(make_user):
    alice, bob = make_user(), make_user()
    # one core of each node for each user: both jobs run side by side
    ra = launch(alice, "--name", "a", "--nodes", "2", "--cores", "1")
    rb = launch(bob, "--name", "b", "--nodes", "2", "--cores", "1")
    # Same range, same addresses: both users' default networks.
    assert sorted(r["ip"] for r in ra) == sorted(r["ip"] for r in rb)
    for user, rows, mine in ((alice, ra, "a"), (bob, rb, "b")):
        serve(user, "%s-1" % mine, 8080)
        # each reaches its own instance at the shared address: the answer says whose
        assert http_get(user, "%s-0" % mine, rows[1]["ip"], 8080) == "%s-1" % mine
    # Sniffing: while one user floods their network (pings, broadcast, ARP to the
    # shared addresses), the other's instances see none of it; both ways.
    for (src, srows, s), (dst, drows) in (((alice, ra, "a"), (bob, rb)),
                                         ((bob, rb, "b"), (alice, ra))):
        sniffers = [sniffer(r, "icmp or arp or broadcast") for r in drows]
        res = sh(src, "%s-0" % s, "ping -c 30 -i 0.05 -W 1 %s && (ping -c 3 -b -W 1 "
                 "198.18.15.255; busybox arping -c 2 -I eth0 %s; true)"
                 % (srows[1]["ip"], srows[1]["ip"]))
        assert res.returncode == 0, res.stderr  # the sender's own traffic went through
        for proc in sniffers:
            out, err = proc.communicate(timeout=30)
            assert "listening on eth0" in err and out.strip() == "", out
    for user, name in ((alice, "a-0"), (bob, "b-0")):
        assert oarcloud(user, "delete", name, "--wait").returncode == 0


def test_rules_apply_live_and_keep_established_connections(two_node_pair):
    user, rows = two_node_pair
    b_ip = rows[1]["ip"]
    serve(user, "n-1", 9090)
    assert http_get(user, "n-0", b_ip, 9090) == "n-1"
    rules = json.loads(oarcloud(user, "net", "rule", "list", "default", "--json",
                                check=True).stdout)
    inside = [r for r in rules if r["direction"] == "ingress" and r["proto"] == "any"][0]
    # a long connection n-0 -> n-1, open before the rules change
    listen(user, "n-1", 7002, "/tmp/stream")
    sh(user, "n-0", "((while true; do echo tick; sleep 0.1; done) | busybox nc %s 7002) "
       "</dev/null >/dev/null 2>&1 & sleep 0.5" % b_ip, check=True)

    def stream_grows():
        first = int(sh(user, "n-1", "wc -l < /tmp/stream", check=True).stdout)
        time.sleep(1)
        return int(sh(user, "n-1", "wc -l < /tmp/stream", check=True).stdout) > first

    assert stream_grows()
    # an unrelated rule: the connection goes on
    res = oarcloud(user, "net", "rule", "add", "default", "--direction", "ingress", "--proto",
                   "udp", "--port", "5353", check=True)
    assert "applied on 2 node(s)" in res.stdout
    assert stream_grows()
    # without the rule that lets the network in, new connections fail at once...
    started = time.monotonic()
    oarcloud(user, "net", "rule", "delete", "default", str(inside["id"]), check=True)
    assert http_get(user, "n-0", b_ip, 9090) == ""
    print("rule removed and checked in %.2fs" % (time.monotonic() - started))
    assert stream_grows()  # ...but established ones are stateful
    # a narrow rule lets one port in, from one address only
    oarcloud(user, "net", "rule", "add", "default", "--direction", "ingress", "--proto", "tcp",
             "--port", "9000-9100", "--remote", "%s/32" % rows[0]["ip"], check=True)
    assert http_get(user, "n-0", b_ip, 9090) == "n-1"
    serve(user, "n-1", 9191)
    assert http_get(user, "n-0", b_ip, 9191) == ""
    # egress: removing the allow-all egress rule cuts new connections out
    egress = [r for r in rules if r["direction"] == "egress"][0]
    oarcloud(user, "net", "rule", "delete", "default", str(egress["id"]), check=True)
    assert http_get(user, "n-0", b_ip, 9090) == ""


def test_spoofed_addresses_and_forged_arp_reach_nobody(two_node_pair):
    user, rows = two_node_pair
    a_ip, b_ip = rows[0]["ip"], rows[1]["ip"]
    assert sh(user, "n-0", "ping -c 1 -W 2 %s" % b_ip).returncode == 0
    # another source address
    res = sh(user, "n-0", "ip addr add 198.18.0.200/20 dev eth0 && "
             "ping -c 2 -W 1 -I 198.18.0.200 %s" % b_ip)
    assert res.returncode != 0
    sh(user, "n-0", "ip addr del 198.18.0.200/20 dev eth0")
    # another MAC
    mac = sh(user, "n-0", "cat /sys/class/net/eth0/address", check=True).stdout.strip()
    res = sh(user, "n-0", "ip link set eth0 address 0a:66:66:66:66:66 && ip neigh flush all && "
             "ping -c 2 -W 1 %s; r=$?; ip link set eth0 address %s; exit $r" % (b_ip, mac))
    assert res.returncode != 0
    # forged ARP: n-0 claims n-1's address; n-1 never hears a frame claiming it (its
    # own ARP traffic with the catalog's answers may come and go meanwhile)
    proc = sniffer(rows[1], "arp", seconds=14)
    sh(user, "n-0", "busybox arping -U -c 3 -I eth0 -s %s %s" % (b_ip, b_ip))
    sh(user, "n-0", "busybox arping -A -c 3 -I eth0 -s %s %s" % (b_ip, a_ip))
    out, err = proc.communicate(timeout=30)
    assert "listening on eth0" in err
    assert not [l for l in out.splitlines() if "tell %s," % b_ip in l or "Reply %s " % b_ip in l], out
    assert sh(user, "n-0", "ping -c 1 -W 2 %s" % b_ip).returncode == 0


def test_expose_publishes_a_port_on_the_node(two_node_pair):
    user, rows = two_node_pair
    serve(user, "n-1", 8080)
    res = oarcloud(user, "net", "expose", "n-1", "8080", check=True)
    m = re.search(r"published at ([0-9.]+):([0-9]+)", res.stdout)
    assert m and "no ingress rule lets it in" in res.stdout
    url = "http://%s:%s/hostname" % m.groups()
    assert run(["curl", "-s", "-m", "3", url]).returncode != 0  # not allowed in yet
    oarcloud(user, "net", "rule", "add", "default", "--direction", "ingress", "--proto", "tcp",
             "--port", "8080", check=True)
    assert run(["curl", "-s", "-m", "3", url]).stdout.strip() == "n-1"
    shown = json.loads(oarcloud(user, "net", "show", "default", "--json", check=True).stdout)
    assert [(p["instance"], p["port"]) for p in shown["published"]] == [("n-1", 8080)]
    oarcloud(user, "net", "unexpose", "n-1", "8080", check=True)
    assert run(["curl", "-s", "-m", "3", url]).returncode != 0


def test_networks_attach_fixed_address_delete_and_leave_nothing(make_user):
    user = make_user()
    assert oarcloud(user, "net", "create", "back", "--cidr", "10.77.0.0/24",
                    check=True).returncode == 0
    rows = launch(user, "--name", "multi", "--network", "default", "--network", "back",
                  "--nodes", "2", "--count", "2", "--cores", "1")
    other = launch(user, "--name", "fixed", "--network", "back", "--ip", "10.77.0.50",
                   "--count", "1", "--cores", "1")
    assert other[0]["ip"] == "10.77.0.50"
    res = oarcloud(user, "launch", "--name", "dup", "--network", "back", "--ip", "10.77.0.50",
                   "--count", "1")
    assert res.returncode != 0 and "in use" in res.stderr
    # one NIC per network; the second network reached across nodes, with its own gateway
    addrs = sh(user, "multi-0", "ip -o -4 addr show", check=True).stdout
    assert "eth0" in addrs and "10.77.0." in addrs
    back_ip = re.search(r"eth1\s+inet (10\.77\.0\.[0-9]+)", sh(
        user, "multi-1", "ip -o -4 addr show", check=True).stdout).group(1)
    assert sh(user, "multi-0", "ping -c 2 -W 2 %s" % back_ip).returncode == 0
    assert sh(user, "fixed", "ping -c 2 -W 2 %s" % back_ip).returncode == 0
    res = oarcloud(user, "net", "delete", "back")
    assert res.returncode != 0 and "in use" in res.stderr
    for name in ("multi-0", "fixed"):
        assert oarcloud(user, "delete", name, "--wait").returncode == 0
    assert oarcloud(user, "net", "delete", "back").returncode == 0
    assert [n["name"] for n in json.loads(oarcloud(user, "net", "list", "--json").stdout)] \
        == ["default"]
    assert net_leftovers() == {}


@pytest.mark.parametrize("args, message", [
    (["create", "x", "--cidr", "198.19.4.0/24"], "overlaps"),
    (["create", "x", "--cidr", "10.0.0.0/31"], "prefix"),
    (["create", "x", "--cidr", "10.0.0.0/8"], "prefix"),
    (["create", "x", "--cidr", "10.0.0.300/24"], "bad CIDR"),
    (["create", "x", "--cidr", "10.0.0.0/24", "--gateway", "10.0.1.1"], "not a host address"),
    (["create", "Bad_Name", "--cidr", "10.0.0.0/24"], "bad network name"),
    (["create", "default", "--cidr", "10.0.0.0/24"], "already have"),
    (["rule", "add", "default", "--direction", "ingress", "--proto", "tcp", "--port", "0"],
     "bad port"),
    (["rule", "add", "default", "--direction", "ingress", "--proto", "tcp", "--port", "70000"],
     "bad port"),
    (["rule", "add", "default", "--direction", "ingress", "--proto", "icmp", "--port", "22"],
     "--port goes with tcp or udp"),
    (["rule", "add", "default", "--direction", "ingress", "--proto", "tcp", "--remote",
      "10.0.0.1/8"], "bad remote"),
    (["rule", "delete", "default", "x;1"], "bad rule id"),
])
def test_bad_network_input_is_refused_and_nothing_changes(make_user, args, message):
    user = make_user()
    oarcloud(user, "net", "create", "default", "--cidr", "10.9.0.0/24", check=True)
    before = oarcloud(user, "net", "show", "default", "--json", check=True).stdout
    res = oarcloud(user, "net", *args)
    assert res.returncode != 0 and message in res.stderr, res.stderr
    assert oarcloud(user, "net", "show", "default", "--json", check=True).stdout == before
    assert len(json.loads(oarcloud(user, "net", "list", "--json").stdout)) == 1


def test_another_users_network_is_not_found(make_user):
    alice, bob = make_user(), make_user()
    oarcloud(alice, "net", "create", "priv", "--cidr", "10.5.0.0/24", check=True)
    before = oarcloud(alice, "net", "show", "priv", "--json", check=True).stdout
    for args in (["net", "show", "priv"], ["net", "delete", "priv"],
                 ["net", "rule", "add", "priv", "--direction", "ingress", "--proto", "any"],
                 ["net", "rule", "list", "priv"], ["net", "vpn", "priv"],
                 ["launch", "--network", "priv", "--walltime", "0:05"]):
        res = oarcloud(bob, *args)
        assert res.returncode != 0 and "network not found: priv" in res.stderr, (args, res.stderr)
    assert oarcloud(alice, "net", "show", "priv", "--json", check=True).stdout == before
    assert json.loads(oarcloud(bob, "net", "list", "--json").stdout) == []


@pytest.fixture
def vpn_client_netns():
    """A namespace on the lab's underlay, standing for a machine outside the
    cluster; yields a function that runs argv in it.  Removes it and the
    OpenVPN client it ran."""
    from oarcloud_lib import lab
    ns, host = "octvpn%d" % (time.monotonic_ns() % 10000), "octv%d" % (time.monotonic_ns() % 10000)
    run(["ip", "netns", "add", ns], check=True)
    pidfile = Path("/tmp/%s.pid" % ns)
    try:
        run(["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns],
            check=True)
        run(["ip", "link", "set", host, "master", lab.BRIDGE, "up"], check=True)
        for argv in (["ip", "addr", "add", "198.19.0.250/16", "dev", "eth0"],
                     ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
            run(["ip", "netns", "exec", ns] + argv, check=True)
        yield lambda *argv, **kw: run(["ip", "netns", "exec", ns, *argv], **kw), pidfile
    finally:
        try:
            run(["kill", pidfile.read_text().strip()])
            time.sleep(0.5)
            pidfile.unlink()
        except OSError:
            pass
        run(["ip", "netns", "del", ns])
        run(["ip", "link", "del", host])


def test_vpn_client_joins_its_network_only(make_user, vpn_client_netns, tmp_path):
    in_client, pidfile = vpn_client_netns
    user = make_user()
    oarcloud(user, "net", "create", "other", "--cidr", "10.66.0.0/24", check=True)
    mine = launch(user, "--name", "v", "--cores", "1")[0]
    theirs = launch(user, "--name", "o", "--network", "other", "--cores", "1")[0]
    res = oarcloud(user, "net", "vpn", "default", "--client", "laptop")
    assert res.returncode == 0, res.stderr
    conf = tmp_path / "client.ovpn"
    conf.write_text(res.stdout)
    again = oarcloud(user, "net", "vpn", "default", "--client", "laptop")
    assert again.returncode != 0 and "already has a client laptop" in again.stderr
    in_client("openvpn", "--config", str(conf), "--daemon", "--writepid", str(pidfile),
              "--log", str(tmp_path / "client.log"), check=True)
    deadline = time.monotonic() + 30
    while "198.18.0." not in in_client("ip", "-4", "addr", "show").stdout:
        assert time.monotonic() < deadline, (tmp_path / "client.log").read_text()
        time.sleep(0.5)
    # the client is a member of the network: both ways
    assert in_client("ping", "-c", "2", "-W", "2", mine["ip"]).returncode == 0
    client_ip = re.search(r"inet (198\.18\.[0-9.]+)/", in_client("ip", "-4", "addr", "show",
                                                                "dev", "tap0").stdout).group(1)
    assert sh(user, "v", "ping -c 1 -W 2 %s" % client_ip).returncode == 0
    members = json.loads(oarcloud(user, "net", "show", "default", "--json").stdout)["members"]
    assert {"laptop", "v"} <= {m["name"] for m in members}
    # ...and of nothing else: not the other network (even routed by hand), not the gateway
    in_client("ip", "route", "add", "10.66.0.0/24", "dev", "tap0", check=True)
    assert in_client("ping", "-c", "2", "-W", "1", theirs["ip"]).returncode != 0
    gw = json.loads(oarcloud(user, "net", "show", "default", "--json").stdout)["gateway"]
    assert in_client("ping", "-c", "2", "-W", "1", gw).returncode != 0
    for name in ("v", "o"):
        assert oarcloud(user, "delete", name, "--wait").returncode == 0
    # deleting the network stops its endpoint: nothing left on any node
    for name in ("default", "other"):
        assert oarcloud(user, "net", "delete", name).returncode == 0
    assert net_leftovers() == {}


def _vpn_connect(in_client, conf, pidfile, log):
    """Start an OpenVPN client with conf in the client's namespace (the one
    pidfile names is stopped first)."""
    try:
        run(["kill", pidfile.read_text().strip()])
        deadline = time.monotonic() + 10
        while Path("/proc/%s" % pidfile.read_text().strip()).exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pidfile.unlink()
    except OSError:
        pass
    in_client("openvpn", "--config", str(conf), "--daemon", "--writepid", str(pidfile),
              "--log", str(log), check=True)


def _wait_for(what, probe, timeout=30):
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_vpn_refuses_keyless_revoked_and_foreign_clients(make_user, vpn_client_netns, tmp_path):
    """tls-crypt, the CRL and revocation on the real OpenVPN: a file without the
    endpoint's tls-crypt key gets no TLS handshake, a revoked client's session
    ends and its file never connects again (even once its name is given to a
    new client), and the CA key is root's file on the server, not the catalog's."""
    from oarcloud_lib import paths
    from oarcloud_lib.catalog import db
    in_client, pidfile = vpn_client_netns
    alice, bob = make_user(), make_user()
    mine = launch(alice, "--name", "v", "--cores", "1")[0]
    # bad input is refused before anything is made
    for days in ("0", "100000", "x", "-1"):
        res = oarcloud(alice, "net", "vpn", "default", "--client", "laptop", "--days", days)
        assert res.returncode != 0 and "--days must be a whole number" in res.stderr, res.stderr
    listing = json.loads(oarcloud(alice, "net", "vpn", "default", "--list", "--json",
                                  check=True).stdout)
    assert listing == {"endpoint": None, "clients": [], "revoked": []}
    res = oarcloud(alice, "net", "vpn", "default", "--client", "laptop", "--days", "7")
    assert res.returncode == 0 and "<tls-crypt>" in res.stdout, res.stderr
    old, text = tmp_path / "laptop.ovpn", res.stdout
    old.write_text(text)
    listing = json.loads(oarcloud(alice, "net", "vpn", "default", "--list", "--json").stdout)
    ep, (laptop,) = listing["endpoint"], listing["clients"]
    assert laptop["name"] == "laptop" and laptop["serial"]
    with db.connect() as conn:
        net_id, vni = conn.execute("SELECT id, vni FROM networks WHERE owner = %s AND name ="
                                   " 'default'", (alice,)).fetchone()
        assert conn.execute("SELECT ca_key FROM net_vpns WHERE network = %s",
                            (net_id,)).fetchone() == (None,)
        days = conn.execute("SELECT cert_expires - now() FROM nics WHERE network = %s AND"
                            " client = 'laptop'", (net_id,)).fetchone()[0]
    assert 6 < days.total_seconds() / 86400 <= 7
    key = Path("/var/lib/oarcloud/vpn-ca/%d.pem" % net_id)
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    assert paths.STATE / "vpn-ca" == key.parent
    # users see their endpoint's public side only
    res = run(["runuser", "-u", alice, "--", "psql", "-X", "-d", "oarcloud", "-tAc",
               "SELECT server_key FROM net_vpns"], cwd="/tmp")
    assert res.returncode != 0 and "permission denied" in res.stderr, res.stdout
    server_log = "/var/log/oarcloud/vpn-%d.log" % vni

    def logged(text):
        return node_exec(ep["node"], "cat", server_log).stdout.count(text)

    def has_address():
        return "198.18.0." in in_client("ip", "-4", "addr", "show").stdout

    # 1. the same file without its tls-crypt key: not even a TLS handshake
    keyless = tmp_path / "keyless.ovpn"
    keyless.write_text(re.sub(r"<tls-crypt>.*</tls-crypt>", "", text, flags=re.S))
    before = logged("tls-crypt unwrapping failed")
    _vpn_connect(in_client, keyless, pidfile, tmp_path / "keyless.log")
    _wait_for("tls-crypt refusal in %s" % server_log,
              lambda: logged("tls-crypt unwrapping failed") > before)
    assert not has_address()
    # 2. the real file joins
    _vpn_connect(in_client, old, pidfile, tmp_path / "laptop.log")
    _wait_for((tmp_path / "laptop.log").read_text, has_address)
    assert in_client("ping", "-c", "1", "-W", "2", mine["ip"]).returncode == 0
    # 3. bob can neither revoke nor list alice's client
    for args in (["--revoke", "laptop"], ["--list"]):
        res = oarcloud(bob, "net", "vpn", "default", *args)
        assert res.returncode != 0 and "network not found: default" in res.stderr, res.stderr
    assert in_client("ping", "-c", "1", "-W", "2", mine["ip"]).returncode == 0
    # 4. revoked: the session ends now, the CRL refuses the file's next connection
    res = oarcloud(alice, "net", "vpn", "default", "--revoke", "laptop")
    assert res.returncode == 0 and "revoked" in res.stdout, res.stderr
    _wait_for("the revoked session ended",
              lambda: in_client("ping", "-c", "1", "-W", "1", mine["ip"]).returncode != 0)
    res = oarcloud(alice, "net", "vpn", "default", "--revoke", "laptop")
    assert res.returncode != 0 and "vpn client not found: laptop" in res.stderr
    # the name is given again: the new file joins, the old one stays refused
    res = oarcloud(alice, "net", "vpn", "default", "--client", "laptop")
    assert res.returncode == 0, res.stderr
    new = tmp_path / "new.ovpn"
    new.write_text(res.stdout)
    before = logged("certificate revoked")
    _vpn_connect(in_client, old, pidfile, tmp_path / "old.log")
    _wait_for("CRL refusal in %s" % server_log, lambda: logged("certificate revoked") > before)
    assert not has_address() or in_client("ping", "-c", "1", "-W", "1",
                                          mine["ip"]).returncode != 0
    _vpn_connect(in_client, new, pidfile, tmp_path / "new.log")
    _wait_for("the new client's address", lambda: in_client(
        "ping", "-c", "1", "-W", "1", mine["ip"]).returncode == 0)
    listing = json.loads(oarcloud(alice, "net", "vpn", "default", "--list", "--json").stdout)
    assert [r["serial"] for r in listing["revoked"]] == [laptop["serial"]]
    assert [c["name"] for c in listing["clients"]] == ["laptop"]
    assert listing["clients"][0]["serial"] != laptop["serial"]
    assert "revoked" in oarcloud(alice, "net", "vpn", "default", "--list").stdout
    # 5. a server certificate near its end is renewed (the monitor's hourly
    # step): the node restarts the server, the client comes back on its own
    from oarcloud_lib.server import vpnca
    from oarcloud_lib.service import fanout
    pidfile_on_node = "/run/oarcloud/vpn/%d/pid" % vni
    before = node_exec(ep["node"], "cat", pidfile_on_node).stdout.strip()
    with db.connect() as conn:
        old_cert = conn.execute("SELECT server_cert FROM net_vpns WHERE network = %s",
                                (net_id,)).fetchone()[0]
        conn.execute("UPDATE net_vpns SET server_expires = now() + interval '1 day'"
                     " WHERE network = %s", (net_id,))
        assert vpnca.renew_due(conn) == [ep["node"]]
        assert vpnca.renew_due(conn) == []  # once
        assert conn.execute("SELECT server_cert <> %s, server_expires > now() + interval"
                            " '300 days' FROM net_vpns WHERE network = %s",
                            (old_cert, net_id)).fetchone() == (True, True)
    assert fanout.sync_nodes([ep["node"]]) == {}
    assert node_exec(ep["node"], "cat", pidfile_on_node).stdout.strip() != before
    _wait_for("the client back after the server's restart", lambda: in_client(
        "ping", "-c", "1", "-W", "1", mine["ip"]).returncode == 0)
    # deleting the account stops its endpoint at once and takes its CA key
    admin("user", "delete", alice, check=True)
    assert not key.exists()
    assert node_exec(ep["node"], "ls", "/run/oarcloud/vpn").stdout.split() == []
    _wait_for("the client's session ended", lambda: in_client(
        "ping", "-c", "1", "-W", "1", mine["ip"]).returncode != 0)
    assert net_leftovers() == {}
