#!/usr/bin/env bash
# The test command: type check and lint, then the whole suite (pure tables, real-process integration).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/mypy"
"$VENV/bin/ruff" check dbtier flows tasks blocks deployments tests bench
# Test files run on four workers (pytest-xdist, one file per worker at a time) on this 2-core machine:
# every cluster suite has its own port block, data root and Prefect harness, and most of their time is
# spent waiting (Patroni's TTL, restores, host boots, alert rules' for-durations), not computing: two
# workers left ~half the CPU idle, three ran the suite in 18 min once routing and monitoring came.
# TEST_WORKERS=0 runs everything in this one process. The slowest tests are listed at the end.
PYTEST=("$VENV/bin/python" -m pytest)
exec "${PYTEST[@]}" -n "${TEST_WORKERS:-4}" --dist loadfile --durations=25 "$@"
