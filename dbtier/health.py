"""The health verdict every engine's status returns, and the member table as terminals print it (pure).

Each engine judges its own members (PostgreSQL: Patroni's ``/cluster`` document,
:mod:`dbtier.engines.postgres.patroni_health`; MongoDB: ``replSetGetStatus``, :mod:`dbtier.engines.mongodb.rs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Health:
    """The verdict on a cluster, with a reason per problem."""

    healthy: bool
    leader: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def sentence(self) -> str:
        if self.healthy:
            return f"healthy: leader {self.leader}, every replica streaming"
        return "unhealthy: " + "; ".join(self.problems)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for terminals.

    >>> print(format_table([{"name": "pg0", "role": "leader"}]))
    name  role
    ----  ------
    pg0   leader
    """
    if not rows:
        return "(no members)"
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r.get(h, ""))) for r in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers).rstrip()]
    lines.append("  ".join("-" * widths[h] for h in headers))
    lines += ["  ".join(str(r.get(h, "")).ljust(widths[h]) for h in headers).rstrip() for r in rows]
    return "\n".join(lines)
