"""Restore drill: prove, on a schedule, that the backups restore.

    python -m flows.restore_drill [--spec FILE] [--target marker|latest|TIME|...]   exit 0 passed, 1 failed

Writes marker rows into the source, takes the time, writes more; restores (by default) to that
time into a throwaway one-member copy (``<name>-drill``, ports + backup.restore_drill.port_offset,
archiving off); checks that exactly the rows before the time are there, runs amcheck on every
B-tree index and the spec's ``check_query``; publishes the verdict and the restore time; removes
the copy, whatever happened.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from dbtier.backup.catalog import RestoreTarget, parse_target
from dbtier.backup.drill import DrillVerdict, drill_budgets, judge_copy
from dbtier.backup.ops import source_config_path
from dbtier.backup.restore import throwaway_spec, with_restore_from
from dbtier.errors import DbtierError, DrillFailed
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec
from blocks.lock import changes_cluster, cluster_lock
from blocks.loaders import PREFECT_LOADERS
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from flows.provision import bring_up
from tasks.backup import (
    check_restore_drill,
    check_restore_target,
    check_restored_copy,
    clear_throwaway,
    flush_source_wal,
    read_source_catalog,
    restore_drill_checks,
    write_restore_marker,
)
from tasks.cluster import stop_cluster, wipe_cluster
from tasks.firewall import remove_firewall
from tasks.restore import RestorePlan, settle_target
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
    wanted = RestoreTarget("time", marker.at.isoformat(sep=" "), marker.at) if target == "marker" else parse_target(target)
    served_by = check_restore_target(wanted, read_source_catalog(copy, source))
    _, options = settle_target(RestorePlan(copy, wanted, served_by, in_place=False), source, None)  # quiet times too
    spec = with_restore_from(copy, source, source_config_path(copy), options, source.backup.restore_drill.timeout_s)
    started = time.monotonic()
    checks, failure = None, ""
    try:
        progress.step()
        spec, _ = bring_up(spec, source)
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
    facts = {"source": source.name, "target": wanted.describe(), "from": served_by, "copy": f"{copy.name} (removed)",
             "restore_s": round(restore_s, 1)}
    expect = target if target in ("marker", "latest") else "any"
    if checks is None:
        verdict = DrillVerdict(False, [f"the copy did not come up: {failure}"], drill_budgets(
            marker, expect, source.backup.restore_drill.timeout_s, bool(source.backup.restore_drill.check_query)))
    else:
        verdict = judge_copy(marker, checks, expect, restore_s, source.backup.restore_drill.timeout_s)
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
                        help="marker (the drill's own time, default) | latest | a time | lsn:X/Y | name:P | a label")
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
