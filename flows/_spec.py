"""Which spec a flow run uses: a stored spec block, a file, or the default file, with the addresses
its hosts got at run time (Proxmox containers on DHCP) filled in."""

from __future__ import annotations

from typing import cast

from blocks.ca import ensure_client_ca
from blocks.loaders import PREFECT_LOADERS
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec, drill_copy_plan, layout_notice, load_spec, port_plan, restored_copy_plan


def resolve_spec(spec_path: str | None, spec_block: str | None) -> ClusterSpec:
    if spec_block:
        from blocks.cluster_spec import ClusterSpecBlock

        block = cast(ClusterSpecBlock, ClusterSpecBlock.load(spec_block))
        spec = block.get_spec()
    else:
        spec = load_spec(spec_path)
    for warning in spec_warnings(spec, spec_path, from_block=bool(spec_block)):
        if warning not in WARNED:  # a run from the command line has said it on stderr already
            WARNED.add(warning)
            _warn(warning)
    ensure_client_ca(spec)
    return resolve_addresses(spec, loaders=PREFECT_LOADERS)


def _warn(warning: str) -> None:
    """On the run's logger (console and UI), or on stderr outside a run."""
    import sys

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        get_run_logger().warning("%s", warning)
    except MissingContextError:
        print(f"dbtier: warning: {warning}", file=sys.stderr)


#: Warnings this process has given (the command line's, then the flow run's, say each once).
WARNED: set[str] = set()


def spec_warnings(spec: ClusterSpec, spec_path: str | None, from_block: bool = False) -> list[str]:
    """What to warn about a loaded spec: settings in their old places in the file ``spec_path`` names (the default
    file when None; :func:`dbtier.spec.layout_notice`), unless it came from a spec block, and ports in the ephemeral
    range (:func:`port_warning`)."""
    found = [None if from_block else layout_notice(spec_path), port_warning(spec)]
    return [w for w in found if w]


def port_warning(spec: ClusterSpec, ephemeral: tuple[int, int] | None = None) -> str | None:
    """One line when a port of the cluster or of its copies lies in the kernel's ephemeral range, else None.

    >>> port_warning(ClusterSpec(), (32768, 60999)) is None
    True
    >>> pg = ClusterSpec(postgres={"ports": {"postgres": 40000, "patroni": 8008, "etcd": 2379}})
    >>> port_warning(pg, (32768, 60999))[:60]
    'postgres.ports.postgres (member 0) 40000 (and 6 more) lie in'
    >>> port_warning(ClusterSpec(engine="mongodb", mongodb={"port": 40000}), (32768, 60999))[:60]
    'mongodb.port (member 0) 40000 (and 6 more) lie in the kernel'
    """
    from dbtier.ports import ephemeral_findings, ephemeral_range, ephemeral_warning

    chosen = ephemeral or ephemeral_range()
    if chosen is None:
        return None
    own = port_plan(spec)
    copies = [(f"restored copy's {f}", p) for f, p in restored_copy_plan(spec)]
    copies += [(f"restore drill copy's {f}", p) for f, p in drill_copy_plan(spec)]
    return ephemeral_warning(ephemeral_findings([*own, *copies], *chosen), *chosen)
