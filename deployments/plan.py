"""Which scheduled deployments each cluster gets (pure): read by deployments/serve.py.

A cluster whose spec says ``production: true`` gets its monthly drill schedule
switched off unless the spec opts in (``drills.allow_in_production: true``); the
drill flow refuses such a cluster at run time as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbtier.spec import ClusterSpec
from flows._names import run_tags

MONTHLY_DRILL_CRON = "0 3 1 * *"  # 03:00 on the 1st of every month
NIGHTLY_BACKUP_CRON = "0 2 * * *"  # 02:00 every night (the seed's schedule)
ARCHIVE_HEALTH_CRON = "*/5 * * * *"  # every 5 minutes
WEEKLY_RESTORE_DRILL_CRON = "0 4 * * 0"  # 04:00 every Sunday, after that night's backup


@dataclass(frozen=True)
class PlannedDeployment:
    name: str
    flow: str
    cron: str
    active: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    why: str = ""
    tags: tuple[str, ...] = ()


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
        tags=tuple(run_tags(spec.name)),
    )


def backup_deployments(spec: ClusterSpec, spec_path: str) -> list[PlannedDeployment]:
    """Nightly backup (kind auto: full weekly, differential otherwise), archive health, weekly restore drill.

    The restore drill touches only a throwaway copy, so it stays on for production clusters too.

    >>> [(d.flow, d.cron) for d in backup_deployments(ClusterSpec(), "c.yaml")]
    [('backup', '0 2 * * *'), ('archive_health', '*/5 * * * *'), ('restore_drill', '0 4 * * 0')]
    """
    params = {"spec_path": spec_path}
    tags = tuple(run_tags(spec.name))
    return [
        PlannedDeployment(f"{spec.name}-backup-nightly", "backup", NIGHTLY_BACKUP_CRON, True, {**params, "kind": "auto"},
                          tags=tags),
        PlannedDeployment(f"{spec.name}-archive-health", "archive_health", ARCHIVE_HEALTH_CRON, True, dict(params),
                          tags=tags),
        PlannedDeployment(f"{spec.name}-restore-drill-weekly", "restore_drill", WEEKLY_RESTORE_DRILL_CRON, True,
                          {**params, "target": "marker"}, tags=tags),
    ]


def plan(specs: dict[str, ClusterSpec]) -> list[PlannedDeployment]:
    """Every scheduled deployment for the given clusters (spec path -> spec)."""
    planned: list[PlannedDeployment] = []
    for path, spec in sorted(specs.items()):
        planned += [drill_deployment(spec, path), *backup_deployments(spec, path)]
    return planned
