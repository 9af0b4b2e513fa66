"""Notifications (issue 6): targets as apprise URLs, sending, the retry plan of
asynchronous delivery, and the messages of lifecycle events.

apprise parses and sends; nothing of it leaks out: a URL it cannot parse is
Refused, and a failed delivery is a False in send's answer, never an
exception, so that a failing target never fails a hook or a launch.  Targets
and the delivery queue live in the catalog (notify_targets, notifications):
producers enqueue (one INSERT per target), and the monitor service delivers
in its own threads, retrying on BACKOFF, so a slow target delays nobody.

The site's policy (the isolation issue): the monitor sends as root from the
server, so a URL is checked when it is added (check_url) and again each time
it is sent (send_one), since its DNS may have changed in between:

- its scheme is one of SCHEMES (web hooks, mail, chat services; nothing local
  such as windows://, dbus:// or syslog://);
- it sets no HTTP header but SAFE_HEADERS (apprise's `+Header=value`; the
  `-name=value` GET parameters and `:key=value` payload extras stay allowed)
  and no method but POST (json://, xml://, form://: `method=`);
- its own timeouts stay under the caps: rto (read) MAX_READ_TIMEOUT, cto
  (connect) MAX_CONNECT_TIMEOUT, except mail, whose cto bounds every SMTP
  exchange, capped at MAX_READ_TIMEOUT; and no apprise `retry=` (BACKOFF
  retries).  A URL asking for more is refused when added; when sent, any
  larger value (an apprise default such as apprise://'s 30 s read, mail's
  15 s, or a URL stored before this policy) is clamped to the cap;
- every address its host resolves to is global: not loopback, link-local,
  private, shared (CGNAT), unspecified, multicast, reserved, nor the site's
  own (server_address, nodes_cidr), unless it is in one of the admin's
  notify_allow_cidrs (site config).  When sent, the same holds of every
  address apprise connects to, redirects included (a guard on
  socket.getaddrinfo for this call only: no DNS rebinding between the check
  and the connection).

Users are told only "delivery failed" of a failed attempt (public_reason):
apprise's reason would tell a closed port from a filtered one or from an
HTTP error, which made `notify test` a port scanner.  The reason itself goes
to the monitor's log, and stays in the admins' own messages.
"""
import collections
import contextlib
import contextvars
import ipaddress
import logging
import socket
import threading

import apprise

from oarcloud_lib import paths
from oarcloud_lib.catalog import quotas
from oarcloud_lib.catalog.db import dicts
from oarcloud_lib.errors import NotFound, Refused

LOG = logging.getLogger(__name__)
MAX_URL = 2048
# Seconds between a failed attempt and the next one; after the last, give up
# (about an hour and a half after the first attempt).
BACKOFF = (10, 30, 60, 300, 900, 3600)
MAX_REASON = 1000
# URLs of one alarm.  Targets per user: the `targets` quota (catalog.quotas).
MAX_TARGETS = 20

# apprise schemes a site may send to.  Local ones (windows, macosx, dbus, kde,
# qt, gnome, glib, syslog...) and raw sockets (rsyslog, growl, mqtt...) are not.
SCHEMES = frozenset((
    "mailto", "mailtos", "json", "jsons", "xml", "xmls", "form", "forms", "ntfy", "ntfys",
    "gotify", "gotifys", "matrix", "matrixs", "rocket", "rockets", "mmost", "mmosts",
    "apprise", "apprises", "workflow", "workflows",
    "slack", "discord", "msteams", "tgram", "pover", "gchat", "pbul",
))
# Those whose URL holds tokens, not a host: apprise sends to the service's own
# public API (the send-time guard still checks where it connects).
CLOUD_SCHEMES = frozenset(("slack", "discord", "msteams", "tgram", "pover", "gchat", "pbul"))
SAFE_HEADERS = ("Content-Type",)
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                          "CONNECT"))
MAX_READ_TIMEOUT = 10.0
MAX_CONNECT_TIMEOUT = 5.0

# Addresses a notification may not go to (unless allowed), in this order: the
# first that matches names the refusal.
PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                  "192.168.0.0/16", "fc00::/7"))
SHARED = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
KINDS = (
    ("a loopback address", lambda ip: ip.is_loopback),
    ("an unspecified address", lambda ip: ip.is_unspecified),
    ("a link-local address", lambda ip: ip.is_link_local),
    ("a multicast address", lambda ip: ip.is_multicast),
    ("a private address", lambda ip: any(ip in n for n in PRIVATE)),
    ("a shared (CGNAT) address", lambda ip: ip in SHARED),
    ("a reserved address", lambda ip: ip.is_reserved or not ip.is_global),
)
REFUSED = "notification URL refused: "
NOT_PARSED = "not a URL apprise can parse"
# What users are told of a failed attempt (see public_reason).
DELIVERY_FAILED = "delivery failed"

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
    "node_drain": (("instance", "node", "when"),
                   "Instance %(instance)s: node %(node)s is being drained",
                   "Node %(node)s, where instance %(instance)s runs, is being taken out of"
                   " service: %(when)s. Launch a replacement elsewhere if you need one."),
    "drain_deadline": (("node", "jobs"),
                       "Node %(node)s: drain deadline passed",
                       "The drain deadline of node %(node)s passed: jobs %(jobs)s ended."),
    "group_scaled": (("group", "action", "before", "after", "reason"),
                     "Group %(group)s: %(action)s to %(after)d",
                     "Scaling group %(group)s: %(action)s from %(before)d to %(after)d "
                     "member(s): %(reason)s."),
    "group_member_lost": (("group", "member", "reason"),
                          "Group %(group)s: member %(member)s replaced",
                          "Member %(member)s of scaling group %(group)s ended (%(reason)s): a "
                          "new member takes its place."),
    "group_unreachable": (("group", "desired", "reason"),
                          "Group %(group)s: %(desired)d member(s) not reachable",
                          "Scaling group %(group)s cannot have its %(desired)d member(s): "
                          "%(reason)s"),
    "service_died": (("service", "host", "how", "action"),
                     "Service %(service)s died on %(host)s",
                     "oarcloud's %(service)s service on %(host)s %(how)s: %(action)s."),
}
ADMIN_EVENTS = ("node_state", "hook_failed", "service_died", "drain_deadline")

# The site's destination policy (site_policy): allowed and the site's own
# networks, and how to resolve a host (None: the system's resolver).
Policy = collections.namedtuple("Policy", "allow site resolve", defaults=(None,))


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


def check_url(url, policy=None):
    """url if it is one notification URL apprise can parse, of one of SCHEMES,
    with options the policy allows (no HTTP header, no method but POST,
    timeouts under the caps) and, given a policy (site_policy), a host that
    resolves only to addresses it allows.  Raises Refused."""
    a = _parse(url)
    if a is None:
        raise Refused(detail="bad notification URL %r: not one URL apprise can parse "
                             "(see https://github.com/caronc/apprise/wiki)"
                      % (redact(url) if isinstance(url, str) else url,))
    why = _option_refusal(url, a[0])
    if why:
        raise Refused(why, detail=why)
    if policy is not None:
        _check_hosts(url, a[0], policy.resolve, policy.allow, policy.site)
    return url


def redact(url):
    """url with its secrets (passwords, tokens) masked, for lists and logs."""
    a = _parse(url)
    if a is None:
        # Unparsed: keep only the scheme, as the rest may hold a secret.
        scheme = url.partition("://")[0] if isinstance(url, str) else ""
        return "%s://…" % scheme[:20] if scheme and scheme != url else "…"
    return a[0].url(privacy=True)


def _shown(url):
    """url in a refusal: masked (redact), without its query."""
    return redact(url).partition("?")[0]


# -- the site's policy -------------------------------------------------------------------

def _timeout_caps(plugin):
    """(connect, read) caps of plugin's timeouts: mail's one timeout (cto)
    bounds every SMTP exchange, not only the connection."""
    if hasattr(plugin, "smtp_host"):
        return MAX_READ_TIMEOUT, MAX_READ_TIMEOUT
    return MAX_CONNECT_TIMEOUT, MAX_READ_TIMEOUT


def _option_refusal(url, plugin):
    """Why the policy refuses url's scheme or options (plugin: apprise's parse
    of it), or None."""
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        return "%s%s: scheme %s:// is not one this site sends to (%s)" % (
            REFUSED, _shown(url), scheme, ", ".join(sorted(SCHEMES)))
    try:
        parsed = type(plugin).parse_url(url) or {}
    except Exception:  # noqa: BLE001 - apprise parsed it once already
        parsed = {}
    headers = set(parsed.get("qsd+") or ())
    if isinstance(getattr(plugin, "headers", None), dict):
        headers |= set(plugin.headers)
    safe = {h.lower() for h in SAFE_HEADERS}
    bad = sorted(str(h) for h in headers if str(h).lower() not in safe)
    if bad:
        return "%s%s: it sets HTTP header(s) %s: no header but %s may be set" % (
            REFUSED, _shown(url), ", ".join(bad)[:200], ", ".join(SAFE_HEADERS) or "none")
    method = getattr(plugin, "method", None)
    if isinstance(method, str) and method.upper() in HTTP_METHODS and method.upper() != "POST":
        return "%s%s: method %s: only POST is allowed" % (REFUSED, _shown(url), method.upper())
    qsd = parsed.get("qsd") or {}
    for arg, cap, what in zip(("cto", "rto"), _timeout_caps(plugin), ("connect", "read")):
        if arg in qsd:
            try:
                value = float(qsd[arg])
            except (TypeError, ValueError):
                continue    # apprise ignores it
            if not value <= cap:
                return "%s%s: %s=%s is over the %g s cap (%s timeout)" % (
                    REFUSED, _shown(url), arg, str(qsd[arg])[:20], cap, what)
    if str(qsd.get("retry", "0")).strip() not in ("", "0"):
        return "%s%s: retry=%s: oarcloud retries by itself (leave retry out)" % (
            REFUSED, _shown(url), str(qsd["retry"])[:20])
    return None


def _networks(cidrs, what):
    """CIDRs (text or networks) -> networks; a bad one is logged and skipped."""
    out = []
    for c in [cidrs] if isinstance(cidrs, str) else cidrs or ():
        try:
            out.append(c if isinstance(c, (ipaddress.IPv4Network, ipaddress.IPv6Network))
                       else ipaddress.ip_network(str(c).strip(), strict=False))
        except ValueError:
            LOG.warning("%s: %r is not a CIDR: ignored", what, c)
    return tuple(out)


def site_policy(conf=None):
    """The site's Policy: the admin's notify_allow_cidrs allowed, the server's
    address and nodes_cidr the site's own (refused).  Raises NotReady when the
    site config is missing."""
    from oarcloud_lib import config
    conf = conf or config.load()
    site = [conf.nodes_cidr] if conf.nodes_cidr else []
    try:
        site.append(str(ipaddress.ip_address(conf.server_address)))
    except ValueError:      # a name: its addresses
        try:
            site += _resolve(conf.server_address)
        except (OSError, UnicodeError):
            LOG.warning("server_address %r does not resolve", conf.server_address)
    return Policy(_networks(conf.notify_allow_cidrs, "notify_allow_cidrs"),
                  _networks(site, "server_address or nodes_cidr"))


def address_refusal(address, allow=(), site=()):
    """What address is that the policy refuses ('a loopback address'...), or
    None when it is global or inside one of allow (CIDRs).  site: the site's
    own CIDRs, refused too.  Raises ValueError on a bad address."""
    ip = ipaddress.ip_address(str(address).split("%")[0])
    if ip.version == 6:     # IPv4 inside IPv6 (mapped, 6to4, NAT64): where it goes
        if ip.ipv4_mapped or ip.sixtofour:
            ip = ip.ipv4_mapped or ip.sixtofour
        elif ip in NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in n for n in _networks(allow, "allow")):
        return None
    for kind, test in KINDS:
        if test(ip):
            return kind
    if any(ip in n for n in _networks(site, "site")):
        return "an address of the site itself (server_address, nodes_cidr)"
    return None


def _resolve(host):
    """The addresses host resolves to (the system's resolver, unguarded)."""
    return sorted({ai[4][0] for ai in _getaddrinfo(host, None, type=socket.SOCK_STREAM)})


def _hosts(plugin, scheme):
    """The hosts url's plugin connects to, as far as its URL tells."""
    if scheme in CLOUD_SCHEMES or getattr(plugin, "mode", None) in ("cloud", "t2bot"):
        return []   # the service's own public host (ntfy.sh, t2bot.io...)
    host = getattr(plugin, "smtp_host", None) or getattr(plugin, "host", None)
    return [host.strip("[]")] if isinstance(host, str) and host.strip("[]") else []


def _refusal(shown, address, kind):
    return "%s%s resolves to %s, %s (an admin may allow it: notify_allow_cidrs in %s)" % (
        REFUSED, shown, address, kind, paths.SITE_CONF)


def _check_hosts(url, plugin, resolve, allow, site):
    checked = []
    for host in _hosts(plugin, url.partition("://")[0].lower()):
        try:
            ipaddress.ip_address(host.split("%")[0])
            addresses = [host]
        except ValueError:
            try:
                addresses = list((resolve or _resolve)(host))
            except (OSError, UnicodeError):
                addresses = []
            if not addresses:
                why = "%s%s: host %s does not resolve" % (REFUSED, _shown(url), host[:100])
                raise Refused(why, detail=why)
        for address in addresses:
            try:
                kind = address_refusal(address, allow, site)
            except ValueError:
                kind = "not an IP address"
            if kind:
                why = _refusal(_shown(url), address, kind)
                raise Refused(why, detail=why)
        checked += addresses
    return checked


def check_destination(url, resolve=None, allow=(), site=()):
    """The addresses url's host resolves to, once each is checked: global, or
    inside one of allow (CIDRs), and none in site (the site's own CIDRs).
    resolve(host) -> addresses (default: the system's resolver).  A scheme
    whose URL names no host (CLOUD_SCHEMES, ntfy's cloud) -> [].  Raises
    Refused (also on a URL apprise cannot parse or a host that does not
    resolve)."""
    a = _parse(url)
    if a is None:
        raise Refused(detail="bad notification URL: not one URL apprise can parse")
    return _check_hosts(url, a[0], resolve, allow, site)


# At send time, every address apprise resolves (to connect, redirects
# included) passes the policy of the send in progress: a guard on
# socket.getaddrinfo, for the calls made in that send's context only.
_getaddrinfo = socket.getaddrinfo
_GUARD = contextvars.ContextVar("oarcloud_notify_policy", default=None)
_guard_lock = threading.Lock()


def _guarded_getaddrinfo(host, port, *args, **kwargs):
    infos = _getaddrinfo(host, port, *args, **kwargs)
    policy = _GUARD.get()
    if policy is not None:
        for ai in infos:
            kind = address_refusal(ai[4][0], policy.allow, policy.site)
            if kind:
                why = _refusal("host %s" % host, ai[4][0], kind)
                LOG.warning("notification: connection %s", why)
                raise socket.gaierror(socket.EAI_FAIL, why)
    return infos


@contextlib.contextmanager
def guarded(policy):
    """Within the block (this thread, and what apprise runs in its context),
    connections go only to addresses policy allows: getaddrinfo raises
    socket.gaierror on any other."""
    with _guard_lock:
        if socket.getaddrinfo is not _guarded_getaddrinfo:
            socket.getaddrinfo = _guarded_getaddrinfo
    token = _GUARD.set(policy)
    try:
        yield
    finally:
        _GUARD.reset(token)


def _clamp(plugin):
    """Cap plugin's timeouts (_timeout_caps) and drop apprise's own retries."""
    connect, read = _timeout_caps(plugin)
    if not plugin.socket_connect_timeout <= connect:
        plugin.socket_connect_timeout = connect
    if not plugin.socket_read_timeout <= read:
        plugin.socket_read_timeout = read
    if getattr(plugin, "retry", 0):
        plugin.retry = 0


_send_asset = None


def _asset():
    """apprise's settings for sending: in the caller's thread, no deadline of
    its own (no abandoned worker in apprise's shared pool: a slow target holds
    only its caller's thread, see monitor.pick)."""
    global _send_asset
    if _send_asset is None:
        _send_asset = apprise.AppriseAsset(async_mode=False, service_timeout=0)
    return _send_asset


def public_reason(why):
    """What a user is told of a failed attempt whose reason was why: the
    policy's own refusals as they are, anything else (apprise's account of a
    connection refused, a timeout, an HTTP error...) as DELIVERY_FAILED."""
    if why is None:
        return None
    if why.startswith(REFUSED) or why == NOT_PARSED:
        return why
    return DELIVERY_FAILED


# What apprise says is ours to report (send_one's reason, Refused), never printed as is.
logging.getLogger("apprise").propagate = False


def send_one(url, title, body, policy=None):
    """Send to url -> (True, None) or (False, why: the policy's refusal, or
    apprise's warnings about this very call).  Never raises.  Given a policy
    (site_policy), url is checked again (check_url) and apprise may connect
    only to addresses it allows (guarded).  Timeouts are clamped to the caps
    (connect MAX_CONNECT_TIMEOUT, read MAX_READ_TIMEOUT)."""
    try:
        a = _parse(url, asset=_asset())
        if a is None:
            return False, NOT_PARSED
        why = _option_refusal(url, a[0])
        if why is None and policy is not None:
            try:
                _check_hosts(url, a[0], policy.resolve, policy.allow, policy.site)
            except Refused as e:
                why = e.kwargs.get("detail") or str(e)
        if why is None:
            _clamp(a[0])
            with guarded(policy) if policy is not None else contextlib.nullcontext():
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


def send(urls, title, body, policy=None):
    """Send to each of urls -> [(url, True or False)], in order.  Never raises:
    a failure is logged (secrets masked) and answered False."""
    return [(url, send_one(url, title, body, policy)[0]) for url in urls]


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


def add_target(conn, owner, url, policy=None):
    """Add url to owner's targets -> (its row, True if new), once check_url
    passed it with policy (default: the site's, site_policy).  A user's
    targets count against their `targets` quota.  Raises Refused, OverQuota."""
    check_url(url, site_policy() if policy is None else policy)
    with conn.transaction():
        quotas.lock(conn, owner)    # concurrent adds count one after the other
        for row in targets(conn, owner):
            if row["url"] == url:
                return row, False
        quotas.require(conn, owner, {"targets": 1})
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
    """The last messages to owner, newest first (URLs masked; a user's reasons
    as public_reason tells them)."""
    query = ("SELECT id, url, event, title, state, attempts, last_error, created, sent"
             " FROM notifications WHERE owner IS NOT DISTINCT FROM %s")
    args = [owner]
    if ids is not None:
        query += " AND id = ANY(%s)"
        args.append(list(ids))
    rows = dicts(conn.execute(query + " ORDER BY id DESC LIMIT %s", args + [limit]))
    for r in rows:
        r["url"] = redact(r["url"])
        if owner is not None:
            r["last_error"] = public_reason(r["last_error"])
    return rows


def due(conn, limit=20, per_owner=None):
    """Pending messages whose time has come, oldest first; with per_owner, at
    most that many of each owner (None: the admins' count as one), so that
    one owner's backlog hides nobody else's."""
    if per_owner is None:
        return dicts(conn.execute("SELECT id, owner, url, title, body, attempts"
                                  " FROM notifications WHERE state = 'pending'"
                                  " AND next_try <= now() ORDER BY id LIMIT %s", (limit,)))
    return dicts(conn.execute(
        "SELECT n.id, n.owner, n.url, n.title, n.body, n.attempts FROM notifications n"
        " JOIN (SELECT id, row_number() OVER (PARTITION BY owner ORDER BY id) AS rank"
        "  FROM notifications WHERE state = 'pending' AND next_try <= now()) d"
        " ON d.id = n.id WHERE d.rank <= %s ORDER BY n.id LIMIT %s", (per_owner, limit)))


def delivered(conn, row, ok, why, now):
    """Record an attempt at row: sent, or tried again later, or given up.  Of
    a user's message (row's owner set, or unknown), only public_reason(why) is
    kept: users read their rows; the reason itself is in the monitor's log."""
    attempts = row["attempts"] + 1
    if row.get("owner", "") is not None:
        why = public_reason(why)
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


def outcome_line(row, detail=False):
    """How the delivery of one history row went, in one line for `notify test`:
    with detail (admins), the reason recorded; else only public_reason's."""
    if row["state"] == "sent":
        return "sent: %s" % row["url"]
    if row["attempts"] == 0:
        return ("not tried yet: %s (is the monitor running? oarcloud-admin monitor status)"
                % row["url"])
    why = row["last_error"] if detail else public_reason(row["last_error"])
    return "failed: %s: %s%s" % (row["url"], why or DELIVERY_FAILED,
                                 " (tried again later)" if row["state"] == "pending" else "")


def test(conn, owner, wait=30.0, detail=None):
    """Send a test message to each of owner's targets and wait for the monitor
    to deliver it -> (a line saying how each went (outcome_line), True if all
    were sent).  detail: tell the reasons of failures; by default only to the
    admins (owner None)."""
    import time
    detail = owner is None if detail is None else detail
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
    lines = [outcome_line(r, detail) for r in sorted(rows, key=lambda r: r["id"])]
    return lines, all(r["state"] == "sent" for r in rows)
