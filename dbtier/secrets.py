"""Cluster passwords: which exist, how their blocks are named, how they are made (pure).

Values live in Prefect Secret blocks (see ``blocks/``); in memory they travel in a
:class:`Passwords`, whose repr never shows them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields

from dbtier.spec import ClusterSpec

#: The passwords a cluster was first made with: one missing on an initialised cluster would lock Patroni out.
CORE_ROLES = ("superuser", "replication", "rewind", "app")
#: Every password of a cluster. The ones after the core are made on the first provision that needs them:
#: ``monitoring`` (a PostgreSQL role with pg_monitor), ``restapi`` (Patroni REST's unsafe endpoints),
#: ``etcd_root`` (etcd's root user), ``etcd`` (the cluster's etcd user, limited to its prefix) and ``pgbouncer``
#: (the role PgBouncer looks client passwords up as, through ``auth_query``).
ROLES = (*CORE_ROLES, "monitoring", "restapi", "etcd_root", "etcd", "pgbouncer")


@dataclass(frozen=True, repr=False)
class Passwords:
    """The passwords of a PostgreSQL cluster (see :data:`ROLES`)."""

    superuser: str
    replication: str
    rewind: str
    app: str
    monitoring: str
    restapi: str
    etcd_root: str
    etcd: str
    pgbouncer: str

    @classmethod
    def generate(cls) -> Passwords:
        """A fresh password for every role (benchmarks and tests that keep no blocks)."""
        return cls(*(new_password() for _ in ROLES))

    def __repr__(self) -> str:
        return "Passwords(" + ", ".join(f"{f.name}='**********'" for f in fields(self)) + ")"

    __str__ = __repr__

    def values(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]


def block_name(spec: ClusterSpec, role: str) -> str:
    """
    >>> block_name(ClusterSpec(name="orders"), "app")
    'dbtier-orders-app-password'
    >>> block_name(ClusterSpec(name="orders"), "etcd_root")
    'dbtier-orders-etcd-root-password'
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return f"dbtier-{spec.name}-{role.replace('_', '-')}-password"  # block names take no underscore


def new_password() -> str:
    """A fresh URL-safe password of 32 characters (192 bits)."""
    return secrets.token_urlsafe(24)
