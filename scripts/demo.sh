#!/usr/bin/env bash
# The README's demo command: a virtual environment with Spoolgate, then the gateway on its
# embedded defaults (SQLite store, demo config in ./spoolgate-demo). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "== apt-get install python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e .
exec .venv/bin/spoolgate demo --dir spoolgate-demo "$@"
