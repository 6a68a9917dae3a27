#!/usr/bin/env bash
# The test command: type check and lint, then the whole suite (pure tables, real-process integration).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/mypy"
"$VENV/bin/ruff" check dbtier flows tasks blocks deployments tests bench
# Test files run on two workers (pytest-xdist, one file per worker at a time): every cluster suite has
# its own port block, data root and Prefect harness, and most of their time is spent waiting
# (Patroni's TTL, restores), not computing. TEST_WORKERS=0 runs everything in this one process.
PYTEST=("$VENV/bin/python" -m pytest)
if [ "$#" -gt 0 ]; then exec "${PYTEST[@]}" -n "${TEST_WORKERS:-2}" --dist loadfile "$@"; fi
# The Proxmox suite (its container is a systemd sandbox) runs alone after the rest: inside a full two-worker run
# its first SSH commands have timed out (twice this session, never alone or beside the ssh and drill suites);
# the cause is not found yet, see the README's Tests section.
PROXMOX=tests/integration/test_proxmox_provider.py
rc=0
"${PYTEST[@]}" -n "${TEST_WORKERS:-2}" --dist loadfile --ignore="$PROXMOX" || rc=$?
"${PYTEST[@]}" "$PROXMOX" || rc=$?
exit "$rc"
