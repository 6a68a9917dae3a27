"""Archive health: is the cluster's continuous archive reaching the repositories in time, and whole?

    python -m flows.archive_health [--spec FILE]     exit 0 healthy, 1 lagging or failing

PostgreSQL: reads ``pg_stat_archiver`` on the primary (age of the oldest finished WAL file not
archived, failures newer than the last success), then runs ``pgbackrest check`` (a fresh WAL file
must reach every repository). MongoDB: reads every member's oplog archive index (age of the newest
archived entry; a gap, where the oplog rolled past what was archived, until a newer dump covers it;
an overlap), warns when the primary's oplog window is shorter than the time since the newest dump,
then checks every archiver runs. Fails when the lag exceeds ``backup.archive_lag_limit_s``.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from dbtier.errors import BackupError
from dbtier.spec import ClusterSpec
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.metrics import record_archive_metrics
from tasks.backup import check_archiving, judge_archiving


@flow(name="archive-health", flow_run_name=run_name("archive-health"))
def archive_health(spec_path: str | None = None, spec_block: str | None = None) -> dict[str, Any]:
    spec = resolve_spec(spec_path, spec_block)
    verdict = judge_archiving(spec)
    record_archive_metrics(spec, verdict.healthy, verdict.lag_s)
    checked = check_archiving(spec) if verdict.healthy else "the end-to-end check skipped: archiving already failed"
    create_table_artifact(key=f"{spec.name}-archive-health", table=[{**verdict.artifact_row(), "check": checked}],
                          description=f"**{spec.name}** archive health")
    if not verdict.healthy:
        raise BackupError(f"cluster {spec.name}: {verdict.sentence}")
    return {"cluster": spec.name, **verdict.row(), "check": checked}


def main(argv: list[str] | None = None) -> int:
    args = spec_parser("Check that WAL archiving keeps up (exit 1 when it does not).").parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        result = archive_health(spec_path=args.spec)
        print(f"{result['verdict']}\n{result['check']}")
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
