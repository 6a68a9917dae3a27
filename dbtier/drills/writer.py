"""The parent's side of every engine's drill writer: stop it by its pid, read back its acknowledged-write log.

A writer is its own process (PostgreSQL's :mod:`dbtier.engines.postgres.drill_writer`, MongoDB's
:mod:`dbtier.engines.mongodb.drill_writer`) that logs every attempt as one JSON line, an
:class:`~dbtier.drills.verdict.Attempt`; the verdict counts the acknowledged writes a server lost from it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dbtier.drills.verdict import Attempt


def stop_writer(proc: subprocess.Popen[bytes], stderr_path: str, timeout: float = 10.0, name: str = "writer") -> str:
    """Stop the writer we started, by its pid (SIGTERM, then SIGKILL), and say how it ended."""
    from dbtier.procs import stop_child  # here: the writer process itself does not need it

    stop_child(proc, timeout)
    err = Path(stderr_path).read_text(errors="replace").strip().splitlines() if Path(stderr_path).exists() else []
    tail = f"; last stderr line: {err[-1]}" if err else ""
    return f"{name} (pid {proc.pid}) stopped with exit code {proc.returncode}{tail}"


def read_attempts(log: str) -> list[Attempt]:
    """Every complete line of the writer's log."""
    attempts = []
    try:
        text = Path(log).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            attempts.append(Attempt.from_json(json.loads(line)))
        except (ValueError, KeyError):
            continue  # a line being written right now
    return attempts
