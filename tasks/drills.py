"""Tasks of the failover drill flow: thin wrappers over :mod:`dbtier.drills`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from blocks.loaders import PREFECT_LOADERS
from blocks.passwords import load_passwords
from dbtier import pictures, workdir
from dbtier.drills import preflight
from dbtier.drills.settings import DrillSettings
from dbtier.drills.verdict import Verdict, markdown_report, summary_row
from dbtier.engines.base import get_engine
from dbtier.errors import Refused
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec


def refuse_drill(spec: ClusterSpec, settings: DrillSettings, spec_flag: str = "") -> str:
    """Every check a drill makes before it breaks anything, each a one-line refusal (exit 2): not a production
    cluster that does not opt in, a cluster healthy now (never a 180 s wait), its passwords readable.
    The command line runs it before the flow run starts; the flow runs it as its first step."""
    sentence = preflight.check_ready(get_engine(spec), spec, settings, spec_flag,
                                     provider=get_provider(spec, PREFECT_LOADERS))
    load_passwords(spec)
    return sentence


@task(cache_policy=NONE)
def check_drill_allowed(spec: ClusterSpec, settings: DrillSettings) -> None:
    """Refuse a drill that must not run here or cannot be judged (see :func:`refuse_drill`)."""
    get_run_logger().info("%s", refuse_drill(spec, settings))


def refuse_scenario(spec: ClusterSpec, scenario: str) -> None:
    """A scenario named on its own that the cluster's placement or provider cannot run (a network drill on the
    local provider, a host drill without power over the hosts): refused in one line (exit 2)."""
    why = get_engine(spec).cannot_run_drill(get_provider(spec, PREFECT_LOADERS), spec, scenario)
    if why:
        raise Refused(why)


@task(cache_policy=NONE)
def plan_drills(spec: ClusterSpec, names: list[str], single: bool) -> list[str]:
    """The scenarios of ``names`` the cluster can run. ``drill-all`` skips the others with one line each; a
    scenario named on its own (``single``) that cannot run is refused."""
    if single:
        refuse_scenario(spec, names[0])
        return names
    runnable, skipped = preflight.runnable_drills(get_engine(spec), get_provider(spec, PREFECT_LOADERS), spec, names)
    for line in skipped:
        get_run_logger().info("%s", line)
    return runnable


@task(cache_policy=NONE, task_run_name="drill {scenario}")
def run_drill(spec: ClusterSpec, scenario: str, settings: DrillSettings) -> Verdict:
    """Run one scenario (never retried: a drill breaks things on purpose) and return its verdict."""
    passwords, engine = load_passwords(spec), get_engine(spec)
    get_run_logger().info("%s: the writer writes %s", scenario, engine.drill_route(spec, settings))
    result = engine.run_drill(get_provider(spec, PREFECT_LOADERS), spec, scenario, settings, passwords)
    logger = get_run_logger()
    logger.info("%s", result.verdict.sentence)
    logger.info("evidence (%s) saved on this machine under %s", ", ".join(evidence_files(result.report_dir)),
                result.report_dir)
    publish_pictures(spec, scenario, result.report_dir)
    return result.verdict


def evidence_files(report_dir: str) -> list[str]:
    """The evidence files a drill left in ``report_dir``, in the order the log names them."""
    names = ("verdict.json", "writes.jsonl", "timeline.png", "lag.png")
    return [name for name in names if os.path.exists(os.path.join(report_dir, name))]


def publish_pictures(spec: ClusterSpec, scenario: str, report_dir: str) -> None:
    """The drill's timeline and lag pictures as Prefect artifacts (``<cluster>-<scenario>-timeline``, ``-lag``)."""
    for name, what in (("timeline", "writes, the fault, the leader change and the RTO"), ("lag", "replication lag")):
        png = workdir.read_local(f"{report_dir}/{name}.png")
        if png is not None:
            headline = f"**{spec.name}**, drill {scenario}: {what} (saved as {report_dir}/{name}.png)"
            create_markdown_artifact(markdown=pictures.markdown_image(png, headline, f"{scenario} {name}"),
                                     key=f"{spec.name}-{scenario}-{name}", description=f"{spec.name}, drill {scenario}: {what}")


@task(cache_policy=NONE)
def publish_drill_report(spec: ClusterSpec, verdicts: Sequence[Verdict]) -> None:
    """The summary table and each drill's timeline as Prefect artifacts."""
    create_markdown_artifact(
        key=f"{spec.name}-failover-drill",
        markdown=markdown_report(spec.name, verdicts),
        description=f"failover drills on {spec.name}",
    )
    create_table_artifact(
        key=f"{spec.name}-failover-drill-summary",
        table=[summary_row(v) for v in verdicts],
        description=f"failover drill summary for {spec.name}",
    )
