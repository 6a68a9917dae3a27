"""The restore drill: marker rows written before and after a target time, checks on the restored copy,
and the verdict (pure) on what the copy holds."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Callable
from typing import Any

from dbtier.engines.postgres import pg_admin
from dbtier.engines.postgres.pg_roles import literal
from dbtier.engines.postgres.engine import connect, fetch_cluster
from dbtier.errors import DbtierError
from dbtier.health import role_holder
from dbtier.providers.base import Provider
from dbtier.spec import ClusterSpec
from dbtier.topology import client_dsn, pg_member, pg_members

MARKER_TABLE = "dbtier_restore_drill"


@dataclass(frozen=True)
class Marker:
    """Rows the drill wrote: ``before`` of them committed before ``at``, ``after`` of them after it."""

    drill_id: str
    before: int
    after: int
    at: datetime


@dataclass(frozen=True)
class CopyChecks:
    """What the drill found on the restored copy."""

    found_before: int
    found_after: int
    amcheck: str
    amcheck_ok: bool
    query: str
    query_ok: bool


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


def drill_budgets(marker: Marker, expect: str, budget_s: float, has_query: bool) -> list[str]:
    """What a restore drill's copy must show, one phrase each.

    >>> from datetime import timezone
    >>> drill_budgets(Marker("d", 100, 10, datetime(2026, 11, 26, tzinfo=timezone.utc)), "marker", 900, False)
    ['exactly the 100 marker rows written before the target, none of the 10 after', 'amcheck on every B-tree index', 'restored and healthy within 900 s (backup.restore_drill.timeout_s)']
    """
    rows = {"marker": f"exactly the {marker.before} marker rows written before the target, none of the {marker.after} after",
            "latest": f"all {marker.before + marker.after} marker rows"}.get(expect, "marker rows counted, not judged")
    query = ["the spec's check query (backup.restore_drill.check_query) returns true"] if has_query else []
    return [rows, "amcheck on every B-tree index", *query,
            f"restored and healthy within {budget_s:g} s (backup.restore_drill.timeout_s)"]


def judge_copy(marker: Marker, checks: CopyChecks, expect: str, restore_s: float, budget_s: float) -> DrillVerdict:
    """Did the copy hold exactly what the target promises, pass its checks, and come up in time?

    ``expect``: ``marker`` (restored to the marker's time: only the rows before it), ``latest``
    (every row), or ``any`` (a target the drill cannot predict: counts are reported, not judged).

    >>> from datetime import timezone
    >>> m = Marker("d", 100, 10, datetime(2026, 11, 26, tzinfo=timezone.utc))
    >>> judge_copy(m, CopyChecks(100, 0, "3 indexes", True, "none", True), "marker", 12.0, 900).passed
    True
    >>> v = judge_copy(m, CopyChecks(100, 10, "3 indexes", True, "none", True), "marker", 12.0, 900)
    >>> v.passed, v.sentences[0]
    (False, 'marker rows: 100 of 100 written before the target, 10 of 10 written after it (expected 100 and 0)')
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
    sentences.append(f"amcheck: {checks.amcheck}")
    sentences.append(f"check query: {checks.query}")
    in_time = restore_s <= budget_s
    sentences.append(f"restored and healthy in {restore_s:.1f} s (budget {budget_s:.0f} s)")
    budgets = drill_budgets(marker, expect, budget_s, has_query=not checks.query.startswith("none given"))
    return DrillVerdict(rows_ok and checks.amcheck_ok and checks.query_ok and in_time, sentences, budgets)


def write_marker(spec: ClusterSpec, app_password: str, before: int = 100, after: int = 10) -> Marker:
    """Write ``before`` rows, take the server's time, then write ``after`` rows (on the primary)."""
    drill_id = uuid.uuid4().hex[:12]
    with connect(client_dsn(spec), app_password) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (drill_id text, phase text, n int, "
            "written_at timestamptz DEFAULT clock_timestamp())"
        )
        insert = f"INSERT INTO {MARKER_TABLE} (drill_id, phase, n) SELECT %s, %s, g FROM generate_series(1, %s) g"
        conn.execute(insert, (drill_id, "before", before))
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        time.sleep(0.2)
        conn.execute(insert, (drill_id, "after", after))
    return Marker(drill_id, before, after, row[0])


def check_copy(spec: ClusterSpec, provider: Provider, marker: Marker) -> CopyChecks:
    """Count the marker rows on the restored copy, run amcheck on its B-tree indexes and the spec's query; as the
    superuser on the copy's primary over its socket (never over TCP: client networks cannot reach the superuser)."""
    name = role_holder(fetch_cluster(spec), "leader")
    primary = pg_member(spec, name) if name else pg_members(spec)[0]
    runner = provider.runner(spec, primary.host)

    def sql(statements: list[str], what: str) -> list[list[str]]:
        return pg_admin.run_sql(runner, spec, primary, spec.app.database, statements, what)

    rows = sql([f"SELECT phase, count(*) FROM {MARKER_TABLE} WHERE drill_id = {literal(marker.drill_id)} GROUP BY phase"],
               "counting the marker rows")
    counts = {phase: int(n) for phase, n in rows}
    amcheck, amcheck_ok = _amcheck(sql)
    query, query_ok = _user_query(sql, spec.backup.restore_drill.check_query)
    return CopyChecks(counts.get("before", 0), counts.get("after", 0), amcheck, amcheck_ok, query, query_ok)


BTREE_INDEXES = (
    "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisready"
)


def _amcheck(sql: Callable[[list[str], str], list[list[str]]]) -> tuple[str, bool]:
    try:
        if not sql(["SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'"], "looking for amcheck"):
            return "skipped: the amcheck extension is not installed", True
        rows = sql([
            "CREATE EXTENSION IF NOT EXISTS amcheck",
            f"DO $$DECLARE r record; BEGIN FOR r IN {BTREE_INDEXES} LOOP "
            "PERFORM bt_index_check(r.oid::regclass, true); END LOOP; END$$",
            f"SELECT count(*) FROM ({BTREE_INDEXES}) AS indexes",
        ], "amcheck")
    except DbtierError as err:
        return f"failed: {' '.join(str(err).split())[:200]}", False
    return f"{rows[0][0]} B-tree indexes consistent (bt_index_check with heapallindexed)", True


def _user_query(sql: Callable[[list[str], str], list[list[str]]], query: str | None) -> tuple[str, bool]:
    if not query:
        return "none given (backup.restore_drill.check_query)", True
    try:
        rows = sql([query], "the check query")
    except DbtierError as err:
        return f"failed: {' '.join(str(err).split())[:200]}", False
    ok = bool(rows and rows[0][0] == "t")
    if ok:
        return "returned true", True
    shown = {"f": "False", "": "None"}.get(rows[0][0], repr(rows[0][0])) if rows else "'no row'"  # psql's f and NULL
    return f"returned {shown}, not true", False
