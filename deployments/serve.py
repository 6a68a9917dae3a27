"""Serve dbtier's scheduled deployments on this machine (a process that runs them when due).

    .venv/bin/python -m deployments.serve            # every spec under deployments/clusters/
    .venv/bin/python -m deployments.serve --list     # print the plan and exit
    .venv/bin/python -m deployments.serve --spec deployments/clusters/default.yaml   # one cluster only

Point it at a Prefect server (PREFECT_API_URL) to see the schedules and runs in the UI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, cast

from deployments.plan import PlannedDeployment, plan
from dbtier.spec import load_spec

CLUSTERS = Path(__file__).resolve().parent / "clusters"


def load_plan(only: str | None = None) -> list[PlannedDeployment]:
    paths = [Path(only)] if only else sorted(CLUSTERS.glob("*.yaml"))
    return plan({_shown(p): load_spec(p) for p in paths})


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(CLUSTERS.parent.parent))
    except ValueError:
        return str(path.resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the deployments and their schedules, then exit")
    parser.add_argument("--spec", help="serve only this cluster's deployments (default: every spec under deployments/clusters/)")
    args = parser.parse_args(argv)
    planned = load_plan(args.spec)
    for item in planned:
        state = "active" if item.active else f"inactive ({item.why})"
        print(f"{item.name}: {item.flow} at '{item.cron}', {state}")
    if args.list:
        return 0
    from prefect import serve
    from prefect.schedules import Cron

    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

    from flows.archive_health import archive_health
    from flows.backup import backup
    from flows.failover_drill import failover_drill
    from flows.restore_drill import restore_drill

    flows: dict[str, Flow[..., Any]] = {"failover_drill": failover_drill, "backup": backup, "archive_health": archive_health,
             "restore_drill": restore_drill}
    deployments = [
        cast(RunnerDeployment, flows[item.flow].to_deployment(
            name=item.name, schedules=[Cron(item.cron, timezone="UTC", active=item.active)], parameters=item.parameters
        ))
        for item in planned
    ]
    serve(*deployments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
