"""How a PostgreSQL restore reads its target against pgBackRest's catalog, before anything is written.

The engine's side of :mod:`tasks.restore`: pgBackRest's target grammar (:func:`dbtier.backup.catalog.parse_target`),
the backup that serves it, a time inside a quiet period settled to the end of the archive
(:mod:`.walscan`), and, for an in-place restore, the transactions only the stopped members' own WAL holds.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from dbtier.backup.catalog import Catalog, base_for_time, check_target, parse_target, restore_options
from dbtier.backup.repos import BackupSecrets
from dbtier.backup.restore import RestorePlan
from dbtier.engines.postgres import pgbackrest_ops
from dbtier.engines.postgres.walscan import settle_time_target, tail_refusal
from dbtier.errors import RestoreError
from dbtier.providers.base import Provider
from dbtier.spec import ClusterSpec


def only_repo(catalog: Catalog, repo: int | None) -> Catalog:
    """The catalog's backups in repository ``repo`` (all of them when None); the restore checked the number."""
    if repo is None:
        return catalog
    return dataclasses.replace(catalog, backups=tuple(catalog.in_repo(repo)))


def check_restore_target(provider: Provider, target: ClusterSpec, source: ClusterSpec, target_text: str,
                         secrets: BackupSecrets, repo: int | None) -> tuple[str, str]:
    """(the target in words, the backup that serves it), read from the source's catalog on the target's first
    host; a one-line RestoreError when no backup serves it."""
    wanted = parse_target(target_text)
    catalog = only_repo(pgbackrest_ops.read_source_catalog(provider, target, source, secrets), repo)
    return wanted.describe(), check_target(wanted, catalog, datetime.now(timezone.utc))


def refuse_unarchived_tail(provider: Provider, source: ClusterSpec, target_text: str, secrets: BackupSecrets,
                           repo: int | None) -> str:
    """An in-place restore must not drop what the stopped cluster committed after its last archived WAL."""
    wanted = parse_target(target_text)
    catalog = only_repo(pgbackrest_ops.read_source_catalog(provider, source, source, secrets), repo)
    tail = pgbackrest_ops.first_unarchived_transaction(provider, source, catalog.wal_max)
    refusal = tail_refusal(wanted, *tail) if tail else None
    if refusal:
        raise RestoreError(refusal)
    return f"{source.name}: no transaction the restore needs lives only in the members' own WAL"


def settle_target(provider: Provider, source: ClusterSpec, plan: RestorePlan, secrets: BackupSecrets,
                  repo: int | None) -> tuple[str, list[str]]:
    """How the target will be restored (a sentence), and pgBackRest's options: a time after the archive's last
    transaction becomes its backup to the end of the archive (recovery could never reach it). Read after the
    source's WAL flush."""
    wanted = parse_target(plan.requested)
    if wanted.kind != "time" or wanted.at is None:
        return settle_time_target(wanted, "", None).sentence, restore_options(wanted, repo)
    catalog = only_repo(pgbackrest_ops.read_source_catalog(provider, plan.target, source, secrets), repo)
    base = base_for_time(catalog, wanted.at)
    newest = catalog.wal_max or base.wal_stop
    last = pgbackrest_ops.last_archived_transaction(provider, plan.target, source, secrets, base.repo, newest,
                                                    base.wal_start) if newest else None
    settled = settle_time_target(wanted, base.label, last)
    chosen_repo = repo or (base.repo if settled.target.kind == "end" else None)
    return settled.sentence, restore_options(settled.target, chosen_repo)
