#!/usr/bin/env bash
# The README's demo command: a virtual environment with Spoolgate, then the gateway on its
# embedded defaults (SQLite store, demo config in ./spoolgate-demo). Ctrl-C stops it.
#
# ClamAV when it can be had: as root with apt-get, clamav-daemon and clamav-freshclam are
# installed, freshclam fetches the signatures (from the internet: it may fail) and clamd is
# started; 'spoolgate demo' turns ClamAV on if clamd answers. Without clamd, or without
# signatures (clamd refuses to start with none), the demo runs the built-in scanner alone
# and prints a warning. SPOOLGATE_DEMO_CLAMAV=no skips all of this.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CLAMD_SOCKET=/run/clamav/clamd.ctl   # Debian's LocalSocket in /etc/clamav/clamd.conf

have_signatures() { compgen -G '/var/lib/clamav/*.c[lv]d' >/dev/null; }

setup_clamav() {
    if ! command -v clamd >/dev/null; then
        if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
            echo "== ClamAV is not installed (and this is not root with apt-get): the demo runs without it"
            return 0
        fi
        echo "== apt-get install clamav-daemon clamav-freshclam"
        DEBIAN_FRONTEND=noninteractive apt-get update -q || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q clamav-daemon clamav-freshclam \
            || { echo "== ClamAV could not be installed: the demo runs without it"; return 0; }
    fi
    if ! have_signatures; then
        echo "== freshclam: downloading ClamAV's signatures (needs the internet)"
        timeout 600 freshclam --quiet \
            || { echo "== freshclam failed: no signatures, so no clamd; the demo runs without it"; return 0; }
    fi
    [ -S "$CLAMD_SOCKET" ] && return 0
    echo "== starting clamd (loading the signatures takes a minute and about 1 GB of memory)"
    if [ -d /run/systemd/system ]; then
        systemctl start clamav-daemon || true
    else
        install -d -o clamav -g clamav /run/clamav 2>/dev/null || true
        clamd || true
    fi
    for _ in $(seq 120); do
        [ -S "$CLAMD_SOCKET" ] && return 0
        sleep 1
    done
    echo "== clamd did not come up within 2 minutes: the demo runs without it"
}

if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "== apt-get install python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e .
[ "${SPOOLGATE_DEMO_CLAMAV:-yes}" = no ] || setup_clamav
exec .venv/bin/spoolgate demo --dir spoolgate-demo "$@"
