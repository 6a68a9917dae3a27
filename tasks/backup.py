"""Tasks of the backup, archive health and restore flows: thin wrappers over dbtier.backup and the engine."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import yaml
from prefect import task
from prefect.cache_policies import NONE

from blocks.backup import load_backup_secrets, s3_repositories
from blocks.loaders import PREFECT_LOADERS
from blocks.passwords import load_passwords
from dbtier import bootstrap, pictures, workdir
from dbtier.backup.archive import ArchiveVerdict
from dbtier.backup.catalog import (
    BackupRecord,
    Catalog,
    catalog_description,
    choose_kind,
    expired_labels,
    fulls_to_keep,
    kind_refusal,
    human_bytes,
)
from dbtier.engines.base import Engine, get_engine
from dbtier.errors import BackupError, DbtierError, RestoreError
from dbtier.providers.base import Provider, get_provider
from dbtier.spec import ClusterSpec
from tasks import log_sentences


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[2, 5])
def configure_archiving(spec: ClusterSpec, source: ClusterSpec | None = None) -> None:
    """What the engine's archiving reads on every member host (and the source's config, for a restore): the
    engine's :meth:`~dbtier.engines.base.Engine.configure_archiving`; S3 buckets checked or created."""
    secrets = load_backup_secrets(spec, create_cipher=True)
    theirs = load_backup_secrets(source) if source is not None else None
    sentences = get_engine(spec).configure_archiving(get_provider(spec, PREFECT_LOADERS), spec, secrets,
                                                     load_passwords(spec), source, theirs)
    log_sentences(*ensure_buckets(spec), *sentences)


def ensure_buckets(spec: ClusterSpec) -> list[str]:
    from dbtier.backup.s3 import ensure_bucket

    return [ensure_bucket(block.get_boto3_client(), block.bucket, block.region) for _, _, block in s3_repositories(spec)]


@task(cache_policy=NONE)
def refuse_earlier_archive(spec: ClusterSpec) -> None:
    """Before a new cluster starts: the repositories must not hold an earlier cluster's archive of its name."""
    engine, provider = get_engine(spec), get_provider(spec, PREFECT_LOADERS)
    if spec.restore_from is not None or bootstrap.is_initialised(engine, provider, spec):
        return
    log_sentences(engine.refuse_earlier_archive(provider, spec, load_backup_secrets(spec, create_cipher=True)))


@task(cache_policy=NONE)
def drop_backups(spec: ClusterSpec) -> str:
    """Delete the cluster's backups and archive from every repository (PostgreSQL: its stanza). Not retried: it
    destroys backups."""
    sentence = get_engine(spec).drop_archive(get_provider(spec, PREFECT_LOADERS), spec, load_backup_secrets(spec))
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE, retries=3, retry_delay_seconds=[2, 5, 10])
def start_archiving(spec: ClusterSpec) -> None:
    """Once replication is verified: the archive reaches every repository (PostgreSQL: stanza-create and check;
    MongoDB: each member's oplog archiver started). Idempotent."""
    engine = get_engine(spec)
    secrets = load_backup_secrets(spec) if engine.archives(spec) and engine.archiver_services(spec) else None
    log_sentences(*engine.start_archiving(get_provider(spec, PREFECT_LOADERS), spec, secrets))


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[2, 5])
def read_catalog(spec: ClusterSpec) -> Catalog:
    """Every backup of the cluster, through the engine (:meth:`~dbtier.engines.base.Engine.read_catalog`)."""
    catalog = get_engine(spec).read_catalog(get_provider(spec, PREFECT_LOADERS), spec, load_backup_secrets(spec))
    log_sentences(f"stanza {spec.name}: {len(catalog.backups)} backup(s), WAL {catalog.wal_min} .. {catalog.wal_max}")
    return catalog


@task(cache_policy=NONE)
def pick_backup_kind(spec: ClusterSpec, requested: str, catalog: Catalog, repo: int) -> str:
    """``requested``, or for ``auto`` a full when none is recent enough, else a differential (a full when the
    engine has no differentials)."""
    kind, why = choose_kind(requested, catalog.in_repo(repo), datetime.now(timezone.utc), spec.backup.full_every_days)
    kinds = get_engine(spec).backup_kinds(spec)
    if requested == "auto" and kind not in kinds:
        kind, why = kinds[0], f"{why}; engine {spec.engine} takes {kinds[0]} only"
    else:
        refusal = kind_refusal("kind", spec.engine, kinds, kind)
        if refusal:
            raise BackupError(refusal)
    log_sentences(f"repo{repo}: {kind} backup ({why})")
    return kind


@task(cache_policy=NONE, task_run_name="backup repo{repo}")
def take_backup(spec: ClusterSpec, kind: str, repo: int) -> str:
    """Not retried: a failed backup is reported, and the next run takes a new one."""
    sentence = get_engine(spec).take_backup(get_provider(spec, PREFECT_LOADERS), spec, kind, repo,
                                            load_backup_secrets(spec), load_passwords(spec))
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE, task_run_name="verify repo{repo}")
def verify_repository(spec: ClusterSpec, repo: int) -> str:
    sentence = get_engine(spec).verify_backup(get_provider(spec, PREFECT_LOADERS), spec, repo, load_backup_secrets(spec))
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE, task_run_name="retention repo{repo}")
def apply_retention(spec: ClusterSpec, repo: int, before: Catalog) -> tuple[list[str], Catalog]:
    """Expire what retention no longer keeps; return the labels that went and the catalog left."""
    retention = spec.backup.retention
    keep_full = fulls_to_keep(before.in_repo(repo), retention.full, retention.window_days, datetime.now(timezone.utc))
    engine, provider, secrets = get_engine(spec), get_provider(spec, PREFECT_LOADERS), load_backup_secrets(spec)
    engine.expire_backups(provider, spec, repo, keep_full, retention.diff, secrets)
    left = engine.read_catalog(provider, spec, secrets)
    gone = expired_labels(before.in_repo(repo), left.in_repo(repo))
    log_sentences(f"repo{repo}: kept {keep_full} full / {retention.diff} diff; expired {', '.join(gone) or 'nothing'}")
    return gone, left


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[2, 5])
def check_archiving(spec: ClusterSpec) -> str:
    sentence = get_engine(spec).check_archive(get_provider(spec, PREFECT_LOADERS), spec, load_backup_secrets(spec))
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[1, 3])
def judge_archiving(spec: ClusterSpec) -> ArchiveVerdict:
    verdict = get_engine(spec).judge_archive(get_provider(spec, PREFECT_LOADERS), spec, load_backup_secrets(spec),
                                             load_passwords(spec))
    log_sentences(verdict.sentence)
    return verdict


def record_rows(records: list[BackupRecord], verified: dict[int, str]) -> list[dict[str, Any]]:
    return [r.row(verified.get(r.repo, "")) for r in records]


# ---- restore ------------------------------------------------------------------------------------


def _refuse_running(engine: Engine, provider: Provider, spec: ClusterSpec, field: str, fix: str) -> None:
    """A restore's one-line refusal when any process of ``spec`` runs."""
    running = bootstrap.running_services(engine, provider, spec)
    if running:
        raise RestoreError(f"{field}: cluster {spec.name} is running ({', '.join(running)}); {fix}")


@task(cache_policy=NONE)
def refuse_existing_target(target: ClusterSpec) -> None:
    """A restore never lands on a cluster that runs or exists: it would mix two clusters' data."""
    engine, provider = get_engine(target), get_provider(target, PREFECT_LOADERS)
    _refuse_running(engine, provider, target, "target", "restore into a new name, or stop it first (python -m flows.teardown)")
    if bootstrap.is_initialised(engine, provider, target):
        raise RestoreError(
            f"target: cluster {target.name} already exists under {target.cluster_dir}; pick another name "
            "or remove it first (python -m flows.teardown --wipe)"
        )
    log_sentences(f"target {target.name}: nothing runs or exists there yet")


@task(cache_policy=NONE)
def require_stopped(source: ClusterSpec) -> None:
    """An in-place restore replaces the cluster's data: only once nothing of it runs (orphan postmasters stopped)."""
    engine, provider = get_engine(source), get_provider(source, PREFECT_LOADERS)
    _refuse_running(engine, provider, source, "in_place",
                    "stop it first (python -m flows.teardown) — an in-place restore replaces its data")
    log_sentences(*bootstrap.stop_services(engine, provider, source))


@task(cache_policy=NONE)
def flush_source_wal(source: ClusterSpec) -> str:
    """When the source still runs, push its current WAL (or oplog) to the repositories (so 'now' is restorable)."""
    engine, provider = get_engine(source), get_provider(source, PREFECT_LOADERS)
    if not bootstrap.running_services(engine, provider, source):
        sentence = f"source {source.name} is not running: restoring from what its repositories hold"
    else:
        try:
            sentence = engine.flush_archive(provider, source, load_backup_secrets(source), load_passwords(source))
        except DbtierError as err:
            sentence = f"source {source.name} could not flush its WAL ({err.one_line()}); restoring from what is archived"
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE)
def wait_for_restore(spec: ClusterSpec) -> str:
    """The members started on the restored backup: wait until one is the primary."""
    sentence = get_engine(spec).wait_for_restore(get_provider(spec, PREFECT_LOADERS), spec, spec.timeouts.healthy)
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE)
def save_cluster_spec(spec: ClusterSpec) -> str:
    """Write the restored cluster's spec beside its data on each host, and into this machine's work directory
    (``dbtier status --spec`` and teardown read it here, where the flows run); return the local path."""
    path = f"{spec.cluster_dir}/cluster-spec.yaml"
    text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    hosts = bootstrap.cluster_hosts(get_engine(spec), spec)
    for host in hosts:
        get_provider(spec, PREFECT_LOADERS).runner(spec, host).write_file(path, text.encode(), 0o644)
    local = os.path.join(workdir.cluster_work_dir(spec.name), "cluster-spec.yaml")
    workdir.write_private(local, text.encode(), 0o644)
    log_sentences(f"spec of {spec.name} saved: {local} (and {path} on {', '.join(hosts)})")
    return local


@task(cache_policy=NONE, retries=1, retry_delay_seconds=2)
def measure_s3(spec: ClusterSpec) -> list[str]:
    """What each S3 repository holds for this cluster, measured in the bucket (boto3), one sentence each."""
    from dbtier.backup.s3 import archive_size, backup_sizes, read_manifest

    sentences = []
    for n, repo, block in s3_repositories(spec):
        client = block.get_boto3_client()
        sizes = backup_sizes(client, block.bucket, repo.path, spec.name)
        wal = archive_size(client, block.bucket, repo.path, spec.name)
        newest = ""
        if sizes:
            label = max(sizes)
            manifest = read_manifest(client, block.bucket, repo.path, spec.name, label)
            newest = f"; newest {label}: " + (
                f"manifest says {manifest.get('backup-type')}, PostgreSQL {manifest.get('db-version')}, "
                f"WAL {manifest.get('backup-archive-start')}" if manifest else "manifest encrypted")
        sentences.append(f"repo{n} s3://{block.bucket}{repo.path}: {len(sizes)} backup(s) "
                         f"{human_bytes(sum(sizes.values()))}, WAL archive {human_bytes(wal)}{newest}")
    log_sentences(*sentences)
    return sentences


@task(cache_policy=NONE)
def publish_catalog(spec: ClusterSpec, catalog: Catalog, taken: list[str], expired: list[str],
                    verified: dict[int, str], notes: list[str]) -> list[dict[str, Any]]:
    """The catalog a person reads first (restorable window, one row per backup, verified on screen) and, in a
    second artifact, the WAL range each backup needs; returns the main table's rows."""
    from prefect.artifacts import create_table_artifact

    rows = record_rows(list(catalog.backups), verified)
    description = catalog_description(spec.name, catalog, taken, expired, _last_archived(spec))
    create_table_artifact(key=f"{spec.name}-backups", table=rows,
                          description=description + "".join(f"\n\n{line}" for line in notes))
    create_table_artifact(key=f"{spec.name}-backups-wal", table=[b.wal_row() for b in catalog.backups],
                          description=f"**{spec.name}**: WAL archived from {catalog.wal_min or 'nothing yet'} to "
                          f"{catalog.wal_max or 'nothing yet'}; a restore of a backup needs at least its range")
    publish_backup_history(spec, catalog)
    return rows


def publish_backup_history(spec: ClusterSpec, catalog: Catalog) -> str:
    """The backup history picture (size and duration per backup, every repository), saved as
    ``<work>/<cluster>/backup-history.png`` and published as the artifact ``<cluster>-backup-history``."""
    from prefect.artifacts import create_markdown_artifact

    points = [pictures.BackupPoint(b.label, b.kind, b.start, b.size, b.duration_s) for b in catalog.backups]
    png = pictures.backup_png(points, f"{spec.name}: backups (size and duration)")
    path = os.path.join(workdir.make_private_dir(workdir.cluster_work_dir(spec.name)), "backup-history.png")
    workdir.write_private(path, png)
    headline = f"**{spec.name}**: size and duration of each of the {len(points)} backup(s) (saved as {path})"
    create_markdown_artifact(markdown=pictures.markdown_image(png, headline, "backup history"),
                             key=f"{spec.name}-backup-history", description=f"{spec.name}: backup history")
    return path


def _last_archived(spec: ClusterSpec) -> datetime | None:
    """When the cluster's archive last received a change (the end of the restorable window), or None when unknown."""
    try:
        return get_engine(spec).last_archived_time(get_provider(spec, PREFECT_LOADERS), spec, load_backup_secrets(spec),
                                                   load_passwords(spec))
    except DbtierError as err:
        log_sentences(f"the archive's newest change is unknown ({err.one_line()}); the window ends at the newest backup")
        return None
