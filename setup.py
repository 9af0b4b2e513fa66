"""oarcloud: a light cloud on top of the OAR batch scheduler."""
import glob
import os

from setuptools import find_packages, setup

setup(
    name="oarcloud",
    version="0.1.0",
    description="Self-service LXC instances as OAR cloud jobs",
    license="GPL-2.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["oarcloud_lib", "oarcloud_lib.*"]) + ["oarcloud_cli"],
    # The CLI entry code lives in bin/ (design card); it is installed as the
    # oarcloud_cli package so that tests can import and drive it.
    package_dir={"oarcloud_cli": "bin"},
    package_data={"oarcloud_lib.catalog.migrations": ["*.sql"]},
    # templates/ and hooks/ stay top-level in the tree (design card) and are
    # installed under <prefix>/share/oarcloud; oarcloud_lib.paths finds them.
    data_files=[
        ("share/oarcloud/templates", sorted(f for f in glob.glob("templates/*")
                                           if os.path.isfile(f))),
        ("share/oarcloud/templates/web", sorted(glob.glob("templates/web/*.html"))),
        ("share/oarcloud/templates/web/static", sorted(glob.glob("templates/web/static/*"))),
        ("share/oarcloud/hooks", sorted(f for f in glob.glob("hooks/*") if os.path.isfile(f))),
        ("share/oarcloud/hooks/prologue.d", sorted(glob.glob("hooks/prologue.d/*"))),
        ("share/oarcloud/hooks/epilogue.d", sorted(glob.glob("hooks/epilogue.d/*"))),
    ],
    install_requires=[
        "libvirt-python",
        # Debian's python3-plumbum (1.8) serves; its metadata says 0.0.0, so no version here.
        "plumbum",
        "jinja2>=3",
        "psycopg>=3.1",
        "apprise",
        "cryptography",
        "PyYAML",
        "croniter",
        # the web service (docs/web.md): Debian's python3-flask and gunicorn
        "flask",
        "gunicorn",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "oarcloud = oarcloud_cli.user:main",
            "oarcloud-admin = oarcloud_cli.admin:main",
        ],
    },
)
