"""Probes on a node (F.a.5, F.u.4): the node's and its instances' values, one
reading per cycle, from the files the kernel keeps (/proc, cgroups, the
veths' counters) and libvirt's list of running domains.

`nodeagent probe INTERVAL` runs Probe.cycle() every INTERVAL seconds and
writes one JSON line per cycle on stdout, where the monitor service reads it
through OAR's ssh; it ends when nobody reads any more.
"""
import json
import logging
import os
import resource
import socket
import sys
import time

from oarcloud_lib import metrics, paths
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.tools import netdev

LOG = logging.getLogger(__name__)
PREFIX = "oc"
# Walking an instance's written files is the one costly reading: every so often.
ROOTFS_EVERY = 30.0
# s between two pinnings of the tunnel peers' MACs (netnode.pin_tunnel_neighbors):
# well within the datapath's 900 s aging of an idle entry
PIN_EVERY = 60.0


def route_interface(address, runner=LOCAL):
    """The interface this node reaches address through (its underlay), or None."""
    return netdev.route_interface(address, runner)


def tree_bytes(path):
    """Bytes of disk the files under path take (each inode once, links not followed)."""
    total, seen, todo = 0, set(), [str(path)]
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_nlink > 1:
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            total += st.st_blocks * 512
            if e.is_dir(follow_symlinks=False):
                todo.append(e.path)
    return total


class Probe:
    """Readings of one node; keeps the previous counters to turn them into rates."""

    def __init__(self, iface, driver, proc="/proc", cgroups="/sys/fs/cgroup",
                 store=paths.INSTANCES):
        self.iface, self.driver = iface, driver
        self.proc, self.cgroups, self.store = proc, cgroups, store
        self.prev_node = None
        self.prev = {}      # domain -> (time, counters)
        self.guests = {}    # domain -> (controller pid, cores, ports)
        self.rootfs = {}    # domain -> (time, bytes)

    def _guest_facts(self, guest):
        """(controller pid, cores, veths) of a running guest; read from libvirt
        once per start of the domain."""
        ctl = guest.controller_pid()
        known = self.guests.get(guest.name)
        if known and known[0] == ctl:
            return known
        facts = (ctl, guest.info()["cores"], guest.ports())
        self.guests[guest.name] = facts
        return facts

    def node_values(self, now, netdev):
        sample = metrics.node_sample(self.proc)
        net = netdev.get(self.iface)
        used, avail = metrics.fs_usage(self.store if os.path.isdir(self.store) else "/")
        values = {"memory": sample["memory"], "load": sample["load"],
                  "disk": metrics.percent_used(used, avail)}
        prev, self.prev_node = self.prev_node, (now, sample["cpu"], net)
        if prev:
            values["cpu"] = metrics.stat_cpu_percent(prev[1], sample["cpu"])
            if net and prev[2]:
                values["net_rx"] = metrics.rate((prev[0], prev[2][0]), (now, net[0]))
                values["net_tx"] = metrics.rate((prev[0], prev[2][1]), (now, net[1]))
        return values

    def instance_values(self, now, guest, netdev):
        ctl, cores, ports = self._guest_facts(guest)
        if ctl is None:
            return None
        with open(os.path.join(self.proc, str(ctl), "cgroup")) as f:
            groups = metrics.parse_proc_cgroup(f.read())
        counters = metrics.instance_sample(groups, self.cgroups, leave={ctl})
        try:  # its cores now (a live resize since it started), else its domain's
            cores = metrics.instance_cores(groups, self.cgroups) or cores
        except (OSError, ValueError, KeyError):
            pass
        # The host end of a veth sends what the instance receives.
        counters["rx"] = sum(netdev.get(p, (0, 0))[1] for p in ports)
        counters["tx"] = sum(netdev.get(p, (0, 0))[0] for p in ports)
        values = {"memory": counters["memory"], "procs": counters["procs"]}
        prev = self.prev.get(guest.name)
        self.prev[guest.name] = (now, counters, ctl)
        if prev and prev[2] == ctl:
            t0, c0 = prev[0], prev[1]
            values["cpu"] = metrics.cpu_percent((t0, c0["cpu_usec"]), (now, counters["cpu_usec"]),
                                                cores)
            values["net_rx"] = metrics.rate((t0, c0["rx"]), (now, counters["rx"]))
            values["net_tx"] = metrics.rate((t0, c0["tx"]), (now, counters["tx"]))
        last = self.rootfs.get(guest.name)
        if last is None or now - last[0] >= ROOTFS_EVERY:
            last = (now, tree_bytes(os.path.join(self.store, guest.name, "upper")))
            self.rootfs[guest.name] = last
        values["rootfs"] = last[1]
        return values

    def cycle(self, now=None):
        """One reading: {'t', 'node': {metric: value}, 'instances': {domain:
        {metric: value}}, 'cpu_seconds': this process's CPU time so far}.
        Values that cannot be told yet (rates on a first reading) are left out."""
        now = time.time() if now is None else now
        with open(os.path.join(self.proc, "net", "dev")) as f:
            netdev = metrics.parse_net_dev_all(f.read())
        out = {"t": now, "node": self.node_values(now, netdev), "instances": {}}
        try:
            guests = self.driver.running(PREFIX)
        except OarcloudError as e:
            LOG.warning("probe on %s: no domains: %s", socket.gethostname(), e)
            self.driver.close()  # libvirtd may come back: reconnect next time
            guests = []
        for guest in guests:
            try:
                values = self.instance_values(now, guest, netdev)
            except (OSError, ValueError, OarcloudError) as e:
                # Stopped or torn down between listing and reading.
                LOG.debug("probe: %s: %s", guest.name, e)
                continue
            if values is not None:
                out["instances"][guest.name] = values
        for gone in set(self.prev) - set(out["instances"]):
            self.prev.pop(gone, None)
            self.guests.pop(gone, None)
            self.rootfs.pop(gone, None)
        for group in [out["node"]] + list(out["instances"].values()):
            for k in [k for k, v in group.items() if v is None]:
                del group[k]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        return out


def run(interval, server_address, out=sys.stdout, cycles=None):
    """Write one JSON reading per interval on out until nobody reads it (or
    after cycles readings)."""
    from oarcloud_lib.node.driver import LxcDriver
    probe = Probe(route_interface(server_address), LxcDriver())
    done = 0
    next_at = pinned_at = time.monotonic()
    while cycles is None or done < cycles:
        if time.monotonic() >= pinned_at:
            # The tunnel peers' MACs, before the datapath's cache forgets them.
            from oarcloud_lib.node import netnode
            try:
                netnode.pin_tunnel_neighbors(netnode.tunnel_peers())
            except OarcloudError as e:
                LOG.warning("probe: tunnel peers: %s", e)
            pinned_at = time.monotonic() + PIN_EVERY
        try:
            out.write(json.dumps(probe.cycle(), separators=(",", ":")) + "\n")
            out.flush()
        except BrokenPipeError:
            return 0
        done += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    return 0
