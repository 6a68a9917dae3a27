"""The providers' loaders backed by Prefect, which the tasks and flows hand to ``get_provider``.

SSH keys come from SSHCredentials blocks (else the spec's key file), host-key pins live in Prefect
variables (``dbtier-<cluster>-host-keys``), Proxmox API tokens come from ProxmoxCredentials blocks.
The library's own default (no Prefect) is :data:`dbtier.providers.loaders.FILE_LOADERS`. Prefect is
imported only when a loader is called (a local cluster's ``dbtier status`` never imports it).
"""

from __future__ import annotations

from typing import Any, cast

from dbtier.errors import PreflightError
from dbtier.providers.loaders import Loaders, PVEToken, key_from_file
from dbtier.spec import ProxmoxSettings, SSHSettings


def ssh_key(settings: SSHSettings) -> dict[str, Any]:
    """Connect arguments for the key the settings name: the SSHCredentials block, else the key file."""
    if settings.credentials_block:
        from blocks.ssh import SSHCredentials

        return SSHCredentials.load_connect_kwargs(settings.credentials_block)
    return key_from_file(settings)


def load_pins(cluster: str) -> dict[str, str]:
    """The pins in the Prefect variable ``dbtier-<cluster>-host-keys``."""
    from blocks import hostkeys

    return hostkeys.load_pins(cluster)


def save_pins(cluster: str, pins: dict[str, str]) -> None:
    from blocks import hostkeys

    hostkeys.save_pins(cluster, pins)


def pve_token(settings: ProxmoxSettings) -> PVEToken:
    """The token of the ProxmoxCredentials block ``proxmox.credentials_block``, or a one-line error saying
    how to create it."""
    from blocks.proxmox import ProxmoxCredentials

    name = settings.credentials_block
    try:
        block = cast(ProxmoxCredentials, ProxmoxCredentials.load(name))
    except ValueError:
        raise PreflightError(f"proxmox.credentials_block: no ProxmoxCredentials block named {name!r}; save one "
                             "first (ProxmoxCredentials(api_url=..., token_id=..., token_secret=...).save(name))") from None
    return block.token()


#: What the tasks and flows hand in: blocks and variables of the Prefect API this process talks to.
PREFECT_LOADERS = Loaders(ssh_key=ssh_key, load_pins=load_pins, save_pins=save_pins, pve_token=pve_token,
                          name="prefect")
