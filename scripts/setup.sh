#!/usr/bin/env bash
# Install everything dbtier needs on a Debian 12 machine. Idempotent: a second run only checks.
#   - Debian packages: PostgreSQL 15, etcd, pgBackRest, Python venv support
#   - the unprivileged OS user that runs the database processes (PostgreSQL refuses root)
#   - a runtime venv for that user (Patroni), built from Debian's python3 so that user can read it
#   - the project's own venv (.venv), editable, with its dev extras
set -euo pipefail
cd "$(dirname "$0")/.."

OS_USER="${DBTIER_OS_USER:-dbtier}"
RUNTIME_VENV="${DBTIER_RUNTIME_VENV:-/opt/dbtier/venv}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
PACKAGES=(postgresql-15 etcd-server etcd-client pgbackrest python3-venv procps util-linux)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
say() { printf 'setup: %s\n' "$*"; }
# Run a command quietly; show its output only when it fails.
quietly() {
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; say "failed: $*"; return 1; fi
  rm -f "$log"
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  # Do not let the packages create Debian's own cluster on 5432 or start etcd on 2379/2380.
  $SUDO mkdir -p /etc/postgresql-common
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  $SUDO apt-get update -qq
  quietly $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$policy_added" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

# Debian's etcd unit would hold 2379/2380; dbtier runs its own members.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  say "stopping and disabling Debian's etcd service (it holds 2379/2380)"
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
fi

if ! id "$OS_USER" >/dev/null 2>&1; then
  say "creating OS user $OS_USER"
  $SUDO useradd --system --user-group --create-home --home-dir "/home/$OS_USER" --shell /bin/sh "$OS_USER"
fi

runtime_stamp="$RUNTIME_VENV/.dbtier-runtime-1"
if [ ! -e "$runtime_stamp" ]; then
  say "building the runtime venv $RUNTIME_VENV (Patroni) from /usr/bin/python3"
  $SUDO mkdir -p "$(dirname "$RUNTIME_VENV")"
  $SUDO /usr/bin/python3 -m venv "$RUNTIME_VENV"
  quietly $SUDO "$RUNTIME_VENV/bin/pip" install 'patroni[etcd3,psycopg3]>=4.0' 'psycopg[binary]>=3.1'
  $SUDO chmod -R a+rX "$RUNTIME_VENV"
  $SUDO touch "$runtime_stamp"
fi

stamp="$VENV/.dbtier-installed"
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing the project into $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  quietly "$VENV/bin/pip" install -e '.[dev]'
  touch "$stamp"
fi
say "ready ($("$RUNTIME_VENV/bin/patroni" --version 2>/dev/null), $(/usr/bin/etcd --version 2>/dev/null | head -1), PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'))"
