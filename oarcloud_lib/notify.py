"""Notifications (issue 6): targets as apprise URLs, sending, the retry plan of
asynchronous delivery, and the messages of lifecycle events.

apprise parses and sends; nothing of it leaks out: a URL it cannot parse is
Refused, and a failed delivery is a False in send's answer, never an
exception, so that a failing target never fails a hook or a launch.  The
catalog tables, the delivery queue and the `notify` commands build on this
(issue 6, in progress: nothing is delivered yet).
"""
import logging

import apprise

from oarcloud_lib.errors import Refused

LOG = logging.getLogger(__name__)
MAX_URL = 2048
# Seconds between a failed attempt and the next one; after the last, give up
# (about an hour and a half after the first attempt).
BACKOFF = (10, 30, 60, 300, 900, 3600)
# Seconds a target may take to answer before the attempt counts as failed.
TIMEOUT = 15
MAX_REASON = 1000

# Lifecycle events: kind -> (fields, title, body), %-formats filled from the
# fields.  The first four go to the instance's owner, the others to admins.
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


def send(urls, title, body, timeout=TIMEOUT):
    """Send to each of urls -> [(url, True or False)], in order.  Never raises:
    a failure is logged (secrets masked) and answered False."""
    asset = apprise.AppriseAsset(service_timeout=timeout)
    out = []
    for url in urls:
        ok = False
        try:
            a = _parse(url, asset)
            if a is None:
                LOG.warning("notification to %s: not a URL apprise can parse", redact(url))
            else:
                ok = bool(a.notify(body=body, title=title))
                if not ok:
                    LOG.warning("notification to %s failed", redact(url))
        except Exception as e:  # noqa: BLE001 - a target must never fail its caller
            LOG.warning("notification to %s failed: %s", redact(url), e)
        out.append((url, ok))
    return out


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
