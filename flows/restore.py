"""Restore: a point-in-time copy of a cluster, brought up as a new dbtier cluster and verified.

    python -m flows.restore [--spec SOURCE] [--target latest|TIME|lsn:X/Y|name:P|LABEL]
                            [--into NAME [--port-offset N] | --target-spec FILE] [--in-place]

By default the copy is a new cluster named ``<source>-restored`` whose ports are the source's
plus 100, so the running cluster is never touched. ``--in-place`` replaces the source itself:
it must be stopped first, and its data directory is deleted before the restore.
Bad targets (before the oldest backup, in the future, an unknown label) and a target cluster
that exists are refused in one line (exit 2) before anything is touched.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from dbtier.backup.catalog import parse_target, restore_options
from dbtier.backup.ops import source_config_path
from dbtier.backup.restore import DEFAULT_PORT_OFFSET, derive_target, with_restore_from, without_restore_from
from dbtier.errors import RestoreError
from dbtier.health import format_table
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec, load_spec
from dbtier.topology import client_dsn
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from flows.provision import bring_up
from tasks.backup import (
    check_restore_target,
    flush_source_wal,
    read_source_catalog,
    refuse_existing_target,
    require_stopped,
    save_cluster_spec,
)
from tasks.cluster import publish_member_table, wipe_cluster


@flow(name="restore", flow_run_name=run_name("restore"))
def restore(
    spec_path: str | None = None,
    spec_block: str | None = None,
    target: str = "latest",
    into: str | None = None,
    port_offset: int = DEFAULT_PORT_OFFSET,
    target_spec_path: str | None = None,
    repo: int | None = None,
    in_place: bool = False,
) -> dict[str, Any]:
    """Restore the source cluster's backup to ``target`` into a new cluster (or in place), then verify it."""
    source = resolve_spec(spec_path, spec_block)
    wanted = parse_target(target)
    base = choose_target_spec(source, into, port_offset, target_spec_path, in_place)
    if in_place:
        require_stopped(source)
    else:
        refuse_existing_target(base)
    flushed = flush_source_wal(source) if not in_place else "in place: the source is stopped"
    catalog = read_source_catalog(base, source)
    served_by = check_restore_target(wanted, catalog, repo)
    if in_place:
        wipe_cluster(source)
    spec = with_restore_from(base, source, source_config_path(base), restore_options(wanted, repo),
                             source.backup.restore_timeout_s)
    started = time.monotonic()
    spec, status = bring_up(spec, source)
    elapsed = time.monotonic() - started
    saved = save_cluster_spec(without_restore_from(spec))
    headline = f"restored from {source.name} ({served_by}) in {elapsed:.1f} s; leader {status.health.leader}"
    publish_member_table(spec, status.rows, headline)
    create_markdown_artifact(
        key=f"{spec.name}-restore",
        markdown=f"# Restore of {source.name} into {spec.name}\n\n- target: {wanted.describe()}\n"
        f"- from: {served_by}\n- source WAL: {flushed}\n- healthy after: {elapsed:.1f} s\n"
        f"- status: {status.health.sentence}\n- spec: `{saved}`\n- DSN: `{client_dsn(spec)}`\n",
    )
    get_run_logger().info("%s", headline)
    return {"source": source.name, "cluster": spec.name, "target": wanted.describe(), "from": served_by,
            "seconds": round(elapsed, 1), "spec": saved, "dsn": client_dsn(spec), "members": status.rows}


def choose_target_spec(source: ClusterSpec, into: str | None, port_offset: int, target_spec_path: str | None,
                       in_place: bool) -> ClusterSpec:
    if in_place:
        if into or target_spec_path:
            raise RestoreError("in_place: restores the source itself; drop --into / --target-spec")
        return source
    if target_spec_path:
        return resolve_addresses(load_spec(target_spec_path))
    return derive_target(source, into or f"{source.name[:23]}-restored", port_offset)


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Restore a cluster's backup to a point in time, into a new cluster (default) or in place.")
    parser.add_argument("--target", default="latest",
                        help="latest | '2026-11-26 01:02:03+00' | lsn:0/3000028 | name:POINT | a backup label")
    parser.add_argument("--into", help="name of the new cluster (default <source>-restored)")
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET, help="the new cluster's ports: the source's + this")
    parser.add_argument("--target-spec", help="a full spec file for the new cluster instead of --into")
    parser.add_argument("--repo", type=int, help="restore from this repository (default: the first that has it)")
    parser.add_argument("--in-place", action="store_true", help="replace the (stopped) source cluster itself")
    args = parser.parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        result = restore(spec_path=args.spec, target=args.target, into=args.into, port_offset=args.port_offset,
                         target_spec_path=args.target_spec, repo=args.repo, in_place=args.in_place)
        print(format_table(result["members"]))
        print(f"\nrestored {result['source']} ({result['target']}, from {result['from']}) into {result['cluster']} "
              f"in {result['seconds']} s")
        print(f"read-write DSN: {result['dsn']}")
        print(f"status:   dbtier status --spec {result['spec']}")
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
