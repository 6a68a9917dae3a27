"""What a teardown removes from the Prefect API and what it must keep (pure).

``--wipe`` removes what belongs to the cluster's name alone: its password Secret blocks
(``dbtier-<name>-<role>-password``) and variables (``dbtier-<name>-host-keys``, the record of the
cipher block it uses, its lock). The cipher block (``backup.cipher_block``) is the key to backups,
possibly other clusters' too: it goes only with ``--drop-backups``, last, after the stanza, and only
when nothing says another cluster may need it. When in doubt it stays, and teardown says so.
"""

from __future__ import annotations

from dbtier.spec import ClusterSpec


def cipher_record_name(cluster: str) -> str:
    """The variable saying which cipher block a cluster writes its backups with, and whether dbtier made it for it.

    >>> cipher_record_name("orders")
    'dbtier-orders-cipher'
    """
    return f"dbtier-{cluster}-cipher"


def cluster_of_cipher_record(variable: str) -> str | None:
    """
    >>> cluster_of_cipher_record("dbtier-orders-cipher"), cluster_of_cipher_record("dbtier-orders-host-keys")
    ('orders', None)
    """
    if variable.startswith("dbtier-") and variable.endswith("-cipher") and len(variable) > len("dbtier--cipher"):
        return variable[len("dbtier-"):-len("-cipher")]
    return None


def keep_cipher_reason(spec: ClusterSpec, *, stanza_gone: bool, made_for_it: bool, other_users: list[str],
                       other_stanzas: list[str]) -> str | None:
    """Why the cipher block must stay after this cluster's teardown; None when it may go.

    ``made_for_it``: dbtier generated the block for this very cluster; ``other_users``: other clusters
    recorded as writing with it; ``other_stanzas``: the other stanzas the cluster's repositories hold
    (a repository has one passphrase for every stanza in it).

    >>> pg = ClusterSpec(name="pg", backup={"cipher_block": "k"})
    >>> copy = ClusterSpec(name="pg-drill", hosts_of="pg", backup={"cipher_block": "k"})
    >>> [keep_cipher_reason(s, stanza_gone=g, made_for_it=m, other_users=u, other_stanzas=o) for s, g, m, u, o in [
    ...     (pg, True, True, [], []),                 # made for it, nobody else: it goes
    ...     (copy, True, True, [], []),               # a copy: the block is its source's
    ...     (pg, False, True, [], []),                # its stanza is still there
    ...     (pg, True, False, [], []),                # not made by dbtier for pg: who else has it?
    ...     (pg, True, True, ["pg-restored"], []),
    ...     (pg, True, True, [], ["pg-restored"])]]  # doctest: +NORMALIZE_WHITESPACE
    [None, "it is cluster pg's (pg-drill is a copy of it)", 'stanza pg still holds backups encrypted with it',
     'other clusters may use it (dbtier did not create it for pg)', 'other clusters may use it (pg-restored)',
     'other clusters may use it (stanza pg-restored in the same repositories)']
    """
    if spec.host_owner != spec.name:
        return f"it is cluster {spec.host_owner}'s ({spec.name} is a copy of it)"
    if not stanza_gone:
        return f"stanza {spec.name} still holds backups encrypted with it"
    if not made_for_it:
        return f"other clusters may use it (dbtier did not create it for {spec.name})"
    if other_users:
        return f"other clusters may use it ({', '.join(sorted(other_users))})"
    if other_stanzas:
        return f"other clusters may use it (stanza {', '.join(sorted(other_stanzas))} in the same repositories)"
    return None


def kept_cipher_sentence(block: str, reason: str) -> str:
    """
    >>> kept_cipher_sentence("k", "other clusters may use it (a)")
    'cipher block k kept: other clusters may use it (a); delete it with `prefect block delete secret/k`'
    """
    return f"cipher block {block} kept: {reason}; delete it with `prefect block delete secret/{block}`"


def nothing_sentence(spec: ClusterSpec, checked: list[str]) -> str:
    """
    >>> nothing_sentence(ClusterSpec(name="ghost", data_root="/d"), ["no process", "no data under /d/ghost"])
    'cluster ghost: nothing to tear down (no process, no data under /d/ghost)'
    """
    return f"cluster {spec.name}: nothing to tear down ({', '.join(checked)})"
