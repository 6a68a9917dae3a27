"""Undoing a drill's faults: every fault registers its undo the moment it is injected, and the undo runs last
first, even when a wait failed, each failure kept as a problem of the verdict rather than raised."""

from __future__ import annotations

import time
from collections.abc import Callable

from dbtier.errors import DbtierError

#: (what the undo restores, the action; it returns a sentence)
Pending = list[tuple[str, Callable[[], str]]]


def undo_all(pending: Pending, note: Callable[[str], object], notes: list[str], problems: list[str],
             verb: str = "undo") -> float:
    """Run and empty ``pending``, last first: each action's sentence goes to ``notes``, each failure to
    ``problems`` (``"<verb> failed (<what>): <why>"``); ``note`` marks each on the drill's timeline. Return when
    the undo started.

    >>> notes, problems, seen = [], [], []
    >>> def fails() -> str:
    ...     raise DbtierError("pid 9 is gone")
    >>> pending = [("first", lambda: "first undone"), ("second", fails)]
    >>> _ = undo_all(pending, seen.append, notes, problems, "restore")
    >>> pending, seen, notes, problems
    ([], ['restore: second', 'restore: first'], ['first undone'], ['restore failed (second): pid 9 is gone'])
    """
    moment = time.time()
    while pending:
        what, action = pending.pop()
        note(f"{verb}: {what}")
        try:
            notes.append(action())
        except DbtierError as err:
            problems.append(f"{verb} failed ({what}): {err.one_line()}")
    return moment
