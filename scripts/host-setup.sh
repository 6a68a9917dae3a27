#!/usr/bin/env bash
# The host part of dbtier's set-up, run as root on every host that runs members: this machine
# (scripts/setup.sh calls it) or a host reached over SSH (the ssh provider sends it on stdin).
# Idempotent: a second run only checks.
#   - the engine's packages (DBTIER_ENGINE, postgres by default): for PostgreSQL, Debian's PostgreSQL 15 with pgaudit,
#     etcd, pgBackRest, HAProxy, PgBouncer, keepalived, the Prometheus exporters (postgres, pgbouncer, node); for
#     MongoDB, mongodb-org 7.0 (mongod, the database tools, mongosh) from MongoDB's own apt repository, signed by
#     its key (Debian ships no MongoDB); for both Python venv support, nftables (the network drills and the host
#     firewall)
#   - the unprivileged OS user that runs the database processes (PostgreSQL refuses root)
#   - a runtime venv for that user, built from Debian's python3 so that user can read it, with the Python parts of
#     each engine in DBTIER_RUNTIME_ENGINES (default: DBTIER_ENGINE): Patroni for postgres; for mongodb the
#     libraries of the oplog archiver, which runs dbtier's own code (shipped by the provider) with it
# DBTIER_HOST_SETUP_PLAN=1 prints what it would install and from where, and changes nothing.
set -euo pipefail

OS_USER="${DBTIER_OS_USER:-dbtier}"
RUNTIME_VENV="${DBTIER_RUNTIME_VENV:-/opt/dbtier/venv}"
ENGINE="${DBTIER_ENGINE:-postgres}"
RUNTIME_ENGINES="${DBTIER_RUNTIME_ENGINES:-$ENGINE}"
COMMON=(python3-venv procps util-linux iproute2 nftables curl)
MONGODB_SERIES=7.0
MONGODB_KEY_URL="https://www.mongodb.org/static/pgp/server-${MONGODB_SERIES}.asc"
MONGODB_KEYRING="/usr/share/keyrings/mongodb-server-${MONGODB_SERIES}.gpg"
MONGODB_SOURCE="deb [ signed-by=${MONGODB_KEYRING} ] http://repo.mongodb.org/apt/debian bookworm/mongodb-org/${MONGODB_SERIES} main"
MONGODB_LIST="/etc/apt/sources.list.d/mongodb-org-${MONGODB_SERIES}.list"
case "$ENGINE" in
  postgres)
    PACKAGES=(postgresql-15 postgresql-15-pgaudit etcd-server etcd-client pgbackrest haproxy pgbouncer keepalived zstd lz4
              bzip2 prometheus-postgres-exporter prometheus-node-exporter "${COMMON[@]}")
    DEBIAN_UNITS=(etcd haproxy pgbouncer keepalived prometheus-postgres-exporter prometheus-pgbouncer-exporter
                  prometheus-node-exporter) ;;
  mongodb)
    PACKAGES=(mongodb-org gnupg ca-certificates prometheus-node-exporter "${COMMON[@]}")
    DEBIAN_UNITS=(mongod prometheus-node-exporter) ;;  # the packages' own units would hold 27017 and 9100
  *) printf 'host-setup: DBTIER_ENGINE=%s is not an engine; use postgres or mongodb\n' "$ENGINE" >&2; exit 2 ;;
esac

say() { printf 'host-setup: %s\n' "$*"; }
if [ "${DBTIER_HOST_SETUP_PLAN:-}" = 1 ]; then
  say "engine $ENGINE: would install ${PACKAGES[*]}"
  if [ "$ENGINE" = mongodb ]; then
    say "from MongoDB's apt repository: $MONGODB_SOURCE (key $MONGODB_KEY_URL into $MONGODB_KEYRING)"
  fi
  say "would stop and disable the packages' own units: ${DEBIAN_UNITS[*]}; would create OS user $OS_USER"
  say "would build the runtime venv $RUNTIME_VENV for: $RUNTIME_ENGINES"
  exit 0
fi
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
  if [ "$ENGINE" = mongodb ] && [ ! -e "$MONGODB_LIST" ]; then
    say "adding MongoDB's apt repository ($MONGODB_SERIES), signed by $MONGODB_KEY_URL"
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gnupg curl ca-certificates
    curl -fsSL "$MONGODB_KEY_URL" | gpg --batch --yes --dearmor -o "$MONGODB_KEYRING"
    echo "$MONGODB_SOURCE" > "$MONGODB_LIST"
  fi
  apt-get update -qq
  quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# Debian's etcd unit would hold 2379/2380 (now or after a reboot); dbtier runs its own members,
# under units of their own where systemd is the init (/run/systemd/system: systemd's own test).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  # The same for the units of Debian's haproxy (its own config), pgbouncer (6432), keepalived and the exporters.
  for unit in "${DEBIAN_UNITS[@]}"; do
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

# The runtime venv: one stamp per engine's Python parts (a second run only checks).
runtime_part() {  # engine, then its pip requirements
  local engine=$1; shift
  local stamp="$RUNTIME_VENV/.dbtier-runtime-1"; [ "$engine" = postgres ] || stamp="$RUNTIME_VENV/.dbtier-runtime-$engine-1"
  [ -e "$stamp" ] && return 0
  say "building the runtime venv $RUNTIME_VENV ($engine: $*) from /usr/bin/python3"
  mkdir -p "$(dirname "$RUNTIME_VENV")"
  [ -x "$RUNTIME_VENV/bin/python" ] || /usr/bin/python3 -m venv "$RUNTIME_VENV"
  quietly "$RUNTIME_VENV/bin/pip" install "$@"
  chmod -R a+rX "$RUNTIME_VENV"
  touch "$stamp"
}
for part in $RUNTIME_ENGINES; do
  case "$part" in
    postgres) runtime_part postgres 'patroni[etcd3,psycopg3]>=4.0' 'psycopg[binary]>=3.1' ;;
    mongodb) runtime_part mongodb 'pymongo>=4.6' 'pydantic>=2.5' 'pyyaml>=6' 'boto3>=1.34' ;;
    *) say "DBTIER_RUNTIME_ENGINES: $part is not an engine; use postgres and/or mongodb"; exit 2 ;;
  esac
done

if [ "$ENGINE" = mongodb ]; then
  say "ready ($(/usr/bin/mongod --version 2>/dev/null | head -1), $(/usr/bin/mongodump --version 2>/dev/null | head -1), runtime $("$RUNTIME_VENV/bin/python" -c 'import pymongo; print("pymongo", pymongo.version)'))"
  exit 0
fi
say "ready ($("$RUNTIME_VENV/bin/patroni" --version 2>/dev/null), $(/usr/bin/etcd --version 2>/dev/null | head -1), PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'))"
