#!/usr/bin/env bash
# The test command: type check, then the whole suite (pure tables, real-process integration).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/mypy"
exec "$VENV/bin/python" -m pytest "$@"
