"""oarcloud-admin usergroup|nodeset ...: groups of users (catalog.usergroups)
and the node sets kept for some of them (catalog.nodesets).

A group is @NAME wherever a user may be given: `oarcloud image share IMG
@NAME`, `oarcloud net share NET @NAME`, `oarcloud-admin quota set @NAME`,
`oarcloud-admin nodeset grant SET @NAME`.  Every command here is idempotent
and says what it changed.
"""
from plumbum import cli

from oarcloud_cli.common import (Changes, Command, Group, deletes, machine, print_fields,
                                 print_json, print_table, said)


class UsergroupCmd(Group):
    """Groups of users (@NAME), for sharing images and networks and for quotas
    their members hold together."""


def _group(name):
    """NAME or @NAME."""
    return name[1:] if name.startswith("@") else name


@UsergroupCmd.subcommand("create")
class UsergroupCreate(Changes, Command):
    """Create group NAME with USER... in it (an existing group gets those it lacks)."""

    def run_command(self, name, *users):
        from oarcloud_lib.catalog import db, usergroups
        with db.connect() as conn:
            row, created, added = usergroups.create(conn, _group(name), users)
        said(self.json, dict(row, created=bool(created), added=added),
             "group @%s %s%s" % (row["name"], "created" if created else "exists",
                                  ", added %s" % ", ".join(added) if added
                                  else "" if created else ", nothing changed"))


@UsergroupCmd.subcommand("add")
class UsergroupAdd(Changes, Command):
    """Put USER... in group NAME."""

    def run_command(self, name, user, *users):
        from oarcloud_lib.catalog import db, usergroups
        with db.connect() as conn:
            added = usergroups.add(conn, _group(name), (user,) + users)
        said(self.json, {"name": _group(name), "added": added},
             "group @%s: %s" % (_group(name), "added " + ", ".join(added) if added
                                else "nothing changed"))


@UsergroupCmd.subcommand("remove")
class UsergroupRemove(Changes, Command):
    """Take USER... out of group NAME: what they run keeps running; what the
    group gives (its shares, its quota) stops for what they create next."""

    def run_command(self, name, user, *users):
        from oarcloud_lib.catalog import db, usergroups
        with db.connect() as conn:
            removed = usergroups.remove(conn, _group(name), (user,) + users)
        said(self.json, {"name": _group(name), "removed": removed},
             "group @%s: %s" % (_group(name), "removed " + ", ".join(removed) if removed
                                else "nothing changed"))


@deletes(UsergroupCmd)
class UsergroupDelete(Changes, Command):
    """Delete group NAME with its shares and quotas (its members' accounts stay)."""

    def run_command(self, name):
        from oarcloud_lib.catalog import db, usergroups
        with db.connect() as conn:
            deleted = usergroups.delete(conn, _group(name))
        said(self.json, {"name": _group(name), "deleted": deleted},
             "group @%s %s" % (_group(name), "deleted" if deleted else "was not there"))


@UsergroupCmd.subcommand("list")
class UsergroupList(Command):
    """Every group and its members."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import db, usergroups
        with db.connect() as conn:
            rows = usergroups.listing(conn)
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table([dict(r, name="@" + r["name"], members=", ".join(r["members"]) or "-")
                         for r in rows], [("name", "GROUP"), ("members", "MEMBERS")])


@UsergroupCmd.subcommand("show")
class UsergroupShow(Command):
    """One group: its members, the images and networks shared with it, its quotas."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.catalog import db, quotas, usergroups
        with db.connect() as conn:
            row = usergroups.show(conn, _group(name))
        if self.json:
            print_json(machine(row))
            return
        print_fields(dict(row, name="@" + row["name"], **{
            k: ", ".join(row[k]) or "-" for k in ("members", "images", "networks")},
            quotas=", ".join("%s %s" % (r, quotas.shown(r, m)) for r, m in row["quotas"].items())
            or "-"), ("name", "members", "images", "networks", "quotas", "created"), width=9)


# -- node sets ----------------------------------------------------------------------------

class NodesetCmd(Group):
    """Node sets: the nodes whose OAR property P is V, kept for the users and
    groups granted them (everyone else's cloud jobs are kept off them)."""


@NodesetCmd.subcommand("create")
class NodesetCreate(Changes, Command):
    """Create node set NAME: the nodes whose OAR property is the value given
    (set it with `oarcloud-admin node add --property`).  From now on only
    those granted it may run cloud jobs there; what runs keeps running."""

    prop = cli.SwitchAttr(["--property"], str, mandatory=True, argname="P=V",
                          help="an OAR property and its value, e.g. cluster=gpu")

    def run_command(self, name):
        from oarcloud_lib.catalog import db, nodesets
        from oarcloud_lib.server import nodeops
        from oarcloud_lib.tools import oar
        nodesets.check_name(name)
        ((prop, value),) = nodeops.parse_properties([self.prop],
                                                    oar.OarServer().properties()).items()
        with db.connect() as conn:
            row, created = nodesets.create(conn, name, prop, value)
        said(self.json, dict(row, created=bool(created)), "node set %s %s: nodes with %s=%s" % (
            name, "created" if created else "exists, nothing changed", prop, value))


@NodesetCmd.subcommand("grant")
class NodesetGrant(Changes, Command):
    """Let USER, or each member of @GROUP, run cloud jobs on the set's nodes;
    --off takes it back (what runs keeps running)."""

    off = cli.Flag(["--off"], help="take the grant back")

    def run_command(self, name, user):
        from oarcloud_lib.catalog import db, nodesets
        with db.connect() as conn:
            changed = nodesets.grant(conn, name, user, not self.off)
        said(self.json, {"name": name, "grantee": user, "granted": not self.off,
                         "changed": changed},
             "node set %s: %s %s%s" % (name, user, "may not use it" if self.off else
                                       "may use it", "" if changed else " (nothing changed)"))


@deletes(NodesetCmd)
class NodesetDelete(Changes, Command):
    """Delete node set NAME: its nodes are everyone's again."""

    def run_command(self, name):
        from oarcloud_lib.catalog import db, nodesets
        with db.connect() as conn:
            deleted = nodesets.delete(conn, name)
        said(self.json, {"name": name, "deleted": deleted},
             "node set %s %s" % (name, "deleted" if deleted else "was not there"))


@NodesetCmd.subcommand("list")
class NodesetList(Command):
    """Every node set, its property and who may use it."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import db, nodesets
        with db.connect() as conn:
            rows = nodesets.listing(conn)
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table([dict(r, prop="%s=%s" % (r["property"], r["value"]),
                              granted=", ".join(r["granted"]) or "-") for r in rows],
                        [("name", "NAME"), ("prop", "NODES WITH"), ("granted", "GRANTED TO")])
