"""Progress of a long flow (backups, restores, drills) as one line per step: pure formatting, no I/O."""

from __future__ import annotations


def percent(done: int, total: int) -> float:
    """
    >>> percent(0, 4), percent(3, 4), percent(5, 4), percent(0, 0)
    (0.0, 75.0, 100.0, 100.0)
    """
    return 100.0 if total <= 0 else round(min(done, total) * 100.0 / total, 1)


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
