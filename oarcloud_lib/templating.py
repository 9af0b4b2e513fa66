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
