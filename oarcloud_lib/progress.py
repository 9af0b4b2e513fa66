"""Progress: of setup work (one line per step, saying whether it changed anything)
and of transfers (a meter)."""
import sys
import time


class Progress:
    """Collects step results of an idempotent procedure and prints them."""

    def __init__(self, title, out=None, quiet=False):
        self.title = title
        self.out = out or sys.stdout
        self.quiet = quiet
        self.changes = []
        self.steps = []  # [{what, changed, detail}], for a caller's --json

    def say(self, text):
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def step(self, what, changed, detail=""):
        """Report one step; changed is True when the step modified something."""
        if changed:
            self.changes.append(what)
        self.steps.append({"what": what, "changed": bool(changed), "detail": detail or None})
        self.say("  %-8s %s%s" % ("changed" if changed else "ok", what,
                                  (" (%s)" % detail) if detail else ""))
        return changed

    def done(self):
        if self.changes:
            self.say("%s: %d change(s)" % (self.title, len(self.changes)))
        else:
            self.say("%s: already in place, nothing changed" % self.title)
        return list(self.changes)


class Meter:
    """Progress of a transfer on stderr: a line every few seconds (or on a terminal,
    one line kept up to date)."""

    def __init__(self, what, total=None, out=sys.stderr):
        self.what, self.total, self.out = what, total, out
        self.start = self.last = time.monotonic()
        self.tty = out.isatty()

    def __call__(self, done, final=False):
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-3) / (1 << 20)
        pct = " %3d%%" % min(100, 100 * done // self.total) if self.total else ""
        line = "%s:%s %d MB (%.0f MB/s)" % (self.what, pct, done >> 20, rate)
        self.out.write(("\r%s   " % line) if self.tty else line + "\n")
        if final and self.tty:
            self.out.write("\n")
        self.out.flush()
