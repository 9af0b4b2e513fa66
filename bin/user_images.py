"""oarcloud image ...: the user's images (F.u.2, F.u.3).

Listing reads the catalog as the user (row-level security shows only the
images they may use); everything that writes (the store belongs to root)
goes through the broker, which checks who asks.
"""
import os
import subprocess

from plumbum import cli

from oarcloud_cli.common import (Changes, Command, Group, broker_argv, exec_broker, iso, machine,
                                 print_answer, print_fields, print_json, print_table)

IMAGE_COLUMNS = [("name", "NAME"), ("owner_h", "OWNER"), ("visibility", "VISIBILITY"),
                 ("size_h", "SIZE"), ("unpacked_h", "UNPACKED"), ("parent_h", "PARENT"),
                 ("created_h", "CREATED"), ("description", "DESCRIPTION")]
SAVE_COLUMNS = [("id", "ID"), ("image", "IMAGE"), ("instance", "INSTANCE"), ("job_id", "JOB"),
                ("state", "STATE"), ("node", "NODE"), ("updated_h", "UPDATED"),
                ("error", "ERROR")]
CHUNK = 1 << 20


def _mb(n):
    return "%.1fM" % (n / (1 << 20)) if n < 10 << 20 else "%dM" % (n >> 20)


def _public(row):
    out = {k: row[k] for k in ("name", "owner", "visibility", "format", "size", "sha256",
                               "parent", "depth", "unpacked", "description")}
    out["created"] = iso(row["created"])
    out.update(owner_h=row["owner"] or "(site)", size_h=_mb(row["size"]),
               unpacked_h=_mb(row["unpacked"]) if row["unpacked"] else "-",
               created_h=str(row["created"])[:16],
               parent_h=("%s (layer %d)" % (row["parent"], row["depth"]) if row["depth"]
                         else row["parent"] or "-"))
    return out


class ImageCmd(Group):
    """Images: list, import, build, save, share, publish, delete."""


@ImageCmd.subcommand("list")
class ImageList(Command):
    """The images you may launch: public ones, yours, those shared with you."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import images
        from oarcloud_lib.service import jobs
        with jobs.connect_as_user() as conn:
            rows = [_public(r) for r in images.list_usable(conn)]
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, IMAGE_COLUMNS)


@ImageCmd.subcommand("show")
class ImageShow(Command):
    """One image: owner, visibility, size, checksum, its chain of layers, shares."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.catalog import images
        from oarcloud_lib.service import jobs
        with jobs.connect_as_user() as conn:
            row = images.usable(conn, name)
            out = machine(_public(row))
            out["chain"] = [c["name"] for c in images.chain(conn, row)]
            out["shared_with"] = images.shares(conn, name)
        if self.json:
            print_json(out)
            return
        out["chain"] = " <- ".join(out["chain"])
        print_fields(out, ("name", "owner", "visibility", "description", "format", "size",
                           "unpacked", "sha256", "parent", "depth", "chain", "shared_with",
                           "created"), width=12)


def _source(path):
    """(argv of a decompressor or None, what) for a tarball; refuses anything else."""
    from oarcloud_lib.errors import Refused
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        return ["gzip", "-dc"], "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return ["zstd", "-dcq"], "zstd"
    if head[257:262] == b"ustar" or head == b"\0" * len(head):
        return None, "tar"
    raise Refused(detail="%s is not a tar archive (.tar, .tar.gz or .tar.zst) nor a directory"
                  % path)


@ImageCmd.subcommand("import")
class ImageImport(Changes, Command):
    """Import a root filesystem as your (private) image: a tarball (.tar, .tar.gz,
    .tar.zst) or a directory (its files become root's in the image).  Refused: paths
    that leave the root, device nodes other than the usual /dev ones."""

    name = cli.SwitchAttr(["--name"], str, mandatory=True, help="the new image's name")
    description = cli.SwitchAttr(["--description"], str, default="", help="free text")

    def run_command(self, path):
        from oarcloud_lib import progress
        from oarcloud_lib.catalog import images
        from oarcloud_lib.errors import CommandFailed, NotFound
        images.check_name(self.name)
        if not os.path.exists(path):
            raise NotFound(what="file or directory", name=path)
        if os.path.isdir(path):
            # As the user: only what the user may read goes in.
            feeder = subprocess.Popen(["tar", "--numeric-owner", "--owner=0", "--group=0", "-C",
                                       path, "-cf", "-", "."], stdout=subprocess.PIPE)
            source, total, decompress = feeder.stdout, None, None
        else:
            decompress, _ = _source(path)
            feeder, source, total = None, open(path, "rb"), os.path.getsize(path)
        broker = subprocess.Popen(broker_argv("image-import", self.name, self.description,
                                              as_json=self.json), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE if self.json else None, text=False)
        dec = None
        sink = broker.stdin
        if decompress:
            dec = subprocess.Popen(decompress, stdin=subprocess.PIPE, stdout=broker.stdin)
            broker.stdin.close()
            sink = dec.stdin
        meter = progress.Meter("import %s" % self.name, total)
        done = 0
        try:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                sink.write(chunk)
                done += len(chunk)
                meter(done)
            meter(done, final=True)
        except BrokenPipeError:
            pass  # the broker refused: it says why
        finally:
            source.close()
            try:
                sink.close()
            except BrokenPipeError:
                pass
        answer = broker.stdout.read().decode() if self.json else ""
        for proc in (feeder, dec):
            if proc is not None and proc.wait() != 0 and broker.wait() == 0:
                raise CommandFailed(code=proc.returncode, argv=proc.args[0], stderr=path)
        if broker.wait() == 0:
            print_answer(answer)
        return broker.wait()


@ImageCmd.subcommand("build")
class ImageBuild(Changes, Command):
    """Build a public Debian image with debootstrap (admins)."""

    debootstrap = cli.SwitchAttr(["--debootstrap"], str, mandatory=True,
                                 help="Debian suite, e.g. bookworm")
    name = cli.SwitchAttr(["--name"], str, mandatory=True, help="the new image's name")

    def run_command(self):
        exec_broker("image-build", self.debootstrap, self.name, as_json=self.json)


@ImageCmd.subcommand("save")
class ImageSave(Changes, Command):
    """Save a running instance as a new private image: only its changes, as a layer
    over its image (the instance is frozen meanwhile), or the whole root with --flatten."""

    flatten = cli.Flag(["--flatten"], help="a whole image, not a layer over the parent")

    def run_command(self, instance, newname):
        exec_broker("image-save", instance, newname, *(["flatten"] if self.flatten else []),
                    as_json=self.json)


@ImageCmd.subcommand("share")
class ImageShare(Changes, Command):
    """Let USER, or each member of @GROUP, launch (and save from) your image;
    --off stops it (what runs keeps running)."""

    off = cli.Flag(["--off"], help="stop sharing it")

    def run_command(self, name, user):
        exec_broker("image-share", name, user, *(["off"] if self.off else []),
                    as_json=self.json)


@ImageCmd.subcommand("publish")
class ImagePublish(Changes, Command):
    """Make your image public (on sites whose policy lets owners publish; admins always)."""

    def run_command(self, name):
        exec_broker("image-publish", name, as_json=self.json)


@ImageCmd.subcommand("delete")
class ImageDelete(Changes, Command):
    """Delete your image (refused while an instance, a layer or a save uses it)."""

    def run_command(self, name):
        exec_broker("image-delete", name, as_json=self.json)


@ImageCmd.subcommand("saves")
class ImageSaves(Command):
    """Your saves: live ones and those asked with launch --save-on-exit.  A
    save-on-exit that failed (its image name taken meanwhile, say) keeps its
    changes on their node: --retry ID stores them again (--name NEW for
    another image name), --discard ID drops them."""

    json = cli.Flag(["--json"], help="machine-readable output (the list, --retry, --discard)")
    retry = cli.SwitchAttr(["--retry"], str, excludes=["--discard"], help="retry this failed save")
    name = cli.SwitchAttr(["--name"], str, requires=["--retry"],
                          help="the image name for --retry (default: the one it asked)")
    discard = cli.SwitchAttr(["--discard"], str, help="drop the kept changes of this failed save")

    def run_command(self):
        if self.retry:
            exec_broker("image-save-retry", self.retry, *([self.name] if self.name else []),
                        as_json=self.json)
        if self.discard:
            exec_broker("image-save-discard", self.discard, as_json=self.json)
        from oarcloud_lib.server import saves
        from oarcloud_lib.service import jobs
        with jobs.connect_as_user() as conn:
            rows = saves.select(conn)
            names = {r["domain"]: r["name"] for r in jobs.mine(conn, include_deleted=True)}
        for r in rows:
            r.update(instance=names.get(r["domain"], r["domain"]), created=iso(r["created"]),
                     updated=iso(r["updated"]), updated_h=str(r["updated"])[:19])
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, SAVE_COLUMNS)
