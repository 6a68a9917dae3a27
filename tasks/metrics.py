"""Thin tasks: what a flow learned, left as dbtier's own metrics for Prometheus (dbtier.monitoring.metrics)."""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from blocks.loaders import PREFECT_LOADERS
from dbtier import tls_files
from dbtier.backup.catalog import BackupRecord
from dbtier.monitoring import metrics
from dbtier.monitoring.textfile import write_metrics
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from tasks import log_sentences


def _written(spec: ClusterSpec, source: str, samples: list[metrics.Sample]) -> str:
    path = write_metrics(spec.name, source, samples)
    log_sentences(f"metrics for Prometheus: {len(samples)} value(s) in {path}")
    return path


@task(cache_policy=NONE)
def record_archive_metrics(spec: ClusterSpec, healthy: bool, lag_s: float) -> str:
    return _written(spec, "archive", metrics.archive_samples(healthy, lag_s))


@task(cache_policy=NONE)
def record_backup_metrics(spec: ClusterSpec, backups: list[BackupRecord]) -> str:
    newest = metrics.newest_backups([(b.repo, b.kind, b.stop.timestamp()) for b in backups if not b.error])
    return _written(spec, "backup", metrics.backup_samples(newest))


@task(cache_policy=NONE)
def record_restore_drill_metrics(spec: ClusterSpec, passed: bool, restore_s: float) -> str:
    return _written(spec, "restore-drill", metrics.restore_drill_samples(passed, restore_s, time.time()))


@task(cache_policy=NONE)
def record_failover_drill_metrics(spec: ClusterSpec, verdicts: list[Any]) -> str:
    """One file per scenario, so that a drill of one scenario leaves the others' last values alone."""
    paths = [_written(spec, f"drill-{v.scenario}", metrics.failover_drill_samples(
        v.scenario, v.passed, v.rto_s, v.lost_writes, time.time())) for v in verdicts]
    return ", ".join(paths)


@task(cache_policy=NONE)
def record_certificate_metrics(spec: ClusterSpec) -> str | None:
    """When the members' first certificate expires (nothing with TLS off)."""
    first = tls_files.first_expiry(get_provider(spec, PREFECT_LOADERS), spec)
    if first is None:
        return None
    return _written(spec, "certificates", metrics.certificate_samples(first.timestamp()))
