"""What ``teardown --wipe`` removes from the Prefect API, and the record that guards the cipher block.

Names are exact (``dbtier-<name>-...``), never prefixes: cluster ``pg``'s teardown must not touch
``pg-restored``'s blocks. See ``dbtier/cleanup.py`` for the rules.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.variables import Variable

from blocks.ca import forget_ca
from blocks.hostkeys import variable_name as pins_variable
from blocks.passwords import forget_passwords, load_secret, load_secrets
from dbtier.ca_store import ca_cert_variable, ca_key_block
from dbtier.cleanup import cipher_record_name, cluster_of_cipher_record, keep_cipher_reason, kept_cipher_sentence
from dbtier.lock import lock_name
from dbtier.secrets import secret_roles
from dbtier.spec import ClusterSpec


def record_cipher_use(spec: ClusterSpec, created: bool) -> None:
    """Note that ``spec``'s cluster writes backups with its cipher block (``created``: dbtier just made it for it)."""
    block = spec.backup.cipher_block
    if block is None:
        return
    name = cipher_record_name(spec.name)
    current: Any = Variable.get(name, default=None)
    made = created or (isinstance(current, dict) and current.get("block") == block and bool(current.get("created")))
    value = {"block": block, "created": made}
    if current != value:
        Variable.set(name, value, tags=["dbtier", "cipher"], overwrite=True)


def cipher_users(block: str) -> dict[str, bool]:
    """Every cluster recorded as writing backups with cipher block ``block``: whether dbtier made it for that one."""
    users: dict[str, bool] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.request("POST", "/variables/filter", json={
                "variables": {"name": {"like_": "dbtier-%-cipher"}}, "limit": 100, "offset": offset}).json()
            for variable in page:
                cluster = cluster_of_cipher_record(str(variable.get("name")))
                value = variable.get("value")
                if cluster and isinstance(value, dict) and value.get("block") == block:
                    users[cluster] = bool(value.get("created"))
            if len(page) < 100:
                return users
            offset += 100


def cluster_blocks(spec: ClusterSpec) -> list[str]:
    """The Secret blocks and variables that carry this cluster's name (its lock aside)."""
    found = load_secrets([*(role.block(spec.name) for role in secret_roles(spec)), ca_key_block(spec.name)])
    names = [name for name, value in found.items() if value is not None]
    return names + [v for v in (pins_variable(spec.name), cipher_record_name(spec.name), ca_cert_variable(spec.name))
                    if Variable.get(v, default=None) is not None]


def forget_cluster_blocks(spec: ClusterSpec, backups_remain: bool, cipher_step_follows: bool = False) -> list[str]:
    """Delete the cluster's password blocks and variables (its data is gone). While its backups remain,
    the record of the cipher block they need stays (so no other cluster's teardown deletes that block);
    ``cipher_step_follows``: :func:`drop_cipher_block` reads that record next, and removes it."""
    said = [forget_passwords(spec)]
    ca_gone = forget_ca(spec.name)
    if ca_gone:
        said.append(f"cluster CA {', '.join(ca_gone)} deleted")
    gone = [v for v in (pins_variable(spec.name),) if Variable.unset(v)]
    record = cipher_record_name(spec.name)
    if cipher_step_follows:
        pass
    elif not backups_remain and Variable.unset(record):
        gone.append(record)
    elif backups_remain and Variable.get(record, default=None) is not None:
        said.append(f"variable {record} kept: stanza {spec.name}'s backups need cipher block {spec.backup.cipher_block}")
    lock = f"; its lock {lock_name(spec.name)} goes when this run ends"
    said.append((f"variables {', '.join(gone)} deleted" if gone else f"no variable of {spec.name} to delete") + lock)
    return said


def drop_cipher_block(spec: ClusterSpec, other_stanzas: list[str]) -> str:
    """The last step of ``--wipe --drop-backups``, once the stanza is gone: delete the cipher block when
    dbtier made it for this cluster and no other cluster or stanza may need it; else keep it and say so."""
    block = spec.backup.cipher_block
    if block is None:
        return f"no cipher block: {spec.name}'s backups were not encrypted"
    users = cipher_users(block)
    record = cipher_record_name(spec.name)
    reason = keep_cipher_reason(spec, stanza_gone=True, made_for_it=users.get(spec.name, False),
                                other_users=[c for c in users if c != spec.name], other_stanzas=other_stanzas)
    first = f"variable {record} deleted; " if Variable.unset(record) else ""
    if reason is not None:
        return first + kept_cipher_sentence(block, reason)
    if load_secret(block) is None:
        return f"{first}cipher block {block} was already gone"
    Secret.delete(block)
    return f"{first}cipher block {block} deleted, last: stanza {spec.name} is gone and no other cluster used it"
