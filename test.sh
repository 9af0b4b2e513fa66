#!/bin/bash
# The whole test suite, as root on a Debian 12 machine: installs what it needs
# (./install.sh), then runs the unit tier and the integration tier (which
# brings up the real lab and takes it down again).  Exits non-zero on any
# failure, and when no test ran at all.
set -uo pipefail
cd "$(dirname "$0")"
./install.sh || exit 1
PY=/opt/oarcloud/venv/bin/python
"$PY" -m pytest -p no:cacheprovider -ra --durations=30 tests/unit tests/integration "$@"
rc=$?
if [ $rc -eq 5 ]; then
    echo "test.sh: no test was collected: that is a failure" >&2
    exit 1
fi
exit $rc
