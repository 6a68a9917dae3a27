"""Cluster passwords kept in Prefect Secret blocks, created on first provision and reused after."""

from __future__ import annotations

from typing import cast

from prefect.blocks.system import Secret
from pydantic import SecretStr

from blocks.api import POINT_AT_IT, missing_block_advice, prefect_api, which_api
from dbtier.errors import BlockMissing
from dbtier.secrets import CORE_ROLES, ROLES, Passwords, block_name, new_password
from dbtier.spec import ClusterSpec


def load_secret(name: str) -> str | None:
    try:
        with prefect_api():
            block = cast(Secret, Secret.load(name))
    except ValueError:
        return None
    value = block.get()
    return str(value)


def refuse_lost_passwords(spec: ClusterSpec, initialised: bool) -> list[str]:
    """The names of the cluster's missing Secret blocks; refused (exit 2) when the cluster was ``initialised``
    with them: its blocks are in another Prefect API, and new passwords would lock Patroni out."""
    missing = [block_name(spec, role) for role in ROLES if load_secret(block_name(spec, role)) is None]
    lost = [name for name in missing if name in {block_name(spec, role) for role in CORE_ROLES}]
    if lost and initialised:
        raise BlockMissing(
            f"{lost[0]}: no such Secret block in {which_api()}, but cluster {spec.name} under {spec.cluster_dir} "
            f"was initialised with it: its blocks must be in another Prefect API; {POINT_AT_IT}"
        )
    return missing


def ensure_passwords(spec: ClusterSpec, initialised: bool) -> list[str]:
    """Create the Secret blocks that are missing; return which were made and which reused (never values).

    A cluster that was ``initialised`` with passwords keeps them: a missing core block is then an error
    (new passwords would lock Patroni out of its own cluster at the next restart); a role added by a later
    version of dbtier gets its password on the first provision after the upgrade.
    """
    missing = refuse_lost_passwords(spec, initialised)
    made, kept = [], []
    for role in ROLES:
        name = block_name(spec, role)
        if name in missing:
            Secret(value=SecretStr(new_password())).save(name)
            made.append(role)
        else:
            kept.append(role)
    parts = []
    if made:
        parts.append(f"generated {', '.join(made)}")
    if kept:
        parts.append(f"reused {', '.join(kept)}")
    return [f"passwords for {spec.name}: {'; '.join(parts)} (Secret blocks dbtier-{spec.name}-*-password)"]


def load_passwords(spec: ClusterSpec) -> Passwords:
    """The cluster's passwords from their Secret blocks."""
    values = {}
    for role in ROLES:
        value = load_secret(block_name(spec, role))
        if value is None:
            raise BlockMissing(missing_block_advice(spec, block_name(spec, role)))
        values[role] = value
    return Passwords(**values)


def forget_passwords(spec: ClusterSpec) -> str:
    """Delete the cluster's password Secret blocks (its data is gone: nothing can use them any more)."""
    gone = []
    for role in ROLES:
        name = block_name(spec, role)
        if load_secret(name) is not None:
            Secret.delete(name)
            gone.append(name)
    return f"Secret blocks {', '.join(gone)} deleted" if gone else f"no password Secret block of {spec.name} to delete"
