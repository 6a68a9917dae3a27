"""Which spec a flow run uses: a stored spec block, a file, or the default file, with the addresses
its hosts got at run time (Proxmox containers on DHCP) filled in."""

from __future__ import annotations

from typing import cast

from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec, load_spec


def resolve_spec(spec_path: str | None, spec_block: str | None) -> ClusterSpec:
    if spec_block:
        from blocks.cluster_spec import ClusterSpecBlock

        block = cast(ClusterSpecBlock, ClusterSpecBlock.load(spec_block))
        return resolve_addresses(block.get_spec())
    return resolve_addresses(load_spec(spec_path))
