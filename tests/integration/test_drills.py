"""Failover drills for real: a synchronous three-member cluster under write load, broken on purpose.

Runbook order: a planned switchover, a lost replica, a lost etcd member, a crashed leader,
a frozen leader, a lost etcd quorum; then the deliberately wrong expectation (asynchronous
mode, WAL senders paused, crash) that must fail; then the flow failing on a failed verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from blocks.passwords import load_passwords
from dbtier import bootstrap, pictures, workdir
from dbtier.engines.postgres.patroni_health import role_holder
from dbtier.engines.postgres import faults, scenarios
from dbtier.drills.settings import DrillSettings
from dbtier.engines.base import get_engine
from dbtier.engines.postgres.control_plane import rest_login
from dbtier.errors import DrillFailed
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import pg_members
from tests.clusters import shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Short holds so the module stays fast; the Patroni timing is the tests' (ttl 20, loop_wait 2, retry_timeout 5).
FAST = DrillSettings(rto_budget_s=40, rejoin_budget_s=60, settle_s=1.0, tail_s=0.5, replica_loss_hold_s=4.0,
                     etcd_member_loss_hold_s=3.0, quorum_loss_hold_s=22.0, healthy_timeout_s=90)


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("drills", block=3, data_root=shared_tmpdir("dbtier-drills-"), synchronous_mode=True)


@pytest.fixture(scope="module")
def synchronous_cluster_under_drill(prefect_harness: None, spec: ClusterSpec) -> Iterator[str]:
    """A healthy synchronous three-member cluster (provisioned through the flow); stopped by PID and wiped after."""
    from flows.provision import provision

    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        provision(spec_path=spec_file)
        _wait_for(lambda: role_holder(faults.cluster_doc(spec), "sync_standby") is not None)
        yield spec_file
    bootstrap.wipe(get_engine(spec), get_provider(spec), spec)
    shutil.rmtree(spec.data_root, ignore_errors=True)


def drill(spec_file: str, scenario: str, settings: DrillSettings = FAST) -> dict[str, Any]:
    from flows.failover_drill import failover_drill

    (verdict,) = failover_drill(scenario=scenario, spec_path=spec_file, settings=settings)
    print(f"\n{scenario}: RTO {verdict['rto_s']} s, gap {verdict['gap_s']} s, worst gap {verdict['max_gap_s']} s, "
          f"lost {verdict['lost_writes']}, rejoin {verdict['rejoin_s']} s, {verdict['notes']}")
    return verdict


def test_switchover_goes_to_the_sync_standby_without_losing_a_write(synchronous_cluster_under_drill: str,
                                                                    spec: ClusterSpec) -> None:
    sync_before = role_holder(faults.cluster_doc(spec), "sync_standby")
    verdict = drill(synchronous_cluster_under_drill, "switchover")
    assert verdict["passed"] and verdict["leader_changed"]
    assert verdict["leader_after"] == sync_before
    assert verdict["lost_writes"] == 0 and verdict["split_brain"] == []
    assert 0 < verdict["rto_s"] < 15
    assert verdict["rejoin_s"] is not None


def test_losing_the_sync_standby_moves_synchronous_replication_and_writes_go_on(
    synchronous_cluster_under_drill: str,
) -> None:
    verdict = drill(synchronous_cluster_under_drill, "replica-loss")
    assert verdict["passed"] and not verdict["leader_changed"]
    assert verdict["lost_writes"] == 0
    assert any(note.startswith("synchronous standby while") for note in verdict["notes"])
    assert verdict["max_gap_s"] < 10


def test_losing_one_etcd_member_stalls_no_write_for_a_second(synchronous_cluster_under_drill: str) -> None:
    verdict = drill(synchronous_cluster_under_drill, "etcd-member-loss")
    assert verdict["passed"] and not verdict["leader_changed"]
    assert verdict["max_gap_s"] <= 1.0
    assert verdict["failed_attempts"] == 0


def latest_report(spec: ClusterSpec, scenario: str) -> str:
    """The evidence directory of the latest drill of ``scenario`` (on this machine, where the flow ran)."""
    evidence = os.path.join(workdir.cluster_work_dir(spec.name), "drills")
    return os.path.join(evidence, sorted(d for d in os.listdir(evidence) if d.endswith(f"-{scenario}"))[-1])


def test_crashed_leader_fails_over_without_loss_and_rejoins(synchronous_cluster_under_drill: str, spec: ClusterSpec) -> None:
    verdict = drill(synchronous_cluster_under_drill, "crash")
    assert verdict["passed"], verdict["reasons"]
    assert verdict["leader_changed"] and verdict["lost_writes"] == 0 and verdict["split_brain"] == []
    assert 5 < verdict["rto_s"] < 40  # most of it is the old leader's lease (ttl 20) running out
    assert verdict["rejoin_s"] is not None
    events = [what for _, what in verdict["timeline"]]
    assert any(e.startswith("fault: SIGKILL") for e in events)
    assert any(e.startswith("first acknowledged write after the fault") for e in events)
    # The timeline picture beside the verdict: a valid PNG whose plotted writes agree with the verdict.
    from PIL import Image

    report = latest_report(spec, "crash")
    with Image.open(f"{report}/timeline.png") as image:
        image.verify()
        assert image.format == "PNG" and image.size == (900, 450)
    with open(f"{report}/timeline.png", "rb") as fh:
        marks = pictures.png_text(fh.read())
    assert float(marks["dbtier:rto_s"]) == verdict["rto_s"]  # the RTO shaded is the verdict's
    assert abs(float(marks["dbtier:first_ack_after_s"]) - verdict["rto_s"]) <= 0.01  # ... and the plotted writes show it
    assert int(marks["dbtier:acknowledged"]) == verdict["acknowledged"]
    assert int(marks["dbtier:failed"]) == verdict["failed_attempts"] > 0
    assert marks["dbtier:leader_change_s"] and 0 < float(marks["dbtier:leader_change_s"]) < 40
    with open(f"{report}/lag.png", "rb") as fh:
        lag = pictures.png_text(fh.read())
    assert set(lag["dbtier:members"].split(",")) >= {m.name for m in pg_members(spec)} - {verdict["leader_before"]}


def test_frozen_leader_demotes_itself_and_never_acknowledges_after_the_new_leader(
    synchronous_cluster_under_drill: str,
) -> None:
    verdict = drill(synchronous_cluster_under_drill, "freeze")
    assert verdict["passed"], verdict["reasons"]
    assert verdict["leader_changed"] and verdict["split_brain"] == [] and verdict["lost_writes"] == 0
    assert verdict["rto_s"] > 5 and verdict["rejoin_s"] is not None


def test_without_etcd_quorum_failsafe_mode_keeps_the_primary_writable(synchronous_cluster_under_drill: str) -> None:
    verdict = drill(synchronous_cluster_under_drill, "etcd-quorum-loss")
    assert verdict["passed"], verdict["reasons"]
    assert not verdict["leader_changed"]
    assert any("stayed writable" in note for note in verdict["notes"])


def test_wrong_expectation_fails_async_crash_with_paused_wal_senders_loses_acknowledged_writes(
    synchronous_cluster_under_drill: str, spec: ClusterSpec
) -> None:
    """Expecting zero loss from asynchronous replication is wrong, and the checker must say so."""
    faults.set_synchronous_mode(spec, False, rest_login(load_passwords(spec)))
    _wait_for(lambda: role_holder(faults.cluster_doc(spec), "sync_standby") is None)
    try:
        run = scenarios.Drill(spec, FAST, load_passwords(spec).app, "crash")
        assert run.zero_loss is False
        verdict = scenarios.crash(run, pause_wal_senders_s=2.0, expect_zero_loss=True).verdict
    finally:
        faults.set_synchronous_mode(spec, True, rest_login(load_passwords(spec)))
        _wait_for(lambda: role_holder(faults.cluster_doc(spec), "sync_standby") is not None)
    print(f"\nasync crash: {verdict.sentence}")
    assert verdict.passed is False
    assert verdict.lost_writes > 0
    assert any("acknowledged write(s) lost" in reason for reason in verdict.reasons)
    assert verdict.leader_changed and verdict.rejoin_s is not None  # rewound and streaming again


def test_a_failed_verdict_fails_the_flow_and_keeps_the_evidence(synchronous_cluster_under_drill: str,
                                                               spec: ClusterSpec) -> None:
    impossible = FAST.model_copy(update={"rto_budget_s": 0.001})
    with pytest.raises(DrillFailed, match="RTO .* is above the budget"):
        drill(synchronous_cluster_under_drill, "switchover", impossible)
    evidence = os.path.join(workdir.cluster_work_dir(spec.name), "drills")  # where the flow ran, not on a member
    reports = sorted(os.listdir(evidence))
    latest = os.path.join(evidence, reports[-1])
    assert latest == os.path.join(os.environ["DBTIER_WORK_DIR"], spec.name, "drills", reports[-1])
    assert not os.path.exists(f"{spec.cluster_dir}/drills"), "nothing of the drill is kept in the cluster's directory"
    with open(f"{latest}/verdict.json") as fh:
        record = json.load(fh)
    assert record["scenario"] == "switchover" and record["passed"] is False
    with open(f"{latest}/writes.jsonl") as fh:
        first = json.loads(fh.readline())
    assert {"id", "sent", "done", "ok"} <= set(first)


def test_cli_exits_1_with_one_line_when_the_verdict_fails(synchronous_cluster_under_drill: str) -> None:
    """An operator's drill by hand: the budget comes from the spec's drills: section via DBTIER_* overrides."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "DBTIER_DRILLS__RTO_BUDGET_S": "0.001"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.failover_drill", "--scenario", "switchover", "--spec", synchronous_cluster_under_drill],
        env=env, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("dbtier: error: ") and "above the budget" in last, last


def test_the_report_is_published_and_no_secret_leaks(synchronous_cluster_under_drill: str, spec: ClusterSpec) -> None:
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(limit=100)
        logs = client.read_logs(limit=200)
    reports = " ".join(str(a.data) for a in artifacts if a.key == f"{spec.name}-failover-drill")
    timelines = [a for a in artifacts if a.key == f"{spec.name}-crash-timeline"]  # one per crash drill run
    assert timelines
    for timeline in timelines:  # the picture, as the UI shows it, is the file its headline names
        text = str(timeline.data)
        saved = text.split("(saved as ", 1)[1].split(")", 1)[0]
        with open(saved, "rb") as fh:
            assert timeline.type == "markdown" and f"]({pictures.data_url(fh.read())})" in text
    for scenario in ("switchover", "replica-loss", "etcd-member-loss", "crash", "freeze", "etcd-quorum-loss"):
        assert f"| {scenario} |" in reports, scenario
    published = " ".join([str(a.data) + str(a.description) for a in artifacts] + [log.message for log in logs])
    for root, _, files in os.walk(os.path.join(workdir.cluster_work_dir(spec.name), "drills")):
        for name in files:
            with open(os.path.join(root, name), errors="replace") as fh:
                published += fh.read()
    leaked = [i for i, secret in enumerate(load_passwords(spec).values()) if secret in published]
    assert leaked == []


def _wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)
