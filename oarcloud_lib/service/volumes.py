"""A user's volumes, for every caller (the broker today, the web API later):
the catalog's rules (catalog.volumes), the bytes (server.volumestore), and the
node that mounts one in a running instance (its agent's volume verbs).

conn is root's (the broker's) and user the caller: every function acts for
user, on user's own volumes, or on one shared with them read-only
(OWNER/NAME).  Another user's volume is not found.
"""
import logging
import subprocess

from oarcloud_lib.catalog import images, jobspec, volumes
from oarcloud_lib.errors import Conflict, NotFound, Refused
from oarcloud_lib.server import volumestore
from oarcloud_lib.service import lifecycle
from oarcloud_lib.tools import oarssh

LOG = logging.getLogger("oarcloud.volumes")


def _on_node(node, verb, domain, volume_id):
    """Run the node agent's volume verb; its error, in one line, as a Conflict."""
    res = subprocess.run(oarssh.agent_argv(node, verb, domain, volume_id), capture_output=True,
                         text=True, timeout=120)
    if res.returncode != 0:
        said = [l.split(": error: ", 1)[1] for l in res.stderr.splitlines() if ": error: " in l]
        raise Conflict(what="volume", detail=(said[-1] if said else "the node agent on %s "
                                              "failed (exit %d)" % (node, res.returncode))
                       .replace("volume conflicts: ", ""))


def _ref(text):
    """'NAME' or 'OWNER/NAME' -> (owner or None, name)."""
    owner, _, name = str(text).rpartition("/")
    return owner or None, volumes.check_name(name)


def size_of(text):
    try:
        return jobspec.parse_size(text)
    except Refused:
        raise Refused(detail="bad volume size %r: a positive number with K, M, G or T, e.g. "
                             "10G" % str(text)[:20]) from None


def public(vol, user):
    out = {k: vol[k] for k in volumes.COLUMNS if k != "id"}
    created = vol["created"]
    out["created"] = created.isoformat(timespec="seconds") if created else None
    out["access"] = "owner" if vol["owner"] == user else "read-only"
    out["used"] = volumestore.used(vol["id"])
    for key in ("attachments", "shared_with"):
        if key in vol:
            out[key] = vol[key]
    return out


def create(conn, user, name, size, image=None):
    """A new volume of user's: empty, or holding image's files (an image user
    may launch, of one layer)."""
    size = size_of(size)
    row = images.usable(conn, image, user) if image else None
    if row and row["depth"]:
        raise Refused(detail="image %s is a saved layer over %s: a volume takes a whole "
                             "image (oarcloud image save --flatten makes one)"
                      % (image, row["parent"]))
    with conn.transaction():
        vol = volumes.create(conn, user, name, size, origin=image and "image %s" % image)
        try:
            volumestore.create(vol["id"], size)  # its failure rolls the row back
            if row:
                volumestore.fill(vol["id"], row["sha256"], image)
        except BaseException:
            volumestore.delete(vol["id"])
            raise
    LOG.info("volume %s of %s created: %d MiB%s", name, user, size >> 20,
             " from image %s" % image if image else "")
    return public(vol, user)


def _own(conn, user, name, lock=True):
    owner, name = _ref(name)
    if owner not in (None, user):
        volumes.get(conn, user, name, owner)  # not found, or shared: then say so
        raise Refused(detail="%s/%s is %s's: only its owner may change it" % (owner, name, owner))
    return volumes.get(conn, user, name, lock=lock)


def delete(conn, user, name):
    with conn.transaction():
        vol = _own(conn, user, name)
        volumes.require_detached(conn, vol, "delete")
        volumes.delete(conn, vol)
    volumestore.delete(vol["id"])
    return {"name": vol["name"], "deleted": True}


def resize(conn, user, name, size):
    size = size_of(size)
    with conn.transaction():
        vol = _own(conn, user, name)
        volumes.require_detached(conn, vol, "resize")
        volumes.resize(conn, vol, size)
        volumestore.grow(vol["id"], size)
    return public(dict(vol, size=size), user)


def snapshot(conn, user, name, new):
    """A new volume of user's with name's data, now (name may be attached
    read-only, not read-write: its data would be changing)."""
    with conn.transaction():
        vol = _own(conn, user, name)
        if any(not a["readonly"] for a in volumes.attachments(conn, vol["id"])):
            raise Refused(detail="%s is attached read-write: detach it (or attach it read-only) "
                                 "to snapshot it" % vol["name"])
        copy = volumes.create(conn, user, new, vol["size"], origin="snapshot of %s" % name)
        volumestore.copy(vol["id"], copy["id"])
    return public(copy, user)


def share(conn, user, name, other, on=True):
    with conn.transaction():
        vol = _own(conn, user, name)
        if other == user:
            raise Refused(detail="%s is yours already" % vol["name"])
        if conn.execute("SELECT 1 FROM accounts WHERE name = %s", (other,)).fetchone() is None:
            raise NotFound(what="oarcloud user", name=str(other)[:40])
        volumes.share(conn, vol, other, on)
    return {"name": vol["name"], "shared_with": other, "shared": on}


def attach(conn, user, name, instance, path, readonly=False):
    """Mount user's volume (or OWNER/NAME, read-only) in user's running instance."""
    owner, name = _ref(name)
    row = lifecycle.reachable(conn, user, instance)
    with conn.transaction():
        vol = volumes.get(conn, user, name, owner, lock=True)
        volumes.attach(conn, vol, user, row["domain"], path, readonly)
    try:
        _on_node(row["node"], "volume-attach", row["domain"], vol["id"])
    except BaseException:
        volumes.release(conn, vol["id"], row["domain"])
        raise
    LOG.info("volume %s attached to %s (%s) on %s", name, instance, row["domain"], row["node"])
    return {"name": vol["name"], "owner": vol["owner"], "instance": instance,
            "path": volumes.check_path(path), "readonly": bool(readonly)}


def detach(conn, user, name, instance):
    owner, name = _ref(name)
    row = lifecycle.find(conn, user, instance)
    vol = volumes.get(conn, user, name, owner)
    if not any(a["domain"] == row["domain"] for a in volumes.attachments(conn, vol["id"])):
        raise NotFound(what="attachment", name="%s on %s" % (name, instance))
    if row["state"] not in ("deleted", "failed"):
        # The node unmounts it (refused while in use), then releases it.
        _on_node(row["node"], "volume-detach", row["domain"], vol["id"])
    volumes.release(conn, vol["id"], row["domain"])
    return {"name": vol["name"], "instance": instance, "detached": True}
