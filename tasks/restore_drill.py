"""Tasks of the restore drill: its checks before it writes, the markers, the copy's restore plan and its checks.

The drill's copy is a new cluster that restores like any other (:mod:`tasks.restore`); the engine writes the
markers and checks the copy (:meth:`~dbtier.engines.base.Engine.write_restore_marker`,
:meth:`~dbtier.engines.base.Engine.check_restored_copy`); the verdict is :mod:`dbtier.backup.drill`'s.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from blocks.backup import load_backup_secrets
from blocks.loaders import PREFECT_LOADERS
from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.backup.drill import CopyChecks, Marker
from dbtier.backup.restore import RestorePlan
from dbtier.engines.base import get_engine
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from tasks import log_sentences


@task(cache_policy=NONE)
def clear_throwaway(copy: ClusterSpec) -> None:
    """A copy left by an interrupted drill is the drill's own: stop and remove it."""
    engine, provider = get_engine(copy), get_provider(copy, PREFECT_LOADERS)
    if bootstrap.running_services(engine, provider, copy) or bootstrap.is_initialised(engine, provider, copy):
        log_sentences(*bootstrap.stop_services(engine, provider, copy), bootstrap.wipe(engine, provider, copy))


def copy_plan(copy: ClusterSpec, source: ClusterSpec, target: str) -> RestorePlan:
    """How ``copy`` restores ``source``'s backup to ``target`` (a one-line RestoreError when no backup serves it),
    as the engine reads it (:meth:`~dbtier.engines.base.Engine.check_restore_target`)."""
    engine, provider = get_engine(copy), get_provider(copy, PREFECT_LOADERS)
    described, served_by = engine.check_restore_target(provider, copy, source, target, load_backup_secrets(source),
                                                       None)
    return RestorePlan(copy, target, described, served_by, False)


def restore_drill_checks(source: ClusterSpec, copy: ClusterSpec, target: str = "marker") -> list[str]:
    """What the restore drill proves before it writes a single marker row, each a one-line refusal (exit 2):
    the copy's directory holds nothing but an earlier drill's copy, the copy's ports are free, and the
    source has a backup that serves ``target`` (``marker``: the newest). The command line runs it before the flow
    run starts."""
    sentences = bootstrap.preflight(get_engine(copy), get_provider(copy, PREFECT_LOADERS), copy)
    plan = copy_plan(copy, source, "latest" if target == "marker" else target)
    return [*sentences, f"source {source.name}: target {plan.target_text} served by {plan.served_by}"]


@task(cache_policy=NONE)
def check_restore_drill(source: ClusterSpec, copy: ClusterSpec, target: str) -> None:
    """The restore drill's first step: :func:`restore_drill_checks` (so deployment and UI runs refuse too)."""
    log_sentences(*restore_drill_checks(source, copy, target))


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[1, 3])
def write_restore_marker(spec: ClusterSpec) -> Marker:
    marker = get_engine(spec).write_restore_marker(spec, load_passwords(spec))
    log_sentences(f"drill {marker.drill_id}: {marker.before} marker rows before {marker.target}, {marker.after} "
                  "after it")
    return marker


@task(cache_policy=NONE)
def plan_copy_restore(copy: ClusterSpec, source: ClusterSpec, target: str) -> RestorePlan:
    """After the markers and the source's flush: the backup that serves ``target`` (:func:`copy_plan`)."""
    plan = copy_plan(copy, source, target)
    log_sentences(f"restore target {plan.target_text}: from {plan.served_by}")
    return plan


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[1, 3])
def check_restored_copy(spec: ClusterSpec, marker: Marker) -> CopyChecks:
    checks = get_engine(spec).check_restored_copy(get_provider(spec, PREFECT_LOADERS), spec, marker,
                                                  load_passwords(spec))
    log_sentences(f"copy holds {checks.found_before} + {checks.found_after} marker rows",
                  *(sentence for sentence, _ in checks.findings))
    return checks
