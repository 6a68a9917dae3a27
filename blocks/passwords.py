"""Cluster passwords kept in Prefect Secret blocks, created on first provision and reused after."""

from __future__ import annotations

from typing import cast

from prefect.blocks.system import Secret
from pydantic import SecretStr

from dbtier.errors import SecretError
from dbtier.secrets import ROLES, Passwords, block_name, new_password
from dbtier.spec import ClusterSpec


def load_secret(name: str) -> str | None:
    try:
        block = cast(Secret, Secret.load(name))
    except ValueError:
        return None
    value = block.get()
    return str(value)


def ensure_passwords(spec: ClusterSpec, initialised: bool) -> list[str]:
    """Create the Secret blocks that are missing; return which were made and which reused (never values).

    A cluster that was ``initialised`` with passwords keeps them: a missing block is then an error
    (new passwords would lock Patroni out of its own cluster at the next restart).
    """
    missing = [block_name(spec, role) for role in ROLES if load_secret(block_name(spec, role)) is None]
    if missing and initialised:
        raise SecretError(
            f"Secret block {missing[0]} is missing but cluster {spec.name} under {spec.cluster_dir} was "
            "initialised with it; restore the block in this Prefect API (PREFECT_HOME/PREFECT_API_URL) "
            "or remove the cluster with 'make teardown WIPE=1'"
        )
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
            raise SecretError(
                f"Secret block {block_name(spec, role)} is missing; run 'python -m flows.provision' to create it"
            )
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
