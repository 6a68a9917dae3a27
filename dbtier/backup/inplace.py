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


def remove_attempt(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """A failed restore into a new cluster: stop every process by its pid file, then wipe what it built
    (:func:`bootstrap.wipe`: its directory and systemd units, only where its marker says it is ours)."""
    return [*bootstrap.stop_services(engine, provider, spec), bootstrap.wipe(engine, provider, spec)]


def put_back(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """Undo a failed in-place restore: stop the attempt, delete the directory it built and move the old one back
    where it was (the cluster's systemd units are its own and stay)."""
    said = bootstrap.stop_services(engine, provider, spec)
    for host in bootstrap.cluster_hosts(engine, spec):
        runner = provider.runner(spec, host)
        if runner.list_dir(aside_path(spec)) is not None:
            runner.remove_tree(spec.cluster_dir)
            runner.rename(aside_path(spec), spec.cluster_dir)
            said.append(f"{host}: the data of {spec.name} is back in {spec.cluster_dir}, as it was before the restore")
    return said


def drop_aside(engine: Engine, provider: Provider, spec: ClusterSpec) -> str:
    """The restored cluster is up: the data it replaced can go."""
    for host in bootstrap.cluster_hosts(engine, spec):
        provider.runner(spec, host).remove_tree(aside_path(spec))
    return f"the data the restore replaced ({aside_path(spec)}) is removed"
