"""The artifacts a person reads first, rendered as pure functions: words and budgets, no raw keys or reprs."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dbtier.backup.archive import ArchiveVerdict
from dbtier.backup.catalog import BackupRecord, Catalog, catalog_description, restorable_window
from dbtier.backup.drill import CopyChecks, Marker, judge_copy
from dbtier.drills.verdict import Attempt, Expectation, Observed, judge, markdown_report, summary_row
from dbtier.engines.base import get_engine
from dbtier.spec import ClusterSpec

T = datetime(2026, 11, 26, 2, 0, 0, tzinfo=timezone.utc)
W1, W2 = "000000010000000000000003", "000000010000000000000009"


def record(label: str, kind: str, day: int, error: bool = False, repo: int = 1) -> BackupRecord:
    start = T + timedelta(days=day)
    return BackupRecord(label, kind, repo, start, start + timedelta(seconds=42), 3 * 1024**2, 1024**2, W1, W2,
                        error=error)


FULL = record("20261126-020000F", "full", 0)
DIFF = record("20261126-020000F_20261127-020000D", "diff", 1)
BROKEN = record("20261125-020000F", "full", -1, error=True)


def plain(text: str) -> str:
    """Fail on what a person should never read in an artifact: raw keys, Python reprs, a bare None."""
    assert not re.search(r"\b[a-z]+_[a-z_]+\b", text.replace("dbtier-", "")), text
    assert not re.search(r"[\[{(]'|'[\]})]|\bNone\b|\bTrue\b|\bFalse\b|<[a-z]+\.", text), text
    return text


def plain_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        plain(" ".join(row))
        plain(" ".join(str(v) for v in row.values()))


@pytest.mark.parametrize(
    ("backups", "last_archived", "window"),
    [
        pytest.param((FULL, DIFF), T + timedelta(days=1, hours=3),
                     "restorable from 2026-11-26 02:00:42+00 (end of 20261126-020000F) to 2026-11-27 05:00:00+00 "
                     "(last archived WAL)", id="to-the-last-archived-wal"),
        pytest.param((FULL, DIFF), None,
                     "restorable from 2026-11-26 02:00:42+00 (end of 20261126-020000F) to at least "
                     "2026-11-27 02:00:42+00 (end of the newest backup)", id="archive-time-unknown"),
        pytest.param((FULL, DIFF), T,
                     "restorable from 2026-11-26 02:00:42+00 (end of 20261126-020000F) to at least "
                     "2026-11-27 02:00:42+00 (end of the newest backup)", id="archive-time-older-than-newest-backup"),
        pytest.param((BROKEN, FULL), None,
                     "restorable from 2026-11-26 02:00:42+00 (end of 20261126-020000F) to at least "
                     "2026-11-26 02:00:42+00 (end of the newest backup)", id="a-failed-backup-does-not-count"),
        pytest.param((), None, "nothing restorable yet (no valid backups)", id="no-backup"),
    ],
)
def test_restorable_window(backups: tuple[BackupRecord, ...], last_archived: datetime | None, window: str) -> None:
    assert restorable_window(Catalog("s", backups, W1, W2, "no valid backups" if not backups else "ok"),
                             last_archived) == window


def test_catalog_rows_keep_verified_on_screen_and_the_wal_elsewhere() -> None:
    rows = [b.row("yes") for b in (FULL, DIFF)]
    assert list(rows[0]) == ["label", "type", "repo", "started", "took", "size", "stored", "verified"]
    assert [r["verified"] for r in rows] == ["yes", "yes"]
    assert not any(W1 in str(v) for r in rows for v in r.values())
    plain_table(rows)
    plain_table([b.wal_row() for b in (FULL, DIFF)])
    assert FULL.wal_row()["WAL from"] == W1


def test_catalog_description_leads_with_the_window() -> None:
    text = catalog_description("orders", Catalog("orders", (FULL, DIFF), W1, W2, "ok"), [DIFF.label], [],
                               T + timedelta(days=1, hours=1))
    assert text.startswith("**orders**: restorable from 2026-11-26 02:00:42+00 ")
    assert "to 2026-11-27 03:00:00+00 (last archived WAL)" in text
    assert "took 20261126-020000F_20261127-020000D and expired nothing; 2 backup(s), 2.0 MiB" in text
    plain(text.replace(DIFF.label, "LABEL"))


def failover_verdict(rto_budget_s: float, rejoin_budget_s: float | None) -> Any:
    log = [Attempt(1, 0.0, 0.1, True, 5432, 1), Attempt(2, 1.0, 1.1, True, 5432, 1), Attempt(3, 2.0, 9.0, True, 5433, 2)]
    seen = Observed(fault_at=1.5, leader_before="pg0", leader_after="pg1", primary_ids=frozenset({1, 2, 3}),
                    rejoin_s=4.2)
    expect = Expectation(leader_change=True, rto_budget_s=rto_budget_s, rejoin_member="pg0",
                         rejoin_budget_s=rejoin_budget_s)
    return judge("crash", log, seen, expect)


@pytest.mark.parametrize(
    ("rto_budget_s", "rejoin_budget_s", "passed", "budget_cells"),
    [
        (30, 60, True, ("30 s", "60 s")),
        (5, 60, False, ("5 s", "60 s")),
        (30, None, True, ("30 s", "not judged")),
    ],
)
def test_failover_drill_summary_shows_the_budgets(rto_budget_s: float, rejoin_budget_s: float | None, passed: bool,
                                                   budget_cells: tuple[str, str]) -> None:
    verdict = failover_verdict(rto_budget_s, rejoin_budget_s)
    row = summary_row(verdict)
    assert (row["result"] == "pass") is passed
    assert (row["RTO"], row["RTO budget"], row["rejoin budget"]) == ("7.50 s", *budget_cells)
    plain_table([row])
    report = markdown_report("orders", [verdict])
    assert f"| 7.50 s ({budget_cells[0]}) |" in report
    assert f"Judged against: RTO at most {rto_budget_s:g} s; no acknowledged write lost; the leader must change" in report
    plain(report)


_AMCHECK = ("amcheck: 3 B-tree indexes consistent", True)
_QUERIED = ClusterSpec(backup={"restore_drill": {"check_query": "SELECT true"}})
_MONGO = ClusterSpec(engine="mongodb")


@pytest.mark.parametrize(
    ("spec", "checks", "expect", "restore_s", "passed", "judged"),
    [
        (_QUERIED, CopyChecks(100, 0, (_AMCHECK, ("check query: returned true", True))), "marker", 12.3, True,
         "exactly the 100 marker rows written before the target, none of the 10 after; amcheck on every B-tree index; "
         "the spec's check query (backup.restore_drill.check_query) returns true; restored and healthy within 900 s"),
        (ClusterSpec(), CopyChecks(100, 10, (_AMCHECK, ("check query: none given", True))), "marker", 12.3, False,
         "none of the 10 after; amcheck on every B-tree index; restored and healthy within 900 s"),
        (ClusterSpec(), CopyChecks(100, 10, (_AMCHECK,)), "latest", 950.0, False, "all 110 marker rows"),
        (_MONGO, CopyChecks(100, 0, (("validate: 3 collections of database app valid", True),
                                     ("user app: signed in through the copy's URI and read its 100 marker documents",
                                      True))), "marker", 12.3, True,
         "none of the 10 after; validate on every collection of database app; user app signs in through the copy's "
         "URI and reads the markers; restored and healthy within 900 s"),
    ],
)
def test_restore_drill_verdict_shows_its_budgets_in_words(spec: ClusterSpec, checks: CopyChecks, expect: str,
                                                          restore_s: float, passed: bool, judged: str) -> None:
    marker = Marker("d", 100, 10, T)
    verdict = judge_copy(marker, checks, expect, restore_s, 900, get_engine(spec).restore_drill_budgets(spec))
    facts = {"source": "orders", "target": "time 2026-11-26 02:00:00+00:00", "from": "backup X", "copy": "orders-drill",
             "restore_s": round(restore_s, 1)}
    text = verdict.markdown("Restore drill", facts)
    assert verdict.passed is passed
    assert text.startswith(f"# Restore drill: {'PASSED' if passed else 'FAILED'}\n")
    assert f"- restored and healthy in: {restore_s:.1f} s\n" in text
    assert judged in text
    plain(text.replace("backup.restore_drill.check_query", "the spec's query").replace(
        "backup.restore_drill.timeout_s", "the spec's timeout"))


@pytest.mark.parametrize(("verdict", "healthy", "lag"), [
    (ArchiveVerdict(True, 0, 0.44, "archiving keeps up"), "yes", "0.4 s"),
    (ArchiveVerdict(False, 12, 612.0, "the oldest WAL file waiting is 612 s old"), "NO", "612.0 s"),
])
def test_archive_health_row_in_words(verdict: ArchiveVerdict, healthy: str, lag: str) -> None:
    row = verdict.artifact_row()
    assert (row["healthy"], row["lag"]) == (healthy, lag)
    plain_table([row])
