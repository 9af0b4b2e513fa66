"""The one exception hierarchy of oarcloud.

Public entry points raise these, never libvirt's, plumbum's or psycopg's.
Each has the exit code the commands end with (docs/cli.md): 1 failed, 2 bad
input or refused, 3 not found, 4 conflict, 5 over quota; `exec` keeps 125
for its own failures (the command's code passes through otherwise).
"""


class OarcloudError(Exception):
    """Root error: a message format filled from keyword arguments."""

    msg_fmt = "oarcloud error: %(detail)s"
    exit_code = 1

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError):
                message = "%s %r" % (self.msg_fmt, kwargs)
        super().__init__(message)


class NotFound(OarcloudError):
    msg_fmt = "%(what)s not found: %(name)s"
    exit_code = 3


class Conflict(OarcloudError):
    msg_fmt = "%(what)s conflicts: %(detail)s"
    exit_code = 4


class Refused(OarcloudError):
    """Bad input: refused before anything is created."""

    msg_fmt = "refused: %(detail)s"
    exit_code = 2


class Forbidden(Refused):
    """Who asks may not do this (their role, another's object they can see)."""

    msg_fmt = "forbidden: %(detail)s"


class OarRefused(Refused):
    """OAR said no to a submission (its admission rules, resources, queue)."""

    msg_fmt = "OAR refused the job: %(detail)s"


class OverQuota(Refused):
    """A creation that would take an account past one of its quotas."""

    msg_fmt = "quota: %(detail)s"
    exit_code = 5


class CommandFailed(OarcloudError):
    msg_fmt = "command failed (exit %(code)s): %(argv)s: %(stderr)s"


class NotReady(OarcloudError):
    """A component that should be there is missing or not running."""

    msg_fmt = "not ready: %(detail)s"


class CatalogError(OarcloudError):
    """The catalog (PostgreSQL) failed or refused a statement."""

    msg_fmt = "the catalog failed: %(detail)s"


def from_foreign(exc):
    """The OarcloudError to show for an exception of a library or of the OS that
    reached an entry point (one line, an exit code), or None for a bug, which
    keeps its traceback.  psycopg is recognised by name, not imported: entry
    points on the path of every `oarcloud exec` never load it."""
    if type(exc).__module__.split(".")[0] == "psycopg":
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return CatalogError(detail="%s (is the catalog up? `oarcloud-admin lab status` or "
                                   "`oarcloud-admin setup server` on the server)" % first[:300])
    if isinstance(exc, OSError):
        where = " (%s)" % exc.filename if exc.filename else ""
        return OarcloudError("%s%s" % (exc.strerror or exc, where))
    return None
