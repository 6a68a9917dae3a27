"""The Prefect blocks a lab's ready specs name: its S3 (an S3Repository) and its PVE API double (ProxmoxCredentials)."""

from __future__ import annotations

from pydantic import SecretStr

from dbtier.lab import lab
from dbtier.lab.lab import LabState
from dbtier.lab.plan import pve_block_name, s3_block_name


def save_lab_blocks(state: LabState) -> list[str]:
    """Save (overwrite) the lab's blocks in the Prefect API this process talks to; return their names."""
    from blocks.proxmox import ProxmoxCredentials
    from blocks.s3 import S3Repository

    saved = [s3_block_name(state.name)]
    S3Repository(**lab.s3_settings(state)).save(saved[0], overwrite=True)
    pve = lab.pve_connection(state)
    if pve is not None:
        fields = {k: v for k, v in pve.items() if k in ProxmoxCredentials.model_fields}
        fields["token_secret"] = SecretStr(fields["token_secret"])
        ProxmoxCredentials(**fields).save(pve_block_name(state.name), overwrite=True)
        saved.append(pve_block_name(state.name))
    return saved
