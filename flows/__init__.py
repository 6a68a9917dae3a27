"""Prefect flows: each reads like the runbook it replaces (``python -m flows.<name>``).

dbtier's command lines run a temporary Prefect API by default; it sends no telemetry from
here unless the user asks for it (``PREFECT_SERVER_ANALYTICS_ENABLED=true``). A run that ends
in one of dbtier's own errors is logged without a traceback (``flows/_logs.py``).
"""

import os

from flows import _logs

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary API gets 90 s to start instead of Prefect's 20: on a busy two-core machine its first start
# (migrations on a new database) took longer, and the command failed (measured beside the test suite).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
_logs.install()
