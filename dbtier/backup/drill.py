"""The restore drill's verdict (pure): marker rows written before and after a target, what the restored copy
holds, and the engine's own checks on it. The engine writes the markers and checks the copy
(:meth:`dbtier.engines.base.Engine.write_restore_marker`, :meth:`~dbtier.engines.base.Engine.check_restored_copy`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: The table (PostgreSQL) or collection (MongoDB) of the application database the drill writes its markers into.
MARKER_TABLE = "dbtier_restore_drill"


@dataclass(frozen=True)
class Marker:
    """Rows the drill wrote: ``before`` of them committed before ``at``, ``after`` of them after it; ``target`` is
    the engine's restore target that holds the first and none of the others (a time, an oplog timestamp)."""

    drill_id: str
    before: int
    after: int
    at: datetime
    target: str = ""


@dataclass(frozen=True)
class CopyChecks:
    """What the drill found on the restored copy: the marker rows, and each of the engine's checks as the sentence
    the verdict shows and whether it passed (``amcheck: 3 B-tree indexes consistent``, True)."""

    found_before: int
    found_after: int
    findings: tuple[tuple[str, bool], ...] = ()


#: How the restore drill's facts read in its artifact (the flow's result keeps the keys).
FACT_LABELS = {"source": "source", "target": "restored to", "from": "from", "copy": "copy",
               "restore_s": "restored and healthy in"}


@dataclass(frozen=True)
class DrillVerdict:
    passed: bool
    sentences: list[str] = field(default_factory=list)
    budgets: list[str] = field(default_factory=list)  # what the copy was judged against

    def markdown(self, title: str, facts: dict[str, Any]) -> str:
        """The verdict a person reads: the facts in words, what it was judged against, what was found.

        >>> v = DrillVerdict(True, ["amcheck: 3 B-tree indexes consistent"], ["restore time at most 900 s"])
        >>> print(v.markdown("Restore drill", {"source": "orders", "restore_s": 12.34}), end="")
        # Restore drill: PASSED
        <BLANKLINE>
        - source: orders
        - restored and healthy in: 12.3 s
        <BLANKLINE>
        Judged against: restore time at most 900 s.
        <BLANKLINE>
        - amcheck: 3 B-tree indexes consistent
        """
        lines = [f"# {title}: {'PASSED' if self.passed else 'FAILED'}", ""]
        lines += [f"- {FACT_LABELS.get(k, k.replace('_', ' '))}: {_fact(k, v)}" for k, v in facts.items()]
        if self.budgets:
            lines += ["", f"Judged against: {'; '.join(self.budgets)}."]
        lines += ["", *(f"- {s}" for s in self.sentences)]
        return "\n".join(lines) + "\n"


def _fact(key: str, value: Any) -> str:
    return f"{value:.1f} s" if key.endswith("_s") and isinstance(value, (int, float)) else str(value)


def drill_budgets(marker: Marker, expect: str, budget_s: float, checks: list[str]) -> list[str]:
    """What a restore drill's copy must show, one phrase each; ``checks``: the engine's own checks in words
    (:meth:`dbtier.engines.base.Engine.restore_drill_budgets`).

    >>> from datetime import timezone
    >>> drill_budgets(Marker("d", 100, 10, datetime(2026, 11, 26, tzinfo=timezone.utc)), "marker", 900,
    ...               ["amcheck on every B-tree index"])
    ['exactly the 100 marker rows written before the target, none of the 10 after', 'amcheck on every B-tree index', 'restored and healthy within 900 s (backup.restore_drill.timeout_s)']
    """
    rows = {"marker": f"exactly the {marker.before} marker rows written before the target, none of the {marker.after} after",
            "latest": f"all {marker.before + marker.after} marker rows"}.get(expect, "marker rows counted, not judged")
    return [rows, *checks, f"restored and healthy within {budget_s:g} s (backup.restore_drill.timeout_s)"]


def judge_copy(marker: Marker, checks: CopyChecks, expect: str, restore_s: float, budget_s: float,
               budgets: list[str]) -> DrillVerdict:
    """Did the copy hold exactly what the target promises, pass the engine's checks, and come up in time?

    ``expect``: ``marker`` (restored to the marker's target: only the rows before it), ``latest``
    (every row), or ``any`` (a target the drill cannot predict: counts are reported, not judged);
    ``budgets``: the engine's checks in words, as :func:`drill_budgets` takes them.

    >>> from datetime import timezone
    >>> m = Marker("d", 100, 10, datetime(2026, 11, 26, tzinfo=timezone.utc))
    >>> judge_copy(m, CopyChecks(100, 0, (("amcheck: 3 indexes", True),)), "marker", 12.0, 900, []).passed
    True
    >>> v = judge_copy(m, CopyChecks(100, 10, (("amcheck: 3 indexes", True),)), "marker", 12.0, 900, [])
    >>> v.passed, v.sentences[0]
    (False, 'marker rows: 100 of 100 written before the target, 10 of 10 written after it (expected 100 and 0)')
    >>> judge_copy(m, CopyChecks(100, 0, (("validate: failed", False),)), "marker", 12.0, 900, []).passed
    False
    """
    wanted = {"marker": (marker.before, 0), "latest": (marker.before, marker.after)}.get(expect)
    sentences = []
    rows_ok = True
    counts = (f"marker rows: {checks.found_before} of {marker.before} written before the target, "
              f"{checks.found_after} of {marker.after} written after it")
    if wanted is None:
        sentences.append(counts + " (not judged for this target)")
    else:
        rows_ok = (checks.found_before, checks.found_after) == wanted
        sentences.append(counts + ("" if rows_ok else f" (expected {wanted[0]} and {wanted[1]})"))
    sentences += [sentence for sentence, _ in checks.findings]
    in_time = restore_s <= budget_s
    sentences.append(f"restored and healthy in {restore_s:.1f} s (budget {budget_s:.0f} s)")
    checked = all(ok for _, ok in checks.findings)
    return DrillVerdict(rows_ok and checked and in_time, sentences, drill_budgets(marker, expect, budget_s, budgets))
