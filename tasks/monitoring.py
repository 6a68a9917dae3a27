"""Thin tasks of the monitoring flow (dbtier.monitoring.run does the work)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from blocks.ca import ensure_client_ca
from blocks.loaders import PREFECT_LOADERS
from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.engines.base import get_engine
from dbtier.monitoring import run
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from tasks import log_sentences


@task(cache_policy=NONE)
def start_exporters(spec: ClusterSpec) -> list[str]:
    """The exporters on the cluster's hosts, each with its files (the monitoring role's password, mode 0600)."""
    said = bootstrap.start_exporters(get_engine(spec), get_provider(spec, PREFECT_LOADERS), spec, load_passwords(spec))
    why = "monitoring.exporters.enabled is off" if not spec.monitoring.exporters.enabled else \
        f"engine {spec.engine} has none there (its exporters run beside the monitoring stack)"
    log_sentences(*(said or [f"no exporters on the cluster's hosts: {why}"]))
    return said


@task(cache_policy=NONE)
def start_monitoring(spec: ClusterSpec) -> list[str]:
    """The stack's files written (the monitoring role's password for the exporters beside it, mode 0600), its
    processes started (or reloaded when their files changed)."""
    ensure_client_ca(spec)  # Prometheus verifies the members with the cluster CA's copy on this machine
    said = run.bring_up(spec, load_passwords(spec))
    log_sentences(*said)
    return said


@task(cache_policy=NONE)
def wait_for_targets(spec: ClusterSpec, timeout: float = 90.0) -> str:
    sentence = run.wait_targets_up(spec, timeout)
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE)
def stop_monitoring(spec: ClusterSpec) -> list[str]:
    """Stop the cluster's monitoring stack on this machine, when it runs here (its data stays until --wipe)."""
    said = run.stop_stack(spec)
    log_sentences(*said)
    return said
