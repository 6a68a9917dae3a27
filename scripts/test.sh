#!/usr/bin/env bash
# The test command: type check and lint, then the whole suite (pure tables, real-process integration).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/mypy"
"$VENV/bin/ruff" check dbtier flows tasks blocks deployments tests bench
exec "$VENV/bin/python" -m pytest "$@"
