"""Backup: one backup per repository (PostgreSQL: pgBackRest; MongoDB: mongodump), through the engine, verified, then retention applied.

    python -m flows.backup [--spec FILE] [--kind auto|full|diff|incr] [--repo N]

``auto`` (the nightly deployment's choice) takes a full when the newest full is older than
``backup.full_every_days`` (7 by default), else a differential.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger

from dbtier.backup.catalog import kind_refusal
from dbtier.engines.base import get_engine
from dbtier.errors import DbtierError, Refused
from dbtier.health import format_table
from dbtier.spec import ClusterSpec, load_spec
from blocks.lock import changes_cluster, cluster_lock
from flows._cli import EXIT_OK, EXIT_REFUSED, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.progress import Progress
from tasks.metrics import record_backup_metrics
from tasks.backup import (
    apply_retention,
    measure_s3,
    pick_backup_kind,
    publish_catalog,
    read_catalog,
    take_backup,
    verify_repository,
)


@flow(name="backup", flow_run_name=run_name("backup"))
@changes_cluster("backup")
def backup(spec_path: str | None = None, spec_block: str | None = None, kind: str = "auto",
           repo: int | None = None) -> dict[str, Any]:
    """Back up the cluster into each repository (or only ``repo``), verify, apply retention, publish the catalog."""
    spec = resolve_spec(spec_path, spec_block)
    repos = _repos(spec, repo)
    before = after = read_catalog(spec)
    verified: dict[int, str] = {}
    expired: list[str] = []
    runs: list[str] = []
    progress = Progress("backup", spec.name, [f"repository {n}: {what}" for n in repos
                                              for what in ("back up", "verify", "apply retention")] + ["catalog"])
    for n in repos:
        chosen = pick_backup_kind(spec, kind, before, n)
        progress.step(f"repository {n}: take a {chosen} backup")
        runs.append(take_backup(spec, chosen, n))
        progress.step()
        verify_repository(spec, n)  # raises when the repository does not verify
        verified[n] = "yes"
        progress.step()
        gone, after = apply_retention(spec, n, read_catalog(spec))
        expired += gone
    progress.step()
    new = [b for b in after.backups if before.label(b.label) is None]
    in_buckets = measure_s3(spec)
    rows = publish_catalog(spec, after, [b.label for b in new], expired, verified, in_buckets)
    record_backup_metrics(spec, list(after.backups))
    progress.finish()
    get_run_logger().info("took %s; expired %s", [b.label for b in new], expired or "nothing")
    return {"cluster": spec.name, "taken": [b.as_dict() for b in new], "expired": expired, "catalog": rows,
            "runs": runs, "buckets": in_buckets}


def _repos(spec: ClusterSpec, repo: int | None) -> list[int]:
    count = len(spec.backup.repositories)
    if repo is None:
        return list(range(1, count + 1))
    if not 1 <= repo <= count:
        raise Refused(f"repo: {repo} is not a repository of the spec (1..{count}); "
                      f"pass --repo 1..{count}, or add the repository under backup.repositories")
    return [repo]


def _kind_refusal(spec_path: str | None, kind: str) -> str | None:
    """Why ``--kind`` is not one the spec's engine takes (before any Prefect API is asked), or None. A spec that
    does not load is left to the edge, which says so in its own line."""
    try:
        spec = load_spec(spec_path)
    except DbtierError:
        return None
    return kind_refusal("--kind", spec.engine, get_engine(spec).backup_kinds(spec), kind)


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Back up a dbtier cluster (pgBackRest or mongodump), verify it, apply retention.")
    parser.add_argument("--kind", default="auto", choices=["auto", "full", "diff", "incr"])
    parser.add_argument("--repo", type=int, default=None, help="only this repository (1-based; default: all)")
    args = parser.parse_args(argv)
    refusal = _kind_refusal(args.spec, args.kind)
    if refusal:
        print(f"dbtier: error: {refusal}", file=sys.stderr)
        return EXIT_REFUSED

    def body(spec: ClusterSpec) -> int:
        _repos(spec, args.repo)  # refused before the flow run starts, as the flow's first step does
        with cluster_lock(spec.name, "backup"):
            result = backup(spec_path=args.spec, kind=args.kind, repo=args.repo)
        print(format_table(result["catalog"]))
        print(f"\ntook {', '.join(b['label'] for b in result['taken'])}; expired {', '.join(result['expired']) or 'nothing'}")
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
