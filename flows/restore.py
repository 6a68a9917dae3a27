"""Restore: a point-in-time copy of a cluster, brought up as a new dbtier cluster and verified.

    python -m flows.restore [--spec SOURCE] [--target latest|TIME|lsn:X/Y|name:P|LABEL]
                            [--into NAME [--port-offset N] | --target-spec FILE] [--in-place]

By default the copy is a new cluster named ``<source>-restored`` whose ports are the source's
plus 100, so the running cluster is never touched. ``--in-place`` replaces the source itself:
it must be stopped first; its data is set aside (renamed) and dropped only once the restored
cluster is up, and put back as it was if the restore fails.
Every check runs before anything is written, and a refusal is one line (exit 2): bad targets
(before the oldest backup, in the future, an unknown label), a target cluster that exists or
runs, a busy port, a stanza of an earlier cluster under the new name. A restore that fails
(exit 1) leaves nothing of itself behind.
A time inside a quiet period (no transaction after it in the archive) restores its backup to the
end of the archive, which is the state at that time.

A MongoDB replica set restores into a new set only (``--in-place`` and ``--repo`` are refused): bring-up starts
it empty, then its primary gets the newest dump that ended by the target and the archived oplog after it, up to
the target. Its targets: ``latest`` (the newest archived entry: the flow first waits, at most
``mongodb.oplog_slice_s`` + 15 s, for the archivers to ship the source's newest entry), a time with a zone
(every operation of that whole second included), ``ts:SECONDS:INC`` (that oplog entry included) or
``dump:LABEL`` (that dump alone).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks.lock import cluster_lock
from blocks.loaders import PREFECT_LOADERS
from dbtier.backup.restore import DEFAULT_PORT_OFFSET, source_config_path, with_restore_from, without_restore_from
from dbtier.engines.base import get_engine
from dbtier.errors import DbtierError, RestoreFailed
from dbtier.health import format_table
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from flows.provision import bring_up
from tasks.backup import flush_source_wal, save_cluster_spec
from tasks.cluster import publish_member_table
from tasks.progress import Progress
from tasks.restore import (
    check_restore,
    choose_target_spec,
    drop_set_aside,
    plan_restore,
    restore_after_bring_up,
    set_aside_data,
    settle_target,
    undo_failed_restore,
)


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
    landing = choose_target_spec(source, into, port_offset, target_spec_path, in_place)
    with cluster_lock(landing.name, "restore"):  # the cluster the restore builds (or replaces, in place)
        return _restore(source, target, into, port_offset, target_spec_path, repo, in_place)


def _restore(source: ClusterSpec, target: str, into: str | None, port_offset: int, target_spec_path: str | None,
             repo: int | None, in_place: bool) -> dict[str, Any]:
    progress = Progress("restore", into or source.name, ["check the target and the landing", "flush the source's WAL",
                                                         "settle the target", "restore and bring the cluster up",
                                                         "save and publish"])
    progress.step()
    plan = check_restore(source, target, into, port_offset, target_spec_path, repo, in_place)
    progress.step()
    flushed = "in place: the source is stopped" if in_place else flush_source_wal(source)
    progress.step()
    settled, options = settle_target(plan, source, repo)
    spec = with_restore_from(plan.target, source, source_config_path(plan.target), options,
                             source.backup.restore_timeout_s)
    if in_place:
        set_aside_data(source)
    started = time.monotonic()
    progress.step()
    restored: list[str] = []
    try:
        spec, status = bring_up(spec, source)
        if get_engine(spec).restores_after_bring_up:  # MongoDB: the set came up empty; fill it now
            restored = restore_after_bring_up(spec, source, target)
    except DbtierError as err:
        undone = undo_failed_restore(spec, in_place)
        raise RestoreFailed(f"restore of {source.name} into {spec.name} failed: {err.one_line()}; {undone}") from None
    elapsed = time.monotonic() - started
    how = "; ".join(restored) or settled
    if in_place:
        drop_set_aside(source)
    progress.step()
    saved = save_cluster_spec(without_restore_from(spec))
    headline = f"restored from {source.name} ({plan.served_by}) in {elapsed:.1f} s; leader {status.health.leader}"
    publish_member_table(spec, status.rows, headline)
    dsn = get_engine(spec).client_dsns(spec)[0][1]
    create_markdown_artifact(
        key=f"{spec.name}-restore",
        markdown=f"# Restore of {source.name} into {spec.name}\n\n- target: {plan.target_text}\n"
        f"- from: {plan.served_by}\n- how: {how}\n- source archive: {flushed}\n"
        f"- healthy after: {elapsed:.1f} s\n- status: {status.health.sentence}\n- spec: `{saved}`\n"
        f"- DSN: `{dsn}`\n",
    )
    get_run_logger().info("%s", headline)
    progress.finish()
    return {"source": source.name, "cluster": spec.name, "target": plan.target_text, "from": plan.served_by,
            "how": how, "seconds": round(elapsed, 1), "spec": saved, "dsn": dsn,
            "members": status.rows}


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Restore a cluster's backup to a point in time, into a new cluster (default) or in place.")
    parser.add_argument("--target", default="latest",
                        help="latest | '2026-11-26 01:02:03+00' | lsn:0/3000028 | name:POINT | a backup label "
                        "(MongoDB: latest | a time | ts:SECONDS:INC | dump:LABEL)")
    parser.add_argument("--into", help="name of the new cluster (default <source>-restored)")
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET, help="the new cluster's ports: the source's + this")
    parser.add_argument("--target-spec", help="a full spec file for the new cluster instead of --into")
    parser.add_argument("--repo", type=int, help="restore from this repository (default: the first that has it)")
    parser.add_argument("--in-place", action="store_true", help="replace the (stopped) source cluster itself")
    args = parser.parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        # Every refusal before the flow run starts: one line, exit 2, nothing written.
        spec = resolve_addresses(spec, loaders=PREFECT_LOADERS)
        landing = choose_target_spec(spec, args.into, args.port_offset, args.target_spec, args.in_place)
        with cluster_lock(landing.name, "restore"):
            plan_restore(spec, args.target, args.into, args.port_offset, args.target_spec, args.repo, args.in_place)
            result = restore(spec_path=args.spec, target=args.target, into=args.into, port_offset=args.port_offset,
                             target_spec_path=args.target_spec, repo=args.repo, in_place=args.in_place)
        print(format_table(result["members"]))
        print(f"\nrestored {result['source']} ({result['target']}, from {result['from']}) into {result['cluster']} "
              f"in {result['seconds']} s")
        print(f"how: {result['how']}")
        print(f"read-write DSN: {result['dsn']}")
        print(f"status:   dbtier status --spec {result['spec']}")
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
