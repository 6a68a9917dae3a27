"""Cluster secrets (its engine's roles) kept in Prefect Secret blocks, created on first provision and reused after."""

from __future__ import annotations

from collections.abc import Sequence

from prefect.blocks.system import Secret
from pydantic import SecretStr

from blocks.api import POINT_AT_IT, missing_block_advice, prefect_api, which_api
from dbtier.errors import BlockMissing
from dbtier.secrets import Passwords, SecretRole, secret_roles
from dbtier.spec import ClusterSpec


def load_secret(name: str) -> str | None:
    """The Secret block's value; None when there is no such block."""
    return load_secrets([name])[name]


def load_secrets(names: Sequence[str]) -> dict[str, str | None]:
    """Each Secret block's value by name (None: no such block), read over one API client. Measured: a client per
    block (``Secret.load``) spent half of each read making the client's TLS context; a cluster's nine passwords
    took 0.5 s."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    values: dict[str, str | None] = {}
    with prefect_api(), get_client(sync_client=True) as client:
        for name in names:
            try:
                document = client.read_block_document_by_name(name, block_type_slug="secret", include_secrets=True)
            except ObjectNotFound:
                values[name] = None
                continue
            values[name] = str(Secret.model_validate(document.data).get())
    return values


def _role_secrets(spec: ClusterSpec) -> list[tuple[SecretRole, str, str | None]]:
    """Each of the cluster's secret roles, its block's name and its value (None: no such block), read at once."""
    named = [(role, role.block(spec.name)) for role in secret_roles(spec)]
    found = load_secrets([name for _role, name in named])
    return [(role, name, found[name]) for role, name in named]


def refuse_lost_passwords(spec: ClusterSpec, initialised: bool) -> list[str]:
    """The names of the cluster's missing Secret blocks; refused (exit 2) when the cluster was ``initialised``
    with them: its blocks are in another Prefect API, and new passwords would lock Patroni out."""
    secrets = _role_secrets(spec)
    missing = [name for _role, name, value in secrets if value is None]
    lost = [name for role, name, value in secrets if value is None and role.core]
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
    for role in secret_roles(spec):
        name = role.block(spec.name)
        if name in missing:
            Secret(value=SecretStr(role.make())).save(name)
            made.append(role.name)
        else:
            kept.append(role.name)
    parts = []
    if made:
        parts.append(f"generated {', '.join(made)}")
    if kept:
        parts.append(f"reused {', '.join(kept)}")
    return [f"secrets of {spec.name}: {'; '.join(parts)} (Secret blocks dbtier-{spec.name}-*)"]


def load_passwords(spec: ClusterSpec) -> Passwords:
    """The cluster's passwords from their Secret blocks."""
    values = {}
    for role, name, value in _role_secrets(spec):
        if value is None:
            raise BlockMissing(missing_block_advice(spec, name))
        values[role.name] = value
    return Passwords(**values)


def forget_passwords(spec: ClusterSpec) -> str:
    """Delete the cluster's secret blocks (its data is gone: nothing can use them any more)."""
    gone = [name for _role, name, value in _role_secrets(spec) if value is not None]
    for name in gone:
        Secret.delete(name)
    return f"Secret blocks {', '.join(gone)} deleted" if gone else f"no secret block of {spec.name} to delete"
