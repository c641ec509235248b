#!/usr/bin/env bash
# Install and start everything the test suite needs on a fresh Debian 12 machine:
# Debian packages (Postfix and its smtp-source/smtp-sink, swaks with its TLS modules,
# PostgreSQL, strace, Dovecot LMTP and IMAP as the company's mail server, clamd, Rspamd with
# Redis for its Bayes, SpamAssassin spamd, Chromium for the webmail tests), the Python
# virtual environment with Spoolgate and its test tools, and a running
# PostgreSQL with a superuser role for root. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postfix swaks libnet-ssleay-perl libio-socket-ssl-perl postgresql strace procps
              python3-venv dovecot-core dovecot-lmtpd dovecot-imapd clamav-daemon
              rspamd spamassassin spamd redis-server chromium)
need=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Postfix asks how to configure the system MTA; "No configuration" keeps it out of the way.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# Postfix instances started by the tests need a main.cf for the default instance to exist.
if [ ! -f /etc/postfix/main.cf ]; then
    cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf 2>/dev/null || touch /etc/postfix/main.cf
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "== python venv"
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

echo "== postgresql"
PG_VERSION=$(ls /etc/postgresql | sort -V | tail -n 1)
if ! pg_ctlcluster "$PG_VERSION" main status >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
fi
for _ in $(seq 1 50); do
    su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
    sleep 0.2
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='root'\"" | grep -q 1 \
    || su postgres -c "psql -qc 'create role root superuser login'"
echo "== test environment ready"
