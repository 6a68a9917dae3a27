#!/usr/bin/env bash
# The test command: type check and lint, then the whole suite (pure tables, real-process integration).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/mypy"
"$VENV/bin/ruff" check dbtier flows tasks blocks deployments tests bench
# Test files run on three workers (pytest-xdist, one file per worker at a time) on this 2-core machine:
# every cluster suite has its own port block, data root and Prefect harness, and most of their time is
# spent waiting (Patroni's TTL, restores, host boots), not computing: two workers left ~half the CPU idle;
# four were no faster (measured: the lab and Proxmox suites keep both cores busy).
# TEST_WORKERS=0 runs everything in this one process. The slowest tests are listed at the end.
PYTEST=("$VENV/bin/python" -m pytest)
exec "${PYTEST[@]}" -n "${TEST_WORKERS:-3}" --dist loadfile --durations=25 "$@"
