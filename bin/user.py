from plumbum import cli

class User(cli.Application):
    PROGNAME = "oarcloud"
    VERSION = "0.1.0"

def main():
    User.run()
