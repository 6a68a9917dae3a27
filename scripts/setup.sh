#!/usr/bin/env bash
# Install everything dbtier needs on a Debian 12 machine. Idempotent: a second run only checks.
#   - the host part (scripts/host-setup.sh): Debian packages, the database OS user, the runtime venv
#   - the project's own venv (.venv), editable, with its dev extras
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
say() { printf 'setup: %s\n' "$*"; }
# Run a command quietly; show its output only when it fails.
quietly() {
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; say "failed: $*"; return 1; fi
  rm -f "$log"
}

# What this machine (the one that runs the flows) needs besides the hosts' part: a real sshd for the ssh
# provider's tests, Prometheus and Alertmanager for monitoring (promtool tests the alert rules), Chromium and its
# driver for the test that looks at the Prefect UI in a real browser. Their Debian units are not started
# (policy-rc.d): dbtier runs its own.
wanted=()
for pkg in openssh-server prometheus prometheus-alertmanager prometheus-node-exporter chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || wanted+=("$pkg")
done
if [ ${#wanted[@]} -gt 0 ]; then
  say "installing ${wanted[*]} (the ssh provider's tests run a real sshd on loopback; monitoring)"
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d; added=1; }
  $SUDO apt-get update -qq
  quietly $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${wanted[@]}"
  [ -z "${added:-}" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for unit in prometheus prometheus-alertmanager prometheus-node-exporter; do
    if systemctl is-enabled --quiet "$unit.service" 2>/dev/null; then
      say "disabling Debian's $unit.service (dbtier runs its own)"; $SUDO systemctl disable --now --quiet "$unit.service"
    fi
  done
fi

# This machine's runtime venv serves both engines: Patroni, and the libraries of MongoDB's oplog archiver.
$SUDO env DBTIER_OS_USER="${DBTIER_OS_USER:-dbtier}" DBTIER_RUNTIME_VENV="${DBTIER_RUNTIME_VENV:-/opt/dbtier/venv}" \
  DBTIER_RUNTIME_ENGINES="postgres mongodb" bash scripts/host-setup.sh

stamp="$VENV/.dbtier-installed"
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing the project into $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  quietly "$VENV/bin/pip" install -e '.[dev]'
  touch "$stamp"
fi
say "project venv ready: $VENV"
