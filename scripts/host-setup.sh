#!/usr/bin/env bash
# The host part of dbtier's set-up, run as root on every host that runs members: this machine
# (scripts/setup.sh calls it) or a host reached over SSH (the ssh provider sends it on stdin).
# Idempotent: a second run only checks.
#   - Debian packages: PostgreSQL 15 with pgaudit, etcd, pgBackRest, HAProxy, PgBouncer, keepalived, the Prometheus
#     exporters (postgres, pgbouncer, node), Python venv
#     support, nftables (the network drills and the host firewall)
#   - the unprivileged OS user that runs the database processes (PostgreSQL refuses root)
#   - a runtime venv for that user (Patroni), built from Debian's python3 so that user can read it
set -euo pipefail

OS_USER="${DBTIER_OS_USER:-dbtier}"
RUNTIME_VENV="${DBTIER_RUNTIME_VENV:-/opt/dbtier/venv}"
PACKAGES=(postgresql-15 postgresql-15-pgaudit etcd-server etcd-client pgbackrest haproxy pgbouncer keepalived zstd lz4 bzip2
          prometheus-postgres-exporter prometheus-node-exporter
          python3-venv procps util-linux iproute2 nftables curl)

say() { printf 'host-setup: %s\n' "$*"; }
quietly() {
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; say "failed: $*"; return 1; fi
  rm -f "$log"
}
if [ "$(id -u)" != 0 ]; then say "must run as root"; exit 1; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  # Do not let the packages create Debian's own cluster on 5432 or start etcd on 2379/2380.
  mkdir -p /etc/postgresql-common
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  fi
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  apt-get update -qq
  quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# Debian's etcd unit would hold 2379/2380 (now or after a reboot); dbtier runs its own members,
# under units of their own where systemd is the init (/run/systemd/system: systemd's own test).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  # The same for the units of Debian's haproxy (its own config), pgbouncer (6432), keepalived and the exporters.
  for unit in etcd haproxy pgbouncer keepalived prometheus-postgres-exporter prometheus-pgbouncer-exporter \
              prometheus-node-exporter; do
    if systemctl is-enabled --quiet "$unit.service" 2>/dev/null || systemctl is-active --quiet "$unit.service" 2>/dev/null; then
      say "stopping and disabling Debian's $unit.service (dbtier runs its own)"
      systemctl disable --now --quiet "$unit.service"
    fi
  done
fi

if ! id "$OS_USER" >/dev/null 2>&1; then
  say "creating OS user $OS_USER"
  useradd --system --user-group --create-home --home-dir "/home/$OS_USER" --shell /bin/sh "$OS_USER"
fi

runtime_stamp="$RUNTIME_VENV/.dbtier-runtime-1"
if [ ! -e "$runtime_stamp" ]; then
  say "building the runtime venv $RUNTIME_VENV (Patroni) from /usr/bin/python3"
  mkdir -p "$(dirname "$RUNTIME_VENV")"
  /usr/bin/python3 -m venv "$RUNTIME_VENV"
  quietly "$RUNTIME_VENV/bin/pip" install 'patroni[etcd3,psycopg3]>=4.0' 'psycopg[binary]>=3.1'
  chmod -R a+rX "$RUNTIME_VENV"
  touch "$runtime_stamp"
fi
say "ready ($("$RUNTIME_VENV/bin/patroni" --version 2>/dev/null), $(/usr/bin/etcd --version 2>/dev/null | head -1), PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'))"
