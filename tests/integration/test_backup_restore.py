"""Backups, WAL archiving and point-in-time restore for real: a three-member cluster, pgBackRest, a filesystem repository.

Runbook order: a full backup; rows before and after a time T; restore to T into a new cluster (exactly the rows
before T); restore latest (every row); bad targets refused without touching anything; archiving after a
switchover; the restore drill; retention removing the oldest full and nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from datetime import datetime, timedelta, timezone

import prefect.settings
import pytest

from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.engines.postgres.patroni_health import role_holder
from dbtier.engines.postgres import pgbackrest_ops
from dbtier.engines.postgres.wal_archive import wal_position
from dbtier.backup.restore import derive_target
from dbtier.engines.postgres import faults
from dbtier.engines.base import get_engine
from dbtier.engines.postgres.control_plane import rest_login
from dbtier.engines.postgres.engine import connect
from dbtier.errors import DrillFailed, PreflightError, RestoreError
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec, build_spec
from dbtier.engines.postgres.topology import client_dsn
from tests.clusters import (RESTORE_OFFSET, dbtier_metric, listening, one_member, run_log_lines, shared_tmpdir,
                            spec_for_tests, stopped_at_exit, write_spec)

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("bk", block=6, data_root=shared_tmpdir("dbtier-backup-"))


@pytest.fixture(scope="module")
def cluster_with_full_backup(prefect_harness: None, spec: ClusterSpec) -> Iterator[str]:
    """A healthy three-member cluster whose stanza holds one full backup; stopped by PID and wiped after."""
    from flows.backup import backup
    from flows.provision import provision

    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        provision(spec_path=spec_file)
        result = backup(spec_path=spec_file, kind="full")
        assert [b["kind"] for b in result["taken"]] == ["full"]
        yield spec_file
    bootstrap.wipe(get_engine(spec), get_provider(spec), spec)
    shutil.rmtree(spec.data_root, ignore_errors=True)


def _app(spec: ClusterSpec) -> object:
    return connect(client_dsn(spec), load_passwords(spec).app)


def _count(spec: ClusterSpec, table: str = "orders") -> int:
    with _app(spec) as conn:  # type: ignore[attr-defined]
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.fixture()
def restored_cleanup(spec: ClusterSpec) -> Iterator[list[ClusterSpec]]:
    """Every cluster a test restores is stopped by PID and wiped afterwards."""
    made: list[ClusterSpec] = []
    yield made
    for target in made:
        bootstrap.stop_services(get_engine(target), get_provider(target), target)
        if bootstrap.is_initialised(get_engine(target), get_provider(target), target):
            bootstrap.wipe(get_engine(target), get_provider(target), target)


def test_point_in_time_restore_brings_back_exactly_the_rows_before_the_target(
    cluster_with_full_backup: str, spec: ClusterSpec, restored_cleanup: list[ClusterSpec]
) -> None:
    from flows.restore import restore

    with _app(spec) as conn:  # type: ignore[attr-defined]
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, written_at timestamptz DEFAULT clock_timestamp())")
        conn.execute("INSERT INTO orders (id) SELECT g FROM generate_series(1, 50) g")
        target_time = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.3)
        conn.execute("INSERT INTO orders (id) SELECT g FROM generate_series(51, 80) g")

    at_t = derive_target(spec, "bk-pitr", RESTORE_OFFSET)
    restored_cleanup.append(at_t)
    result = restore(spec_path=cluster_with_full_backup, target=target_time.isoformat(sep=" "), into="bk-pitr",
                     port_offset=RESTORE_OFFSET)
    assert result["cluster"] == "bk-pitr" and "WAL up to" in result["from"]
    assert _count(at_t) == 50, "exactly the rows committed before T"
    assert get_engine(at_t).status(at_t).health.healthy  # a normal dbtier cluster: three members, one leader
    assert os.path.exists(result["spec"])
    assert _count(spec) == 80, "the source is untouched"
    bootstrap.stop_services(get_engine(at_t), get_provider(at_t), at_t)
    bootstrap.wipe(get_engine(at_t), get_provider(at_t), at_t)

    # Latest into a copy of one member (its rows and timeline are what this checks; the three-member restore is above).
    latest = build_spec(one_member(derive_target(spec, "bk-latest", RESTORE_OFFSET)), environ={})
    restored_cleanup.append(latest)
    restore(spec_path=cluster_with_full_backup, target="latest",
            target_spec_path=write_spec(latest, os.path.join(spec.data_root, "bk-latest.yaml")))
    assert _count(latest) == 80, "latest has every row"

    # The copy archives into a stanza of its own, on its new timeline; the source's archive stays on timeline 1.
    provider = get_provider(spec)
    copy_catalog = pgbackrest_ops.catalog(provider, latest)
    assert copy_catalog.wal_max is not None and wal_position(copy_catalog.wal_max)[0] >= 2
    assert wal_position(pgbackrest_ops.catalog(provider, spec).wal_max or "")[0] == 1


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ((datetime.now(timezone.utc) + timedelta(days=1)).isoformat(sep=" "), "is in the future"),
        ("2001-01-01 00:00:00+00", "is before the oldest backup ends"),
        ("20200101-000000F", "no backup labelled '20200101-000000F'"),
        ("yesterday", "is not latest, a time"),
    ],
    ids=["tomorrow", "before-the-oldest-backup", "unknown-label", "garbage"],
)
def test_bad_targets_are_refused_before_anything_is_touched(
    cluster_with_full_backup: str, spec: ClusterSpec, target: str, words: str
) -> None:
    from flows.restore import restore

    with pytest.raises(RestoreError, match=words):
        restore(spec_path=cluster_with_full_backup, target=target, into="bk-refused", port_offset=RESTORE_OFFSET)
    refused = derive_target(spec, "bk-refused", RESTORE_OFFSET)
    assert not os.path.exists(refused.cluster_dir), "a refused restore creates nothing"
    assert not listening(refused.pg.ports.postgres)


def test_restore_over_a_running_cluster_is_refused_in_one_line(cluster_with_full_backup: str, spec: ClusterSpec) -> None:
    """Through the command line: exit 2, one line naming the target, nothing started."""
    env = {**os.environ, "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value())}
    done = subprocess.run(
        [sys.executable, "-m", "flows.restore", "--spec", cluster_with_full_backup, "--target-spec",
         cluster_with_full_backup], cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 2, done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("dbtier: error:")]
    assert error_lines == [error_lines[-1]] and "target: cluster bk is running" in error_lines[-1]
    assert get_engine(spec).status(spec).health.healthy


def test_archiving_keeps_working_after_a_switchover(cluster_with_full_backup: str, spec: ClusterSpec) -> None:
    from flows.archive_health import archive_health

    doc = faults.cluster_doc(spec)
    leader = role_holder(doc, "leader")
    candidate = next(m["name"] for m in (doc or {})["members"] if m["name"] != leader)
    faults.switchover(spec, leader or "", candidate, rest_login(load_passwords(spec)))
    get_engine(spec).wait_healthy(spec, 90)
    assert role_holder(faults.cluster_doc(spec), "leader") == candidate

    result = archive_health(spec_path=cluster_with_full_backup)  # pgbackrest check from the new primary
    assert result["healthy"] is True
    assert dbtier_metric(spec.name, "archive", "dbtier_archive_ok") == 1, "left for Prometheus"
    lag = dbtier_metric(spec.name, "archive", "dbtier_archive_lag_seconds")
    assert lag is not None and lag == pytest.approx(result["lag_s"], abs=0.1)
    wal_max = pgbackrest_ops.catalog(get_provider(spec), spec).wal_max
    assert wal_max is not None and wal_position(wal_max)[0] >= 2, "WAL of the new primary's timeline is archived"


def test_restore_drill_passes_and_leaves_nothing_behind(cluster_with_full_backup: str, spec: ClusterSpec) -> None:
    from flows.restore_drill import restore_drill

    state = restore_drill(spec_path=cluster_with_full_backup, return_state=True)
    result = state.result()
    assert result["passed"] is True
    assert progress_of(state.state_details.flow_run_id, f"{spec.name}-restore-drill-progress") == 100.0
    lines = run_log_lines([state.state_details.flow_run_id])
    steps = [line for line in lines if line.startswith(f"restore-drill {spec.name}: step ")]
    assert [line.split(":")[1] for line in steps] == [f" step {i}/6 ({(i - 1) * 100 / 6:.0f}%)" for i in range(1, 7)]
    assert any(line.startswith(f"restore-drill {spec.name}: 6/6 steps done in ") for line in lines)
    assert dbtier_metric(spec.name, "restore-drill", "dbtier_restore_drill_passed") == 1
    assert dbtier_metric(spec.name, "restore-drill", "dbtier_restore_drill_restore_seconds") == pytest.approx(
        result["restore_s"], abs=0.1)
    ended = dbtier_metric(spec.name, "restore-drill", "dbtier_restore_drill_timestamp_seconds")
    assert ended is not None and abs(time.time() - ended) < 120
    assert "marker rows: 100 of 100 written before the target, 0 of 10 written after it" in result["verdict"]
    assert any("B-tree indexes consistent" in s for s in result["verdict"])
    copy_dir = os.path.join(spec.data_root, "bk-drill")
    assert not os.path.exists(copy_dir)
    assert not listening(spec.pg.ports.postgres + spec.backup.restore_drill.port_offset)

    data = spec.model_dump(mode="json")
    data["backup"]["restore_drill"]["check_query"] = "SELECT count(*) > 1000000 FROM dbtier_restore_drill"
    strict = write_spec(build_spec(data, environ={}), os.path.join(spec.data_root, "strict-drill.yaml"))
    with pytest.raises(DrillFailed, match="check query: returned False, not true"):
        restore_drill(spec_path=strict)
    assert not os.path.exists(copy_dir), "a failed drill removes its copy too"
    assert dbtier_metric(spec.name, "restore-drill", "dbtier_restore_drill_passed") == 0, "the alert's input"


def progress_of(flow_run_id: Any, key: str) -> float:
    """Where the flow run's progress artifact ``key`` ended, in percent."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(found) == 1 and found[0].type == "progress", found
    return float(found[0].data)  # type: ignore[arg-type]


def test_retention_expires_the_oldest_full_and_nothing_else(cluster_with_full_backup: str, spec: ClusterSpec) -> None:
    from flows.backup import backup

    provider = get_provider(spec)
    backup(spec_path=cluster_with_full_backup, kind="full")
    diff = backup(spec_path=cluster_with_full_backup, kind="diff")["taken"][0]["label"]
    catalog = pgbackrest_ops.catalog(provider, spec).backups
    fulls = [b.label for b in catalog if b.kind == "full"]
    assert len(fulls) == 2
    newest_diff = max(b.stop.timestamp() for b in catalog if b.kind in ("full", "diff"))
    assert dbtier_metric(spec.name, "backup", "dbtier_backup_newest_timestamp_seconds", repo="1", kind="diff") == newest_diff
    assert dbtier_metric(spec.name, "backup", "dbtier_backup_newest_timestamp_seconds", repo="1", kind="full") == max(
        b.stop.timestamp() for b in catalog if b.kind == "full")

    data = spec.model_dump(mode="json")
    data["backup"]["retention"] = {"full": 2, "diff": 7, "window_days": 0}
    keep_two = write_spec(build_spec(data, environ={}), os.path.join(spec.data_root, "keep-two.yaml"))
    result = backup(spec_path=keep_two, kind="full")
    newest = result["taken"][0]["label"]
    assert result["expired"] == [fulls[0]], "only the oldest full goes"
    left = pgbackrest_ops.catalog(provider, spec)
    assert [b.label for b in left.backups] == [fulls[1], diff, newest]
    assert left.wal_min is not None and left.backups[0].wal_start is not None
    assert left.wal_min <= left.backups[0].wal_start, "WAL from the oldest kept backup on is still there"


def test_backup_from_a_replica_when_asked(cluster_with_full_backup: str, spec: ClusterSpec) -> None:
    from flows.backup import backup

    data = spec.model_dump(mode="json")
    data["backup"]["from_replica"] = True
    from_replica = write_spec(build_spec(data, environ={}), os.path.join(spec.data_root, "from-replica.yaml"))
    result = backup(spec_path=from_replica, kind="incr")
    assert [b["kind"] for b in result["taken"]] == ["incr"]
    leader = role_holder(faults.cluster_doc(spec), "leader")
    assert f"(standby of {leader})" in result["runs"][0], result["runs"]


def test_in_place_restore_needs_a_stopped_cluster_then_replaces_it(cluster_with_full_backup: str, spec: ClusterSpec) -> None:
    """Last in the module: it replaces the module's cluster with its own latest backup."""
    from flows.restore import restore

    with pytest.raises(RestoreError, match="in_place: cluster bk is running"):
        restore(spec_path=cluster_with_full_backup, in_place=True)
    rows = _count(spec)
    faults_before = pgbackrest_ops.catalog(get_provider(spec), spec)
    bootstrap.stop_services(get_engine(spec), get_provider(spec), spec)
    result = restore(spec_path=cluster_with_full_backup, target="latest", in_place=True)
    assert result["cluster"] == "bk"
    assert get_engine(spec).status(spec).health.healthy
    assert _count(spec) == rows, "every committed row is back (latest)"
    after = pgbackrest_ops.catalog(get_provider(spec), spec)
    assert [b.label for b in after.backups] == [b.label for b in faults_before.backups], "the backups are kept"
    assert after.wal_max is not None and wal_position(after.wal_max)[0] > wal_position(faults_before.wal_max or "")[0]


def test_a_new_cluster_of_the_same_name_is_refused_until_the_old_backups_are_dropped(
    cluster_with_full_backup: str, spec: ClusterSpec
) -> None:
    """Wiping keeps the backups; a fresh cluster may not inherit them (its WAL would be refused): restore or drop."""
    from blocks.backup import load_backup_secrets
    from flows.provision import provision
    from flows.teardown import teardown

    teardown(spec_path=cluster_with_full_backup, wipe=True)
    with pytest.raises(PreflightError, match="already hold stanza bk of an earlier cluster of that name"):
        provision(spec_path=cluster_with_full_backup)
    assert not os.path.exists(spec.cluster_dir) and not listening(spec.pg.ports.postgres), "refused before anything"

    sentences = teardown(spec_path=cluster_with_full_backup, drop_backups=True)
    assert any("stanza bk deleted" in s for s in sentences)
    left = pgbackrest_ops.read_source_catalog(get_provider(spec), spec, spec, load_backup_secrets(spec))
    assert left.backups == () and left.wal_max is None
