"""oarcloud: the user's command (instances, images, networks...) — runs as the user."""
import json
import os
import stat
import sys

from plumbum import cli

from oarcloud_cli.common import (VERSION, Changes, Command, Group, broker_argv,
                                 broker_json, exec_broker, is_root, iso, machine, print_fields,
                                 print_json, print_quota, print_table, printable, run_quietly_piped,
                                 size_h, store_user_data)


class User(Group):
    """Self-service instances on the nodes OAR reserves for you.

    Every command acts as the calling Unix user, who must have an oarcloud
    account (`oarcloud-admin user add NAME`).
    """

    PROGNAME = "oarcloud"
    VERSION = VERSION

    def main(self, *args):
        argv = list(self.nested_command[1]) if self.nested_command else []
        argv = argv[:argv.index("--")] if "--" in argv else argv
        asks_help = any(a in ("-h", "--help", "--help-all") for a in argv)
        if is_root() and not asks_help:  # help is for everyone
            print("oarcloud: error: run oarcloud as your own user, not as root "
                  "(OAR refuses jobs from root; admins use oarcloud-admin)", file=sys.stderr)
            return 2
        return super().main(*args)


INSTANCE_COLUMNS = [("name", "NAME"), ("state", "STATE"), ("node", "NODE"), ("ip", "IP"),
                    ("image", "IMAGE"), ("cores", "CORES"), ("memory_h", "MEMORY"),
                    ("disk_h", "DISK"), ("job_id", "JOB")]


def _print_rows(rows, as_json):
    if as_json:
        print_json([machine(r) for r in rows])
    else:
        print_table(rows, INSTANCE_COLUMNS)


def _public(row):
    out = {k: row.get(k) for k in ("name", "state", "node", "ip", "image", "cores", "memory",
                                   "disk", "job_id", "error")}
    if row.get("user_data"):
        out["user_data"] = row.get("user_data_state") or "pending"
        out["user_data_exit"] = row.get("user_data_exit")
    out["memory_h"] = "%dM" % (row["memory"] >> 20)
    out["disk_h"] = size_h(row.get("disk"))
    out["created"] = iso(row.get("created"))
    return out


@User.subcommand("launch")
class Launch(Command):
    """Launch instances: one OAR cloud job (oarsub -t cloud ...)."""

    image = cli.SwitchAttr(["--image"], str, help="image name (default: the site's default)")
    name = cli.SwitchAttr(["--name"], str, help="instance name (with --count: NAME-0, NAME-1...)")
    count = cli.SwitchAttr(["--count"], int, help="number of instances (default: one per node)")
    nodes = cli.SwitchAttr(["--nodes"], int, help="nodes to reserve (default: 1, or with "
                                                  "--count and --cores the fewest that hold "
                                                  "the instances)")
    cores = cli.SwitchAttr(["--cores"], int, help="cores per instance (the job then reserves "
                                                        "only those cores of its nodes)")
    memory = cli.SwitchAttr(["--memory"], str, help="memory per instance, e.g. 512M, 2G")
    volume = cli.SwitchAttr(["--volume"], str, list=True, argname="NAME:/PATH[:ro]",
                            help="mount a volume (repeatable; OWNER/NAME:/PATH:ro for one "
                                 "shared with you)")
    disk = cli.SwitchAttr(["--disk"], str, help="disk per instance, what its root may hold "
                                                "(a filesystem of that size), e.g. 512M, 20G "
                                                "(default: the site's)")
    walltime = cli.SwitchAttr(["--walltime"], str, default="1:00:00", help="HH:MM[:SS]")
    network = cli.SwitchAttr(["--network"], str, list=True,
                             help="attach this network of yours (repeatable: one NIC each; "
                                  "default: your `default` network)")
    ip = cli.SwitchAttr(["--ip"], str, help="fixed address in the first network (one instance)")
    save_on_exit = cli.SwitchAttr(["--save-on-exit"], str, help="when the job ends (walltime or "
                                  "delete), save each instance's changes as this new image "
                                  "(NAME-0, NAME-1... with several instances)")
    at = cli.SwitchAttr(["--at"], str, argname="'YYYY-MM-DD HH:MM'",
                        help="an advance reservation (oarsub -r): the instances start then; "
                             "until then `list` shows the launch as scheduled")
    prop = cli.SwitchAttr(["--property", "-p"], str, argname="SQL",
                          help="only resources matching this condition on OAR's properties "
                               "(oarsub -p), e.g. \"cluster='a'\"")
    queue = cli.SwitchAttr(["--queue", "-q"], str, help="OAR queue (oarsub -q)")
    project = cli.SwitchAttr(["--project"], str, help="OAR project to account the job to")
    besteffort = cli.Flag(["--besteffort"], excludes=["--queue", "--at"],
                          help="a best-effort job: it runs on idle resources and OAR ends it "
                               "(and its instances) when other jobs need them")
    user_data = cli.SwitchAttr(["--user-data"], cli.ExistingFile, argname="FILE",
                               help="run this once at first boot in every instance, as its "
                                    "root: a script (#!...) or a #cloud-config (write_files, "
                                    "packages, users, runcmd); `show` and `logs` tell how it "
                                    "went")
    files = cli.SwitchAttr(["--file"], str, list=True, argname="SRC:DEST",
                           help="copy this file of yours to DEST (absolute) in every instance, "
                                "before it starts (repeatable; its mode kept; 1 MiB each, "
                                "4 MiB in all)")
    in_alloc = cli.SwitchAttr(["--in"], str, argname="ALLOC",
                              excludes=["--nodes", "--at", "--property", "--queue", "--project",
                                        "--besteffort", "--save-on-exit", "--ip"],
                              help="start them now in this allocation of yours (oarcloud alloc "
                                   "create), without OAR's scheduler: --count instances of "
                                   "--cores (default 1) each, within its free cores; they "
                                   "end with it (--walltime is its own)")
    wait = cli.Flag(["--wait"], help="wait until every instance runs, then show them "
                                      "(progress on stderr)")
    timeout = cli.SwitchAttr(["--timeout"], cli.Range(1, 86400), default=300, requires=["--wait"],
                             argname="SECONDS",
                             help="how long --wait waits for the instances to run (after the "
                                  "--at start); the job goes on after it")
    json = cli.Flag(["--json"], help="machine-readable output")

    def store_user_data(self):
        return store_user_data(self.user_data)

    def store_files(self):
        """The id of the --file bundle, checked here and stored by the broker."""
        from oarcloud_lib.catalog import launchfiles
        from oarcloud_lib.errors import Refused
        files = []
        for spec in self.files:
            src, sep, dest = spec.rpartition(":")
            if not sep or not src:
                raise Refused(detail="--file takes SRC:DEST, e.g. ./app.conf:/etc/app.conf")
            launchfiles.check_path(dest)
            try:
                with open(src, "rb") as f:
                    mode = os.fstat(f.fileno()).st_mode
                    if not stat.S_ISREG(mode):
                        raise Refused(detail="--file %s: not a regular file" % src)
                    data = f.read(launchfiles.MAX_FILE + 1)
            except OSError as e:
                raise Refused(detail="--file %s: %s" % (src, e.strerror)) from None
            files.append((dest, stat.S_IMODE(mode) & 0o777, data))
        text = launchfiles.encode(files)
        launchfiles.parse(text)  # refused here before anything is stored
        code, out = broker_json("files-put", data=text)
        if out is None:
            raise SystemExit(code)  # the broker said why, in one line
        return out["id"]

    def run_command(self):
        from oarcloud_lib.catalog import jobspec
        from oarcloud_lib.service import jobs, lifecycle
        types = ["cloud"]
        for key, value in (("image", self.image), ("name", self.name), ("count", self.count),
                           ("cores", self.cores), ("memory", self.memory),
                           ("disk", self.disk), ("save", self.save_on_exit), ("ip", self.ip)):
            if value is not None:
                types.append("cloud.%s=%s" % (key, value))
        types += ["cloud.network=%s" % n for n in self.network]
        types += ["cloud.volume=%s" % v for v in self.volume]
        spec = jobspec.parse_types(types)
        jobs.check_walltime(self.walltime)
        if self.user_data:
            spec.userdata = self.store_user_data()
        if self.files:
            spec.files = self.store_files()
        if self.in_alloc:
            # The broker places them and has the nodes start them: they run when it answers.
            code, rows = broker_json("alloc-launch", self.in_alloc, *spec.to_types())
            if rows is None:
                return code
            _print_rows([_public(r) for r in rows], self.json)
            return 0
        with jobs.connect_as_user() as conn:
            job_id = lifecycle.launch(conn, jobs.current_user(), spec, self.nodes, self.walltime,
                                      at=self.at, prop=self.prop, queue=self.queue,
                                      project=self.project, besteffort=self.besteffort)
            if not self.wait:
                if self.json:
                    print_json({"job_id": job_id, "at": self.at})
                elif self.at:
                    print("job %d scheduled for %s (oarcloud list shows it)" % (job_id, self.at))
                else:
                    print("job %d submitted (oarcloud list shows its instances)" % job_id)
                return 0
            timeout = self.timeout
            if self.at:   # the instances start with the reservation
                import datetime
                import time
                start = datetime.datetime.strptime(jobs.check_start(self.at), "%Y-%m-%d %H:%M:%S")
                timeout += max(0, start.timestamp() - time.time())
            try:
                rows = jobs.wait_running(conn, job_id, timeout=timeout,
                                         progress=lambda m: print(m, file=sys.stderr))
            except KeyboardInterrupt:
                print("oarcloud launch: stopped waiting; job %d goes on (oarcloud list shows "
                      "it, oarcloud delete NAME ends it)" % job_id, file=sys.stderr)
                return 130
        _print_rows([_public(r) for r in rows], self.json)
        return 0


User.subcommand("image", "oarcloud_cli.user_images.ImageCmd")
User.subcommand("net", "oarcloud_cli.user_networks.NetCmd")
User.subcommand("metrics", "oarcloud_cli.user_monitoring.Metrics")
User.subcommand("alarm", "oarcloud_cli.user_monitoring.AlarmCmd")
User.subcommand("notify", "oarcloud_cli.user_monitoring.NotifyCmd")
User.subcommand("key", "oarcloud_cli.user_keys.KeyCmd")
User.subcommand("volume", "oarcloud_cli.user_volumes.VolumeCmd")
User.subcommand("cp", "oarcloud_cli.user_copy.Copy")
User.subcommand("alloc", "oarcloud_cli.user_allocs.AllocCmd")
User.subcommand("group", "oarcloud_cli.user_groups.GroupCmd")
User.subcommand("lb", "oarcloud_cli.user_balancers.LbCmd")
User.subcommand("token", "oarcloud_cli.user_tokens.TokenCmd")
User.subcommand("node", "oarcloud_cli.user_nodes.NodeCmd")


@User.subcommand("quota")
class Quota(Command):
    """What you use next to your limits (set by the site's admins).  A limit
    set by `account` is yours, by `site` every account's default, by
    `built-in` oarcloud's own, by @GROUP one that you and the other members of
    that group share (its USED is what you all hold together); `none` is no
    limit."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        code, out = broker_json("quota")
        if out is None:
            return code
        print_quota(out, self.json)


@User.subcommand("list")
class List(Command):
    """Your instances (not deleted ones), and your launches OAR has not started
    yet: `queued`, or `scheduled` (an advance reservation, --at) with their start."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self):
        import datetime
        import pwd

        from oarcloud_lib.tools import oar
        # OAR's answer comes while the catalog is read.
        oar_answer = oar.waiting_jobs_started(pwd.getpwuid(os.getuid()).pw_name)
        from oarcloud_lib.service import jobs, lifecycle
        with jobs.connect_as_user() as conn:
            rows = [_public(r) for r in jobs.mine(conn)]
            waiting = lifecycle.waiting(conn, jobs.current_user(), jobs=oar_answer())
        for w in waiting:
            start = datetime.datetime.fromtimestamp(w["start"]).astimezone().isoformat() \
                if w["start"] else None
            rows.append({"name": w["name"], "state": w["state"], "node": None, "ip": None,
                         "image": w["image"], "cores": None, "memory": None, "disk": None,
                         "job_id": w["job_id"], "error": None, "start": start,
                         "instances": w["names"]})
        if self.json:
            print_json([machine(r) for r in rows])
        else:
            print_table(rows, INSTANCE_COLUMNS + ([("start", "START")] if waiting else []))


@User.subcommand("show")
class Show(Command):
    """One instance: its state, node, address, and its OAR job."""

    json = cli.Flag(["--json"], help="machine-readable output")

    def run_command(self, name):
        from oarcloud_lib.service import jobs, lifecycle
        from oarcloud_lib.tools.oar import get_job
        with jobs.connect_as_user() as conn:
            row = lifecycle.find(conn, jobs.current_user(), name)
        out = _public(row)
        job = get_job(row["job_id"])
        out["job_state"] = job.get("state")
        out["walltime_left"] = jobs.walltime_left(job)
        out["walltime"] = job.get("walltime")
        if self.json:
            print_json(machine(out))
        else:
            for k in ("walltime", "walltime_left"):  # seconds in JSON, H:MM:SS here
                out[k + "_h"] = _hms(out[k]) if out[k] is not None else None
            print_fields(out, ("name", "state", "error", "node", "ip", "image", "cores",
                               "memory_h", "disk_h", "job_id", "job_state", "walltime_h",
                               "walltime_left_h", "user_data", "user_data_exit", "created"))


def _hms(seconds):
    if seconds is None:
        return "unlimited"
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


@User.subcommand("extend")
class Extend(Command):
    """More walltime for an instance's job: oarcloud extend NAME +H:MM.  OAR
    grants it when it delays no other job (and within the site's limit); what
    it cannot grant now stays asked until the job ends.  Exit 0 when granted,
    3 when only partly or not yet."""

    wait = cli.SwitchAttr(["--wait"], cli.Range(0, 600), default=30, argname="SECONDS",
                          help="how long to wait for OAR's decision (default 30)")
    json = cli.Flag(["--json"], help="machine-readable output (durations in seconds)")

    def run_command(self, name, more):
        from oarcloud_lib.service import jobs, lifecycle
        with jobs.connect_as_user() as conn:
            out = lifecycle.extend(conn, jobs.current_user(), name, more, wait=self.wait)
        if self.json:
            print_json(out)
        elif out["status"] == "granted":
            print("%s: walltime extended by %s (now %s)" % (name, _hms(out["granted"]),
                                                          _hms(out["walltime"])))
        else:
            print("%s: %s: +%s of +%s so far (walltime %s); OAR keeps trying while the job "
                  "runs (a job after yours holds the node, or the site's limit: at most +%s)"
                  % (name, out["status"], _hms(out["granted"]), _hms(out["asked"]),
                     _hms(out["walltime"]), _hms(out["possible"])))
        return 0 if out["status"] == "granted" else 3


@User.subcommand("resize")
class Resize(Changes, Command):
    """Change an instance's cores or memory live: oarcloud resize NAME
    [--cores C] [--memory M].  It stays within what its OAR job holds on its
    node (launch with more cores to grow past them); the owner's quotas count
    what it adds.  Inside, nproc, free and /proc follow at once.  A memory
    shrink below what the instance uses is refused (exit 1, `infeasible`)
    and kills nothing: it keeps its memory."""

    cores = cli.SwitchAttr(["--cores"], str, argname="C", help="its cores from now")
    memory = cli.SwitchAttr(["--memory"], str, argname="M",
                            help="its memory from now, e.g. 512M or 2G")

    def run_command(self, name):
        from oarcloud_lib.errors import Refused
        from oarcloud_lib.service import resize
        if self.cores is None and self.memory is None:
            raise Refused(detail="nothing to change: give --cores, --memory or both")
        # Checked here first: the broker refuses the same.
        args = [str(resize.parse_cores(self.cores)) if self.cores else "-",
                self.memory if self.memory else "-"]
        if self.memory:
            resize.parse_memory(self.memory)
        _broker("resize", name, *args, as_json=self.json)


@User.subcommand("delete")
class Delete(Changes, Command):
    """End the instance's OAR job (with every instance of that job); the epilogue tears down.
    An instance in an allocation is removed alone: the allocation goes on."""

    wait = cli.Flag(["--wait"], help="wait until the instances are gone")

    def run_command(self, name):
        from oarcloud_lib.service import allocations, jobs, lifecycle
        with jobs.connect_as_user() as conn:
            live = [r for r in jobs.mine(conn) if r["name"] == _checked(name)
                    and r["state"] not in ("deleted", "failed")]
            if live and allocations.of_instance(conn, live[0]):
                # One instance of an allocation: its node removes it, the rest stays.
                return exec_broker("alloc-remove", name, as_json=self.json)
            row = lifecycle.delete(conn, jobs.current_user(), name, wait=self.wait)
        if self.json:
            print_json({"name": name, "job_id": row["job_id"], "deleted": True,
                        "ended": bool(self.wait)})
        else:
            print("deleted %s (job %s)" % (name, row["job_id"]))


def _checked(name):
    from oarcloud_lib.catalog import jobspec
    from oarcloud_lib.errors import Refused
    if not jobspec.NAME_PATTERN.match(name or ""):
        raise Refused(detail="bad instance name %r" % (name,))
    return name


def _broker_argv(verb, name, *args):
    """The broker, which checks that the instance name is the caller's."""
    return broker_argv(verb, _checked(name), *args)


def _broker(verb, name, *args, as_json=False):
    exec_broker(verb, _checked(name), *args, as_json=as_json)


@User.subcommand("exec")
class Exec(Command):
    """Run a command in an instance, as its root: oarcloud exec NAME -- CMD [ARGS...]
    (a shell without CMD).  The command's exit code is oarcloud's; 125 is
    oarcloud's own failure (no such instance, not running...)."""

    def run_command(self, name, *cmd):
        from oarcloud_lib.errors import OarcloudError
        try:
            _broker("exec", name, "--", *cmd)
        except OarcloudError as e:
            print("%s: error: %s" % (self.root_app.PROGNAME, e), file=sys.stderr)
            return 125


@User.subcommand("console")
class Console(Command):
    """Attach to the instance's console (leave with Ctrl-]); --log prints what
    it printed there since it started, boot included (kept on its node while
    the instance lives: 2 MiB at most, the newest)."""

    log = cli.Flag(["--log"], help="print the console's log instead of attaching")
    lines = cli.SwitchAttr(["-n", "--lines"], cli.Range(1, 1000000), argname="N",
                           requires=["--log"], help="with --log: only its last N lines")
    json = cli.Flag(["--json"], requires=["--log"],
                    help="with --log: {instance, log} in JSON")

    def run_command(self, name):
        if not self.log:
            return _broker("console", name)
        import subprocess
        res = subprocess.run(_broker_argv("console-log", name), stdout=subprocess.PIPE)
        if res.returncode:
            return res.returncode
        text = res.stdout.decode("utf-8", "replace").replace("\r\n", "\n")
        if self.lines:
            text = "".join(text.splitlines(keepends=True)[-self.lines:])
        if self.json:
            print_json({"instance": name, "log": text})
        else:
            # What the instance printed does not drive the user's terminal.
            sys.stdout.write(printable(text, keep="\n\t") if sys.stdout.isatty() else text)


@User.subcommand("ssh")
class Ssh(Command):
    """ssh into the instance as yourself, with your oarcloud key (images with sshd).
    Arguments after NAME go to ssh (e.g. oarcloud ssh web -- uptime)."""

    def run_command(self, name, *ssh_args):
        argv = ["ssh", "-o", "BatchMode=yes"]
        for key, value in _ssh_options(name):
            argv += ["-o", "%s=%s" % (key, value)]
        argv += ["oarcloud-" + name, *ssh_args]
        os.execvp(argv[0], argv)


def _ssh_options(name):
    """ssh's options for reaching instance name as the caller: [(key, value)]."""
    import getpass
    key = os.path.expanduser("~/.ssh/id_oarcloud")
    # The broker relays straight into the instance's own network namespace
    # over OAR's authenticated channel: the instance's host key (new at
    # every start) is not what secures the path.
    # ssh runs ProxyCommand through a shell: every word here is checked text.
    options = [("ProxyCommand", " ".join(_broker_argv("proxy", name, "22"))),
               ("User", getpass.getuser()), ("UserKnownHostsFile", "/dev/null"),
               ("StrictHostKeyChecking", "no"), ("LogLevel", "ERROR")]
    if os.path.exists(key):
        options += [("IdentityFile", key), ("IdentitiesOnly", "yes")]
    return options


@User.subcommand("ssh-config")
class SshConfig(Command):
    """ssh_config Host blocks (oarcloud-NAME) for your live instances, or the
    ones named, so that plain ssh, scp, rsync and ansible reach them:
    oarcloud ssh-config > ~/.ssh/oarcloud.conf; ssh -F ~/.ssh/oarcloud.conf oarcloud-web
    (or `Include oarcloud.conf` in ~/.ssh/config)."""

    def run_command(self, *names):
        from oarcloud_lib.service import jobs, lifecycle
        with jobs.connect_as_user() as conn:
            if names:
                rows = [lifecycle.find(conn, jobs.current_user(), n) for n in names]
            else:
                rows = [r for r in jobs.mine(conn) if r["state"] != "failed"]
        for row in rows:
            print("Host oarcloud-%s" % row["name"])
            for key, value in _ssh_options(row["name"]):
                print("    %s %s" % (key, value))


def _power(verb, doc):
    class Power(Changes, Command):
        __doc__ = doc

        def run_command(self, name):
            _broker(verb, name, as_json=self.json)
    Power.__name__ = verb.capitalize()
    return User.subcommand(verb)(Power)


_power("start", "Start a stopped instance (within its job's life).")
_power("stop", "Stop an instance: its init is asked, then forced after 10 s.  The job goes on.")
_power("reboot", "Stop then start an instance.")


@User.subcommand("logs")
class Logs(Command):
    """What the node hooks said about the instance's job (its first-boot user
    data's output among it); -f follows it as it comes, until the job ends."""

    json = cli.Flag(["--json"], help="machine-readable output (with -f: a JSON object a line)")
    follow = cli.Flag(["-f", "--follow"], help="print each new event as it comes, until the "
                                                "job ends (Ctrl-C stops)")
    # -f is follow here (tail's and kubectl's habit): the format is --format only
    # (Command's -f is overridable).

    def run_command(self, name):
        from oarcloud_lib.catalog import joblog
        from oarcloud_lib.service import jobs, lifecycle
        def line(e):
            return "%s %s %-7s %s" % (e["at"][:19], e["node"], e["level"], e["message"])
        with jobs.connect_as_user() as conn:
            row = lifecycle.find(conn, jobs.current_user(), name)
            if not self.follow:
                events = [{k: v for k, v in e.items() if k != "id"}
                          for e in joblog.events(conn, row["job_id"])]
                if self.json:
                    print_json(events)
                else:
                    for e in events:
                        print(line(e))
                return
            for e in joblog.follow(conn, row["job_id"]):
                e.pop("id")
                print(json.dumps(e, sort_keys=True) if self.json else line(e), flush=True)


def main():
    run_quietly_piped(User)


if __name__ == "__main__":
    main()
