"""The safety net of a restore: nothing is destroyed before the restored cluster is up.

An in-place restore sets the cluster's directory aside (a rename on each host: instant, no copy) and restores
into a fresh one. Only once the restored cluster is healthy is the old directory dropped; if the restore fails,
the attempt is stopped and removed and the old directory is put back, exactly as it was. A restore into a new
cluster that fails is stopped and removed the same way (its stanza and blocks by the caller), so no half-built
cluster stays behind. Runner in, sentence out; no Prefect.
"""

from __future__ import annotations

from dbtier import bootstrap
from dbtier.engines.base import Engine
from dbtier.errors import RestoreError
from dbtier.providers.base import Provider
from dbtier.spec import ClusterSpec

ASIDE_SUFFIX = ".before-restore"


def aside_path(spec: ClusterSpec) -> str:
    """
    >>> aside_path(ClusterSpec())
    '/var/lib/dbtier/dbtier.before-restore'
    """
    return spec.cluster_dir + ASIDE_SUFFIX


def refuse_leftover(engine: Engine, provider: Provider, spec: ClusterSpec) -> str:
    """An earlier in-place restore that was interrupted may have left the old data set aside: never overwrite it."""
    for host in bootstrap.cluster_hosts(engine, spec):
        if provider.runner(spec, host).list_dir(aside_path(spec)) is not None:
            raise RestoreError(
                f"in_place: {host}:{aside_path(spec)} holds cluster {spec.name}'s data from an interrupted in-place "
                f"restore; move it back over {spec.cluster_dir} (or remove it if it is not wanted), then retry"
            )
    return f"no data of {spec.name} is set aside from an earlier restore"


def set_aside(engine: Engine, provider: Provider, spec: ClusterSpec) -> str:
    """Rename the cluster's directory on every host to ``<dir>.before-restore``; the restore builds a new one."""
    moved = []
    for host in bootstrap.cluster_hosts(engine, spec):
        runner = provider.runner(spec, host)
        if runner.list_dir(spec.cluster_dir) is not None:
            runner.rename(spec.cluster_dir, aside_path(spec))
            moved.append(host)
    where = ", ".join(moved) or "no host"
    return f"data of {spec.name} set aside as {aside_path(spec)} on {where} until the restored cluster is up"


def remove_attempt(engine: Engine, provider: Provider, spec: ClusterSpec, forget_units: bool = True) -> list[str]:
    """Stop every process of a failed restore by its pid file and delete the directory it built (and, for a new
    cluster, its systemd units; an in-place restore's units are the cluster's own and stay)."""
    said = bootstrap.stop_services(engine, provider, spec)
    removed = []
    for host in bootstrap.cluster_hosts(engine, spec):
        runner = provider.runner(spec, host)
        if runner.list_dir(spec.cluster_dir) is not None:
            if forget_units:
                services = [s for s in bootstrap.all_services(engine, spec) if s.host == host]
                said += provider.supervisor(spec, host).remove(runner, services)
            runner.remove_tree(spec.cluster_dir)
            removed.append(host)
    if removed:
        said.append(f"removed the failed restore's {spec.cluster_dir} on {', '.join(removed)}")
    return said


def put_back(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """Undo a failed in-place restore: remove the attempt, move the old directory back where it was."""
    said = remove_attempt(engine, provider, spec, forget_units=False)
    for host in bootstrap.cluster_hosts(engine, spec):
        runner = provider.runner(spec, host)
        if runner.list_dir(aside_path(spec)) is not None:
            runner.rename(aside_path(spec), spec.cluster_dir)
            said.append(f"{host}: the data of {spec.name} is back in {spec.cluster_dir}, as it was before the restore")
    return said


def drop_aside(engine: Engine, provider: Provider, spec: ClusterSpec) -> str:
    """The restored cluster is up: the data it replaced can go."""
    for host in bootstrap.cluster_hosts(engine, spec):
        provider.runner(spec, host).remove_tree(aside_path(spec))
    return f"the data the restore replaced ({aside_path(spec)}) is removed"
