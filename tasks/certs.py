"""Tasks of the rotate_certs flow: issue every certificate anew, then have the engine reload its services."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from blocks.ca import PREFECT_CA_STORE, require_ca
from blocks.loaders import PREFECT_LOADERS
from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.engines.base import get_engine
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from tasks import log_sentences


@task(cache_policy=NONE)
def refuse_without_ca(spec: ClusterSpec) -> None:
    """Rotation renews what provision made: a cluster without a CA is refused in one line (nothing issued)."""
    require_ca(spec.name)


@task(cache_policy=NONE)
def rotate_certificates(spec: ClusterSpec) -> list[str]:
    """Issue a new certificate (new key, new serial) for every member and service and install it; the CA stays."""
    sentences = bootstrap.ensure_certificates(get_provider(spec, PREFECT_LOADERS), spec, PREFECT_CA_STORE, rotate=True)
    log_sentences(*sentences)
    return sentences


@task(cache_policy=NONE)
def reload_services(spec: ClusterSpec) -> list[str]:
    """The engine's reload (no restart, no failover): each member reads its new files."""
    sentences = get_engine(spec).reload_certificates(spec, load_passwords(spec), get_provider(spec, PREFECT_LOADERS))
    log_sentences(*sentences)
    return sentences


@task(cache_policy=NONE)
def reload_renewed_certificates(spec: ClusterSpec) -> list[str]:
    """Provision's last step: a service that still serves a certificate provision replaced under it (renewed,
    foreign, expiring) is reloaded in place, as rotation does; nothing when every one serves its member's."""
    provider = get_provider(spec, PREFECT_LOADERS)
    engine = get_engine(spec)
    stale = engine.stale_certificates(spec, provider)
    if not stale:
        return []
    sentences = [f"{len(stale)} service(s) serve an older certificate than their member's ({', '.join(stale)}): "
                 "reloading", *engine.reload_certificates(spec, load_passwords(spec), provider)]
    log_sentences(*sentences)
    return sentences
