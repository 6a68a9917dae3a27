"""What a flow run is called and tagged, so the runs of several clusters can be told apart in the UI.

Run names come from the run's own parameters (``@flow(flow_run_name=run_name("provision"))``), so a run
from the command line, a deployment or the UI's "Run" button is named alike: ``provision dbtier``,
``restore dbtier->dbtier-restored``, ``failover-drill dbtier (crash)``. Tags (``dbtier``,
``cluster:<name>``) are set by the command line's edge (flows/_cli.py) and by the deployments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: The tag every dbtier run carries, beside ``cluster:<name>``.
PROJECT_TAG = "dbtier"


def run_tags(cluster: str) -> list[str]:
    """
    >>> run_tags("orders")
    ['dbtier', 'cluster:orders']
    """
    return [PROJECT_TAG, f"cluster:{cluster}"]


def run_label(verb: str, cluster: str, params: Mapping[str, Any], target_cluster: str | None = None) -> str:
    """A run's name from the cluster it acts on and the parameters that tell two such runs apart.

    >>> run_label("provision", "dbtier", {})
    'provision dbtier'
    >>> run_label("restore", "dbtier", {}, "dbtier-restored")
    'restore dbtier->dbtier-restored'
    >>> run_label("restore", "dbtier", {"in_place": True})
    'restore dbtier (in place)'
    >>> run_label("failover-drill", "dbtier", {"scenario": "crash"})
    'failover-drill dbtier (crash)'
    >>> run_label("backup", "dbtier", {"kind": "full", "repo": 2})
    'backup dbtier (full, repo 2)'
    >>> run_label("backup", "dbtier", {"kind": "auto"})
    'backup dbtier'
    """
    if verb == "restore":
        if params.get("in_place"):
            return f"restore {cluster} (in place)"
        return f"restore {cluster}->{target_cluster or f'{cluster[:23]}-restored'}"
    details = []
    if params.get("scenario"):
        details.append(str(params["scenario"]))
    if params.get("kind") not in (None, "auto"):
        details.append(str(params["kind"]))
    if params.get("repo"):
        details.append(f"repo {params['repo']}")
    return f"{verb} {cluster}" + (f" ({', '.join(details)})" if details else "")


def cluster_of(params: Mapping[str, Any], path_key: str = "spec_path", block_key: str = "spec_block") -> str | None:
    """The name of the cluster a run's parameters point at (a spec block, a file, or the default spec)."""
    from dbtier.spec import load_spec

    if params.get(block_key):
        from blocks.cluster_spec import ClusterSpecBlock

        block: Any = ClusterSpecBlock.load(params[block_key])
        return str(block.get_spec().name)
    return load_spec(params.get(path_key)).name


def name_of_run(verb: str, params: Mapping[str, Any]) -> str:
    """The run's name; never fails (a spec that does not load fails the run itself, in one line)."""
    try:
        cluster = cluster_of(params) or "?"
        target = None
        if verb == "restore" and params.get("target_spec_path"):
            target = cluster_of(params, "target_spec_path", "-")
        elif verb == "restore" and params.get("into"):
            target = str(params["into"])
        return run_label(verb, cluster, params, target)
    except Exception:  # noqa: BLE001 - a name is not worth a failed run
        return verb


def run_name(verb: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable: the run's name, from the parameters Prefect gives the run."""

    def name() -> str:
        from prefect.runtime import flow_run

        return name_of_run(verb, dict(flow_run.parameters))

    return name
