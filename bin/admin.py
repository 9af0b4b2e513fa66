"""oarcloud-admin: the site administrator's command (runs as root)."""
import sys

from plumbum import cli

from oarcloud_cli.common import VERSION, Command, is_root, print_json, print_table


class Admin(cli.Application):
    """Administer an oarcloud site: server and node setup, the lab, accounts."""

    PROGNAME = "oarcloud-admin"
    VERSION = VERSION

    def main(self, *args):
        if args:
            print("oarcloud-admin: unknown command %r (see --help)" % args[0], file=sys.stderr)
            return 2
        if not self.nested_command:
            self.help()
            return 0
        if not is_root():
            print("oarcloud-admin: must run as root (it configures OAR, PostgreSQL and nodes)",
                  file=sys.stderr)
            return 2


@Admin.subcommand("setup")
class Setup(cli.Application):
    """Install and configure oarcloud on this machine (server or node); idempotent."""

    def main(self, *args):
        if not self.nested_command:
            self.help()
            return 2


@Setup.subcommand("server")
class SetupServer(Command):
    """PostgreSQL, the OAR server (hooks, admission rule, cloud property) and the catalog."""

    address = cli.SwitchAttr(["--address"], str, default="127.0.0.1",
                             help="address nodes use to reach this server (DB, OAR)")
    nodes_cidr = cli.SwitchAttr(["--nodes-cidr"], str, default="",
                                help="network the nodes connect from (PostgreSQL access)")

    def run_command(self):
        from oarcloud_lib import serversetup
        serversetup.setup_server(self.address, self.nodes_cidr)


def main():
    Admin.run()
