"""Every generated file comes from a jinja2 template in templates/."""
import jinja2

from oarcloud_lib import paths

_ENV = None


def env():
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(paths.templates_dir())),
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
            autoescape=jinja2.select_autoescape(["xml", "xml.j2", "html"]))
    return _ENV


def render(template, **context):
    return env().get_template(template).render(**context)


def ensure_rendered(path, template, mode=0o644, **context):
    """path holds template rendered with context (mode); True if it was written."""
    from pathlib import Path
    path, text = Path(path), render(template, **context)
    if path.exists() and path.read_text() == text and path.stat().st_mode & 0o7777 == mode:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def ensure_logrotate():
    """The logrotate rule of /var/log/oarcloud (server and nodes); True if written."""
    return ensure_rendered(paths.LOGROTATE, "logrotate.j2", log_dir=paths.LOG_DIR)
