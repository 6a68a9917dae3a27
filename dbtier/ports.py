"""Port plans checked against each other and against the kernel's ephemeral range (pure, plus one file read).

A cluster's restored copy (``restore``: ports + :data:`DEFAULT_PORT_OFFSET`) and its restore drill's copy
(ports + ``backup.restore_drill.port_offset``) run beside it on the same hosts: a copy port that lands on
one of the cluster's own ports can never start. Ports inside ``net.ipv4.ip_local_port_range`` work until
an outgoing connection happens to hold one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

#: A restored copy's ports are the source's plus this, unless the user says otherwise (restore --port-offset).
DEFAULT_PORT_OFFSET = 100

#: Where Linux keeps the range it picks outgoing connections' local ports from.
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"

Plan = Sequence[tuple[str, int]]


def shifted(plan: Plan, offset: int) -> list[tuple[str, int]]:
    """
    >>> shifted([("ports.postgres (member 0)", 5432)], 100)
    [('ports.postgres (member 0)', 5532)]
    """
    return [(field, port + offset) for field, port in plan]


def copy_clash(own: Plan, copy: Plan) -> tuple[str, int, str] | None:
    """The first port of ``copy`` that is also one of ``own``'s: (copy field, port, own field), else None.

    >>> own = [("ports.postgres (member 0)", 5432), ("ports.postgres (member 1)", 5433)]
    >>> copy_clash(own, shifted(own, 1))
    ('ports.postgres (member 0)', 5433, 'ports.postgres (member 1)')
    >>> copy_clash(own, shifted(own, 100)) is None
    True
    """
    mine = {port: field for field, port in own}
    for field, port in copy:
        if port in mine:
            return field, port, mine[port]
    return None


def ephemeral_findings(plan: Plan, low: int, high: int) -> list[str]:
    """``field port`` for every port of ``plan`` inside the ephemeral range ``low..high`` (inclusive).

    >>> ephemeral_findings([("ports.etcd (etcd member 0 client)", 32768), ("ports.postgres (member 0)", 5432)], 32768, 60999)
    ['ports.etcd (etcd member 0 client) 32768']
    """
    return [f"{field} {port}" for field, port in plan if low <= port <= high]


def ephemeral_warning(findings: Sequence[str], low: int, high: int) -> str | None:
    """One line for all the findings, or None.

    >>> ephemeral_warning(["ports.postgres (member 0) 40000", "ports.postgres (member 1) 40001"], 32768, 60999)
    "ports.postgres (member 0) 40000 (and 1 more) lie in the kernel's ephemeral port range 32768-60999 (net.ipv4.ip_local_port_range), where an outgoing connection can hold them; choose base ports below 32768, or narrow that range"
    >>> ephemeral_warning([], 32768, 60999) is None
    True
    """
    if not findings:
        return None
    more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
    return (f"{findings[0]}{more} lie in the kernel's ephemeral port range {low}-{high} "
            f"(net.ipv4.ip_local_port_range), where an outgoing connection can hold them; "
            f"choose base ports below {low}, or narrow that range")


def parse_range(text: str) -> tuple[int, int] | None:
    """
    >>> parse_range("32768\\t60999\\n")
    (32768, 60999)
    >>> parse_range("garbage") is None
    True
    """
    parts = text.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def ephemeral_range(path: str = EPHEMERAL_RANGE_FILE) -> tuple[int, int] | None:
    """This machine's ephemeral range, or None where the kernel does not say (not Linux)."""
    try:
        with open(path) as fh:
            return parse_range(fh.read())
    except OSError:
        return None
