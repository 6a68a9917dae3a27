"""Tasks of the teardown flow that look before anything is destroyed, and the Prefect side of a wipe."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from blocks.backup import load_backup_secrets
from blocks.cleanup import cluster_blocks, drop_cipher_block, forget_cluster_blocks
from blocks.loaders import PREFECT_LOADERS
from dbtier import bootstrap
from dbtier.engines.base import get_engine
from dbtier.errors import ProvisionError
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from tasks import log_sentences


@task(cache_policy=NONE)
def survey_cluster(spec: ClusterSpec, drop_backups: bool, wipe: bool) -> dict[str, Any]:
    """What of the cluster exists: hosts holding its directory, services running, (optionally) the clusters whose
    backups its repositories hold (``drop_backups``), its Secret blocks and variables (``wipe``). Changes nothing; for a
    wipe, refuses a directory that carries another cluster's marker before anything is stopped."""
    engine, provider = get_engine(spec), get_provider(spec, PREFECT_LOADERS)
    found: dict[str, Any] = {
        "hosts": bootstrap.check_owned(engine, provider, spec) if wipe else
        bootstrap.hosts_with_data(engine, provider, spec),
        "running": bootstrap.running_services(engine, provider, spec),
        "archived": engine.archived_clusters(provider, spec, load_backup_secrets(spec)) if drop_backups else None,
        "blocks": cluster_blocks(spec) if wipe else [],
    }
    log_sentences(f"cluster {spec.name}: data on {', '.join(found['hosts']) or 'no host'}; running: "
                  f"{', '.join(found['running']) or 'nothing'}"
                  + (f"; clusters with backups in its repositories: {', '.join(found['archived']) or 'none'}"
                     if drop_backups else "")
                  + (f"; blocks and variables: {', '.join(found['blocks']) or 'none'}" if wipe else ""))
    return found


@task(cache_policy=NONE)
def check_stopped(spec: ClusterSpec, wipe: bool) -> None:
    """After the stop and before anything is deleted: nothing of the cluster runs; with ``wipe``, every
    directory to delete carries the cluster's marker (:func:`bootstrap.check_wipe`)."""
    engine, provider = get_engine(spec), get_provider(spec, PREFECT_LOADERS)
    if wipe:
        hosts = bootstrap.check_wipe(engine, provider, spec)
        log_sentences(f"{spec.cluster_dir} on {', '.join(hosts) or 'no host'}: ours, nothing running")
        return
    still = bootstrap.running_services(engine, provider, spec)
    if still:
        raise ProvisionError(f"cluster {spec.name}: {', '.join(still)} still running after the stop; nothing was "
                             "deleted: stop them and run again")


@task(cache_policy=NONE)
def forget_blocks(spec: ClusterSpec, backups_remain: bool, cipher_step_follows: bool = False) -> list[str]:
    """Delete the cluster's password Secret blocks and variables (never its cipher block)."""
    sentences = forget_cluster_blocks(spec, backups_remain, cipher_step_follows)
    log_sentences(*sentences)
    return sentences


@task(cache_policy=NONE)
def drop_cipher(spec: ClusterSpec, other_stanzas: list[str]) -> str:
    """Last: the cipher block goes only when dbtier made it for this cluster and nothing else may need it."""
    sentence = drop_cipher_block(spec, other_stanzas)
    log_sentences(sentence)
    return sentence
