"""Serve dbtier's scheduled deployments on this machine (a process that runs them when due).

    dbtier serve                        # the default cluster only (deployments/clusters/default.yaml or $DBTIER_SPEC)
    dbtier serve --spec FILE            # that cluster
    dbtier serve --list                 # print the plan and exit
    (the same: python -m deployments.serve ...)

The sample specs under deployments/clusters/ are examples (one names SSH hosts on 10.0.0.x): they are
never served unless named with --spec.

Point it at a Prefect server (PREFECT_API_URL) to see the schedules and runs in the UI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

from dbtier.arguments import Parser
from dbtier.errors import DbtierError
from dbtier.spec import DEFAULT_SPEC_PATH, load_spec
from deployments.plan import PlannedDeployment, plan

CLUSTERS = Path(__file__).resolve().parent / "clusters"


def chosen_spec_path(only: str | None = None) -> Path:
    """The one spec served: ``--spec``, else ``$DBTIER_SPEC``, else the default spec (never every sample)."""
    return Path(only or os.environ.get("DBTIER_SPEC") or DEFAULT_SPEC_PATH)


def load_plan(only: str | None = None) -> list[PlannedDeployment]:
    path = chosen_spec_path(only)
    return plan({_shown(path): load_spec(path)})


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(CLUSTERS.parent.parent))
    except ValueError:
        return str(path.resolve())


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("--list", action="store_true", help="print the deployments and their schedules, then exit")
    parser.add_argument("--spec", help="serve this cluster's deployments (default: deployments/clusters/default.yaml "
                        "or $DBTIER_SPEC; the other samples are never served unless named here)")
    args = parser.parse_args(argv)
    try:
        planned = load_plan(args.spec)
    except DbtierError as err:
        print(f"dbtier: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    chosen = chosen_spec_path(args.spec)
    how = "" if args.spec else " ($DBTIER_SPEC)" if os.environ.get("DBTIER_SPEC") else \
        " (the default spec; --spec FILE serves another cluster)"
    print(f"cluster {load_spec(chosen).name} from {_shown(chosen)}{how}:")
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
            name=item.name, schedules=[Cron(item.cron, timezone="UTC", active=item.active)], parameters=item.parameters,
            tags=list(item.tags),
        ))
        for item in planned
    ]
    serve(*deployments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
