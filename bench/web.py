#!/opt/oarcloud/venv/bin/python
"""Web benchmark (issue 17): the dashboard and the API on a catalog of 1,000
instances with a week of samples, synthetic rows in a database of the
bench's own (the lab's catalog is not touched), served by the same code as
the web service (gunicorn, plain HTTP on 127.0.0.1 for the bench).

Figures, medians of --repeat requests after a warm-up, beside baselines of
the same run (the same server answering a static file; chromium painting the
login page):

- API list latency: /api/v1/instances (1,000 rows) as an admin and as the
  user who owns them (row-level security), /api/v1/overview, a node's 7-day
  metric series;
- first paint (chromium's first-contentful-paint) of the overview and of the
  instances page, and when a node page's 7-day chart has its points.

Run as root with the lab up (its PostgreSQL and OAR):
    bench/web.py [--repeat 30] [--instances 1000] [--json bench/results/web.json]
Goals (issue 17, compared, never asserted): first paint < 1 s, list p50 < 100 ms.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchlib import TREE, VENV_PY, run

from oarcloud_lib import config, daemons
from oarcloud_lib.catalog import db, tokens
from oarcloud_lib.tools.postgres import Cluster

DB = "oarcloud_bench_web"
USER, ADMIN_ACCOUNT = "ocbenchweb", "ocbenchwebadm"
PORT = 18443
GOALS = {"list_p50": 0.100, "first_paint": 1.0}
METRICS = ("cpu", "memory", "net_rx", "net_tx", "procs", "rootfs")
NODE_METRICS = ("cpu", "memory", "load", "net_rx", "net_tx", "disk", "alive")


def fill(conn, count, now):
    """count running instances of USER on the lab's nodes, a week of their
    samples at the 900 s step, and the nodes' samples at every step."""
    conn.execute("INSERT INTO accounts (name, uid, role, ssh_pubkey, unix_created) VALUES"
                 " (%s, 59990, 'user', 'ssh-ed25519 AAAA bench', false),"
                 " (%s, 59991, 'admin', 'ssh-ed25519 AAAA bench', false)", (USER, ADMIN_ACCOUNT))
    with conn.cursor() as cur, cur.copy("COPY instances (domain, job_id, idx, name, owner, node,"
                                        " image, cores, memory, disk, ip, state) FROM STDIN") as cp:
        for i in range(count):
            cp.write_row(("oc%d-0" % (i + 1), i + 1, 0, "inst%d" % i, USER,
                          "node-%d" % (i % 2 + 1), "tiny", 1, 256 << 20, 1 << 30,
                          "198.18.%d.%d" % (i // 250, i % 250 + 2), "running"))
    start = now - 7 * 86400
    rows = 0
    with conn.cursor() as cur, cur.copy("COPY samples (kind, subject, owner, metric, step, t,"
                                        " value) FROM STDIN") as cp:
        def put(kind, subject, owner, metric, step, since, every):
            nonlocal rows
            t = since - since % every
            while t < now:
                cp.write_row((kind, subject, owner, metric, step,
                              datetime.datetime.fromtimestamp(t, datetime.timezone.utc),
                              (t // every) % 97))
                t += every
                rows += 1
        for i in range(count):
            for m in METRICS:
                put("instance", "oc%d-0" % (i + 1), USER, m, 900, start, 900)
        for node in ("node-1", "node-2"):
            for m in NODE_METRICS:
                put("node", node, None, m, 900, start, 900)
                put("node", node, None, m, 60, now - 86400, 60)
                put("node", node, None, m, 0, now - 3600, 5)
    return rows


def get(url, token, repeat):
    """Median, p90 and max seconds of GET url (one warm-up first)."""
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token}
                                 if token else {})
    times, size = [], 0
    for i in range(repeat + 1):
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=60) as resp:
            size = len(resp.read())
            assert resp.status == 200
        if i:
            times.append(time.monotonic() - t)
    times.sort()
    return {"p50": statistics.median(times), "p90": times[int(len(times) * 0.9) - 1],
            "max": times[-1], "bytes": size}


def paints(base, token, repeat):
    """Chromium's first-contentful-paint of pages (median ms), and when a
    node page's 7-day cpu chart has its points."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--user-data-dir=/tmp/oarcloud-bench-web-chromium"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    out = {}
    fcp = ("const e = performance.getEntriesByName('first-contentful-paint')[0];"
           " return e ? e.startTime : null")
    try:
        drv.get(base + "login")
        for name, path in (("login", "login"), ("overview", ""), ("instances", "instances")):
            if name == "overview":
                drv.get(base + "?token=" + token)
            times = []
            for _ in range(repeat):
                drv.get(base + path)
                times.append(_polled(drv, fcp) / 1000)
            out[name] = statistics.median(times)
        times = []
        for _ in range(max(3, repeat // 3)):
            t = time.monotonic()
            drv.get(base + "nodes/node-1?range=7d")
            canvas = drv.find_element(By.CSS_SELECTOR, "canvas[data-metric=cpu]")
            while (canvas.get_attribute("data-points") or "") in ("", "0"):
                time.sleep(0.01)
            times.append(time.monotonic() - t)
        out["node_7d_chart"] = statistics.median(times)
    finally:
        drv.quit()
        subprocess.run(["rm", "-rf", "/tmp/oarcloud-bench-web-chromium"])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=30, help="timed requests of each kind")
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--json", default=str(Path(TREE) / "bench" / "results" / "web.json"))
    args = ap.parse_args()
    conf = config.load()
    cluster = Cluster()
    cluster.drop_database(DB)
    cluster.ensure_database(DB, conf.catalog_user)
    cluster.psql("DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN"
                 " CREATE ROLE %s LOGIN IN ROLE oarcloud_users; END IF; END$$" % (USER, USER))
    server = None
    pidfile = Path("/run/oarcloud/bench-web.pid")
    try:
        t = time.monotonic()
        with db.connect(conf, dbname=DB) as conn:
            db.migrate(conn)
            rows = fill(conn, args.instances, time.time())
            conn.execute("ANALYZE")
            _, user_token = tokens.create(conn, USER, "bench")
            _, admin_token = tokens.create(conn, ADMIN_ACCOUNT, "bench")
        filled = time.monotonic() - t
        print("bench/web.py: %d instances, %d samples written in %.1f s"
              % (args.instances, rows, filled))
        code = ("import sys; sys.path.insert(0, %r)\nfrom oarcloud_lib import config\n"
                "from oarcloud_lib.web import service\nc = config.load()\n"
                "c.catalog_db, c.web_tls, c.web_listen = %r, False, '127.0.0.1:%d'\n"
                "service.serve(c, %r, access_log=False)\n" % (TREE, DB, PORT, str(pidfile)))
        server = subprocess.Popen([VENV_PY, "-I", "-c", code], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        base = "http://127.0.0.1:%d/" % PORT
        if not daemons.wait_for(lambda: _answers(base), timeout=20):
            raise SystemExit("bench/web.py: the bench's web server did not answer")
        api = {
            "static file (baseline)": get(base + "static/app.css", None, args.repeat),
            "whoami": get(base + "api/v1/whoami", admin_token, args.repeat),
            "instances as admin": get(base + "api/v1/instances", admin_token, args.repeat),
            "instances as their user": get(base + "api/v1/instances", user_token, args.repeat),
            "overview as admin": get(base + "api/v1/overview", admin_token, args.repeat),
            "node cpu 7d": get(base + "api/v1/metrics?kind=node&subject=node-1&metric=cpu"
                               "&range=7d", admin_token, args.repeat),
            "instance cpu 7d": get(base + "api/v1/metrics?kind=instance&subject=oc1-0"
                                   "&metric=cpu&range=7d", user_token, args.repeat),
        }
        paint = paints(base, admin_token, max(5, args.repeat // 3))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        cluster.drop_database(DB)
        cluster.psql("DROP ROLE IF EXISTS %s" % USER)
    base_s = api["static file (baseline)"]["p50"]
    print("\n%-26s %9s %9s %9s %9s %8s" % ("API", "p50 ms", "p90 ms", "max ms", "x static",
                                           "KiB"))
    for name, r in api.items():
        print("%-26s %9.1f %9.1f %9.1f %9.1f %8.0f" % (name, r["p50"] * 1000, r["p90"] * 1000,
                                                     r["max"] * 1000, r["p50"] / base_s,
                                                     r["bytes"] / 1024))
    print("\n%-26s %9s %9s" % ("page", "ms", "x login"))
    for name, v in paint.items():
        print("%-26s %9.0f %9.1f" % (name, v * 1000, v / paint["login"]))
    worst_list = max(api["instances as admin"]["p50"], api["instances as their user"]["p50"])
    print("\ngoals: list p50 %.0f ms (goal < %d ms: %s); overview first paint %.0f ms (goal"
          " < %d ms: %s)" % (worst_list * 1000, GOALS["list_p50"] * 1000,
                             "met" if worst_list < GOALS["list_p50"] else "NOT met",
                             paint["overview"] * 1000, GOALS["first_paint"] * 1000,
                             "met" if paint["overview"] < GOALS["first_paint"] else "NOT met"))
    commit = run(["git", "-C", TREE, "rev-parse", "--short", "HEAD"]).stdout.strip()
    out = {"bench": "web", "when": datetime.datetime.now().isoformat(timespec="seconds"),
           "commit": commit, "machine": {"host": platform.node(), "cpus": os.cpu_count()},
           "args": vars(args), "instances": args.instances, "samples": rows,
           "fill_seconds": filled, "repeat": args.repeat, "api": api, "paint": paint,
           "goals": GOALS, "list_p50": worst_list,
           "goals_met": {"list_p50": worst_list < GOALS["list_p50"],
                         "first_paint": paint["overview"] < GOALS["first_paint"]}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print("results: %s" % args.json)
    return 0


def _polled(drv, script, timeout=10):
    """script's first answer that is not null (paint entries come a moment late)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = drv.execute_script(script)
        if value is not None:
            return value
        time.sleep(0.02)
    raise SystemExit("bench/web.py: no first-contentful-paint within %d s" % timeout)


def _answers(base):
    try:
        with urllib.request.urlopen(base + "login", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
