"""Prefect flows: each reads like the runbook it replaces (``python -m flows.<name>``)."""
