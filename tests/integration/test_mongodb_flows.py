"""A real MongoDB replica set through dbtier's flows, as an operator runs them (a Prefect test harness, the local
provider, TLS on as by default, an fs repository under a tmp dir; members on 47217-47219, the restored set on
47317, the drill's copy on 47517).

Runbook order: provision (mongo0 primary, a second run changes nothing); a full backup into the repository; the
archive healthy once slices arrive; a restore to an oplog timestamp into a new set holds exactly the documents
before it; the restore drill passes and leaves no copy; the failover drills lose no acknowledged write with
``w: majority``, and the ``w: 1`` demonstration shows its loss; teardown --wipe --drop-backups leaves nothing.

Written against the flows and engine as they are, and never run here: no mongod can be installed on the machine
these tests were written on. Skipped, with the reason in one line of ``make test``'s summary, wherever mongod,
mongodump or mongorestore is missing (:mod:`tests.mongod`).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from typing import Any

import pytest
from bson import Timestamp
from pymongo import MongoClient

from blocks.passwords import load_passwords
from dbtier import bootstrap, workdir
from dbtier.engines.base import get_engine
from dbtier.engines.mongodb.config import write_uri
from dbtier.engines.mongodb.engine import members, mongo_settings, set_client
from dbtier.providers.base import get_provider
from dbtier.engines.mongodb.dump import ARCHIVE
from dbtier.spec import ClusterSpec, DrillSettings, build_spec, load_spec
from tests.clusters import eventually, listening, shared_tmpdir, stopped_at_exit, write_spec
from tests.mongod import mongo_binaries, skip_reason

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(mongo_binaries() is None, reason=skip_reason())]

PORT = 47217
RESTORED, DRILL_COPY = PORT + 100, PORT + 300  # restore's default --port-offset, restore_drill.port_offset
NAME = "mongo-flows"
COLLECTION = "orders"
FAST = DrillSettings(settle_s=1.0, tail_s=1.0, replica_loss_hold_s=4.0, rto_budget_s=60.0, rejoin_budget_s=120.0)


def _os_user() -> str:
    return "dbtier" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def flows_spec(data_root: str, binaries: dict[str, str]) -> ClusterSpec:
    return build_spec({
        "name": NAME, "engine": "mongodb", "provider": "local", "members": 3, "host": "127.0.0.1",
        "data_root": data_root, "os_user": _os_user(),
        "mongodb": {"port": PORT, "oplog_slice_s": 2, "election_timeout_ms": 5000,
                    "binaries": {"mongod": binaries["mongod"], "mongodump": binaries["mongodump"],
                                 "mongorestore": binaries["mongorestore"]}},
        "backup": {"repositories": [{"type": "fs", "path": f"{data_root}/repo"}], "archive_lag_limit_s": 60},
    }, environ={})


def app_client(spec: ClusterSpec) -> MongoClient[Any]:
    """The application user through the set's write URI (TLS against this machine's copy of the cluster CA)."""
    ca = workdir.ca_cert_file(spec.name) if spec.tls.enabled else None
    uri = write_uri(members(spec), mongo_settings(spec), spec.app.user, load_passwords(spec).app, spec.app.database,
                    ca)
    return set_client(uri)


def insert(spec: ClusterSpec, batch: str, count: int) -> Timestamp:
    """``count`` documents of ``batch`` with ``w: majority``; the oplog timestamp of the last one."""
    with app_client(spec) as client:
        reply = client[spec.app.database].command({
            "insert": COLLECTION, "documents": [{"batch": batch, "n": n} for n in range(count)],
            "writeConcern": {"w": "majority"}})
    assert reply["n"] == count
    ts: Timestamp = reply["operationTime"]
    return ts


def batches(spec: ClusterSpec) -> dict[str, int]:
    with app_client(spec) as client:
        rows = client[spec.app.database][COLLECTION].aggregate([{"$group": {"_id": "$batch", "n": {"$sum": 1}}}])
        return {str(row["_id"]): int(row["n"]) for row in rows}


@pytest.fixture(scope="module")
def binaries() -> dict[str, str]:
    found = mongo_binaries()
    if found is None:
        pytest.skip(skip_reason())
    return found


@pytest.fixture(scope="module")
def replset(prefect_harness: None, binaries: dict[str, str]) -> Iterator[tuple[ClusterSpec, str, dict[str, Any]]]:
    """The set provisioned by the provision flow (spec, spec file, the flow's result); stopped by PID after."""
    from flows.provision import provision

    spec = flows_spec(shared_tmpdir("dbtier-mongo-flows-"), binaries)
    taken = [p for p in (PORT, PORT + 1, PORT + 2, RESTORED, DRILL_COPY) if listening(p)]
    assert not taken, f"ports {taken} are in use: another test run or a mongod of your own holds them"
    spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
    with stopped_at_exit(spec):
        yield spec, spec_file, provision(spec_path=spec_file)
    bootstrap.wipe(get_engine(spec), get_provider(spec), spec)


def test_provision_elects_mongo0_and_a_second_run_changes_nothing(
        replset: tuple[ClusterSpec, str, dict[str, Any]]) -> None:
    from flows.provision import provision

    spec, spec_file, first = replset
    assert first["leader"] == "mongo0" and len(first["members"]) == 3
    assert [row["role"] for row in first["members"]].count("secondary") == 2, first["members"]
    again = provision(spec_path=spec_file)
    assert again["leader"] == "mongo0" and not again["changed"]


def test_a_full_backup_is_a_dump_in_the_repository(replset: tuple[ClusterSpec, str, dict[str, Any]]) -> None:
    from flows.backup import backup

    spec, spec_file, _ = replset
    insert(spec, "dumped", 50)
    result = backup(spec_path=spec_file, kind="full")
    assert [b["kind"] for b in result["taken"]] == ["full"]
    held = [f for _, _, files in os.walk(f"{spec.data_root}/repo") for f in files]
    assert ARCHIVE in held, held


def test_the_archive_is_healthy_once_the_slices_arrive(replset: tuple[ClusterSpec, str, dict[str, Any]]) -> None:
    from flows.archive_health import archive_health

    spec, spec_file, _ = replset
    insert(spec, "archived", 20)

    def healthy() -> dict[str, Any] | None:
        result = archive_health(spec_path=spec_file)
        return result if result["healthy"] else None

    result = eventually("a healthy archive", healthy, timeout=60, every=3)
    assert "3 oplog archiver(s) running" in result["check"]


def test_a_restore_to_an_oplog_timestamp_holds_exactly_the_documents_before_it(
        replset: tuple[ClusterSpec, str, dict[str, Any]]) -> None:
    from flows.restore import restore
    from flows.teardown import teardown

    spec, spec_file, _ = replset
    target = insert(spec, "before-target", 30)
    insert(spec, "after-target", 7)
    result = restore(spec_path=spec_file, target=f"ts:{target.time}:{target.inc}", into=f"{NAME}-restored")
    try:
        restored = load_spec(result["spec"], environ={})
        assert restored.mongo.port == RESTORED
        held = batches(restored)
        assert held.get("before-target") == 30 and "after-target" not in held, held
        assert held.get("dumped") == 50
    finally:
        teardown(spec_path=result["spec"], wipe=True, drop_backups=True)
    assert not listening(RESTORED)


def test_the_restore_drill_passes_and_leaves_no_copy(replset: tuple[ClusterSpec, str, dict[str, Any]]) -> None:
    from flows.restore_drill import restore_drill

    spec, spec_file, _ = replset
    result = restore_drill(spec_path=spec_file)
    assert result["passed"], result["verdict"]
    assert any(s.startswith("marker rows: 100 of 100 written before the target, 0 of 10") for s in result["verdict"])
    assert any(s.startswith("validate: ") and "valid" in s for s in result["verdict"])
    assert not listening(DRILL_COPY)
    assert not os.path.exists(f"{spec.data_root}/{NAME}-drill")


@pytest.mark.parametrize("scenario", ["stepdown", "crash", "freeze", "secondary-loss"])
def test_a_majority_writer_loses_nothing(replset: tuple[ClusterSpec, str, dict[str, Any]], scenario: str) -> None:
    from flows.failover_drill import failover_drill

    _, spec_file, _ = replset
    (verdict,) = failover_drill(scenario=scenario, spec_path=spec_file, settings=FAST)
    assert verdict["passed"], verdict["reasons"]
    assert verdict["lost_writes"] == 0
    assert verdict["leader_changed"] is (scenario != "secondary-loss")


def test_the_w1_demonstration_shows_the_acknowledged_writes_lost(
        replset: tuple[ClusterSpec, str, dict[str, Any]]) -> None:
    from flows.failover_drill import failover_drill

    _, spec_file, _ = replset
    (verdict,) = failover_drill(scenario="w1-loss", spec_path=spec_file, settings=FAST)
    assert verdict["passed"], verdict["reasons"]
    assert verdict["lost_writes"] > 0 and verdict["leader_changed"]


def test_teardown_with_wipe_and_drop_backups_leaves_nothing(replset: tuple[ClusterSpec, str, dict[str, Any]]) -> None:
    from flows.teardown import teardown

    spec, spec_file, _ = replset
    teardown(spec_path=spec_file, wipe=True, drop_backups=True)
    assert not any(listening(PORT + i) for i in range(3))
    assert not os.path.exists(spec.cluster_dir)
    assert not any(files for _, _, files in os.walk(f"{spec.data_root}/repo"))
