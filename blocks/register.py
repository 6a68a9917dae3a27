"""Register dbtier's block types with the Prefect API, so they can be created from the UI (Blocks → Add).

    dbtier blocks register        (idempotent; run it once per Prefect API)
"""

from __future__ import annotations

import httpx
from prefect.blocks.core import Block

from blocks.cluster_spec import ClusterSpecBlock
from blocks.proxmox import ProxmoxCredentials
from blocks.s3 import S3Repository
from blocks.ssh import SSHCredentials
from dbtier.errors import ApiUnreachable, DbtierError

#: Every block type dbtier defines (the passwords and the cipher passphrase are Prefect's own Secret blocks).
BLOCK_TYPES: tuple[type[Block], ...] = (ClusterSpecBlock, S3Repository, SSHCredentials, ProxmoxCredentials)


def api_url() -> str:
    """The API the client talks to (``PREFECT_API_URL``), or a word saying it is a temporary one."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "a temporary local API (PREFECT_API_URL is not set)")


def register_block_types() -> list[str]:
    """Register each block type and its schema (idempotent); one sentence per type."""
    done = []
    for block_type in BLOCK_TYPES:
        slug = block_type.get_block_type_slug()
        try:
            block_type.register_type_and_schema()
        except httpx.TransportError as err:
            raise ApiUnreachable(f"prefect api: {api_url()} does not answer ({type(err).__name__}); start the server "
                                 "or point PREFECT_API_URL at the one the cluster uses") from None
        except Exception as err:  # Prefect's HTTP errors, translated at this boundary: one line
            raise DbtierError(f"prefect api: {api_url()} refused block type {slug}: "
                              f"{' '.join(str(err).split())[:160]}; check the server's version and logs") from None
        done.append(f"block type {slug} ({block_type.get_block_type_name()}) registered")
    return done
