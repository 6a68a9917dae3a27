"""Every alert rule dbtier ships, tested by Prometheus' own ``promtool test rules``: it fires on the series that
mean trouble, with the summary a user reads, and stays quiet just short of its threshold."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbtier.monitoring.alerts import alert_rules
from dbtier.spec import build_spec

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
pytestmark = pytest.mark.skipif(not os.path.exists(PROMTOOL), reason="promtool is not installed (make setup installs it)")
SPEC = build_spec({"name": "orders", "backup": {"full_every_days": 7, "archive_lag_limit_s": 300}}, environ={})
C = 'cluster="orders"'
PATRONI = f'job="patroni",instance="10.0.0.11:8008",{C},scope="orders"'
#: (alert, input series, eval time, expected labels but alertname and severity, expected summary) that fire.
FIRING: list[tuple[str, list[tuple[str, str]], str, dict[str, str], str]] = [
    ("DbtierTargetDown", [(f'up{{job="etcd",instance="10.0.0.12:2379",{C}}}', "1 0 0 0")], "3m",
     {"job": "etcd", "instance": "10.0.0.12:2379", "cluster": "orders"},
     "etcd at 10.0.0.12:2379 does not answer Prometheus"),
    ("DbtierPostgresDown", [(f'patroni_postgres_running{{{PATRONI},name="pg0"}}', "1 0 0 0")], "3m",
     {"job": "patroni", "instance": "10.0.0.11:8008", "cluster": "orders", "scope": "orders", "name": "pg0"},
     "PostgreSQL of pg0 is not running (Patroni says so)"),
    ("DbtierNoLeader", [(f'patroni_cluster_unlocked{{{PATRONI},name="pg0"}}', "0 1 1 1")], "3m",
     {"cluster": "orders"}, "cluster orders has no leader: nobody holds the leader lock"),
    ("DbtierFailsafeActive", [(f'patroni_failsafe_mode_is_active{{{PATRONI},name="pg1"}}', "0 1 1 1")], "3m",
     {"cluster": "orders"}, "cluster orders runs in failsafe mode: etcd is out of reach"),
    ("DbtierReplicaNotStreaming", [(f'patroni_replica{{{PATRONI},name="pg2"}}', "1 1 1 1"),
                                   (f'patroni_postgres_streaming{{{PATRONI},name="pg2"}}', "1 0 0 0")], "3m",
     {"job": "patroni", "instance": "10.0.0.11:8008", "cluster": "orders", "scope": "orders", "name": "pg2"},
     "replica pg2 does not stream from the primary"),
    ("DbtierReplicationLag", [(f'patroni_xlog_location{{{PATRONI},name="pg0"}}', "100000000+0x5"),
                              (f'patroni_primary{{{PATRONI},name="pg0"}}', "1+0x5"),
                              (f'patroni_xlog_replayed_location{{{PATRONI},name="pg1"}}', "70000000+0x5"),
                              (f'patroni_replica{{{PATRONI},name="pg1"}}', "1+0x5")], "4m",
     {"job": "patroni", "instance": "10.0.0.11:8008", "cluster": "orders", "scope": "orders", "name": "pg1"},
     "replica pg1 is 28.61MiB behind the primary"),
    ("DbtierEtcdNoLeader", [(f'etcd_server_has_leader{{job="etcd",instance="10.0.0.12:2379",{C}}}', "1 0 0 0")], "3m",
     {"job": "etcd", "instance": "10.0.0.12:2379", "cluster": "orders"}, "etcd member 10.0.0.12:2379 sees no etcd leader"),
    ("DbtierArchivingFailing", [(f'dbtier_archive_ok{{job="node",instance="h1:9100",{C}}}', "0")], "0m",
     {"job": "node", "instance": "h1:9100", "cluster": "orders"},
     "WAL archiving of orders fails: point-in-time restore stops at the last good file"),
    ("DbtierArchiveLagHigh", [(f'dbtier_archive_lag_seconds{{job="node",instance="h1:9100",{C}}}', "301")], "0m",
     {"job": "node", "instance": "h1:9100", "cluster": "orders"}, "WAL of orders waited 5m 1s to be archived"),
    ("DbtierBackupTooOld", [(f'dbtier_backup_newest_timestamp_seconds{{job="node",instance="h1:9100",{C},repo="1",kind="full"}}',
                             "-691300")], "0m",
     {"cluster": "orders", "repo": "1"}, "the newest backup of orders in repository 1 is 8d 0h 1m 40s old"),
    ("DbtierRestoreDrillFailed", [(f'dbtier_restore_drill_passed{{job="node",instance="h1:9100",{C}}}', "0")], "0m",
     {"job": "node", "instance": "h1:9100", "cluster": "orders"},
     "the last restore drill of orders failed: the backups may not restore"),
    ("DbtierRestoreDrillNotRun", [(f'dbtier_restore_drill_timestamp_seconds{{job="node",instance="h1:9100",{C}}}',
                                   "-691300")], "0m",
     {"job": "node", "instance": "h1:9100", "cluster": "orders"}, "no restore drill of orders for 8d 0h 1m 40s"),
    ("DbtierFailoverDrillFailed", [(f'dbtier_failover_drill_passed{{job="node",instance="h1:9100",{C},scenario="crash"}}',
                                    "0")], "0m",
     {"job": "node", "instance": "h1:9100", "cluster": "orders", "scenario": "crash"},
     "the last crash drill of orders failed"),
    ("DbtierFailoverDrillNotRun", [(f'dbtier_failover_drill_timestamp_seconds{{job="node",instance="h1:9100",{C},scenario="crash"}}',
                                    "-691300")], "0m",
     {"cluster": "orders"}, "no failover drill of orders for 8d 0h 1m 40s"),
    ("DbtierCertificateExpiring", [(f'dbtier_certificate_expiry_timestamp_seconds{{job="node",instance="h1:9100",{C}}}',
                                    "1814300")], "0m",
     {"job": "node", "instance": "h1:9100", "cluster": "orders"}, "a certificate of orders expires in 20d 23h 58m 20s"),
    ("DbtierNoPrimaryBehindRouter", [(f'haproxy_backend_active_servers{{job="haproxy",instance="10.0.0.11:7000",{C},proxy="rw"}}',
                                      "1 0 0 0")], "3m",
     {"job": "haproxy", "instance": "10.0.0.11:7000", "cluster": "orders", "proxy": "rw"},
     "router 10.0.0.11:7000 has no primary behind its rw route"),
    ("DbtierPgBouncerDown", [(f'pgbouncer_up{{job="pgbouncer",instance="10.0.0.11:9127",{C}}}', "1 0 0 0")], "3m",
     {"job": "pgbouncer", "instance": "10.0.0.11:9127", "cluster": "orders"},
     "PgBouncer at 10.0.0.11:9127 does not answer its exporter"),
    ("DbtierDiskAlmostFull", [(f'node_filesystem_avail_bytes{{job="node",instance="h1:9100",{C},mountpoint="/srv",fstype="ext4"}}', "5+0x10"),
                              (f'node_filesystem_size_bytes{{job="node",instance="h1:9100",{C},mountpoint="/srv",fstype="ext4"}}', "100+0x10")],
     "8m", {"job": "node", "instance": "h1:9100", "cluster": "orders", "mountpoint": "/srv", "fstype": "ext4"},
     "/srv on h1:9100 has 5% free"),
    ("DbtierDiskFillingUp", [(f'node_filesystem_avail_bytes{{job="node",instance="h1:9100",{C},mountpoint="/srv",fstype="ext4"}}',
                              "40000-200x90"),
                             (f'node_filesystem_size_bytes{{job="node",instance="h1:9100",{C},mountpoint="/srv",fstype="ext4"}}', "100000+0x90")],
     "80m", {"job": "node", "instance": "h1:9100", "cluster": "orders", "mountpoint": "/srv", "fstype": "ext4"},
     "/srv on h1:9100 fills up within 4 h at its last hour's rate"),
]
#: (alert, input series, eval time) just short of firing.
QUIET: list[tuple[str, list[tuple[str, str]], str]] = [
    ("DbtierTargetDown", [(f'up{{job="etcd",instance="10.0.0.12:2379",{C}}}', "1 1 1 0")], "3m"),  # down for 0 s only
    ("DbtierTargetDown", [('up{job="etcd",instance="x:1",cluster="other"}', "0 0 0 0")], "3m"),  # another cluster's
    ("DbtierReplicationLag", [(f'patroni_xlog_location{{{PATRONI},name="pg0"}}', "100000000+0x5"),
                              (f'patroni_primary{{{PATRONI},name="pg0"}}', "1+0x5"),
                              (f'patroni_xlog_replayed_location{{{PATRONI},name="pg1"}}', "90000000+0x5"),
                              (f'patroni_replica{{{PATRONI},name="pg1"}}', "1+0x5")], "4m"),
    ("DbtierArchiveLagHigh", [(f'dbtier_archive_lag_seconds{{{C}}}', "300")], "0m"),
    ("DbtierBackupTooOld", [(f'dbtier_backup_newest_timestamp_seconds{{{C},repo="1",kind="full"}}', "-691100"),
                            (f'dbtier_backup_newest_timestamp_seconds{{{C},repo="1",kind="diff"}}', "-129000")], "0m"),
    ("DbtierCertificateExpiring", [(f'dbtier_certificate_expiry_timestamp_seconds{{{C}}}', "1814500")], "0m"),
    ("DbtierDiskFillingUp", [(f'node_filesystem_avail_bytes{{{C},mountpoint="/srv",fstype="ext4"}}', "40000-1x90"),
                             (f'node_filesystem_size_bytes{{{C},mountpoint="/srv",fstype="ext4"}}', "100000+0x90")], "80m"),
    ("DbtierDiskAlmostFull", [(f'node_filesystem_avail_bytes{{{C},mountpoint="/run",fstype="tmpfs"}}', "1+0x10"),
                              (f'node_filesystem_size_bytes{{{C},mountpoint="/run",fstype="tmpfs"}}', "100+0x10")], "8m"),
]


def _rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in alert_rules(SPEC)["groups"] for r in g["rules"]}


def _promtool(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(alert_rules(SPEC), sort_keys=False))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m",
                                                        "tests": tests}, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def test_promtool_accepts_the_rules_file(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(alert_rules(SPEC), sort_keys=False))
    done = subprocess.run([PROMTOOL, "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_every_rule_has_a_firing_case_and_says_what_to_run() -> None:
    assert {case[0] for case in FIRING} == set(_rules())
    assert all(r["annotations"]["runbook"] and r["labels"]["severity"] in ("critical", "warning")
               for r in _rules().values())


@pytest.mark.parametrize("case", FIRING, ids=[case[0] for case in FIRING])
def test_the_rule_fires_with_its_summary(tmp_path: Path, case: tuple[str, list[tuple[str, str]], str, dict[str, str], str]) -> None:
    alert, series, at, labels, summary = case
    rule = _rules()[alert]
    test = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": [{
                "exp_labels": {**labels, "severity": rule["labels"]["severity"]},
                "exp_annotations": {"summary": summary, "runbook": rule["annotations"]["runbook"]}}]}]}
    done = _promtool(tmp_path, [test])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("case", QUIET, ids=[f"{case[0]}-{i}" for i, case in enumerate(QUIET)])
def test_the_rule_stays_quiet_short_of_its_threshold(tmp_path: Path, case: tuple[str, list[tuple[str, str]], str]) -> None:
    alert, series, at = case
    test = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}]}
    done = _promtool(tmp_path, [test])
    assert done.returncode == 0, done.stdout + done.stderr


def test_thresholds_follow_the_spec(tmp_path: Path) -> None:
    """A spec that tolerates less lag fires where the default stays quiet."""
    strict = build_spec({"name": "orders", "monitoring": {"alerts": {"replication_lag_bytes": 1000}}}, environ={})
    rule = next(r for g in alert_rules(strict)["groups"] for r in g["rules"] if r["alert"] == "DbtierReplicationLag")
    assert rule["expr"].endswith("> 1000")


def test_the_readme_describes_every_alert() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [alert for alert in _rules() if f"| {alert} |" not in readme] == []


# -- a replica set's rules: its members through dbtier's MongoDB exporter, and the shared ones -----------------------

MONGO = build_spec({"name": "orders", "engine": "mongodb"}, environ={})
MONGOD = f'job="mongodb",instance="10.0.0.21:27017",{C}'
MONGO_LABELS = {"job": "mongodb", "instance": "10.0.0.21:27017", "cluster": "orders"}
MONGO_FIRING: list[tuple[str, list[tuple[str, str]], str, dict[str, str], str]] = [
    ("DbtierMongoMemberDown", [(f'mongodb_up{{{MONGOD},member="mongo0"}}', "1 0 0 0")], "3m",
     {**MONGO_LABELS, "member": "mongo0"}, "mongod of mongo0 does not answer"),
    ("DbtierMongoNoPrimary", [(f'mongodb_member_primary{{{MONGOD},member="mongo0"}}', "1 0 0 0"),
                              (f'mongodb_member_primary{{job="mongodb",instance="10.0.0.22:27018",{C},member="mongo1"}}',
                               "0 0 0 0")], "3m", {"cluster": "orders"},
     "replica set orders has no primary: writes fail"),
    ("DbtierMongoReplicationLag", [(f'mongodb_replication_lag_seconds{{{MONGOD},member="mongo1"}}', "45+0x5")], "4m",
     {**MONGO_LABELS, "member": "mongo1"}, "mongo1 is 45s behind the primary"),
    ("DbtierArchivingFailing", [(f'dbtier_archive_ok{{job="node",instance="h1:9100",{C}}}', "0")], "0m",
     {"job": "node", "instance": "h1:9100", "cluster": "orders"},
     "oplog archiving of orders fails: point-in-time restore stops at the last good file"),
]
MONGO_QUIET: list[tuple[str, list[tuple[str, str]], str]] = [
    ("DbtierMongoNoPrimary", [(f'mongodb_member_primary{{{MONGOD},member="mongo0"}}', "1 1 1 1"),
                              (f'mongodb_member_primary{{job="mongodb",instance="10.0.0.22:27018",{C},member="mongo1"}}',
                               "0 0 0 0")], "3m"),
    ("DbtierMongoReplicationLag", [(f'mongodb_replication_lag_seconds{{{MONGOD},member="mongo1"}}', "30+0x5")], "4m"),
    ("DbtierMongoMemberDown", [(f'mongodb_up{{{MONGOD},member="mongo0"}}', "1 1 1 1")], "3m"),
]


def _mongo_rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in alert_rules(MONGO)["groups"] for r in g["rules"]}


def _promtool_mongo(tmp_path: Path, test: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(alert_rules(MONGO), sort_keys=False))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m",
                                                        "tests": [test]}, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def test_a_replica_sets_rules_are_its_own_and_the_shared_ones(tmp_path: Path) -> None:
    rules = _mongo_rules()
    assert {"DbtierMongoMemberDown", "DbtierMongoNoPrimary", "DbtierMongoReplicationLag", "DbtierTargetDown",
            "DbtierArchivingFailing", "DbtierBackupTooOld", "DbtierRestoreDrillFailed"} <= set(rules)
    assert not [name for name, r in rules.items() if "patroni" in r["expr"] or "pg_" in r["expr"]
                or "haproxy" in r["expr"] or "pgbouncer" in r["expr"]], "no PostgreSQL series in a replica set's rules"
    assert [g["name"] for g in alert_rules(MONGO)["groups"]] == ["dbtier-members", "dbtier-recovery", "dbtier-hosts"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(alert_rules(MONGO), sort_keys=False))
    done = subprocess.run([PROMTOOL, "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and f"SUCCESS: {len(rules)} rules found" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("case", MONGO_FIRING, ids=[case[0] for case in MONGO_FIRING])
def test_a_replica_sets_rule_fires_with_its_summary(tmp_path: Path,
                                                    case: tuple[str, list[tuple[str, str]], str, dict[str, str], str]
                                                    ) -> None:
    alert, series, at, labels, summary = case
    rule = _mongo_rules()[alert]
    done = _promtool_mongo(tmp_path, {
        "interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": [{
            "exp_labels": {**labels, "severity": rule["labels"]["severity"]},
            "exp_annotations": {"summary": summary, "runbook": rule["annotations"]["runbook"]}}]}]})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("case", MONGO_QUIET, ids=[f"{case[0]}-{i}" for i, case in enumerate(MONGO_QUIET)])
def test_a_replica_sets_rule_stays_quiet_short_of_its_threshold(tmp_path: Path,
                                                                case: tuple[str, list[tuple[str, str]], str]) -> None:
    alert, series, at = case
    done = _promtool_mongo(tmp_path, {"interval": "1m",
                                      "input_series": [{"series": s, "values": v} for s, v in series],
                                      "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}]})
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_describes_every_replica_set_alert() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [alert for alert in _mongo_rules() if f"| {alert} |" not in readme] == []
