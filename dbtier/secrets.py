"""Cluster passwords: which exist, how their blocks are named, how they are made (pure).

Values live in Prefect Secret blocks (see ``blocks/``); in memory they travel in a
:class:`Passwords`, whose repr never shows them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields

from dbtier.spec import ClusterSpec

ROLES = ("superuser", "replication", "rewind", "app")


@dataclass(frozen=True, repr=False)
class Passwords:
    """The four passwords of a PostgreSQL cluster."""

    superuser: str
    replication: str
    rewind: str
    app: str

    def __repr__(self) -> str:
        return "Passwords(" + ", ".join(f"{f.name}='**********'" for f in fields(self)) + ")"

    __str__ = __repr__

    def values(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]


def block_name(spec: ClusterSpec, role: str) -> str:
    """
    >>> block_name(ClusterSpec(name="orders"), "app")
    'dbtier-orders-app-password'
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return f"dbtier-{spec.name}-{role}-password"


def new_password() -> str:
    """A fresh URL-safe password of 32 characters (192 bits)."""
    return secrets.token_urlsafe(24)
