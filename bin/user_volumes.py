"""oarcloud volume ...: filesystems of yours that outlive instances (docs/storage.md).

Listing reads the catalog as the user (row-level security); every change
goes through the broker, which owns the volume store and asks the node of
the instance to mount or unmount.
"""
from plumbum import cli

from oarcloud_cli.common import Command, Group, broker_json, machine, print_fields, print_json, \
    print_table, size_h


class VolumeCmd(Group):
    """Volumes: filesystems that outlive instances and jobs, reachable from
    every node.  One read-write in one instance at a time, or read-only in
    many; `oarcloud launch --volume NAME:/PATH[:ro]` or `volume attach`."""


def _shown(row):
    row = dict(row, size_h=size_h(row.get("size")), used_h=size_h(row.get("used")))
    row["attached_to"] = ", ".join("%s:%s%s" % (a["instance"] or a["domain"], a["path"],
                                                ":ro" if a["readonly"] else "")
                                   for a in row.get("attachments", []))
    return row


def _changed(out, as_json, line):
    if out is None:
        return 1
    if as_json:
        print_json(machine(out))
    else:
        print(line % out)
    return 0


@VolumeCmd.subcommand("create")
class VolumeCreate(Command):
    """Create a volume of SIZE (e.g. 10G; bare numbers are MiB): empty, or
    holding an image's files (--from)."""

    json = cli.Flag(["--json"], help="machine-readable output")
    size = cli.SwitchAttr(["--size"], str, mandatory=True, help="its size, e.g. 512M, 10G")
    image = cli.SwitchAttr(["--from"], str, argname="IMAGE",
                           help="an image whose files it starts with (a whole image, not a "
                                "saved layer)")

    def run_command(self, name):
        code, out = broker_json("volume-create", name, self.size,
                                *([self.image] if self.image else []))
        return _changed(out and dict(out, size_h=size_h(out["size"])), self.json,
                        "volume %(name)s created: %(size_h)s") if out else code


def _listing():
    from oarcloud_lib.catalog import volumes
    from oarcloud_lib.service import jobs
    from oarcloud_lib.service import volumes as service
    with jobs.connect_as_user() as conn:
        user = jobs.current_user()
        return [_shown(service.public(v, user)) for v in volumes.listing(conn, user)]


@VolumeCmd.subcommand("list")
class VolumeList(Command):
    """Your volumes, then those shared with you (OWNER/NAME, read-only)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        rows = _listing()
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, [("name", "NAME"), ("owner", "OWNER"), ("size_h", "SIZE"),
                               ("access", "ACCESS"), ("attached_to", "ATTACHED TO"),
                               ("created", "CREATED")])


@VolumeCmd.subcommand("show")
class VolumeShow(Command):
    """One volume: its size, origin, where it is attached, with whom it is shared."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.catalog import volumes
        from oarcloud_lib.service import jobs
        from oarcloud_lib.service import volumes as service
        owner, _, short = name.rpartition("/")
        with jobs.connect_as_user() as conn:
            user = jobs.current_user()
            vol = volumes.describe(conn, volumes.get(conn, user, short, owner or None), user)
        row = _shown(service.public(vol, user))
        if self.json:
            print_json(machine(row))
        else:
            print_fields(row, ("name", "owner", "size_h", "access", "origin", "attached_to",
                               "shared_with", "created"))


@VolumeCmd.subcommand("delete")
class VolumeDelete(Command):
    """Delete a volume of yours and its data (refused while it is attached)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        code, out = broker_json("volume-delete", name)
        return _changed(out, self.json, "volume %(name)s deleted") if out else code


@VolumeCmd.subcommand("resize")
class VolumeResize(Command):
    """Grow a volume to SIZE, its data kept (while it is attached nowhere)."""

    json = cli.Flag(["--json"], help="machine-readable output")
    size = cli.SwitchAttr(["--size"], str, mandatory=True, help="its new size, e.g. 20G")

    def run_command(self, name):
        code, out = broker_json("volume-resize", name, self.size)
        return _changed(out and dict(out, size_h=size_h(out["size"])), self.json,
                        "volume %(name)s is now %(size_h)s") if out else code


@VolumeCmd.subcommand("snapshot")
class VolumeSnapshot(Command):
    """Copy a volume of yours, as it is now, into a new volume NEW (while it is
    attached nowhere, or read-only)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name, new):
        code, out = broker_json("volume-snapshot", name, new)
        return _changed(out, self.json, "volume %(name)s created (%(origin)s)") if out else code


@VolumeCmd.subcommand("share")
class VolumeShare(Command):
    """Let USER attach a volume of yours read-only (as YOU/NAME); --off stops it."""

    json = cli.Flag(["--json"], help="machine-readable output")
    off = cli.Flag(["--off"], help="stop sharing it with USER")

    def run_command(self, name, user):
        code, out = broker_json("volume-share", name, user, *(["off"] if self.off else []))
        return _changed(out, self.json, "volume %(name)s: shared with %(shared_with)s: "
                        "%(shared)s") if out else code


@VolumeCmd.subcommand("attach")
class VolumeAttach(Command):
    """Mount a volume in a running instance of yours at PATH (read-write, or
    --ro; OWNER/NAME for one shared with you, read-only)."""

    json = cli.Flag(["--json"], help="machine-readable output")
    ro = cli.Flag(["--ro"], help="read-only")

    def run_command(self, name, instance, path):
        code, out = broker_json("volume-attach", name, instance, path,
                                *(["ro"] if self.ro else []))
        return _changed(out, self.json, "volume %(name)s attached to %(instance)s on "
                        "%(path)s") if out else code


@VolumeCmd.subcommand("detach")
class VolumeDetach(Command):
    """Unmount a volume from an instance of yours (refused while it is in use there)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name, instance):
        code, out = broker_json("volume-detach", name, instance)
        return _changed(out, self.json, "volume %(name)s detached from %(instance)s") \
            if out else code
