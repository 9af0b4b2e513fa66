"""Instances as OAR cloud jobs, end to end on the lab: oarcloud launch/list/show/delete,
the node hooks, libvirt-lxc domains on Open vSwitch, and a clean teardown."""
import json
from pathlib import Path

import pytest

from conftest import USER_CLI, as_user, node_exec, run

from oarcloud_lib.node import idmap

NODES = ("node-1", "node-2")


def oarcloud(user, *args, check=False, timeout=300):
    return as_user(user, [USER_CLI, *args], check=check, timeout=timeout)


def launch(user, *args):
    res = oarcloud(user, "launch", "--walltime", "0:10", "--wait", "--json", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def instance_init(node, domain):
    """The pid of the instance's init (the first child of its libvirt_lxc controller)."""
    ctl = node_exec(node, "virsh", "-c", "lxc:///system", "domid", domain, check=True).stdout.split()[0]
    return Path("/proc/%s/task/%s/children" % (ctl, ctl)).read_text().split()[0]


def in_instance(node, domain, *argv):
    """Run argv as root inside the instance (what an admin can do on the node)."""
    return node_exec(node, "nsenter", "-t", instance_init(node, domain), "-a", "-r", "-w", "--",
                     *argv)


def node_leftovers(prefix="oc"):
    """Domains, veths, OVS ports, instance roots and disks (their files, mounts
    and loop devices) of oarcloud left on the nodes."""
    left = {}
    for n in NODES:
        doms = node_exec(n, "virsh", "-c", "lxc:///system", "list", "--all", "--name").stdout.split()
        ports = node_exec(n, "ovs-vsctl", "list-ports", "br-int").stdout.split()
        roots = node_exec(n, "ls", "/var/lib/oarcloud/instances").stdout.split()
        disks = [d for d in node_exec(n, "ls", "/var/lib/oarcloud/disks").stdout.split()
                 if not d.endswith(".kept")]  # kept ones wait for the saver
        loops = [l for l in node_exec(n, "losetup", "-a").stdout.splitlines()
                 if "/var/lib/oarcloud/disks/" + prefix in l and ".kept" not in l]
        links = [x["ifname"] for x in json.loads(node_exec(n, "ip", "-j", "link").stdout)]
        consoles = node_exec(n, "ls", "/var/lib/oarcloud/consoles").stdout.split()
        mounts = [l for l in node_exec(n, "cat", "/proc/mounts").stdout.splitlines()
                  if "/var/lib/oarcloud/instances/" in l]
        items = [x for x in doms + ports + roots + links + disks + consoles
                 if x.startswith(prefix)] \
            + mounts + loops
        if not [p for p in ports if p.startswith("oc")]:
            items += [p for p in ports if p.startswith("vx-")]  # tunnels go with the last instance
        if items:
            left[n] = items
    return left


def test_two_instances_on_one_node_run_and_ping(make_user):
    user = make_user()
    rows = launch(user, "--name", "pair", "--count", "2", "--nodes", "1")
    assert [r["name"] for r in rows] == ["pair-0", "pair-1"]
    assert {r["state"] for r in rows} == {"running"}
    assert len({r["node"] for r in rows}) == 1 and len({r["ip"] for r in rows}) == 2
    node = rows[0]["node"]
    domain = "oc%d-0" % rows[0]["job_id"]
    res = in_instance(node, domain, "ping", "-c", "2", "-W", "2", rows[1]["ip"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert in_instance(node, domain, "hostname").stdout.strip() == "pair-0"
    # unprivileged: root in the instance is the first uid of its owner's range on the node
    init = instance_init(node, domain)
    uid = [l for l in Path("/proc/%s/status" % init).read_text().splitlines()
           if l.startswith("Uid:")][0].split()[1]
    slot = run(["runuser", "-u", "postgres", "--", "psql", "-d", "oarcloud", "-tAc",
                "SELECT id_slot FROM accounts WHERE name = '%s'" % user], check=True).stdout
    assert int(uid) == idmap.tenant_base(int(slot))
    assert in_instance(node, domain, "id", "-u").stdout.strip() == "0"
    # the user's key is root's authorized key in the instance
    key = Path("/home/%s/.ssh/id_oarcloud.pub" % user).read_text().split()[1]
    assert key in in_instance(node, domain, "cat", "/root/.ssh/authorized_keys").stdout
    res = oarcloud(user, "delete", "pair-0", "--wait")
    assert res.returncode == 0, res.stderr
    assert node_leftovers("oc%d-" % rows[0]["job_id"]) == {}


def test_launch_on_two_nodes_list_show_delete(make_user):
    user, other = make_user(), make_user()
    rows = launch(user, "--nodes", "2")
    assert sorted(r["node"] for r in rows) == sorted(NODES)
    for r in rows:
        assert set(r) >= {"name", "node", "ip", "state", "job_id"}
        doms = node_exec(r["node"], "virsh", "-c", "lxc:///system", "list", "--name").stdout.split()
        assert "oc%d-%d" % (r["job_id"], rows.index(r)) in doms
    # M2: the two instances, on two nodes, ping each other (VXLAN between the nodes),
    # by address and by name
    for a, b in ((0, 1), (1, 0)):
        for target in (rows[b]["ip"], rows[b]["name"]):
            res = in_instance(rows[a]["node"], "oc%d-%d" % (rows[a]["job_id"], a),
                              "ping", "-c", "2", "-W", "2", target)
            assert res.returncode == 0, res.stdout + res.stderr
    listed = json.loads(oarcloud(user, "list", "--json", check=True).stdout)
    assert sorted(x["name"] for x in listed) == sorted(r["name"] for r in rows)
    shown = json.loads(oarcloud(user, "show", rows[0]["name"], "--json", check=True).stdout)
    assert shown["job_state"] == "Running" and shown["ip"] == rows[0]["ip"]
    # another user sees nothing of it and cannot delete it
    assert json.loads(oarcloud(other, "list", "--json", check=True).stdout) == []
    res = oarcloud(other, "delete", rows[0]["name"])
    assert res.returncode != 0 and "not found" in res.stderr
    res = oarcloud(other, "show", rows[0]["name"])
    assert res.returncode != 0 and "not found" in res.stderr
    assert oarcloud(user, "delete", rows[0]["name"], "--wait").returncode == 0
    assert node_leftovers("oc%d-" % rows[0]["job_id"]) == {}
    assert json.loads(oarcloud(user, "list", "--json", check=True).stdout) == []


def test_launch_delete_cycles_leave_nothing(make_user):
    user = make_user()
    for _ in range(20):
        launch(user, "--nodes", "2", "--name", "cyc", "--count", "2")
        assert oarcloud(user, "delete", "cyc-0", "--wait").returncode == 0
    assert node_leftovers() == {}
    # no address still allocated, no OAR job left
    assert json.loads(oarcloud(user, "list", "--json", check=True).stdout) == []
    out = run(["oarstat", "-u", user, "-J"]).stdout.strip()
    assert not out.startswith("{") or json.loads(out) == {}


def test_m1_bookworm_exec_ssh_power_and_logs(make_user):
    """M1: a Debian instance; the user runs commands in it and logs in by ssh as themselves."""
    user, other = make_user(), make_user()
    (row,) = launch(user, "--image", "bookworm", "--name", "deb")
    res = oarcloud(user, "exec", "deb", "--", "sh", "-c", "hostname; exit 7")
    assert res.returncode == 7 and res.stdout.strip() == "deb", res.stdout + res.stderr
    res = oarcloud(user, "ssh", "deb", "--", "id -un; sudo -n id -u")
    assert res.returncode == 0 and res.stdout.split() == [user, "0"], res.stdout + res.stderr
    # stop, start, reboot within the job's life
    assert oarcloud(user, "stop", "deb", check=True).stdout.strip() == "deb: stopped"
    shown = json.loads(oarcloud(user, "show", "deb", "--json", check=True).stdout)
    assert shown["state"] == "stopped" and shown["job_state"] == "Running"
    assert oarcloud(user, "exec", "deb", "--", "true").returncode != 0
    assert oarcloud(user, "start", "deb", check=True).stdout.strip() == "deb: running"
    assert oarcloud(user, "reboot", "deb", check=True).stdout.strip() == "deb: running"
    assert oarcloud(user, "ssh", "deb", "--", "true").returncode == 0
    logs = oarcloud(user, "logs", "deb", check=True).stdout
    assert "deb (oc%d-0) running on %s" % (row["job_id"], row["node"]) in logs
    assert "reboot deb" in logs
    # another user can do none of it, and learns nothing
    for args in (["exec", "deb", "--", "id"], ["ssh", "deb", "--", "id"], ["stop", "deb"],
                 ["console", "deb"], ["logs", "deb"], ["delete", "deb"]):
        res = oarcloud(other, *args)
        assert res.returncode != 0 and "not found" in res.stderr, (args, res.stderr)
    assert json.loads(oarcloud(other, "list", "--json", check=True).stdout) == []
    assert oarcloud(user, "delete", "deb", "--wait").returncode == 0
    assert node_leftovers("oc%d-" % row["job_id"]) == {}


def test_tcp_between_nodes(make_user):
    """M2 beyond ping: a 3 MB transfer over ssh between instances on two nodes
    (TX offload off on the userspace datapath, MTU fitted to VXLAN)."""
    user = make_user()
    rows = launch(user, "--image", "bookworm", "--name", "tcp", "--nodes", "2")
    assert len({r["node"] for r in rows}) == 2
    key = oarcloud(user, "exec", "tcp-0", "--", "sh", "-c",
                   "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/t && cat /root/.ssh/t.pub",
                   check=True).stdout
    as_user(user, [USER_CLI, "exec", "tcp-1", "--", "sh", "-c",
                   "echo '%s' >> /root/.ssh/authorized_keys" % key.strip()], check=True)
    res = oarcloud(user, "exec", "tcp-0", "--", "sh", "-c",
                   "head -c 3000000 /dev/urandom > /tmp/f && sha256sum < /tmp/f && "
                   "timeout 60 ssh -i /root/.ssh/t -o StrictHostKeyChecking=no -o BatchMode=yes "
                   "root@%s 'sha256sum' < /tmp/f" % rows[1]["ip"])
    sums = res.stdout.split()
    assert res.returncode == 0 and len(sums) == 4 and sums[0] == sums[2], res.stdout + res.stderr
    assert oarcloud(user, "delete", "tcp-0", "--wait").returncode == 0


@pytest.mark.parametrize("args,message", [
    (["--image", "../x"], "bad value for image"),
    (["--image", "nosuchimage"], "image not found"),
    (["--cores", "0"], "bad value for cores"),
    (["--cores", "-2"], "bad value for cores"),
    (["--memory", "-1"], "bad value for memory"),
    (["--memory", "99999999T"], "bad value for memory"),
    (["--name", "a/b"], "bad value for name"),
    (["--name", "has space"], "bad value for name"),
    (["--name", ".."], "bad value for name"),
    (["--walltime", "abc"], "bad walltime"),
    (["--walltime", "0:00"], "bad walltime"),
    (["--nodes", "0"], "--nodes"),
    (["--network", "someone-elses"], "network not found"),
    (["--network", "../net"], "bad value for network"),
])
def test_bad_launch_input_is_refused_before_anything(make_user, args, message):
    user = make_user()
    res = oarcloud(user, "launch", *args)
    assert res.returncode in (2, 3), res.stdout + res.stderr  # refused, not found
    assert message in res.stderr
    out = run(["oarstat", "-u", user, "-J"]).stdout.strip()
    assert not out.startswith("{") or json.loads(out) == {}


ROOT_CALLER = r"""
import json, sys
from oarcloud_lib.catalog import db, jobspec
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.service import jobs, lifecycle
from oarcloud_lib.tools import oar
owner, other, verb = sys.argv[1:4]
with db.connect() as conn:
    if verb == "launch":
        spec = jobspec.parse_types(["cloud", "cloud.name=scaled", "cloud.count=1"])
        job_id = lifecycle.launch(conn, owner, spec, 1, "0:10")
        rows = jobs.wait_running(conn, job_id)
        print(json.dumps({"job_id": job_id, "owner": oar.get_job(job_id)["owner"],
                          "state": rows[0]["state"]}))
    elif verb == "refused":
        spec = jobspec.parse_types(["cloud", "cloud.image=nosuchimage"])
        try:
            lifecycle.launch(conn, owner, spec, 1, "0:10")
        except OarcloudError as e:
            print(json.dumps({"refused": str(e)}))
    elif verb == "find-as-other":
        try:
            lifecycle.find(conn, other, "scaled")
        except OarcloudError as e:
            print(json.dumps({"other": str(e)}))
    else:
        row = lifecycle.delete(conn, owner, "scaled", wait=True)
        print(json.dumps({"deleted": row["job_id"]}))
"""


def test_a_root_caller_launches_and_deletes_for_its_owner(make_user):
    """The library's launch path as a scaler or the web API will use it: root,
    on behalf of a user.  OAR gets the job from the owner, never from root."""
    user, other = make_user(), make_user()

    def call(verb):
        res = run(["/opt/oarcloud/venv/bin/python", "-I", "-c", ROOT_CALLER, user, other, verb], timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])
    before = json.loads(run(["oarstat", "-J"], check=True).stdout or "{}")
    assert "image not found" in call("refused")["refused"]
    assert json.loads(run(["oarstat", "-J"], check=True).stdout or "{}").keys() == before.keys()
    launched = call("launch")
    assert launched["owner"] == user and launched["state"] == "running"
    listed = json.loads(oarcloud(user, "list", "--json", check=True).stdout)
    assert [r["name"] for r in listed] == ["scaled"]
    assert "instance not found: scaled" in call("find-as-other")["other"]
    assert call("delete")["deleted"] == launched["job_id"]
    assert node_leftovers("oc%d-" % launched["job_id"]) == {}
