"""Which scheduled deployments each cluster gets (pure): read by deployments/serve.py.

A cluster whose spec says ``production: true`` gets its monthly drill schedule
switched off unless the spec opts in (``drills.allow_in_production: true``); the
drill flow refuses such a cluster at run time as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbtier.spec import ClusterSpec

MONTHLY_DRILL_CRON = "0 3 1 * *"  # 03:00 on the 1st of every month


@dataclass(frozen=True)
class PlannedDeployment:
    name: str
    flow: str
    cron: str
    active: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    why: str = ""


def drill_deployment(spec: ClusterSpec, spec_path: str) -> PlannedDeployment:
    """
    >>> drill_deployment(ClusterSpec(), "deployments/clusters/default.yaml").active
    True
    >>> drill_deployment(ClusterSpec(production=True), "x.yaml").why
    'production: true and drills.allow_in_production is false'
    """
    allowed = not spec.production or spec.drills.allow_in_production
    return PlannedDeployment(
        name=f"{spec.name}-drill-all-monthly",
        flow="failover_drill",
        cron=MONTHLY_DRILL_CRON,
        active=allowed,
        parameters={"scenario": "drill-all", "spec_path": spec_path},
        why="" if allowed else "production: true and drills.allow_in_production is false",
    )


def plan(specs: dict[str, ClusterSpec]) -> list[PlannedDeployment]:
    """Every scheduled deployment for the given clusters (spec path -> spec)."""
    return [drill_deployment(spec, path) for path, spec in sorted(specs.items())]
