"""oarcloud key ...: the SSH keys every new instance of yours gets.

Listing reads the catalog as the user (row-level security); adding and
deleting go through the broker, which checks the key and who asks.
"""
import sys

from plumbum import cli

from oarcloud_cli.common import Command, Group, broker_json, deletes, iso, print_json, print_table


class KeyCmd(Group):
    """Your SSH keys: your account's own and those you add.  Every instance
    launched afterwards gets them all (root's and your user's authorized_keys);
    running instances keep the keys they started with."""


@KeyCmd.subcommand("add")
class KeyAdd(Command):
    """Add a public key (a .pub file, or - for standard input)."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, key_file):
        try:
            text = sys.stdin.read(1 << 16) if key_file == "-" else open(key_file).read(1 << 16)
        except (OSError, UnicodeDecodeError) as e:
            print("oarcloud key add: error: cannot read %s: %s" % (key_file, e), file=sys.stderr)
            return 2
        code, out = broker_json("key-add", data=text)
        if out is None:
            return code
        if self.json:
            print_json(out)
        else:
            print("key %s %s%s" % (out["fingerprint"], "added" if out["added"] else
                                   "already there, nothing changed",
                                   " (%s)" % out["comment"] if out["comment"] else ""))
        return 0


@KeyCmd.subcommand("list")
class KeyList(Command):
    """Your keys, the account's own first."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        from oarcloud_lib.catalog import accounts
        from oarcloud_lib.service import jobs
        with jobs.connect_as_user() as conn:
            rows = accounts.keys(conn, jobs.current_user())
        for r in rows:
            r["created"] = iso(r["created"])
            r["kind"] = "account" if r["account_key"] else "added"
        if self.json:
            print_json(rows)
        else:
            print_table(rows, [("fingerprint", "FINGERPRINT"), ("kind", "KIND"),
                               ("comment", "COMMENT"), ("created", "ADDED")])


@deletes(KeyCmd)
class KeyDel(Command):
    """Delete a key you added, by its fingerprint or its comment."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, fingerprint_or_comment):
        code, out = broker_json("key-del", fingerprint_or_comment)
        if out is None:
            return code
        if self.json:
            print_json(out)
        else:
            print("key %s deleted" % out["fingerprint"])
        return 0
