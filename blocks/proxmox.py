"""Proxmox VE credentials and placement defaults in a Prefect block that hands out API clients."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from dbtier.providers.loaders import PVEToken
from dbtier.providers.proxmox_api import Client, ProxmoxError, normalize_fingerprint


class ProxmoxCredentials(Block):
    """An API token for a Proxmox VE cluster, where containers go, and how to trust its certificate.

    TLS is verified by default: against ``ca_file`` when given, else the system CAs; a
    ``fingerprint`` pins the server certificate instead (PVE's self-signed default).
    """

    _block_type_name = "dbtier Proxmox Credentials"
    _block_type_slug = "dbtier-proxmox-credentials"

    api_url: str = Field(..., description="API address, e.g. https://pve1.example.com:8006")
    token_id: str = Field(..., description="Full API token id, USER@REALM!TOKENID, e.g. root@pam!dbtier")
    token_secret: SecretStr = Field(..., description="The token's secret (a UUID shown once by PVE)")
    verify_ssl: bool = Field(True, description="Verify the API's TLS certificate; turn off only in a lab")
    ca_file: str | None = Field(None, description="PEM file of the CA that signed the PVE certificate")
    fingerprint: str | None = Field(None, description="SHA-256 fingerprint of the PVE certificate (AA:BB:...)")
    nodes: list[str] = Field(default_factory=list, description="PVE nodes to place containers on, in order")
    storage: str = Field("local-lvm", description="Storage for container root disks")
    bridge: str = Field("vmbr0", description="Bridge for the containers' eth0")
    template: str = Field("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", description="LXC OS template")
    timeout: float = Field(30, gt=0, description="Seconds to wait for one HTTP answer")

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_fingerprint(value)
        except ProxmoxError as err:
            raise ValueError(str(err)) from None

    def token(self) -> PVEToken:
        """The block's token and placement defaults as the providers take them (from any loader)."""
        return PVEToken(**{name: getattr(self, name) for name in PVEToken.model_fields})

    def get_client(self) -> Client:
        """A proxmoxer ``ProxmoxAPI`` using the token over HTTPS."""
        return self.token().get_client()
