"""Progress of a long flow (backups, restores, drills) as one line per step: pure formatting, no I/O."""

from __future__ import annotations

from collections.abc import Sequence


def percent(done: int, total: int) -> float:
    """
    >>> percent(0, 4), percent(3, 4), percent(5, 4), percent(0, 0)
    (0.0, 75.0, 100.0, 100.0)
    """
    return 100.0 if total <= 0 else round(min(done, total) * 100.0 / total, 1)


def next_index(steps: Sequence[str], done: int, what: str | None) -> int:
    """The number (from 1) of the step that starts after ``done`` steps: the announced step named ``what`` when
    one comes later (those between were skipped), else the next one.

    >>> steps = ["check", "restore", "check the copy", "remove the copy"]
    >>> next_index(steps, 0, None), next_index(steps, 2, "remove the copy"), next_index(steps, 1, "restore: full")
    (1, 4, 2)
    >>> next_index(steps, 4, None)
    4
    """
    later = [i for i, name in enumerate(steps[done:], start=done + 1) if name == what]
    return later[0] if later else min(done + 1, len(steps))


def step_line(flow: str, cluster: str, index: int, total: int, step: str) -> str:
    """The line printed (and logged) when step ``index`` (from 1) of ``total`` starts.

    >>> step_line("backup", "main", 2, 4, "verify repository 1")
    'backup main: step 2/4 (25%): verify repository 1'
    """
    return f"{flow} {cluster}: step {index}/{total} ({percent(index - 1, total):.0f}%): {step}"


def done_line(flow: str, cluster: str, total: int, seconds: float) -> str:
    """
    >>> done_line("restore", "copy", 5, 61.24)
    'restore copy: 5/5 steps done in 61.2 s'
    """
    return f"{flow} {cluster}: {total}/{total} steps done in {seconds:.1f} s"
