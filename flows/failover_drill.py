"""Failover drill: break the cluster on purpose under a real write load, and judge how it recovered.

    python -m flows.failover_drill --scenario crash [--spec FILE]
    python -m flows.failover_drill --scenario drill-all [--spec FILE]

Scenarios: crash, freeze, switchover, replica-loss, etcd-member-loss, etcd-quorum-loss; on members with hosts of
their own (a `dbtier lab`, ssh or proxmox hosts), the network drills partition-replica, etcd-minority, lossy-network,
partition-primary, and where the provider has power over the hosts, host-freeze and host-crash.
A MongoDB replica set (engine: mongodb) has crash, freeze, stepdown and secondary-loss under a ``w: majority`` writer,
and w1-loss, the demonstration: a ``w: 1`` writer, the secondaries paused, the primary killed; its verdict must show
the acknowledged writes lost (it fails when none were). Each engine says its own (``Engine.drill_scenarios``), and a
scenario the spec's engine lacks is refused in one line (exit 2).
Each leaves the cluster healthy; the flow fails when any verdict fails. drill-all skips, in one line each, the
scenarios the cluster cannot run; one of them named on its own is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, get_args

from prefect import flow, get_run_logger

from dbtier.drills.settings import DrillSettings, drill_settings
from dbtier.drills.verdict import Verdict
from dbtier.engines.base import get_engine
from dbtier.errors import DbtierError, DrillFailed, Refused
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec, load_spec
from blocks.lock import changes_cluster, cluster_lock
from blocks.loaders import PREFECT_LOADERS
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.metrics import record_failover_drill_metrics
from tasks.progress import Progress
from tasks.drills import check_drill_allowed, plan_drills, publish_drill_report, refuse_drill, refuse_scenario, run_drill

ALL = "drill-all"


def every_scenario() -> tuple[str, ...]:
    """Every engine's drills, each once, PostgreSQL's first: the command line's ``--scenario`` choices.

    >>> every_scenario()[:2], every_scenario()[-3:]
    (('switchover', 'replica-loss'), ('stepdown', 'secondary-loss', 'w1-loss'))
    """
    names: dict[str, None] = {}
    for engine in get_args(ClusterSpec.model_fields["engine"].annotation):
        spec = ClusterSpec(engine=engine)
        names.update(dict.fromkeys(get_engine(spec).drill_scenarios(spec)))
    return tuple(names)


def engine_scenarios(spec: ClusterSpec) -> tuple[Sequence[str], str]:
    """(the drills of the spec's engine, the engine's name)."""
    return get_engine(spec).drill_scenarios(spec), spec.engine


def chosen_scenarios(scenario: str, names: Sequence[str], engine: str) -> list[str]:
    """The drills ``scenario`` names among ``names`` (the drills of ``engine``); else one line naming them.

    >>> chosen_scenarios("crash", ("switchover", "crash"), "postgres")
    ['crash']
    >>> chosen_scenarios("drill-all", ("crash", "stepdown"), "mongodb")
    ['crash', 'stepdown']
    >>> chosen_scenarios("switchover", ("crash", "stepdown"), "mongodb")
    Traceback (most recent call last):
    ...
    dbtier.errors.Refused: scenario: engine mongodb has no switchover drill; choose one of crash, stepdown or drill-all
    """
    if scenario == ALL:
        return list(names)
    if scenario in names:
        return [scenario]
    if scenario in every_scenario():
        raise Refused(f"scenario: engine {engine} has no {scenario} drill; choose one of {', '.join(names)} or {ALL}")
    raise Refused(f"scenario: unknown {scenario!r}; choose one of {', '.join(names)} or {ALL}")


def refuse_engine_scenario(spec_path: str | None, scenario: str) -> int | None:
    """A scenario the spec's engine lacks: one line on stderr and its exit code (2), before any Prefect API is
    asked; None otherwise (a spec that does not load is left to :func:`flows._cli.run_edge`, which says it)."""
    try:
        spec = load_spec(spec_path)
    except DbtierError:
        return None
    try:
        chosen_scenarios(scenario, *engine_scenarios(spec))
    except Refused as err:
        print(f"dbtier: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    return None


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
    names = chosen_scenarios(scenario, *engine_scenarios(spec))
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
    parser.add_argument("--scenario", required=True, choices=[*every_scenario(), ALL])
    args = parser.parse_args(argv)
    refused = refuse_engine_scenario(args.spec, args.scenario)
    if refused is not None:
        return refused

    def body(spec: ClusterSpec) -> int:
        # Refused before the flow run starts (the flow's first step makes the same checks for UI runs); the
        # scenario's name was checked against the engine's drills above.
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
