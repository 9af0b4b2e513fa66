"""oarcloud alloc ...: cores OAR holds for you, where `launch --in` starts
instances at once (docs/allocations.md).

create and delete submit and end the allocation's OAR job as you; list and
show read the catalog as you (row-level security); launching in one and
deleting its instances go through the broker, which places them in what
the allocation holds and has its nodes start or remove them.
"""
from plumbum import cli

from oarcloud_cli.common import Changes, Command, Group, deletes, iso, machine, \
    print_fields, print_json, print_table


class AllocCmd(Group):
    """Allocations: an OAR job that holds cores on nodes for you, with no
    instance of its own.  `oarcloud launch --in NAME` starts instances in
    it at once, without waiting for OAR's scheduler; when it ends (walltime
    or `alloc delete`), everything in it is torn down."""


def _shown(row):
    nodes = row.get("nodes") or {}
    return dict(row, created=iso(row.get("created")),
                cores_h="%s/%s" % (row.get("used", 0), row["cores"]) if row.get("cores")
                else "-",
                nodes_h=", ".join("%s %d/%d" % (n, c["used"], c["cores"])
                                  for n, c in sorted(nodes.items())) or "-",
                instances_h=", ".join(row.get("instances") or []) or "-")


@AllocCmd.subcommand("create")
class AllocCreate(Changes, Command):
    """Submit an allocation: NAME holds --cores C on each of --nodes N nodes
    (whole nodes without --cores) for --walltime, from now or --at a time."""

    nodes = cli.SwitchAttr(["--nodes"], cli.Range(1, 1000), default=1, help="nodes (default 1)")
    cores = cli.SwitchAttr(["--cores"], cli.Range(1, 999), help="cores on each node "
                                                                 "(default: whole nodes)")
    walltime = cli.SwitchAttr(["--walltime"], str, mandatory=True, help="HH:MM[:SS]")
    at = cli.SwitchAttr(["--at"], str, argname="'YYYY-MM-DD HH:MM'",
                        help="an advance reservation (oarsub -r)")
    prop = cli.SwitchAttr(["--property", "-p"], str, argname="SQL",
                          help="only resources matching this condition (oarsub -p)")
    wait = cli.Flag(["--wait"], help="wait until OAR started it")

    def run_command(self, name):
        from oarcloud_lib import daemons
        from oarcloud_lib.errors import NotReady
        from oarcloud_lib.service import allocations, jobs
        with jobs.connect_as_user() as conn:
            user = jobs.current_user()
            job_id = allocations.create(conn, user, name, self.nodes, self.cores, self.walltime,
                                        self.at, prop=self.prop)
            state = "submitted"
            if self.wait:
                if not daemons.wait_for(lambda: allocations._rows(conn, user, name),
                                        timeout=300, interval=0.2):
                    raise NotReady(detail="allocation %s (job %d) did not start in 300 s: "
                                          "oarcloud alloc list shows it" % (name, job_id))
                state = "running"
        if self.json:
            print_json({"name": name, "job_id": job_id, "state": state})
        else:
            print("allocation %s: job %d %s" % (name, job_id, state))


@AllocCmd.subcommand("list")
class AllocList(Command):
    """Your allocations: cores used of held on each node, their instances."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.service import allocations, jobs
        with jobs.connect_as_user() as conn:
            rows = [_shown(r) for r in allocations.listing(conn, jobs.current_user())]
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, [("name", "NAME"), ("state", "STATE"), ("job_id", "JOB"),
                               ("cores_h", "CORES"), ("nodes_h", "NODES"),
                               ("instances_h", "INSTANCES")])


@AllocCmd.subcommand("show")
class AllocShow(Command):
    """One allocation: its job, its cores on each node, its instances."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.service import allocations, jobs
        with jobs.connect_as_user() as conn:
            row = _shown(allocations.show(conn, jobs.current_user(), name))
        if self.json:
            print_json(machine(row))
        else:
            print_fields(row, ("name", "state", "job_id", "cores_h", "nodes_h", "instances_h",
                               "created"))


def _delete(name, as_json):
    from oarcloud_lib.service import allocations, jobs
    with jobs.connect_as_user() as conn:
        job_id = allocations.delete(conn, jobs.current_user(), name)
    if as_json:
        print_json({"name": name, "job_id": job_id, "deleted": True})
    else:
        print("deleted allocation %s (job %d): its instances go with it" % (name, job_id))


@deletes(AllocCmd)
class AllocDelete(Changes, Command):
    """End an allocation's OAR job: every instance in it is torn down."""

    def run_command(self, name):
        _delete(name, self.json)
