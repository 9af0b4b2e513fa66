"""Man pages and shell completion, generated from the commands themselves (the
plumbum applications of oarcloud_cli.user and .admin), so that they never
drift from --help.  install.sh installs them:

    python -m oarcloud_cli.docgen --man DIR --bash DIR --zsh DIR

- DIR/oarcloud.1, DIR/oarcloud-admin.1: every command, its usage, what it
  does and its switches (`man oarcloud`);
- bash: `oarcloud` and `oarcloud-admin` complete commands, switches, and the
  names of the caller's instances, images, networks, volumes and alarms
  (and for admins: nodes, users), asked of the commands themselves
  (`oarcloud list -f value -c name`...);
- zsh: the same function, loaded through zsh's bashcompinit.
"""
import argparse
import importlib
import re
import sys
from pathlib import Path

PROGRAMS = (("oarcloud", "oarcloud_cli.user:User"), ("oarcloud-admin", "oarcloud_cli.admin:Admin"))
META_GROUP = "Meta-switches"
# What an argument names, by (the command's group, the argument's word in its
# usage); a command's first NAME names an object of its group ("file": a
# local file).  Words not here complete nothing (new names, sizes, paths in
# an instance, commands).
ARG_KINDS = {
    ("oarcloud", "NAME"): "instance", ("oarcloud", "NAMES"): "instance",
    ("oarcloud", "INSTANCE"): "instance",
    ("oarcloud-admin", "NODE"): "node",
    ("image", "NAME"): "image", ("image", "INSTANCE"): "instance", ("image", "PATH"): "file",
    ("key", "KEY-FILE"): "file",
    ("net", "NAME"): "network", ("net", "INSTANCE"): "instance",
    ("rule", "NAME"): "network",
    ("volume", "NAME"): "volume", ("volume", "INSTANCE"): "instance",
    ("alarm", "NAME"): "alarm",
    ("node", "HOST"): "node", ("node", "HOSTS"): "node",
    ("user", "NAME"): "user", ("quota", "USER"): "user", ("quota", "NAME"): "user",
    ("lab", "NODE"): "node",
}
# Switches whose value names an object.
SWITCH_KINDS = {"--image": "image", "--network": "network", "--instance": "instance",
                "--volume": "volume", "--node": "node", "--nodes": "node"}
# Commands whose NAME is a new object's: nothing to complete.
CREATES = {"create", "add", "import", "build", "launch"}
LISTERS = {
    "oarcloud": {"instance": "oarcloud list -f value -c name",
                 "image": "oarcloud image list -f value -c name",
                 "network": "oarcloud net list -f value -c name",
                 "volume": "oarcloud volume list -f value -c name",
                 "alarm": "oarcloud alarm list -f value -c name"},
    "oarcloud-admin": {"node": "oarcloud-admin node list -f value -c node",
                       "user": "oarcloud-admin user list -f value -c name",
                       "alarm": "oarcloud-admin alarm list -f value -c name",
                       "image": "oarcloud-admin image list -f value -c name"},
}


def _app(ref):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _doc(cls):
    text = cls.DESCRIPTION if isinstance(getattr(cls, "DESCRIPTION", None), str) \
        else (cls.__doc__ or "")
    return re.sub(r"\s+", " ", text).strip()


def _usage_words(cls):
    usage = getattr(cls, "USAGE", "") or ""
    if "[SWITCHES]" not in usage:
        return []
    return usage.split("[SWITCHES]", 1)[1].split()


def commands(prog, app, path=()):
    """Every command under app, depth first: {path, doc, words, switches,
    subcommands}, switches as {names, argname, help, mandatory}."""
    inst = app(" ".join((prog,) + path))
    switches = []
    for info in sorted(set(inst._switches_by_func.values()), key=lambda i: i.names):
        if info.group == META_GROUP:
            continue
        names = sorted(info.names, key=lambda n: (len(n) > 1, n))
        switches.append({"names": ["-" + n if len(n) == 1 else "--" + n for n in names],
                         "argname": (info.argname or "VALUE") if info.argtype else None,
                         "help": re.sub(r"\s+", " ", info.help or "").strip(),
                         "mandatory": bool(info.mandatory)})
    subs = sorted(inst._subcommands)
    yield {"path": path, "doc": _doc(app), "words": [] if subs else _usage_words(app),
           "switches": switches, "subcommands": subs}
    for name in subs:
        yield from commands(prog, inst._subcommands[name].get(), path + (name,))


def arg_kinds(prog, cmd):
    """The completion kind of each positional argument ('-': none), and of the
    repeated last one (or '')."""
    group = cmd["path"][-2] if len(cmd["path"]) > 1 else prog
    if cmd["path"][:1] == ("node",) and prog == "oarcloud-admin":
        group = "node"
    kinds, rest = [], ""
    for i, word in enumerate(cmd["words"]):
        bare = word.strip("[].")
        kind = ARG_KINDS.get((group, bare), "-")
        if i == 0 and cmd["path"][-1] in CREATES and bare == "NAME":
            kind = "-"
        if word.endswith("...]"):
            rest = ARG_KINDS.get((group, bare + "S"), kind)
        else:
            kinds.append(kind)
    return kinds, rest


def _roff(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in ".'" else line for line in text.split("\n"))


def man_page(prog, app):
    from oarcloud_lib import templating
    from oarcloud_cli.common import VERSION
    cmds = list(commands(prog, app))
    leaves = [c for c in cmds[1:] if not c["subcommands"]]
    # Every command's own switches; those most of them have, once.
    counts = {}
    for c in leaves:
        for sw in c["switches"]:
            counts.setdefault(tuple(sw["names"]), [0, sw])[0] += 1
    common = [sw for n, sw in sorted(counts.values(), key=lambda v: v[1]["names"])
              if n > len(leaves) // 2]
    shared = {tuple(sw["names"]) for sw in common}
    for c in leaves:
        c["switches"] = [s for s in c["switches"] if tuple(s["names"]) not in shared]
    return templating.render(
        "manpage.1.j2", prog=prog, version=VERSION, roff=_roff, top=cmds[0], common=common,
        commands=leaves, summary=cmds[0]["doc"].split(". ")[0].rstrip("."))


def completion(prog, app, shell):
    from oarcloud_lib import templating
    cmds = list(commands(prog, app))
    table = []
    for c in cmds:
        kinds, rest = arg_kinds(prog, c)
        table.append({"key": " ".join((".",) + c["path"]), "subs": " ".join(c["subcommands"]),
                      "switches": " ".join(n for s in c["switches"] for n in s["names"]),
                      "valued": " ".join(n for s in c["switches"] if s["argname"]
                                         for n in s["names"]),
                      "args": " ".join(kinds), "rest": rest, "group": bool(c["subcommands"])})
    kinds = {sw: kind for sw, kind in SWITCH_KINDS.items() if kind in LISTERS[prog]
             and any(sw in c["valued"].split() for c in table)}
    return templating.render("completion.sh.j2", prog=prog, fn=prog.replace("-", "_"),
                             commands=table, listers=LISTERS[prog], switch_kinds=kinds,
                             zsh=shell == "zsh")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--man", help="directory for the man pages (section 1)")
    ap.add_argument("--bash", help="directory for the bash completions")
    ap.add_argument("--zsh", help="directory for the zsh completions")
    args = ap.parse_args(argv)
    written = []
    for prog, ref in PROGRAMS:
        app = _app(ref)
        outputs = []
        if args.man:
            outputs.append((Path(args.man) / (prog + ".1"), man_page(prog, app)))
        if args.bash:
            outputs.append((Path(args.bash) / prog, completion(prog, app, "bash")))
        if args.zsh:
            outputs.append((Path(args.zsh) / ("_" + prog), completion(prog, app, "zsh")))
        for path, text in outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                written.append(str(path))
    print("docgen: %s" % (", ".join(written) if written else "everything up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
