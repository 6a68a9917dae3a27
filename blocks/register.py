"""Register dbtier's block types with the Prefect API, so they can be created from the UI (Blocks → Add).

    dbtier blocks register        (idempotent; run it once per Prefect API)
"""

from __future__ import annotations

from prefect.blocks.core import Block

from blocks.api import prefect_api, which_api
from blocks.cluster_spec import ClusterSpecBlock
from blocks.proxmox import ProxmoxCredentials
from blocks.s3 import S3Repository
from blocks.ssh import SSHCredentials

#: Every block type dbtier defines (the passwords and the cipher passphrase are Prefect's own Secret blocks).
BLOCK_TYPES: tuple[type[Block], ...] = (ClusterSpecBlock, S3Repository, SSHCredentials, ProxmoxCredentials)


def register_block_types() -> list[str]:
    """Register each block type and its schema (idempotent); one sentence per type, then which API has them."""
    done = []
    with prefect_api():  # an API that does not answer: one line naming it (blocks/api.py)
        for block_type in BLOCK_TYPES:
            block_type.register_type_and_schema()
            done.append(f"block type {block_type.get_block_type_slug()} ({block_type.get_block_type_name()}) registered")
    return [*done, f"registered in {which_api()}: create them from the UI under Blocks"]
