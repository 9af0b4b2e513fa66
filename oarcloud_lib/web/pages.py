"""The dashboard's HTML pages (templates/web/).  Each page reads through
web.data as who asks; its live part is fetched again every 5 s by
static/app.js (X-Partial: 1 renders that part alone), and its charts read
/api/v1/metrics.  Actions are forms (POST, with the session's CSRF token)
that call what the API calls, then come back to the page."""
import time

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from oarcloud_lib import metrics
from oarcloud_lib.errors import OarcloudError
from oarcloud_lib.web import api, app as web, data

bp = Blueprint("pages", __name__)
NODE_METRICS = ("cpu", "memory", "load", "net_rx", "net_tx", "disk")
INSTANCE_METRICS = ("cpu", "memory", "net_rx", "net_tx", "procs")
POLL_MS = 5000


def page(template, title, **context):
    partial = request.headers.get("X-Partial") == "1"
    rng = request.args.get("range", "1h")
    return render_template(template, title=title, who=g.who, csrf=session.get("csrf"),
                           partial=partial, poll_ms=POLL_MS, now=time.time(),
                           span=rng if rng in data.RANGES else "1h", ranges=data.RANGES,
                           units={k: {m: v.unit for m, v in ms.items()}
                                  for k, ms in metrics.METRICS.items()}, **context)


@bp.get("/")
def overview():
    return page("overview.html", "Overview", o=data.overview(web.conn(), g.who))


@bp.get("/nodes")
def nodes():
    return page("nodes.html", "Nodes", nodes=data.nodes(web.conn(), g.who))


@bp.get("/nodes/<host>")
def node(host):
    return page("node.html", "Node %s" % host, node=data.node(web.conn(), g.who, host),
                metric_names=NODE_METRICS)


def _act(what, call, back):
    try:
        out = call()
        flash(what(out), "ok")
    except OarcloudError as e:
        flash(str(e), "error")
    return redirect(back)


@bp.post("/nodes/<host>/drain")
def node_drain(host):
    back = url_for("pages.node", host=host)
    return _act(lambda out: "node %s drained%s" % (
        host, "" if out["changed"] else " already"), lambda: api.drain(host).get_json(), back)


@bp.post("/nodes/<host>/undrain")
def node_undrain(host):
    back = url_for("pages.node", host=host)
    return _act(lambda out: "node %s back in service" % host,
                lambda: api.undrain(host).get_json(), back)


@bp.get("/instances")
def instances():
    a = request.args
    rows = data.instance_list(web.conn(), g.who, a.get("state") or None,
                              a.get("owner") or None, a.get("q") or None)
    return page("instances.html", "Instances", instances=rows, states=data.STATES,
                filters={"state": a.get("state", ""), "owner": a.get("owner", ""),
                         "q": a.get("q", "")})


@bp.get("/instances/<ref>")
def instance(ref):
    return page("instance.html", "Instance %s" % ref,
                inst=data.instance(web.conn(), g.who, ref), metric_names=INSTANCE_METRICS)


@bp.post("/instances/<ref>/delete")
def instance_delete(ref):
    return _act(lambda out: "instance %s (%s) is being deleted" % (out["name"], out["domain"]),
                lambda: api.instance_delete(ref).get_json(),
                url_for("pages.instance", ref=ref))


@bp.get("/networks")
def networks():
    return page("networks.html", "Networks", networks=data.network_list(web.conn(), g.who))


@bp.get("/images")
def images():
    return page("images.html", "Images", images=data.image_list(web.conn(), g.who))


@bp.get("/groups")
def groups():
    return page("groups.html", "Scaling groups", groups=data.group_list(web.conn(), g.who))


@bp.get("/groups/<group_id>")
def group(group_id):
    return page("group.html", "Scaling group", group=data.group(web.conn(), g.who, group_id))


@bp.post("/groups/<group_id>/desired")
def group_desired(group_id):
    return _act(lambda out: "group %s: desired size %d" % (out["name"], out["desired"]),
                lambda: api.group_desired(group_id).get_json(),
                url_for("pages.group", group_id=group_id))


@bp.get("/balancers")
def balancers():
    return page("balancers.html", "Load balancers",
                balancers=data.balancer_list(web.conn(), g.who))


@bp.get("/alarms")
def alarms():
    return page("alarms.html", "Alarms", alarms=data.alarm_list(web.conn(), g.who))


@bp.get("/notifications")
def notifications():
    return page("notifications.html", "Notifications",
                notifications=data.notification_list(web.conn(), g.who))
