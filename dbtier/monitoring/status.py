"""The status line for monitoring: which alerts fire now, when this cluster's monitoring stack runs.

It never changes status's exit code (the member table decides that); it tells what Prometheus already knows.
"""

from __future__ import annotations

from collections.abc import Sequence

from dbtier.errors import DbtierError
from dbtier.spec import ClusterSpec


def alerts_sentence(firing: Sequence[str]) -> str:
    """
    >>> alerts_sentence([])
    'alerts: none firing'
    >>> alerts_sentence(["BackupTooOld (kind=full)", "ArchivingFailing (cluster=c)"])
    'alerts: 2 firing: ArchivingFailing (cluster=c); BackupTooOld (kind=full)'
    """
    if not firing:
        return "alerts: none firing"
    return f"alerts: {len(firing)} firing: " + "; ".join(sorted(firing))


def alerts_line(spec: ClusterSpec) -> str | None:
    """The line, or None when no monitoring stack runs for the cluster (``make monitor`` starts one)."""
    from dbtier.monitoring import run

    try:
        if not run.stack_running(spec):
            return None
        return alerts_sentence(run.firing_alerts(spec))
    except DbtierError as err:
        return f"alerts: unknown ({err.one_line()})"
