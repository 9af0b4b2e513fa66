"""The Flask application of the web service: who asks, and how errors look.

A request is someone's when it carries
- `Authorization: Bearer TOKEN` (API clients; no cookie, no CSRF token), or
- the session cookie a login set: the login form (POST /login) or a
  `?token=TOKEN` link (as Jupyter's) checks the token and keeps its id in a
  signed cookie (HttpOnly, SameSite=Strict, Secure over HTTPS); the link is
  then redirected to itself without the token.  Each request checks again
  that the token still exists: a revoked token logs its sessions out.
A request made with the cookie that changes something (POST, DELETE) must
carry the session's CSRF token (X-CSRF-Token header or csrf form field).

Each request gets one catalog connection; a user's runs as the user's own
catalog role (row-level security, as the CLI reads), others' as the site's.
"""
import hmac
import logging
import secrets
import time
from pathlib import Path

import psycopg
from flask import Flask, g, jsonify, redirect, render_template, request, session, url_for

from oarcloud_lib import config, paths
from oarcloud_lib.catalog import db, tokens
from oarcloud_lib.errors import (Conflict, Forbidden, NotFound, NotReady, OarcloudError,
                                 OverQuota, Refused)
from oarcloud_lib.web.data import Viewer

LOG = logging.getLogger("oarcloud.web")
CHART_JS = Path("/usr/share/javascript/chart.js/chart.min.js")
SESSION_HOURS = 12
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
# What a browser may load and run: this service's own files only.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
       " frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
STATUS = ((NotFound, 404), (Forbidden, 403), (OverQuota, 403), (Refused, 400), (Conflict, 409),
          (NotReady, 503))
_granted = set()   # accounts whose catalog role this process may take (SET ROLE)


def status_of(error):
    for cls, code in STATUS:
        if isinstance(error, cls):
            return code
    return 500


def create_app(conf=None):
    conf = conf or config.load()
    web = paths.templates_dir() / "web"
    app = Flask("oarcloud_lib.web", template_folder=str(web),
                static_folder=str(web / "static"), static_url_path="/static")
    app.config.update(
        SECRET_KEY=conf.web_secret or secrets.token_hex(16),
        SESSION_COOKIE_NAME="oarcloud_session", SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=bool(conf.web_tls),
        PERMANENT_SESSION_LIFETIME=SESSION_HOURS * 3600, MAX_CONTENT_LENGTH=64 << 10)
    app.json.sort_keys = True
    app.config["OARCLOUD"] = conf
    from oarcloud_lib.web import api, pages
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.before_request(_before)
    app.after_request(_after)
    app.teardown_request(_teardown)
    app.register_error_handler(OarcloudError, _error)
    app.register_error_handler(psycopg.Error, _db_error)
    app.add_url_rule("/static/chart.js", "chart_js", _chart_js)
    app.add_url_rule("/login", "login", _login, methods=["GET", "POST"])
    app.add_url_rule("/logout", "logout", _logout, methods=["POST"])
    return app


def is_api():
    return request.path.startswith("/api/")


def conn():
    """The request's catalog connection: as who asks once they are known."""
    if "conn" not in g:
        g.conn = db.connect(g.get("conf"))
    return g.conn


def site_conn():
    """The request's connection back to the site's role, for a change the
    library checks itself (as the broker does for users)."""
    c = conn()
    c.execute("RESET ROLE")
    return c


def _as_user(c, account):
    import psycopg
    from psycopg import sql
    if account not in _granted:
        # The site's role may take the account's (PostgreSQL 15: CREATEROLE).
        c.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(account)))
        _granted.add(account)
    try:
        c.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(account)))
    except psycopg.errors.InsufficientPrivilege:
        # The account was deleted and made again since: a new role to take.
        c.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(account)))
        c.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(account)))


def _who_from_token(token):
    found = tokens.check(conn(), token)
    return Viewer(found["account"], found["role"], found["token"]) if found else None


def _who_from_session():
    tid, account = session.get("tid"), session.get("account")
    if not isinstance(tid, int) or not isinstance(account, str):
        return None
    row = conn().execute("SELECT a.role FROM api_tokens t JOIN accounts a ON a.name = t.account"
                         " WHERE t.id = %s AND t.account = %s", (tid, account)).fetchone()
    if row is None:   # revoked, or the account went: logged out
        session.clear()
        return None
    return Viewer(account, row[0], tid)


def _start_session(who):
    session.clear()
    session.permanent = True
    session.update(tid=who.token, account=who.account, csrf=secrets.token_urlsafe(24),
                   since=int(time.time()))


def _before():
    g.conf = _conf()
    g.started = time.monotonic()
    if request.endpoint in ("static", "chart_js", "login"):
        return None
    refused = _identify()
    if refused is None and g.who.owner is not None:
        _as_user(conn(), g.who.account)
    return refused


def _identify():
    """g.who from the request's token or session; a response when refused."""
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        g.who = _who_from_token(token.strip()) if scheme.lower() == "bearer" else None
        g.bearer = True
        if g.who is None:
            return _unauthorized("bad or revoked token")
        return None
    g.bearer = False
    if "token" in request.args and request.method == "GET" and not is_api():
        who = _who_from_token(request.args["token"])
        if who is None:
            return _unauthorized("bad or revoked token")
        _start_session(who)
        from urllib.parse import urlencode
        rest = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "token"])
        return redirect(request.path + ("?" + rest if rest else ""))
    g.who = _who_from_session()
    if g.who is None:
        return _unauthorized("log in with a token (oarcloud token create)")
    if request.method in UNSAFE:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf") or ""
        if not hmac.compare_digest(str(sent), str(session.get("csrf", ""))):
            return _fail(403, "missing or bad CSRF token: reload the page")
    return None


def _conf():
    from flask import current_app
    return current_app.config["OARCLOUD"]


def _unauthorized(why):
    if is_api():
        resp = jsonify({"error": why, "status": 401})
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="oarcloud"'
        return resp
    if request.method == "GET":
        return redirect(url_for("login", next=request.full_path.rstrip("?")
                                if "token" not in request.args else request.path))
    return _fail(401, why)


def _fail(code, message):
    if is_api() or g.get("bearer"):
        resp = jsonify({"error": message, "status": code})
        resp.status_code = code
        return resp
    return render_template("error.html", code=code, message=message, who=g.get("who"),
                           csrf=session.get("csrf")), code


def _error(e):
    code = status_of(e)
    if code == 500:
        LOG.exception("web: %s %s", request.method, request.path)
    return _fail(code, str(e))


def _db_error(e):
    LOG.error("web: %s %s: catalog: %s", request.method, request.path, e)
    return _fail(503, "the catalog could not answer; try again")


def _after(resp):
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint not in ("static", "chart_js"):
        resp.headers["Cache-Control"] = "no-store"
    if g.get("started") is not None:
        resp.headers["Server-Timing"] = "app;dur=%.1f" % ((time.monotonic() - g.started) * 1000)
    return resp


def _teardown(_exc):
    c = g.pop("conn", None)
    if c is not None:
        c.close()


def _chart_js():
    from flask import send_file
    if not CHART_JS.exists():
        raise NotReady(detail="%s is missing: install libjs-chart.js" % CHART_JS)
    return send_file(CHART_JS, mimetype="text/javascript", max_age=86400)


def _safe_next(target):
    """Where a login goes next: a path of this site only."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return url_for("pages.overview")


def _login():
    error = None
    nxt = _safe_next(request.values.get("next"))
    if request.method == "POST":
        who = _who_from_token(request.form.get("token", "").strip())
        if who is not None:
            _start_session(who)
            return redirect(nxt)
        error = "bad or revoked token"
    return render_template("login.html", error=error, next=nxt, who=None,
                           csrf=None), 401 if error else 200


def _logout():
    session.clear()
    return redirect(url_for("login"))
