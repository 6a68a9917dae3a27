"""A test double of the Proxmox VE REST API that follows the published schema (not a Proxmox VE).

It answers only the paths, methods and parameters of the published schema (``apidata.json``, see
:func:`dbtier.lab.pve.schema.schema_path`), the way PVE answers them, so the proxmox provider can be
tested without a cluster. Its containers are in memory; given a :class:`~dbtier.lab.pve.backend.HostBackend`
(``dbtier lab`` hands in its hosts) each container is the host at its static address, and its power
calls act on that host. The tests run it in a thread (:func:`running_pve_double`); a lab runs it as its
own process (``python -m dbtier.lab.pve``, :mod:`dbtier.lab.pve.serve`).

>>> from dbtier.lab.pve import running_pve_double
>>> with running_pve_double(nodes=("pve1",)) as pve:
...     pve.url.startswith("https://127.0.0.1:")
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dbtier.lab.pve.server import PveDouble


@contextmanager
def running_pve_double(**kwargs: Any) -> Iterator[PveDouble]:
    """A started double, stopped (thread joined, temp dir removed) on exit."""
    double = PveDouble(**kwargs)
    with double:
        yield double


__all__ = ["PveDouble", "running_pve_double"]
