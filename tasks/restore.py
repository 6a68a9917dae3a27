"""Tasks of the restore flow that keep a restore from destroying anything it has not replaced.

``plan_restore`` is every check a restore makes before it touches anything, each a one-line refusal
(exit 2); the command line runs it before the flow run starts, the flow as its first step.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from blocks.backup import load_backup_secrets
from blocks.cleanup import forget_cluster_blocks
from blocks.loaders import PREFECT_LOADERS
from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.backup import inplace
from dbtier.backup.restore import RestorePlan, derive_target
from dbtier.engines.base import get_engine
from dbtier.errors import DbtierError, RestoreError
from dbtier.providers.base import get_provider, resolve_addresses
from dbtier.spec import ClusterSpec, load_spec
from tasks import log_sentences
from tasks.backup import _refuse_running, refuse_existing_target


def choose_target_spec(source: ClusterSpec, into: str | None, port_offset: int, target_spec_path: str | None,
                       in_place: bool) -> ClusterSpec:
    if in_place:
        if into or target_spec_path:
            raise RestoreError("in_place: restores the source itself; drop --into / --target-spec")
        return source
    if target_spec_path:
        return resolve_addresses(load_spec(target_spec_path), loaders=PREFECT_LOADERS)
    return derive_target(source, into or f"{source.name[:23]}-restored", port_offset)


def plan_restore(source: ClusterSpec, target: str, into: str | None, port_offset: int, target_spec_path: str | None,
                 repo: int | None, in_place: bool) -> tuple[RestorePlan, list[str]]:
    """Check everything a restore needs before anything is written; return the plan and what was checked."""
    engine = get_engine(source)
    if in_place and not engine.restores_in_place:
        raise RestoreError(f"in_place: engine {source.engine} restores into a new cluster only; restore with --into "
                           "NAME, then point the clients at it")
    engine.parse_restore_target(target)  # a typo is refused before anything is read
    base = choose_target_spec(source, into, port_offset, target_spec_path, in_place)
    if repo is not None and not 1 <= repo <= len(source.backup.repositories):
        raise RestoreError(f"repo: {repo} is not a repository of {source.name} (1..{len(source.backup.repositories)}); "
                           "see backup.repositories")
    engine, provider = get_engine(base), get_provider(base, PREFECT_LOADERS)
    said: list[str] = []
    if in_place:
        _refuse_running(engine, provider, source, "in_place",
                        "stop it first (python -m flows.teardown) — an in-place restore replaces its data")
        said.append(inplace.refuse_leftover(engine, provider, source))
    else:
        refuse_existing_target.fn(base)
        said += bootstrap.preflight(engine, provider, base)
        said.append(engine.refuse_earlier_archive(provider, base, load_backup_secrets(base)))
    secrets = load_backup_secrets(source)
    described, served_by = engine.check_restore_target(provider, base, source, target, secrets, repo)
    if in_place:
        said.append(engine.refuse_unarchived_tail(provider, source, target, secrets, repo))
    said.append(f"restore target {described}: from {served_by}")
    return RestorePlan(base, target, described, served_by, in_place), said


@task(cache_policy=NONE)
def check_restore(source: ClusterSpec, target: str, into: str | None, port_offset: int, target_spec_path: str | None,
                  repo: int | None, in_place: bool) -> RestorePlan:
    """Refuse, in one line and before anything is written, a restore that cannot work (see :func:`plan_restore`)."""
    plan, said = plan_restore(source, target, into, port_offset, target_spec_path, repo, in_place)
    log_sentences(*said)
    return plan


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[2, 5])
def settle_target(plan: RestorePlan, source: ClusterSpec, repo: int | None) -> tuple[str, list[str]]:
    """After the source's flush: how the target will be restored (a sentence) and the options bring-up passes the
    restore tool (:meth:`~dbtier.engines.base.Engine.settle_restore_target`)."""
    engine = get_engine(plan.target)
    sentence, options = engine.settle_restore_target(get_provider(plan.target, PREFECT_LOADERS), source, plan,
                                                     load_backup_secrets(source), repo)
    log_sentences(sentence)
    return sentence, options


@task(cache_policy=NONE)
def restore_after_bring_up(spec: ClusterSpec, source: ClusterSpec, target: str) -> list[str]:
    """For an engine whose bring-up starts the new cluster empty (``restores_after_bring_up``): fill it from
    ``source``'s backup up to ``target``. Not retried: it writes the new cluster's data."""
    engine = get_engine(spec)
    said = engine.restore_after_bring_up(get_provider(spec, PREFECT_LOADERS), spec, source, target,
                                         load_backup_secrets(source), load_passwords(spec))
    log_sentences(*said)
    return said


@task(cache_policy=NONE)
def set_aside_data(source: ClusterSpec) -> str:
    """In place: stop any orphan postmaster, then rename the cluster's directory aside (nothing is deleted yet)."""
    engine, provider = get_engine(source), get_provider(source, PREFECT_LOADERS)
    said = [*bootstrap.stop_services(engine, provider, source), inplace.set_aside(engine, provider, source)]
    log_sentences(*said)
    return said[-1]


@task(cache_policy=NONE)
def drop_set_aside(source: ClusterSpec) -> str:
    sentence = inplace.drop_aside(get_engine(source), get_provider(source, PREFECT_LOADERS), source)
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE)
def undo_failed_restore(spec: ClusterSpec, in_place: bool) -> str:
    """Leave nothing of a failed restore: put the old data back (in place), or remove the new cluster entirely
    (processes, data, the stanza it created, its Secret blocks). Returns the sentence the user reads."""
    engine, provider = get_engine(spec), get_provider(spec, PREFECT_LOADERS)
    try:
        if in_place:
            log_sentences(*inplace.put_back(engine, provider, spec))
            return (f"cluster {spec.name} is as it was before the restore (stopped, data in {spec.cluster_dir}); "
                    "start it with python -m flows.provision")
        said = inplace.remove_attempt(engine, provider, spec)
        said.append(_drop_new_stanza(spec))
        said += forget_cluster_blocks(spec, backups_remain=False)
        log_sentences(*said)
        return f"nothing of {spec.name} is left (processes stopped, data, stanza and Secret blocks removed)"
    except DbtierError as err:
        where = inplace.aside_path(spec) if in_place else spec.cluster_dir
        return f"and undoing it failed too ({err.one_line()}): see {where}"


def _drop_new_stanza(spec: ClusterSpec) -> str:
    """The archive a failed restore's new cluster began (check_restore made sure none existed before it)."""
    return get_engine(spec).drop_archive(get_provider(spec, PREFECT_LOADERS), spec, load_backup_secrets(spec))
