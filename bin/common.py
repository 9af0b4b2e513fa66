"""What both CLIs share: error mapping, JSON/table output, identity checks."""
import json
import logging
import os
import re
import sys

from plumbum import cli
from plumbum.cli.switches import SwitchError

from oarcloud_lib.errors import OarcloudError, from_foreign

VERSION = "0.1.0"
# Control characters (terminal escapes among them) never reach a terminal:
# tables and fields show values other users chose (image descriptions, names).
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value, keep=""):
    """str(value) with control characters (but those in keep) shown as '?'."""
    return CONTROL_RE.sub(lambda m: m.group() if m.group() in keep else "?", str(value))


# The output format a command was given (-f/--format, -c/--column): set by
# Command.main before the command runs, read by print_json and print_table.
FORMATS = ("table", "json", "yaml", "csv", "value")
OUTPUT = {"format": "table", "columns": []}


def _picked(keys):
    """keys, or only those -c named (in -c's order); an unknown column is an error."""
    wanted = OUTPUT["columns"]
    if not wanted:
        return list(keys)
    lower = {k.lower(): k for k in keys}
    missing = [c for c in wanted if c.lower() not in lower]
    if missing:
        raise SystemExit("oarcloud: error: no column %s here (there are: %s)"
                         % (", ".join(missing), ", ".join(keys)))
    return [lower[c.lower()] for c in wanted]


def _cell(value):
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return "" if value is None else str(value)


def print_json(data):
    """Machine-readable data in the format asked: json (the default of --json),
    yaml, csv or value (rows: a list of dicts, or one dict); -c picks keys."""
    fmt = OUTPUT["format"]
    rows = data if isinstance(data, list) else [data]
    if OUTPUT["columns"] and all(isinstance(r, dict) for r in rows):
        keys = _picked(list(dict.fromkeys(k for r in rows for k in r)))
        rows = [{k: r.get(k) for k in keys} for r in rows]
        data = rows if isinstance(data, list) else rows[0]
    if fmt == "yaml":
        import yaml
        print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=True,
                             default_flow_style=False).rstrip("\n"))
    elif fmt in ("csv", "value") and all(isinstance(r, dict) for r in rows):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        if not isinstance(data, list) and fmt == "csv" and not OUTPUT["columns"]:
            rows, keys = [{"field": k, "value": v} for k, v in data.items()], ["field", "value"]
        if fmt == "csv":
            import csv
            out = csv.writer(sys.stdout, lineterminator="\n")
            out.writerow(keys)
            out.writerows([_cell(r.get(k)) for k in keys] for r in rows)
        else:
            for r in rows:
                print(" ".join(printable(_cell(r.get(k))) for k in keys))
    else:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(rows, columns):
    """rows: list of dicts; columns: list of (key, header); -c keeps the columns
    it names (by key or header)."""
    if OUTPUT["columns"]:
        by = {}
        for k, h in columns:
            by.setdefault(k.lower(), (k, h))
            by.setdefault(h.lower(), (k, h))
        missing = [c for c in OUTPUT["columns"] if c.lower() not in by]
        if missing:
            raise SystemExit("oarcloud: error: no column %s here (there are: %s)"
                             % (", ".join(missing), ", ".join(h for _, h in columns)))
        columns = [by[c.lower()] for c in OUTPUT["columns"]]
    cells = [[h for _, h in columns]] + [["" if r.get(k) is None else printable(r.get(k))
                                          for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    if sys.stdout.isatty():  # a terminal: fit its width; a pipe gets every character
        import shutil
        widths = fit(widths, shutil.get_terminal_size().columns,
                     [len(h) for _, h in columns])
    for row in cells:
        print("  ".join(clip(c, w).ljust(w) for c, w in zip(row, widths)).rstrip())


def fit(widths, total, least=None, gap=2):
    """Column widths that fit total characters (gap between columns): the
    widest columns give way first, none below its header's width or 8."""
    widths = list(widths)
    least = [max(8, n) for n in (least or [0] * len(widths))]
    while sum(widths) + gap * (len(widths) - 1) > total:
        i = max(range(len(widths)), key=lambda j: widths[j] - least[j])
        if widths[i] <= least[i]:
            break  # as narrow as they go: the terminal wraps the rest
        widths[i] -= 1
    return widths


def clip(text, width):
    """text in width characters, its end marked when it is cut."""
    return text if len(text) <= width else text[:max(0, width - 1)] + "\u2026"


def iso(when):
    """A catalog timestamp as ISO 8601, to the second (None stays None)."""
    return when.isoformat(timespec="seconds") if hasattr(when, "isoformat") else when


def size_h(size):
    """A size for people: 4G, 1.5G, 512M (None for none)."""
    if not size:
        return None
    return "%gG" % round(size / (1 << 30), 1) if size >= 1 << 30 else "%dM" % (size >> 20)


def machine(row):
    """The --json form of a row: without its human-readable `_h` fields."""
    return {k: v for k, v in row.items() if not k.endswith("_h")}


def print_fields(out, keys, width=14):
    """One `key: value` line per key that has a value (a `_h` suffix names the
    human-readable form of a field); lists joined with ', '."""
    for k in keys:
        v = out.get(k)
        if v is None:
            continue
        if isinstance(v, list):
            v = ", ".join(v) or "-"
        print("%-*s %s" % (width, k.replace("_h", "") + ":", printable(v)))


def print_quota(rows, as_json):
    """A quota report (catalog.quotas.report): used next to the limit."""
    if as_json:
        print_json([machine(r) for r in rows])
        return
    print_table([dict(r, source=r["source"] or "-") for r in rows],
                [("resource", "RESOURCE"), ("used_h", "USED"), ("limit_h", "LIMIT"),
                 ("source", "SET BY"), ("counts", "COUNTS")])


def _mib(value):
    return "-" if value is None else "%d" % (value >> 20)


def print_nodes(rows, as_json):
    """Nodes as server.nodeops.inventory gives them (node list)."""
    if as_json:
        print_json(rows)
        return
    print_table([dict(r, drain=r["drain"] + (" by %s" % r["deadline"][:16]
                                             if r["deadline"] else ""),
                      instances=len(r["instances"]), memory=_mib(r["memory_used"]),
                      cache=_mib(r["cache_bytes"]),
                      maintenance=r["maintenance"][0]["starts"][:16]
                      if r["maintenance"] else "-") for r in rows],
                [("node", "NODE"), ("state", "STATE"), ("drain", "DRAIN"),
                 ("cores", "CORES"), ("cores_used", "USED"), ("cores_free", "FREE"),
                 ("instances", "INSTANCES"), ("memory", "MEM MiB"),
                 ("cache", "CACHE MiB"), ("maintenance", "MAINTENANCE")])


def print_node(row, as_json):
    """One node of server.nodeops.inventory (node show)."""
    if as_json:
        print_json(row)
        return
    out = dict(row, jobs=[str(j) for j in row["jobs"]], cloud=row["cloud"],
               memory_used=_mib(row["memory_used"]) + " MiB",
               cache="%s MiB in %s image(s)" % (_mib(row["cache_bytes"]), row["cache_entries"]))
    print_fields(out, ("node", "state", "drain", "deadline", "cloud", "cores", "cores_used",
                       "cores_free", "jobs", "instances", "instance_owners", "memory_used",
                       "cache"), width=16)


def broker_argv(verb, *args, as_json=False):
    """The instance and image broker, as root through sudo: it checks who asks
    (as_json: it answers with what it created or changed, in JSON)."""
    from oarcloud_lib import paths
    return ["sudo", "-n", str(paths.HOOKS_INSTALL_DIR / "broker"), *(["--json"] if as_json
                                                                      else []), verb, *args]


def run_broker(verb, *args, data="", as_json=False):
    """Run a broker verb with data on its stdin (secrets stay off command lines);
    its output passes through (as_json: its answer, in the format asked, -f).
    Returns its exit code."""
    import subprocess
    if as_json:
        res = subprocess.run(broker_argv(verb, *args, as_json=True), input=data, text=True,
                             stdout=subprocess.PIPE)
        print_answer(res.stdout)
        return res.returncode
    return subprocess.run(broker_argv(verb, *args), input=data, text=True).returncode


def print_answer(text):
    """A broker's JSON answer, printed in the format asked (-f)."""
    if text.strip():
        print_json(json.loads(text))


def broker_json(verb, *args, data=""):
    """Run a broker verb that answers in JSON: (exit code, the answer or None);
    its errors pass through to stderr."""
    import subprocess
    res = subprocess.run(broker_argv(verb, *args), input=data, text=True,
                         stdout=subprocess.PIPE)
    return res.returncode, (json.loads(res.stdout) if res.returncode == 0 else None)


def store_user_data(path):
    """The id of a user data file (--user-data), checked here, stored by the
    broker."""
    from oarcloud_lib.catalog import userdata
    with open(path, "rb") as f:
        data = f.read(userdata.MAX_BYTES + 1)
    userdata.parse(data)  # refused here before anything is stored
    code, out = broker_json("user-data-put", data=data.decode())
    if out is None:
        raise SystemExit(code)  # the broker said why, in one line
    return out["id"]


def exec_broker(verb, *args, as_json=False):
    """Become the broker running verb (as_json: run it, print its answer in
    the format asked, and exit with its code)."""
    if as_json:
        sys.exit(run_broker(verb, *args, as_json=True))
    argv = broker_argv(verb, *args)
    os.execvp(argv[0], argv)


class OneLineErrors:
    """A bad switch or switch value: one line on stderr that says where to look,
    exit code 2 (plumbum would print the whole help on stdout)."""

    def _parse_args(self, argv):
        try:
            return super()._parse_args(argv)
        except SwitchError as e:
            self._switch_error(e)

    def _validate_args(self, swfuncs, tailargs):
        try:
            return super()._validate_args(swfuncs, tailargs)
        except SwitchError as e:
            self._switch_error(e)

    def _switch_error(self, e):
        if type(e).__name__.startswith("Show"):  # --help, --help-all, --version, --completions
            raise e
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":.")
        # plumbum names a switch without its dashes: say it as it is typed
        first = re.sub(r"^Argument of (\w[\w-]*) expected to be",
                       lambda m: "%s%s expects" % ("-" if len(m[1]) == 1 else "--", m[1]), first)
        first = first.replace("<class 'int'>", "a whole number")
        print("%s: error: %s (see --help)" % (self.PROGNAME, first), file=sys.stderr)
        raise SystemExit(2)


class Group(OneLineErrors, cli.Application):
    """A command group: without a subcommand, show its help."""

    USAGE = "    {progname} [SWITCHES] COMMAND [ARGS...]\n"

    def main(self, *args):
        if args:
            print("%s: unknown command %r (see --help)" % (self.PROGNAME, args[0]), file=sys.stderr)
            return 2
        if not self.nested_command:
            self.help()
            return 2
        return None


class Command(OneLineErrors, cli.Application):
    """Base of every subcommand: runs .run_command() and maps our errors to exit codes."""

    verbose = cli.Flag(["-v", "--verbose"], help="log what is being done")
    output_format = cli.SwitchAttr(["-f", "--format"], cli.Set(*FORMATS), argname="FORMAT",
                                   overridable=True,
                                   help="output of a command that has --json: table (the "
                                        "default), json, yaml, csv or value")
    output_columns = cli.SwitchAttr(["-c", "--column"], str, list=True, argname="COLUMN",
                                    help="only this column or field (repeatable; in the "
                                         "order given)")

    def __init_subclass__(cls, **kwargs):
        """The usage line names run_command's arguments (`oarcloud show NAME`,
        not plumbum's `args...`)."""
        super().__init_subclass__(**kwargs)
        if "run_command" in cls.__dict__ and "USAGE" not in cls.__dict__:
            import inspect
            words = []
            for p in list(inspect.signature(cls.run_command).parameters.values())[1:]:
                name = p.name.upper().replace("_", "-")
                if p.kind == p.VAR_POSITIONAL:
                    words.append("[%s...]" % name.rstrip("S"))
                elif p.default is not p.empty:
                    words.append("[%s]" % name)
                else:
                    words.append(name)
            cls.USAGE = "    {progname} [SWITCHES] %s\n" % " ".join(words)

    def main(self, *args):
        logging.basicConfig(level=logging.DEBUG if self.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        fmt = (self.output_format or "table").lower()
        if (fmt != "table" or self.output_columns) and not hasattr(self, "json"):
            print("%s: error: -f and -c are for commands that print listings or fields "
                  "(those with --json)" % self.PROGNAME, file=sys.stderr)
            return 2
        OUTPUT.update(format="json" if getattr(self, "json", False) and fmt == "table" else fmt,
                      columns=list(self.output_columns))
        if fmt != "table":
            self.json = True  # every format but the table is made from the --json data
        import inspect
        try:
            inspect.signature(self.run_command).bind(*args)
        except TypeError:
            wanted = [p.name.upper() for p in
                      inspect.signature(self.run_command).parameters.values()]
            print("%s: expected %s, got %s (see --help)"
                  % (self.PROGNAME, " ".join(wanted) or "no argument",
                     " ".join(args) or "nothing"), file=sys.stderr)
            return 2
        try:
            return self.run_command(*args)
        except OarcloudError as e:
            print("%s: error: %s" % (self.root_app.PROGNAME, e), file=sys.stderr)
            return e.exit_code
        except Exception as e:  # noqa: BLE001 -- a library's or the OS's: one line too
            ours = from_foreign(e)
            if ours is None:
                raise
            print("%s: error: %s" % (self.root_app.PROGNAME, ours), file=sys.stderr)
            return ours.exit_code
        except KeyboardInterrupt:
            print("%s: interrupted" % self.root_app.PROGNAME, file=sys.stderr)
            return 130

    def run_command(self, *args):
        raise NotImplementedError


class Changes:
    """A command that changes something: --json prints what it created or
    changed, as one JSON object."""

    json = cli.Flag(["--json"], help="machine-readable output: what it created or changed")


def said(as_json, data, line):
    """What a changing command prints: data as JSON, or line for people."""
    if as_json:
        print_json(machine(data))
    else:
        print(line)


def setup_steps(as_json, title, work):
    """Run work(progress), an idempotent setup: its steps on stdout, or with
    as_json on stderr, and then every step and what changed as JSON."""
    from oarcloud_lib.progress import Progress
    if not as_json:
        return work(None)  # its own progress, on stdout
    progress = Progress(title, out=sys.stderr)
    work(progress)
    print_json({"changed": progress.changes, "steps": progress.steps})


def deletes(group):
    """Register a class as group's `delete` (the one verb for deletion), and
    as `del`, its old name, kept as an alias."""
    def register(cls):
        group.subcommand("delete")(cls)
        group.subcommand("del", type(cls.__name__ + "Alias", (cls,), {
            "__doc__": "The old name of `delete` (the same command).", "__module__":
            cls.__module__}))
        return cls
    return register


def run_quietly_piped(app):
    """app.run(), and a reader that stops early (`oarcloud list | head`) ends
    it quietly, with the shell's code for a broken pipe."""
    try:
        app.run()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


def is_root():
    return os.geteuid() == 0
