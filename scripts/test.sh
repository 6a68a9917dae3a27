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
exec "${PYTEST[@]}" -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
