"""A local HTTP server receiving apprise's JSON posts (json://), for the
monitoring tests and bench/monitor.py: each POST is kept with its path,
arrival time and body."""
import http.server
import json
import threading
import time


class Webhook:
    def __init__(self):
        self.posts = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's API
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    data = {}
                hook.posts.append({"path": self.path, "at": at, "json": data})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path=""):
        return "json://127.0.0.1:%d/%s" % (self.port, path)

    def titles(self, path):
        return [p["json"].get("title", "") for p in self.posts if p["path"] == "/" + path]

    def wait(self, prefix, since, timeout):
        """Arrival time of the first POST after since whose title starts with
        prefix (None after timeout seconds)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for p in list(self.posts):
                if p["at"] >= since and str(p["json"].get("title", "")).startswith(prefix):
                    return p["at"]
            time.sleep(0.05)
        return None

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
