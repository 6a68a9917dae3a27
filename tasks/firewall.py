"""Tasks that load and remove the cluster's host firewall (dbtier/firewall.py) on the hosts of its own."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from blocks.loaders import PREFECT_LOADERS
from dbtier import firewall_hosts
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from tasks import log_sentences


@task(cache_policy=NONE)  # not retried: a refused rule set or a wrong address fails the same way again
def apply_firewall(spec: ClusterSpec) -> list[str]:
    """Replace the cluster's nft table on each of its hosts (one transaction each; safe to repeat), or remove it
    when ``firewall.enabled`` is false; one sentence per host."""
    said = firewall_hosts.apply(get_provider(spec, PREFECT_LOADERS), spec)
    log_sentences(*said)
    return said


@task(cache_policy=NONE)
def remove_firewall(spec: ClusterSpec) -> list[str]:
    """Delete the cluster's nft table, rules file and boot unit on each host of its own; one sentence per host."""
    said = firewall_hosts.remove(get_provider(spec, PREFECT_LOADERS), spec)
    log_sentences(*said)
    return said


@task(cache_policy=NONE)
def firewall_status(spec: ClusterSpec) -> list[str]:
    """``firewall: N rules on <host>`` for each host of the cluster's own (none under the local provider)."""
    return firewall_hosts.status(get_provider(spec, PREFECT_LOADERS), spec)
