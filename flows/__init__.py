"""Prefect flows: each reads like the runbook it replaces (``python -m flows.<name>``).

dbtier's command lines run a temporary Prefect API by default; it sends no telemetry from
here unless the user asks for it (``PREFECT_SERVER_ANALYTICS_ENABLED=true``). A run that ends
in one of dbtier's own errors is logged without a traceback (``flows/_logs.py``).
"""

import os

from flows import _logs

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
_logs.install()
