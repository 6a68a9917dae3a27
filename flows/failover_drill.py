"""Failover drill: break the cluster on purpose under a real write load, and judge how it recovered.

    python -m flows.failover_drill --scenario crash [--spec FILE]
    python -m flows.failover_drill --scenario drill-all [--spec FILE]

Scenarios: crash, freeze, switchover, replica-loss, etcd-member-loss, etcd-quorum-loss; on members with hosts of
their own (a `dbtier lab`, ssh or proxmox hosts), the network drills partition-replica, etcd-minority, lossy-network,
partition-primary, and where the provider has power over the hosts, host-freeze and host-crash.
Each leaves the cluster healthy; the flow fails when any verdict fails. drill-all skips, in one line each, the
scenarios the cluster cannot run; one of them named on its own is refused.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger

from dbtier.drills.settings import SCENARIOS, DrillSettings, drill_settings
from dbtier.drills.verdict import Verdict
from dbtier.errors import DrillFailed, Refused
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec
from blocks.lock import changes_cluster, cluster_lock
from blocks.loaders import PREFECT_LOADERS
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.metrics import record_failover_drill_metrics
from tasks.progress import Progress
from tasks.drills import check_drill_allowed, plan_drills, publish_drill_report, refuse_drill, refuse_scenario, run_drill

ALL = "drill-all"


def chosen_scenarios(scenario: str) -> list[str]:
    """
    >>> chosen_scenarios("crash")
    ['crash']
    >>> len(chosen_scenarios("drill-all")) == len(SCENARIOS)
    True
    """
    if scenario == ALL:
        return list(SCENARIOS)
    if scenario not in SCENARIOS:
        raise Refused(f"scenario: unknown {scenario!r}; choose one of {', '.join(SCENARIOS)} or {ALL}")
    return [scenario]


@flow(name="failover-drill", flow_run_name=run_name("failover-drill"))
@changes_cluster("failover-drill")
def failover_drill(
    scenario: str = ALL,
    spec_path: str | None = None,
    spec_block: str | None = None,
    settings: DrillSettings | None = None,
) -> list[dict[str, Any]]:
    """Run one scenario (or every one) under write load, publish the report, fail on a failed verdict."""
    spec = resolve_spec(spec_path, spec_block)
    chosen = drill_settings(spec, settings)
    names = chosen_scenarios(scenario)
    check_drill_allowed(spec, chosen)
    names = plan_drills(spec, names, single=scenario != ALL)
    progress = Progress("failover-drill", spec.name, [*(f"drill {name}" for name in names), "report"])
    verdicts: list[Verdict] = []
    for name in names:
        progress.step()
        verdicts.append(run_drill(spec, name, chosen))
    progress.step()
    publish_drill_report(spec, verdicts)
    progress.finish()
    record_failover_drill_metrics(spec, verdicts)
    failed = [v for v in verdicts if not v.passed]
    if failed:
        raise DrillFailed("; ".join(v.sentence for v in failed))
    get_run_logger().info("cluster %s passed %d drill(s)", spec.name, len(verdicts))
    return [v.to_dict() for v in verdicts]


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Run a failover drill under write load (exit 1 when the verdict fails).")
    parser.add_argument("--scenario", required=True, choices=[*SCENARIOS, ALL])
    args = parser.parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        # Refused before the flow run starts (the flow's first step makes the same checks for UI runs).
        chosen_scenarios(args.scenario)
        if args.scenario != ALL:
            refuse_scenario(resolve_addresses(spec, loaders=PREFECT_LOADERS), args.scenario)
        refuse_drill(resolve_addresses(spec, loaders=PREFECT_LOADERS), drill_settings(spec), f" --spec {args.spec}" if args.spec else "")
        with cluster_lock(spec.name, "failover-drill"):
            verdicts = failover_drill(scenario=args.scenario, spec_path=args.spec)
        for verdict in verdicts:
            print(f"{verdict['scenario']}: passed (RTO {verdict['rto_s']} s, lost writes {verdict['lost_writes']})")
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
