"""Reading and editing OAR's oar.conf (shell-style KEY="value" lines), pure functions."""
import re

from oarcloud_lib.errors import Refused

_LINE = re.compile(r'^(\s*)(#?)\s*([A-Z_][A-Z0-9_]*)\s*=\s*(.*?)\s*$')
MARK = "# set by oarcloud"


def _unquote(raw):
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


def parse(text):
    """Active KEY -> value of an oar.conf text (commented lines ignored)."""
    values = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and not m.group(2):
            values[m.group(3)] = _unquote(m.group(4))
    return values


def _render(key, value):
    value = str(value)
    if '"' in value or "\n" in value or "$" in value or "`" in value:
        raise Refused(detail="value for %s may not contain quotes, $, ` or newlines" % key)
    return '%s="%s"' % (key, value)


def update(text, values):
    """Return text with each KEY set to values[KEY] (None comments it out).

    An active line is replaced in place; a key with no active line is
    appended at the end, after a marker comment.
    """
    lines = text.splitlines()
    done = set()
    for i, line in enumerate(lines):
        m = _LINE.match(line)
        if not m or m.group(2) or m.group(3) not in values:
            continue
        key = m.group(3)
        if key in done:
            lines[i] = "#" + line
            continue
        done.add(key)
        if values[key] is None:
            lines[i] = "#" + line
        else:
            lines[i] = _render(key, values[key])
    extra = [_render(k, v) for k, v in values.items() if k not in done and v is not None]
    if extra:
        if MARK not in lines:
            lines += ["", MARK]
        lines += extra
    return "\n".join(lines) + "\n"
