"""Progress of setup work: one line per step, saying whether it changed anything."""
import sys


class Progress:
    """Collects step results of an idempotent procedure and prints them."""

    def __init__(self, title, out=None, quiet=False):
        self.title = title
        self.out = out or sys.stdout
        self.quiet = quiet
        self.changes = []

    def say(self, text):
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def step(self, what, changed, detail=""):
        """Report one step; changed is True when the step modified something."""
        if changed:
            self.changes.append(what)
        self.say("  %-8s %s%s" % ("changed" if changed else "ok", what,
                                  (" (%s)" % detail) if detail else ""))
        return changed

    def done(self):
        if self.changes:
            self.say("%s: %d change(s)" % (self.title, len(self.changes)))
        else:
            self.say("%s: already in place, nothing changed" % self.title)
        return list(self.changes)
