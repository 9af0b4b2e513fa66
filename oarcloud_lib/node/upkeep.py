"""A node's own OS update and health check (docs/nodes.md, "Rolling
updates"); the server's rolling update (server/updates.py) calls them
through the node agent on a drained node that no job uses any more.

    update(script)   run the admin's script (sh -e), then restart libvirtd,
                     virtlogd and the console keeper so that they run the
                     updated code
    health(peers)    the node's own checks: libvirt starts a container, the
                     integration bridge is there, the image cache reads, the
                     underlay reaches the peers and the server, OAR's own
                     node check passes where OAR ships one

Open vSwitch is not restarted here: with the userspace datapath the node's
underlay address lives on a bridge ovs-vswitchd makes, and a restart would
take it away; a kernel or OVS update on a real node ends with a reboot.
"""
import json
import os
import tempfile
from pathlib import Path

from oarcloud_lib import config, daemons, templating
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, Refused

UPDATE_TIMEOUT = 1800
MAX_SCRIPT = 64 << 10
RESTARTED = ("consoles", "libvirtd", "virtlogd")
HEALTH_DOMAIN = "oarcloud-health"
OAR_NODE_CHECK = ("/usr/lib/oar/oarnodecheckrun", "/usr/bin/oarnodecheckquery")
CHECKLOGS = "/var/lib/oar/checklogs"   # where OAR's node checks log their failures


def _instances_here(runner):
    res = runner.run(["virsh", "-c", "lxc:///system", "list", "--name"], check=False, timeout=20)
    return [n for n in res.out.split() if n and n != HEALTH_DOMAIN]


def update(script, runner=LOCAL):
    """Run script (the admin's, sh -e) with UPDATE_TIMEOUT, then restart the
    daemons it may have updated.  Refused while instances run here.
    Returns {exit, output (its last 4000 characters), restarted}."""
    if not isinstance(script, str) or not script.strip() or len(script) > MAX_SCRIPT:
        raise Refused(detail="the update script must be 1 byte to 64 KiB of text")
    running = _instances_here(runner)
    if running:
        raise Conflict(what="node update", detail="instances still run here: %s"
                       % ", ".join(running[:10]))
    from oarcloud_lib.node import nodesetup
    fd, path = tempfile.mkstemp(prefix="oarcloud-update-", suffix=".sh", dir="/run")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(script)
        res = runner.run(["/bin/sh", "-e", path], check=False, timeout=UPDATE_TIMEOUT)
    finally:
        Path(path).unlink(missing_ok=True)
    output = (res.out + res.err)[-4000:]
    if res.code != 0:
        return {"exit": res.code, "output": output, "restarted": []}
    for name in RESTARTED:   # libvirtd before virtlogd: it logs through it
        daemons.stop_pid(daemons.read_pid(nodesetup.DAEMONS[name]), timeout=30)
    nodesetup.ensure_libvirtd(runner)
    nodesetup.ensure_consoles(runner)
    return {"exit": 0, "output": output, "restarted": list(RESTARTED)}


def _check(name, ok, detail=""):
    return {"check": name, "ok": bool(ok), "detail": detail}


def health(peers, runner=LOCAL, conf=None):
    """The node's checks (each one, pass or not, with what it saw); peers:
    other nodes' names to reach over the underlay."""
    from oarcloud_lib.node import imagecache, nodesetup
    conf = conf or config.load()
    out = []
    xml = templating.render("health-domain.xml.j2", name=HEALTH_DOMAIN)
    fd, path = tempfile.mkstemp(prefix="oarcloud-health-", suffix=".xml", dir="/run")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(xml)
        res = runner.run(["virsh", "-c", "lxc:///system", "create", path], check=False,
                         timeout=60)
    finally:
        Path(path).unlink(missing_ok=True)
    out.append(_check("container", res.code == 0, (res.err or res.out).strip()[-300:]))
    res = runner.run(["ovs-vsctl", "br-exists", nodesetup.INTEGRATION_BRIDGE], check=False,
                     timeout=20)
    out.append(_check("bridge %s" % nodesetup.INTEGRATION_BRIDGE, res.code == 0))
    try:
        entries = imagecache.entries()
        out.append(_check("image cache", True, "%d image(s)" % len(entries)))
    except (OSError, ValueError) as e:
        out.append(_check("image cache", False, str(e)[:300]))
    for peer in [conf.server_address] + list(peers):
        res = runner.run(["ping", "-c", "1", "-W", "2", peer], check=False, timeout=10)
        out.append(_check("underlay to %s" % peer, res.code == 0))
    run, query = OAR_NODE_CHECK
    if os.access(run, os.X_OK) and os.access(query, os.X_OK) and os.path.isdir(CHECKLOGS):
        runner.run([run], check=False, timeout=120)
        res = runner.run([query], check=False, timeout=30)
        out.append(_check("OAR node check", res.code == 0, (res.out + res.err).strip()[-300:]))
    return {"ok": all(c["ok"] for c in out), "checks": out}


def as_json(value):
    return json.dumps(value, sort_keys=True)
