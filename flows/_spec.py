"""Which spec a flow run uses: a stored spec block, a file, or the default file."""

from __future__ import annotations

from typing import cast

from dbtier.spec import ClusterSpec, load_spec


def resolve_spec(spec_path: str | None, spec_block: str | None) -> ClusterSpec:
    if spec_block:
        from blocks.cluster_spec import ClusterSpecBlock

        block = cast(ClusterSpecBlock, ClusterSpecBlock.load(spec_block))
        return block.get_spec()
    return load_spec(spec_path)
