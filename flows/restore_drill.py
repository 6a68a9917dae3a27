"""Restore drill: prove, on a schedule, that the backups restore.

    python -m flows.restore_drill [--spec FILE] [--target marker|latest|TIME|...]   exit 0 passed, 1 failed

Writes marker rows into the source, takes the target that holds them, writes more; restores (by default) to that
target into a throwaway one-member copy (``<name>-drill``, ports + backup.restore_drill.port_offset, archiving
off); checks that exactly the rows before the target are there, and the engine's own checks; publishes the
verdict and the restore time; removes the copy, whatever happened.

PostgreSQL: rows of table ``dbtier_restore_drill``, the target the server's time between them; amcheck on every
B-tree index and the spec's ``backup.restore_drill.check_query``. A MongoDB replica set: documents of collection
``dbtier_restore_drill`` written with ``w: majority``, the target the oplog timestamp of the last one before
(``ts:T:I``, that entry included); its copy restores after bring-up like any restore (the newest dump by the
target, then the archived oplog up to it); ``validate`` on every collection of the application database, and the
application user signs in through the copy's URI and reads the markers.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from dbtier.backup.drill import DrillVerdict, drill_budgets, judge_copy
from dbtier.backup.restore import source_config_path, throwaway_spec, with_restore_from
from dbtier.engines.base import get_engine
from dbtier.errors import DbtierError, DrillFailed
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec
from blocks.lock import changes_cluster, cluster_lock
from blocks.loaders import PREFECT_LOADERS
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from flows.provision import bring_up
from tasks.backup import flush_source_wal
from tasks.cluster import stop_cluster, wipe_cluster
from tasks.firewall import remove_firewall
from tasks.restore import restore_after_bring_up, settle_target
from tasks.restore_drill import (
    check_restore_drill,
    check_restored_copy,
    clear_throwaway,
    plan_copy_restore,
    restore_drill_checks,
    write_restore_marker,
)
from tasks.metrics import record_restore_drill_metrics
from tasks.progress import Progress
from tasks.teardown import forget_blocks


@flow(name="restore-drill", flow_run_name=run_name("restore-drill"))
@changes_cluster("restore-drill")
def restore_drill(spec_path: str | None = None, spec_block: str | None = None, target: str = "marker") -> dict[str, Any]:
    """Restore into a throwaway copy, check it, remove it; fail (DrillFailed) on a failed verdict."""
    source = resolve_spec(spec_path, spec_block)
    copy = throwaway_spec(source)
    progress = Progress("restore-drill", source.name, ["check", "write a marker", "restore into a throwaway copy",
                                                       "check the copy", "remove the copy", "verdict"])
    progress.step()
    check_restore_drill(source, copy, target)  # check first (backup, ports, leftovers), then write
    clear_throwaway(copy)
    progress.step()
    marker = write_restore_marker(source)
    flush_source_wal(source)
    wanted = marker.target if target == "marker" else target
    plan = plan_copy_restore(copy, source, wanted)
    _, options = settle_target(plan, source, None)  # quiet times too
    spec = with_restore_from(copy, source, source_config_path(copy), options, source.backup.restore_drill.timeout_s)
    engine = get_engine(source)
    started = time.monotonic()
    checks, failure = None, ""
    try:
        progress.step()
        spec, _ = bring_up(spec, source)
        if engine.restores_after_bring_up:  # MongoDB: the copy came up empty; fill it now
            restore_after_bring_up(spec, source, wanted)
        progress.step()
        checks = check_restored_copy(spec, marker)
    except DbtierError as err:
        failure = err.one_line()
    finally:
        restore_s = time.monotonic() - started
        progress.step("remove the copy")
        stop_cluster(spec)
        wipe_cluster(spec)
        remove_firewall(spec)  # the copy's host firewall goes with it
        forget_blocks(spec, backups_remain=False)  # the copy's passwords and variables: none stay behind
    facts = {"source": source.name, "target": plan.target_text, "from": plan.served_by,
             "copy": f"{copy.name} (removed)", "restore_s": round(restore_s, 1)}
    expect = target if target in ("marker", "latest") else "any"
    budget_s, budgets = source.backup.restore_drill.timeout_s, engine.restore_drill_budgets(source)
    if checks is None:
        verdict = DrillVerdict(False, [f"the copy did not come up: {failure}"],
                               drill_budgets(marker, expect, budget_s, budgets))
    else:
        verdict = judge_copy(marker, checks, expect, restore_s, budget_s, budgets)
    progress.step("verdict")
    create_markdown_artifact(key=f"{source.name}-restore-drill", markdown=verdict.markdown("Restore drill", facts))
    record_restore_drill_metrics(source, verdict.passed, restore_s)
    for sentence in verdict.sentences:
        get_run_logger().info("%s", sentence)
    progress.finish()
    if not verdict.passed:
        raise DrillFailed(f"restore drill of {source.name} failed: " + "; ".join(verdict.sentences))
    return {**facts, "passed": verdict.passed, "verdict": verdict.sentences}


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Restore the latest backup into a throwaway copy, check it, remove it.")
    parser.add_argument("--target", default="marker",
                        help="marker (the drill's own target, default) | latest | a time | lsn:X/Y | name:P | a label "
                        "(MongoDB: marker | latest | a time | ts:SECONDS:INC | dump:LABEL)")
    args = parser.parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        source = resolve_addresses(spec, loaders=PREFECT_LOADERS)
        restore_drill_checks(source, throwaway_spec(source), args.target)  # refused before the flow run starts
        with cluster_lock(spec.name, "restore-drill"):
            result = restore_drill(spec_path=args.spec, target=args.target)
        print("\n".join([f"restore drill of {result['source']}: PASSED in {result['restore_s']} s", *result["verdict"]]))
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
