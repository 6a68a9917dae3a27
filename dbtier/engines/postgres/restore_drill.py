"""The restore drill on PostgreSQL: marker rows in the application database around a server time, and the checks
on the restored copy (the marker rows counted, amcheck on every B-tree index, the spec's check query)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from dbtier.backup.drill import MARKER_TABLE, CopyChecks, Marker
from dbtier.engines.postgres import pg_admin
from dbtier.engines.postgres.engine import connect, fetch_cluster
from dbtier.engines.postgres.pg_roles import literal
from dbtier.errors import DbtierError
from dbtier.engines.postgres.patroni_health import role_holder
from dbtier.providers.base import Provider
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import client_dsn, pg_member, pg_members


def budgets(spec: ClusterSpec) -> list[str]:
    """The copy's checks in words, for the verdict.

    >>> budgets(ClusterSpec())
    ['amcheck on every B-tree index']
    """
    query = ["the spec's check query (backup.restore_drill.check_query) returns true"] \
        if spec.backup.restore_drill.check_query else []
    return ["amcheck on every B-tree index", *query]


def write_marker(spec: ClusterSpec, app_password: str, before: int = 100, after: int = 10) -> Marker:
    """Write ``before`` rows, take the server's time, then write ``after`` rows (on the primary); the target is
    that time."""
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
    return Marker(drill_id, before, after, row[0], row[0].isoformat(sep=" "))


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
    return CopyChecks(counts.get("before", 0), counts.get("after", 0),
                      ((f"amcheck: {amcheck}", amcheck_ok), (f"check query: {query}", query_ok)))


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
