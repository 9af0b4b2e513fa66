"""The coordinator of a cloud job: its prologue and epilogue, run as root on
the job's first node (the node agent's `prologue` and `epilogue` verbs).

The prologue admits the job again (service.lifecycle.admit: what the user's
command checked may have changed, and the user may have called oarsub
directly), plans and allocates its instances in the catalog, then runs
`create` on every node of the job in parallel (locally, or over OAR's own ssh
as oar + oardodo); if any node fails, it runs `destroy` everywhere and
records the reason.  Only the job id comes from the command line; everything
else is read from OAR and the catalog.
"""
import contextlib
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oarcloud_lib import config, names
from oarcloud_lib.catalog import db, instances, joblog, jobspec, networks, volumes
from oarcloud_lib.commands import LOCAL
from oarcloud_lib.errors import Conflict, NotFound, OarcloudError, Refused
# The coordinator runs on the job's first node and creates its instances there
# in-process: loaded with it, before the job's clock starts.
from oarcloud_lib.node import lifecycle as node_lifecycle
from oarcloud_lib.server import saves
from oarcloud_lib.service import fanout, lifecycle
from oarcloud_lib.tools import oar
from oarcloud_lib.tools.oar import job_facts

LOG = logging.getLogger("oarcloud.nodeagent")


def load_job(job_id):
    """(owner, CloudSpec, resubmission of) of a cloud job, validated.  Raises Refused.

    The hook dispatcher passes what OAR's database says of the job in
    OARCLOUD_JOB (its environment is OAR's, not a user's); otherwise it is read."""
    job = None
    with contextlib.suppress(ValueError, TypeError):
        job = json.loads(os.environ.get("OARCLOUD_JOB") or "null")
    if not isinstance(job, dict) or os.environ.get("OARCLOUD_JOB_ID") != str(job_id):
        job = job_facts(job_id)
    owner = job.get("owner") or ""
    if not isinstance(owner, str) or not names.USER_RE.match(owner):
        raise Refused(detail="job %s has an unexpected owner %r" % (job_id, str(owner)[:40]))
    spec = jobspec.parse_types(job.get("types") or [])
    if spec is None:
        raise Refused(detail="job %s is not a cloud job" % job_id)
    return owner, spec, int(job.get("resubmit_job_id") or 0)


def _fan_out(nodes, verb, job_id):
    """Run verb on every node in parallel; returns {node: error or None}.  On
    this node it runs in this process (the coordinator records already)."""
    def here(verb, job_id):
        node_lifecycle.run_verb(verb, job_id, record=False)
    return fanout.parallel(nodes, lambda node: fanout.on_node(node, verb, job_id, here=here))


def _refuse(job_id):
    """End a job whose request was refused (the user's input, not a fault of the
    node) without failing the prologue: OAR would mark all its nodes Suspected.
    The job is deleted as OAR's own user (who may delete any job) and the
    prologue succeeds; OAR then kills it before its command starts."""
    res = oar.delete([job_id], LOCAL, user="oar", check=False)
    if res.code != 0:
        LOG.error("job %s: oardel failed (%s): failing the prologue instead", job_id,
                  fanout.one_line(res.err or res.out))
        return 1
    return 0


def prologue(job_id, nodefile):
    """Allocate the job's instances and create them on all its nodes; 0 on success."""
    conf = config.load()
    node_cores = instances.nodes_from_nodefile(Path(nodefile).read_text())
    with db.connect(conf) as conn, joblog.recording(conn, job_id):
        try:
            owner, spec, original = load_job(job_id)
            if original:
                # The healer deletes it: failing here would make OAR resubmit it again.
                LOG.warning("job %s is OAR's automatic resubmission of failed job %s:"
                            " oarcloud creates nothing for it", job_id, original)
                return 0
            lifecycle.admit(conn, owner, spec, len(node_cores), conf.default_image,
                            job_id=job_id, conf=conf)
            lifecycle.check_nodes(conn, owner, sorted(node_cores))
            if spec.alloc:
                from oarcloud_lib.service import allocations
                allocations.record(conn, job_id, owner, spec, node_cores)
                LOG.info("job %s: allocation %s holds %s", job_id, spec.alloc, ", ".join(
                    "%d core(s) on %s" % (c, n) for n, c in sorted(node_cores.items())))
                return 0
            nets = instances.resolve_networks(conn, owner, spec.networks,
                                              conf.default_network_cidr,
                                              networks.reserved_ranges(conf))
            planned = instances.plan(job_id, owner, spec, node_cores, conf.default_image,
                                     conf.memory_per_core, conf)
            wanted = lifecycle.save_names(spec, len(planned))
            rows = instances.allocate(conn, planned, nets, spec.ip)
            instances.record_job_nodes(conn, job_id, node_cores)
            if spec.volumes:
                volumes.hold_for_launch(conn, owner, spec.volumes, rows)
            saves.request_on_exit(conn, rows, wanted)
        except OarcloudError as e:
            LOG.error("job %s refused: %s", job_id, e)
            print("oarcloud: %s" % e, file=sys.stderr)
            if isinstance(e, (Refused, NotFound, Conflict)):
                return _refuse(job_id)
            return 1
        nodes = sorted({r["node"] for r in rows})
        LOG.info("job %s: creating %d instance(s) on %s", job_id, len(rows), ", ".join(nodes))
        started = time.monotonic()
        # Meanwhile the other nodes of these networks learn the new addresses
        # (from the catalog: they need not wait for the ports).
        others = sorted(set(networks.hosting_nodes(conn, [n["id"] for n in nets])) - set(nodes))
        with ThreadPoolExecutor(max_workers=1) as pool:
            peers = pool.submit(fanout.sync_nodes, others)
            errors = {n: e for n, e in _fan_out(nodes, "create", job_id).items() if e}
            peers.result()
        if errors:
            reason = "; ".join("%s: %s" % (n, fanout.one_line(e))
                               for n, e in sorted(errors.items()))
            LOG.error("job %s: creation failed, undoing on all nodes: %s", job_id, reason)
            saves.fail_job(conn, job_id, "the instances were not created: " + reason)
            _fan_out(sorted(node_cores), "destroy", job_id)
            lifecycle.end_jobs(conn, [(job_id, "failed", reason)])
            print("oarcloud: %s" % reason, file=sys.stderr)
            return 1
        LOG.info("job %s: %d instance(s) on %d node(s) in %.2fs", job_id, len(rows), len(nodes),
                 time.monotonic() - started)
    return 0


def epilogue(job_id, nodefile):
    """Tear the job's instances down on all its nodes; 0 when every node is clean."""
    conf = config.load()
    nodes = set(instances.nodes_from_nodefile(Path(nodefile).read_text()))
    with db.connect(conf) as conn, joblog.recording(conn, job_id):
        nodes |= {r["node"] for r in instances.for_job(conn, job_id)}
        errors = {n: e for n, e in _fan_out(sorted(nodes), "destroy", job_id).items() if e}
        lifecycle.end_jobs(conn, [(job_id, "deleted", None)])
        if errors:
            LOG.error("job %s: teardown failed on %s", job_id, errors)
            return 1
        LOG.info("job %s: torn down on %s", job_id, ", ".join(sorted(nodes)))
    return 0
