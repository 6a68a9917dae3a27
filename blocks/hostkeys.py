"""Host keys pinned on first use, kept per cluster in a Prefect variable (public keys: not a secret).

The variable ``dbtier-<cluster>-host-keys`` maps ``host`` / ``[host]:port`` to the key line the host
presented first. See and edit it in the UI (Variables) or with ``dbtier host-keys``.
"""

from __future__ import annotations

from typing import Any

from prefect.variables import Variable


def variable_name(cluster: str) -> str:
    """
    >>> variable_name("orders")
    'dbtier-orders-host-keys'
    """
    return f"dbtier-{cluster}-host-keys"


def load_pins(cluster: str) -> dict[str, str]:
    value: Any = Variable.get(variable_name(cluster), default=None)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def save_pins(cluster: str, pins: dict[str, str]) -> None:
    if pins:
        Variable.set(variable_name(cluster), dict(sorted(pins.items())), tags=["dbtier", "host-keys"], overwrite=True)
    else:
        Variable.unset(variable_name(cluster))


def forget_pins(cluster: str, names: list[str] | None = None) -> list[str]:
    """Forget the pins of ``names`` (host ids), or every pin of the cluster; return the ids forgotten."""
    pins = load_pins(cluster)
    gone = sorted(pins) if names is None else [n for n in names if n in pins]
    save_pins(cluster, {k: v for k, v in pins.items() if k not in gone})
    return gone
