"""oarcloud token ...: API tokens for the web dashboard and the HTTP API
(docs/web.md).  Every verb goes through the broker: the catalog keeps only a
token's SHA-256, and only root reads even that."""
from plumbum import cli

from oarcloud_cli.common import Changes, Command, Group, broker_json, iso, print_json, print_table, \
    run_broker


class TokenCmd(Group):
    """Your API tokens: log in to the web dashboard with one (its form, or a
    https://SERVER:8443/?token=TOKEN link), or send it to the HTTP API as
    `Authorization: Bearer TOKEN`.  A token acts as you; revoke one you
    no longer use."""


@TokenCmd.subcommand("create")
class TokenCreate(Changes, Command):
    """Make token NAME (a-z 0-9 . _ -); it is shown once, keep it safe."""

    def run_command(self, name):
        return run_broker("token-create", name, as_json=self.json)


@TokenCmd.subcommand("list")
class TokenList(Command):
    """Your tokens: name, its first characters, when made and last used."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        code, rows = broker_json("token-list")
        if rows is None:
            return code
        if self.json:
            print_json(rows)
        else:
            print_table([dict(r, created=iso(r["created"]), last_used=iso(r["last_used"])
                              if r["last_used"] else "never") for r in rows],
                        [("name", "NAME"), ("hint", "TOKEN"), ("created", "CREATED"),
                         ("last_used", "LAST USED")])
        return 0


@TokenCmd.subcommand("revoke")
class TokenRevoke(Changes, Command):
    """Revoke token NAME: refused from the next request on, and its web
    sessions logged out."""

    def run_command(self, name):
        return run_broker("token-revoke", name, as_json=self.json)
