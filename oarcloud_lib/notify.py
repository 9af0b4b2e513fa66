"""Notifications (issue 6): targets as apprise URLs, sending, the retry plan of
asynchronous delivery, and the messages of lifecycle events.

apprise parses and sends; nothing of it leaks out: a URL it cannot parse is
Refused, and a failed delivery is a False in send's answer, never an
exception, so that a failing target never fails a hook or a launch.  Targets
and the delivery queue live in the catalog (notify_targets, notifications):
producers enqueue (one INSERT per target), and the monitor service delivers
in its own threads, retrying on BACKOFF, so a slow target delays nobody.
"""
import logging

import apprise

from oarcloud_lib.catalog import dicts
from oarcloud_lib.errors import NotFound, Refused

LOG = logging.getLogger(__name__)
MAX_URL = 2048
# Seconds between a failed attempt and the next one; after the last, give up
# (about an hour and a half after the first attempt).
BACKOFF = (10, 30, 60, 300, 900, 3600)
MAX_REASON = 1000

# Lifecycle events: kind -> (fields, title, body), %-formats filled from the
# fields.  The first five go to the instance's owner, the others to admins.
EVENTS = {
    "running": (("instance", "node"),
                "Instance %(instance)s is running",
                "Instance %(instance)s is running on %(node)s."),
    "failed": (("instance", "reason"),
               "Instance %(instance)s failed",
               "Instance %(instance)s failed: %(reason)s"),
    "walltime": (("instance", "minutes"),
                 "Instance %(instance)s: walltime ends in %(minutes)d min",
                 "The walltime of instance %(instance)s ends in %(minutes)d minute(s): "
                 "the instance stops then."),
    "saved": (("instance", "image"),
              "Instance %(instance)s saved as %(image)s",
              "Instance %(instance)s was saved as image %(image)s."),
    "save_failed": (("instance", "image", "reason"),
                    "Instance %(instance)s: saving image %(image)s failed",
                    "Saving instance %(instance)s as image %(image)s failed: %(reason)s"),
    "node_state": (("node", "state"),
                   "Node %(node)s is %(state)s",
                   "OAR reports node %(node)s as %(state)s."),
    "hook_failed": (("hook", "reason"),
                    "Hook %(hook)s failed",
                    "Hook %(hook)s failed: %(reason)s"),
}
ADMIN_EVENTS = ("node_state", "hook_failed")


def _parse(url, asset=None):
    """An Apprise holding url's one service, or None when url is not one URL
    apprise can parse (add() splits on spaces and commas)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL \
            or any(c.isspace() or ord(c) < 32 for c in url):
        return None
    a = apprise.Apprise(asset=asset)
    if not a.add(url) or len(a) != 1:
        return None
    return a


def check_url(url):
    """url if it is one notification URL apprise can parse.  Raises Refused."""
    if _parse(url) is None:
        raise Refused(detail="bad notification URL %r: not one URL apprise can parse "
                             "(see https://github.com/caronc/apprise/wiki)"
                      % (redact(url) if isinstance(url, str) else url,))
    return url


def redact(url):
    """url with its secrets (passwords, tokens) masked, for lists and logs."""
    a = _parse(url)
    if a is None:
        # Unparsed: keep only the scheme, as the rest may hold a secret.
        scheme = url.partition("://")[0] if isinstance(url, str) else ""
        return "%s://…" % scheme[:20] if scheme and scheme != url else "…"
    return a[0].url(privacy=True)


# What apprise says is ours to report (send_one's reason, Refused), never printed as is.
logging.getLogger("apprise").propagate = False


def send_one(url, title, body):
    """Send to url -> (True, None) or (False, why: apprise's warnings about this
    very call).  Never raises.  A target that hangs is cut by the plugin's own
    connect and read timeouts (URL parameters cto and rto, 4 s by default)."""
    try:
        a = _parse(url)
        if a is None:
            return False, "not a URL apprise can parse"
        result = a.notify(body=body, title=title)
        if result:
            return True, None
        logs = getattr(result, "logs", None)
        why = "; ".join(e.message for e in logs() if e.level in ("WARNING", "ERROR")) \
            if callable(logs) else ""
        why = why or "the target refused it"
    except Exception as e:  # noqa: BLE001 - a target must never fail its caller
        why = str(e) or type(e).__name__
    why = why.replace(url, redact(url))[:MAX_REASON]
    LOG.warning("notification to %s failed: %s", redact(url), why)
    return False, why


def send(urls, title, body):
    """Send to each of urls -> [(url, True or False)], in order.  Never raises:
    a failure is logged (secrets masked) and answered False."""
    return [(url, send_one(url, title, body)[0]) for url in urls]


def next_attempt(attempts, now):
    """When to try again after attempts failed attempts (0: none yet, now), or
    None to give up."""
    if attempts < 0:
        raise Refused(detail="bad number of attempts %r" % (attempts,))
    if attempts == 0:
        return now
    if attempts > len(BACKOFF):
        return None
    return now + BACKOFF[attempts - 1]


def event_message(kind, **fields):
    """(title, body) of a lifecycle event.  Raises Refused on an unknown kind or
    a missing field."""
    if kind not in EVENTS:
        raise Refused(detail="unknown event %r: one of %s" % (kind, ", ".join(EVENTS)))
    needed, title, body = EVENTS[kind]
    missing = [f for f in needed if f not in fields]
    if missing:
        raise Refused(detail="event %s needs %s" % (kind, ", ".join(missing)))
    if "reason" in fields:
        reason = str(fields["reason"]).strip()
        if len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON - 1] + "…"
        fields = dict(fields, reason=reason)
    try:
        return title % fields, body % fields + "\n"
    except (TypeError, ValueError) as e:
        raise Refused(detail="event %s: bad field: %s" % (kind, e)) from None


# The catalog (migration 0006).  owner None: the admins' targets and messages.

def targets(conn, owner):
    """[{id, url, created}] of owner's targets (None: the admins')."""
    return dicts(conn.execute("SELECT id, url, created FROM notify_targets"
                              " WHERE owner IS NOT DISTINCT FROM %s ORDER BY id", (owner,)))


def add_target(conn, owner, url):
    """Add url to owner's targets -> (its row, True if new).  Raises Refused."""
    check_url(url)
    with conn.transaction():
        for row in targets(conn, owner):
            if row["url"] == url:
                return row, False
        cur = conn.execute("INSERT INTO notify_targets (owner, url) VALUES (%s, %s)"
                           " RETURNING id, url, created", (owner, url))
        return dicts(cur)[0], True


def delete_target(conn, owner, ref):
    """Remove one of owner's targets by its id or URL.  Raises NotFound."""
    if ref.isdigit():
        cur = conn.execute("DELETE FROM notify_targets WHERE owner IS NOT DISTINCT FROM %s"
                           " AND id = %s", (owner, int(ref)))
    else:
        cur = conn.execute("DELETE FROM notify_targets WHERE owner IS NOT DISTINCT FROM %s"
                           " AND url = %s", (owner, ref))
    if cur.rowcount == 0:
        raise NotFound(what="notification target", name=ref if ref.isdigit() else redact(ref))


def enqueue(conn, owner, event, title, body, urls=None):
    """Queue a message for each of urls (default: owner's targets) -> the
    notification ids.  One INSERT: never waits for any target."""
    urls = [t["url"] for t in targets(conn, owner)] if urls is None else list(urls)
    if not urls:
        return []
    cur = conn.execute("INSERT INTO notifications (owner, url, event, title, body)"
                       " SELECT %s, u, %s, %s, %s FROM unnest(%s::text[]) AS u RETURNING id",
                       (owner, event, title, body, urls))
    return [r[0] for r in cur.fetchall()]


def enqueue_event(conn, owner, kind, **fields):
    title, body = event_message(kind, **fields)
    return enqueue(conn, owner, kind, title, body)


def history(conn, owner, limit=50, ids=None):
    """The last messages to owner, newest first (URLs masked)."""
    query = ("SELECT id, url, event, title, state, attempts, last_error, created, sent"
             " FROM notifications WHERE owner IS NOT DISTINCT FROM %s")
    args = [owner]
    if ids is not None:
        query += " AND id = ANY(%s)"
        args.append(list(ids))
    rows = dicts(conn.execute(query + " ORDER BY id DESC LIMIT %s", args + [limit]))
    for r in rows:
        r["url"] = redact(r["url"])
    return rows


def due(conn, limit=20):
    """Pending messages whose time has come, oldest first."""
    return dicts(conn.execute("SELECT id, url, title, body, attempts FROM notifications"
                              " WHERE state = 'pending' AND next_try <= now()"
                              " ORDER BY id LIMIT %s", (limit,)))


def delivered(conn, row, ok, why, now):
    """Record an attempt at row: sent, or tried again later, or given up."""
    attempts = row["attempts"] + 1
    if ok:
        conn.execute("UPDATE notifications SET state = 'sent', attempts = %s, sent = now(),"
                     " last_error = NULL WHERE id = %s", (attempts, row["id"]))
        return
    nxt = next_attempt(attempts, now)
    if nxt is None:
        conn.execute("UPDATE notifications SET state = 'failed', attempts = %s, last_error = %s"
                     " WHERE id = %s", (attempts, why, row["id"]))
    else:
        conn.execute("UPDATE notifications SET attempts = %s, last_error = %s,"
                     " next_try = to_timestamp(%s) WHERE id = %s",
                     (attempts, why, nxt, row["id"]))


def test(conn, owner, wait=30.0):
    """Send a test message to each of owner's targets and wait for the monitor
    to deliver it -> (lines saying how each went, True if all were sent)."""
    import time
    ids = enqueue(conn, owner, "test", "oarcloud test notification",
                  "This is a test notification from oarcloud (`notify test`).\n")
    if not ids:
        return ["no notification target: add one with `notify add URL`"], False
    deadline = time.monotonic() + wait
    rows = history(conn, owner, len(ids), ids)
    while any(r["state"] == "pending" and r["attempts"] == 0 for r in rows) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = history(conn, owner, len(ids), ids)
    lines = []
    for r in sorted(rows, key=lambda r: r["id"]):
        if r["state"] == "sent":
            lines.append("sent: %s" % r["url"])
        elif r["attempts"] == 0:
            lines.append("not tried yet: %s (is the monitor running? oarcloud-admin monitor"
                         " status)" % r["url"])
        else:
            lines.append("failed: %s: %s%s" % (r["url"], r["last_error"] or "",
                                               " (tried again later)" if r["state"] == "pending"
                                               else ""))
    return lines, all(r["state"] == "sent" for r in rows)
