"""oarcloud: the user's command (instances, images, networks...) — runs as the user."""
import sys

from plumbum import cli

from oarcloud_cli.common import VERSION, is_root


class User(cli.Application):
    """Self-service instances on the nodes OAR reserves for you.

    Every command acts as the calling Unix user, who must have an oarcloud
    account (`oarcloud-admin user add NAME`).
    """

    PROGNAME = "oarcloud"
    VERSION = VERSION

    def main(self, *args):
        if is_root():
            print("oarcloud: error: run oarcloud as your own user, not as root "
                  "(OAR refuses jobs from root; admins use oarcloud-admin)", file=sys.stderr)
            return 2
        if args:
            print("oarcloud: unknown command %r (see --help)" % args[0], file=sys.stderr)
            return 2
        if not self.nested_command:
            self.help()
            return 2


def main():
    User.run()


if __name__ == "__main__":
    main()
