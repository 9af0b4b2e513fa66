#!/bin/bash
# Install everything oarcloud needs on a Debian 12 machine, then the oarcloud
# commands themselves (a venv in /opt/oarcloud, commands in /usr/local/bin).
# Idempotent: a second run installs nothing new.  Run as root.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "install.sh: must run as root" >&2; exit 2; }

VENV=/opt/oarcloud/venv
mapfile -t PKGS < <(grep -vE '^\s*(#|$)' deps/debian-packages.txt)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: installing ${#missing[@]} Debian packages: ${missing[*]}"
    # Packages must not start their daemons (there may be no init system, and
    # oarcloud starts what it needs itself): a policy-rc.d for the install only.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap '[ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "install.sh: Debian packages: all ${#PKGS[@]} present"
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "install.sh: creating $VENV"
    # Debian's python3 (readable by every user, unlike a per-user pyenv), with
    # the system site packages so that Debian's libvirt, psycopg, plumbum and
    # jinja2 bindings are used instead of being compiled again.
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
echo "install.sh: installing oarcloud into $VENV"
# Built with Debian's setuptools and wheel (pyproject.toml): nothing from PyPI
# to build; from PyPI only what Debian lacks (apprise).
"$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation .
for c in oarcloud oarcloud-admin; do
    ln -sfn "$VENV/bin/$c" "/usr/local/bin/$c"
done
# Man pages and bash/zsh completion, generated from the commands themselves.
"$VENV/bin/python" -m oarcloud_cli.docgen --man /usr/local/share/man/man1 \
    --bash /usr/local/share/bash-completion/completions --zsh /usr/local/share/zsh/site-functions
echo "install.sh: done ($(/usr/local/bin/oarcloud-admin --version 2>/dev/null || echo '?'))"
