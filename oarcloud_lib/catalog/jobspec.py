"""The `cloud` OAR job types: syntax, validation, and what they mean.

    oarsub -t cloud [-t cloud=IMAGE] [-t cloud.KEY=VALUE ...] -l nodes=N,walltime=...

`-t cloud` alone launches the site's default image with the job's resources;
`cloud=IMAGE` is short for `cloud.image=IMAGE`.  Every key is checked here (in
Python, for `oarcloud launch` and again on the node) and by the admission rule
(in Perl, rendered from the same patterns), so a value that reaches a hook has
passed both.
"""
import re
from dataclasses import dataclass, field

from oarcloud_lib.errors import Refused

# One pattern per key.  They must mean the same in Python's re and in Perl:
# plain classes and counted repeats only, anchored by the callers.
NAME_RE = r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?"
MAX_NAME = 32  # what NAME_RE takes
IMAGE_RE = r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
KEYS = {
    "image": IMAGE_RE,
    "name": NAME_RE,
    "count": r"[1-9][0-9]{0,2}",
    "cores": r"[1-9][0-9]{0,2}",
    "memory": r"[1-9][0-9]{0,6}[KMGT]?",
    "disk": r"[1-9][0-9]{0,6}[KMGT]?",
    # NAME, or OWNER/NAME: one shared with the submitter
    "network": r"(?:[a-z_][a-z0-9_-]{0,31}\/)?" + NAME_RE,
    "ip": r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}",
    "save": IMAGE_RE,
    "userdata": r"[1-9][0-9]{0,9}",
    "files": r"[1-9][0-9]{0,9}",
    # NAME or OWNER/NAME (one shared with the submitter), :/PATH, then :ro or not
    # ('/' escaped: Perl's qr/.../ takes the pattern as it is)
    "alloc": NAME_RE,
    "volume": r"(?:[a-z_][a-z0-9_-]{0,31}\/)?[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?"
              r":\/[A-Za-z0-9._\/-]{1,255}(?::ro)?",
}
REPEATABLE = {"network", "volume"}
DESCRIPTIONS = {
    "image": "image name from the catalog (default: the site's default image)",
    "name": "instance name (lowercase letters, digits, '-'; default oc<JOBID>)",
    "count": "instances in the job, spread over its nodes (default: one per node)",
    "cores": "cores per instance (default: the job's cores on the node, split)",
    "memory": "memory per instance, e.g. 512M or 2G (default: site default)",
    "disk": "disk per instance: what its root may hold, e.g. 512M or 20G (default: site default)",
    "network": "private network to attach, NAME or OWNER/NAME for one shared with you "
               "(repeatable; default: the user's default)",
    "ip": "fixed IPv4 address in the first network (one instance only)",
    "save": "image name to save the instance to when the job ends",
    "userdata": "first-boot user data stored by `oarcloud launch --user-data FILE` (its id)",
    "files": "files stored by `oarcloud launch --file SRC:DEST`, copied in before the start "
             "(their bundle's id)",
    "volume": "volume to mount, NAME:/PATH or NAME:/PATH:ro (repeatable; docs/storage.md)",
    "alloc": "an allocation's name: the job holds its cores for `oarcloud launch --in NAME` "
             "and has no instance of its own (with cloud.cores: the cores on each node)",
}
# What an allocation's job may say besides its name.
ALLOC_KEYS = {"alloc", "cores"}
NAME_PATTERN = re.compile(NAME_RE + r"\Z")
MAX_COUNT = 999
_SIZE_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass
class CloudSpec:
    """The parsed cloud part of a job's types."""

    image: str | None = None
    name: str | None = None
    count: int | None = None
    cores: int | None = None
    memory: int | None = None  # bytes
    disk: int | None = None  # bytes
    networks: list = field(default_factory=list)
    volumes: list = field(default_factory=list)  # NAME:/PATH[:ro] each
    save: str | None = None
    ip: str | None = None
    userdata: int | None = None  # a user_data row's id
    files: int | None = None  # a launch_files row's id
    alloc: str | None = None  # an allocation's job: no instance of its own

    def to_types(self):
        """The `-t` values that express this spec (inverse of parse_types)."""
        types = ["cloud"]
        for key in ("image", "name", "count", "cores", "save", "ip", "userdata", "files",
                    "alloc"):
            value = getattr(self, key)
            if value is not None:
                types.append("cloud.%s=%s" % (key, value))
        for key in ("memory", "disk"):
            value = getattr(self, key)
            if value is not None:
                # The largest unit that holds it exactly (16G, not 16777216K:
                # the value takes at most 7 digits).
                unit = next(u for u in "TGMK" if value % _SIZE_UNITS[u] == 0)
                types.append("cloud.%s=%d%s" % (key, value // _SIZE_UNITS[unit], unit))
        types += ["cloud.network=%s" % n for n in self.networks]
        types += ["cloud.volume=%s" % v for v in self.volumes]
        return types


def parse_size(text):
    """'512M' -> bytes; a bare number is MiB.  Raises Refused."""
    m = re.fullmatch(KEYS["memory"], text or "")
    if not m:
        raise Refused(detail="bad size %r: use a positive number with K, M, G or T" % text)
    unit = text[-1] if text[-1] in _SIZE_UNITS else ""
    return int(text[:-1] if unit else text) * _SIZE_UNITS[unit]


def is_cloud_type(jobtype):
    return jobtype == "cloud" or jobtype.startswith(("cloud=", "cloud."))


def _check(key, value, jobtype):
    if not re.fullmatch(KEYS[key], value):
        raise Refused(detail="invalid cloud job type %r: bad value for %s (%s)"
                      % (jobtype, key, DESCRIPTIONS[key]))


def parse_types(types):
    """CloudSpec from a job's type list, or None when the job is not a cloud job.

    Raises Refused for any malformed cloud type (what the admission rule refuses).
    """
    cloud = [t for t in types if is_cloud_type(t)]
    if not cloud:
        return None
    if "cloud" not in cloud and not any(t.startswith("cloud=") for t in cloud):
        raise Refused(detail="cloud.* job types need the job type 'cloud' too")
    spec = CloudSpec()
    seen = set()
    for t in cloud:
        if t == "cloud":
            continue
        if t.startswith("cloud="):
            key, value = "image", t[len("cloud="):]
        else:
            key, sep, value = t[len("cloud."):].partition("=")
            if not sep or key not in KEYS:
                raise Refused(detail="invalid cloud job type %r: known keys are %s"
                              % (t, ", ".join(sorted(KEYS))))
        _check(key, value, t)
        if key in seen and key not in REPEATABLE:
            raise Refused(detail="cloud job type key %r given twice" % key)
        seen.add(key)
        if key == "network":
            spec.networks.append(value)
        elif key == "volume":
            spec.volumes.append(value)
        elif key in ("count", "cores", "userdata", "files"):
            setattr(spec, key, int(value))
        elif key in ("memory", "disk"):
            setattr(spec, key, parse_size(value))
        else:
            setattr(spec, key, value)
    if spec.alloc and seen - ALLOC_KEYS:
        raise Refused(detail="an allocation (cloud.alloc) holds no instance of its own: it "
                             "takes cloud.cores only, not %s" % ", ".join(sorted(seen - ALLOC_KEYS)))
    if spec.name and spec.count and spec.count > 1 \
            and len(spec.name) + len("-%d" % (spec.count - 1)) > MAX_NAME:
        # Its instances are NAME-0 ... NAME-(count-1): each must be a valid name.
        raise Refused(detail="name %r is too long for %d instances: at most %d characters "
                             "with '-%d'" % (spec.name, spec.count, MAX_NAME, spec.count - 1))
    return spec
