"""The Prefect blocks that point dbtier at a running double: its API (trusting its CA) and the SSH key."""

from __future__ import annotations

from typing import Any

from dbtier.lab.pve.server import PveDouble


def save_blocks(double: PveDouble, name: str, private_key: str, *, token_secret: str | None = None) -> None:
    """ProxmoxCredentials ``name`` for ``double`` (every node of it) and SSHCredentials ``name-ssh``."""
    from pydantic import SecretStr

    from blocks.proxmox import ProxmoxCredentials
    from blocks.ssh import SSHCredentials

    fields: dict[str, Any] = {"api_url": double.url, "token_id": double.token_id, "ca_file": double.ca_file,
                              "nodes": list(double.state.nodes)}
    ProxmoxCredentials(**fields, token_secret=SecretStr(token_secret or double.token_secret)).save(name, overwrite=True)
    SSHCredentials(private_key=SecretStr(private_key)).save(f"{name}-ssh", overwrite=True)
