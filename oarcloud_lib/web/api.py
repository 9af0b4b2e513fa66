"""The JSON HTTP API, /api/v1/ (docs/web.md has the table of endpoints).

Reads go through web.data as who asks; changes through the same library
calls as the CLI and the broker, with the same checks: a user changes their
own objects, an admin or operator drains nodes, an admin may also delete
any instance.
"""
import json
import time

from flask import Blueprint, Response, g, jsonify, request, stream_with_context

from oarcloud_lib.errors import Forbidden, NotFound, Refused
from oarcloud_lib.web import app as web, data

bp = Blueprint("api", __name__)
STREAM_SECONDS = 55   # one event stream, then the client reconnects (EventSource does)


def _body():
    if not request.data:
        return {}
    try:
        out = json.loads(request.get_data(as_text=True))
    except ValueError:
        raise Refused(detail="the request's body is not JSON") from None
    if not isinstance(out, dict):
        raise Refused(detail="the request's body must be a JSON object")
    return out


def _operator():
    if not g.who.operates:
        raise Forbidden(detail="node operations are for admins and operators")


@bp.get("/whoami")
def whoami():
    return jsonify(g.who.public())


@bp.get("/overview")
def overview():
    return jsonify(data.overview(web.conn(), g.who))


@bp.get("/nodes")
def nodes():
    return jsonify(data.nodes(web.conn(), g.who))


@bp.get("/nodes/<host>")
def node(host):
    return jsonify(data.node(web.conn(), g.who, host))


@bp.post("/nodes/<host>/drain")
def drain(host):
    from oarcloud_lib.server import nodeops
    _operator()
    when = _body().get("deadline") or request.form.get("deadline")
    deadline = nodeops.parse_deadline(str(when), time.time()) if when else None
    out = nodeops.drain(web.site_conn(), host, deadline)
    data.forget_nodes()
    return jsonify(out)


@bp.post("/nodes/<host>/undrain")
def undrain(host):
    from oarcloud_lib.server import nodeops
    _operator()
    was = nodeops.undrain(web.site_conn(), host)
    data.forget_nodes()
    return jsonify({"node": host, "drained": False, "changed": bool(was)})


@bp.get("/instances")
def instances():
    a = request.args
    return jsonify(data.instance_list(web.conn(), g.who, a.get("state"), a.get("owner"),
                                    a.get("q")))


@bp.get("/instances/<ref>")
def instance(ref):
    return jsonify(data.instance(web.conn(), g.who, ref))


@bp.delete("/instances/<ref>")
def instance_delete(ref):
    """End an instance as its owner's `oarcloud delete` does (an admin may
    end anyone's): one in an allocation alone, else its OAR job."""
    from oarcloud_lib.service import allocations, jobs
    row = data.instance(web.conn(), g.who, ref)
    if row["owner"] != g.who.account and g.who.role != "admin":
        raise Forbidden(detail="only its owner or an admin deletes an instance")
    if row["state"] in ("deleted", "failed"):
        raise NotFound(what="instance", name=ref)
    conn = web.site_conn()
    from oarcloud_lib.catalog import instances as rows
    full = rows.of_domain(conn, row["domain"])
    alloc = allocations.of_instance(conn, full)
    if alloc:
        allocations.remove(conn, full["owner"], full)
    else:
        jobs.delete(full["job_id"], user=full["owner"])
    return jsonify({"name": row["name"], "domain": row["domain"], "owner": row["owner"],
                  "job_id": row["job_id"], "allocation": alloc, "deleted": True})


@bp.get("/networks")
def networks():
    return jsonify(data.network_list(web.conn(), g.who))


@bp.get("/networks/<ref>")
def network(ref):
    """A network by id, or your own by name, with its addresses in use."""
    return jsonify(data.pick(data.network_list(web.conn(), g.who), g.who, ref, "network"))


@bp.get("/images")
def images():
    return jsonify(data.image_list(web.conn(), g.who))


@bp.get("/images/<name>")
def image(name):
    return jsonify(data.pick(data.image_list(web.conn(), g.who), g.who, name, "image", "name"))


@bp.get("/groups")
def groups():
    return jsonify(data.group_list(web.conn(), g.who))


@bp.get("/groups/<group_id>")
def group(group_id):
    return jsonify(data.group(web.conn(), g.who, group_id))


@bp.post("/groups/<group_id>/desired")
def group_desired(group_id):
    """Set a group's desired size, as its owner's `oarcloud group set --desired`."""
    from oarcloud_lib.service import groups as service
    shown = data.group(web.conn(), g.who, group_id)
    if shown["owner"] != g.who.account and g.who.role != "admin":
        raise Forbidden(detail="only its owner or an admin sets a group's size")
    desired = _body().get("desired", request.form.get("desired"))
    if not str(desired).isdigit():
        raise Refused(detail="desired must be a whole number")
    row = service.change(web.site_conn(), shown["owner"], shown["name"],
                         {"desired": int(desired)})
    return jsonify({"id": row["id"], "name": row["name"], "owner": row["owner"],
                  "desired": row["desired"], "min": row["min_size"], "max": row["max_size"]})


@bp.get("/balancers")
def balancers():
    return jsonify(data.balancer_list(web.conn(), g.who))


@bp.get("/balancers/<ref>")
def balancer(ref):
    return jsonify(data.pick(data.balancer_list(web.conn(), g.who), g.who, ref, "balancer"))


@bp.get("/alarms")
def alarms():
    return jsonify(data.alarm_list(web.conn(), g.who))


@bp.get("/alarms/<ref>")
def alarm(ref):
    return jsonify(data.pick(data.alarm_list(web.conn(), g.who), g.who, ref, "alarm"))


@bp.get("/notifications")
def notifications():
    return jsonify(data.notification_list(web.conn(), g.who))


@bp.get("/quota")
def quota():
    return jsonify(data.quota(web.conn(), g.who))


@bp.get("/metrics")
def metric_series():
    a = request.args
    return jsonify(data.series(web.conn(), g.who, a.get("kind", ""), a.get("subject", ""),
                             a.get("metric", ""), a.get("range", "1h")))


@bp.get("/events")
def events():
    since = request.args.get("since", "0")
    if not since.isdigit():
        raise Refused(detail="since must be an event id")
    return jsonify(data.events(web.conn(), g.who, int(since)))


@bp.get("/events/stream")
def event_stream():
    """Server-sent events: each new job event the viewer may see, for up to
    STREAM_SECONDS (then EventSource reconnects with Last-Event-ID)."""
    last = request.headers.get("Last-Event-ID") or request.args.get("since") or ""
    conn, who = web.conn(), g.who
    if not last.isdigit():
        top = data.events(conn, who, 0, limit=1)
        last = top[0]["id"] if top else 0
    last = int(last)

    def stream():
        nonlocal last
        end = time.monotonic() + STREAM_SECONDS
        yield "retry: 2000\n\n"
        while time.monotonic() < end:
            for e in reversed(data.events(conn, who, last, limit=100)):
                last = max(last, e["id"])
                yield "id: %d\nevent: job\ndata: %s\n\n" % (e["id"], json.dumps(e, default=str))
            time.sleep(1.0)
            yield ": keep-alive\n\n"
    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
