"""Tasks of the restore flow that keep a restore from destroying anything it has not replaced.

``plan_restore`` is every check a restore makes before it touches anything, each a one-line refusal
(exit 2); the command line runs it before the flow run starts, the flow as its first step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone

from prefect import task
from prefect.cache_policies import NONE

from blocks.backup import load_backup_secrets
from blocks.cleanup import forget_cluster_blocks
from blocks.loaders import PREFECT_LOADERS
from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.backup import inplace, ops
from dbtier.backup.catalog import Catalog, RestoreTarget, base_for_time, check_target, parse_target, restore_options
from dbtier.backup.restore import derive_target
from dbtier.engines.postgres.walscan import settle_time_target, tail_refusal
from dbtier.engines.base import get_engine
from dbtier.errors import DbtierError, RestoreError
from dbtier.providers.base import get_provider, resolve_addresses
from dbtier.spec import ClusterSpec, load_spec
from tasks import log_sentences
from tasks.backup import _refuse_running, refuse_existing_target


@dataclass(frozen=True)
class RestorePlan:
    """What a checked restore will do: restore ``wanted`` (in words: ``described``) from ``served_by`` into
    ``target``. ``wanted`` is pgBackRest's target; None for an engine that restores after bring-up, whose target
    the engine reads (:meth:`~dbtier.engines.base.Engine.check_restore_target`)."""

    target: ClusterSpec
    wanted: RestoreTarget | None
    served_by: str
    in_place: bool
    described: str = ""

    @property
    def target_text(self) -> str:
        return self.described or (self.wanted.describe() if self.wanted else "")


def choose_target_spec(source: ClusterSpec, into: str | None, port_offset: int, target_spec_path: str | None,
                       in_place: bool) -> ClusterSpec:
    if in_place:
        if into or target_spec_path:
            raise RestoreError("in_place: restores the source itself; drop --into / --target-spec")
        return source
    if target_spec_path:
        return resolve_addresses(load_spec(target_spec_path), loaders=PREFECT_LOADERS)
    return derive_target(source, into or f"{source.name[:23]}-restored", port_offset)


def only_repo(catalog: Catalog, repo: int | None) -> Catalog:
    """The catalog's backups in repository ``repo`` (all of them when None); plan_restore checked the number."""
    if repo is None:
        return catalog
    return dataclasses.replace(catalog, backups=tuple(catalog.in_repo(repo)))


def plan_restore(source: ClusterSpec, target: str, into: str | None, port_offset: int, target_spec_path: str | None,
                 repo: int | None, in_place: bool) -> tuple[RestorePlan, list[str]]:
    """Check everything a restore needs before anything is written; return the plan and what was checked."""
    if get_engine(source).restores_after_bring_up:
        return _plan_into_a_new_cluster(source, target, into, port_offset, target_spec_path, repo, in_place)
    wanted = parse_target(target)
    base = choose_target_spec(source, into, port_offset, target_spec_path, in_place)
    engine, provider = get_engine(base), get_provider(base, PREFECT_LOADERS)
    said: list[str] = []
    if repo is not None and not 1 <= repo <= len(source.backup.repositories):
        raise RestoreError(f"repo: {repo} is not a repository of {source.name} (1..{len(source.backup.repositories)}); "
                           "see backup.repositories")
    if in_place:
        _refuse_running(engine, provider, source, "in_place",
                        "stop it first (python -m flows.teardown) — an in-place restore replaces its data")
        said.append(inplace.refuse_leftover(engine, provider, source))
    else:
        refuse_existing_target.fn(base)
        said += bootstrap.preflight(engine, provider, base)
        said.append(ops.refuse_earlier_stanza(provider, base, load_backup_secrets(base)).replace(
            "new in every repository", "new in every repository (the restored cluster archives there)"))
    catalog = only_repo(ops.read_source_catalog(provider, base, source, load_backup_secrets(source)), repo)
    served_by = check_target(wanted, catalog, datetime.now(timezone.utc))
    if in_place:
        said.append(_refuse_unarchived_tail(source, wanted, catalog))
    said.append(f"restore target {wanted.describe()}: from {served_by}")
    return RestorePlan(base, wanted, served_by, in_place), said


def _plan_into_a_new_cluster(source: ClusterSpec, target: str, into: str | None, port_offset: int,
                             target_spec_path: str | None, repo: int | None,
                             in_place: bool) -> tuple[RestorePlan, list[str]]:
    """The checks of an engine whose bring-up starts the new cluster empty (MongoDB): a new cluster only, free
    and clear of an earlier archive, and the engine's own reading of the target against the source's backups."""
    if in_place:
        raise RestoreError(f"in_place: engine {source.engine} restores into a new cluster only; restore with --into "
                           "NAME, then point the clients at it")
    base = choose_target_spec(source, into, port_offset, target_spec_path, in_place)
    engine, provider = get_engine(base), get_provider(base, PREFECT_LOADERS)
    refuse_existing_target.fn(base)
    said = bootstrap.preflight(engine, provider, base)
    said.append(engine.refuse_earlier_archive(provider, base, load_backup_secrets(base)))
    described, served_by = engine.check_restore_target(provider, base, source, target, load_backup_secrets(source),
                                                       repo)
    said.append(f"restore target {described}: {served_by}")
    return RestorePlan(base, None, served_by, in_place, described), said


def _refuse_unarchived_tail(source: ClusterSpec, wanted: RestoreTarget, catalog: Catalog) -> str:
    """An in-place restore must not drop what the stopped cluster committed after its last archived WAL."""
    tail = ops.first_unarchived_transaction(get_provider(source, PREFECT_LOADERS), source, catalog.wal_max)
    refusal = tail_refusal(wanted, *tail) if tail else None
    if refusal:
        raise RestoreError(refusal)
    return f"{source.name}: no transaction the restore needs lives only in the members' own WAL"


@task(cache_policy=NONE)
def check_restore(source: ClusterSpec, target: str, into: str | None, port_offset: int, target_spec_path: str | None,
                  repo: int | None, in_place: bool) -> RestorePlan:
    """Refuse, in one line and before anything is written, a restore that cannot work (see :func:`plan_restore`)."""
    plan, said = plan_restore(source, target, into, port_offset, target_spec_path, repo, in_place)
    log_sentences(*said)
    return plan


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[2, 5])
def settle_target(plan: RestorePlan, source: ClusterSpec, repo: int | None) -> tuple[str, list[str]]:
    """How the target will be restored (a sentence), and pgBackRest's options: a time after the archive's last
    transaction becomes its backup to the end of the archive (recovery could never reach it). Read after the source's
    WAL flush. An engine that restores after bring-up has nothing to settle: its plan is exact."""
    if plan.wanted is None:
        sentence = f"{plan.target_text}: {plan.served_by}, once the new cluster is up"
        log_sentences(sentence)
        return sentence, []
    if plan.wanted.kind != "time" or plan.wanted.at is None:
        return settle_time_target(plan.wanted, "", None).sentence, restore_options(plan.wanted, repo)
    provider = get_provider(plan.target, PREFECT_LOADERS)
    secrets = load_backup_secrets(source)
    catalog = only_repo(ops.read_source_catalog(provider, plan.target, source, secrets), repo)
    base = base_for_time(catalog, plan.wanted.at)
    newest = catalog.wal_max or base.wal_stop
    last = ops.last_archived_transaction(provider, plan.target, source, secrets, base.repo, newest,
                                         base.wal_start) if newest else None
    settled = settle_time_target(plan.wanted, base.label, last)
    log_sentences(settled.sentence)
    options = restore_options(settled.target, repo or (base.repo if settled.target.kind == "end" else None))
    return settled.sentence, options


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
    """The stanza a failed restore created (check_restore made sure none existed before it); of an engine that
    restores after bring-up, the archive its new cluster's archivers began."""
    provider, engine = get_provider(spec, PREFECT_LOADERS), get_engine(spec)
    secrets = load_backup_secrets(spec)
    if engine.restores_after_bring_up:
        return engine.drop_archive(provider, spec, secrets)
    catalog = ops.read_source_catalog(provider, spec, spec, secrets)
    if not catalog.backups and catalog.wal_max is None and catalog.status == "missing stanza":
        return f"no stanza {spec.name} was created"
    return engine.drop_archive(provider, spec, secrets)

