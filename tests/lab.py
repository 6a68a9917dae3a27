"""A lab for a test module: brought up before its first test, taken down (everything, by PID) after its last.

Each module that uses a lab gives it its own name and subnet, so modules running side by side never meet:
``tlab`` 198.18.10.0/24 (test_lab), ``tnet`` 198.18.11.0/24 (network drills), ``tpve`` 198.18.12.0/24
(the proxmox spec), ``tcut`` 198.18.13.0/24 (interrupted up).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dbtier.lab import lab
from dbtier.lab.lab import LabState


def unavailable() -> str | None:
    """Why no lab can run here (None: it can)."""
    try:
        lab.check_machine()
    except Exception as err:  # noqa: BLE001 - Refused: the reason to skip
        return str(err)
    return None


@contextmanager
def running_lab(name: str, subnet: str, hosts: int = 3) -> Iterator[LabState]:
    """``dbtier lab up`` for the block (what an earlier killed run left of this lab is removed first)."""
    lab.down(name, progress=lambda _line: None)
    try:
        yield lab.up(name, hosts, subnet, progress=lambda _line: None)
    finally:
        lab.down(name, progress=lambda _line: None)


def save_s3_block(state: LabState) -> list[str]:
    """The blocks the lab's specs name (its S3, its PVE double), in the current Prefect API (the test harness)."""
    from blocks.lab import save_lab_blocks

    return save_lab_blocks(state)
