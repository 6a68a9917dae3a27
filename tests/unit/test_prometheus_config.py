"""The prometheus.yml dbtier writes: promtool accepts it, and its drop rules drop what they say and nothing an
alert rule or a dashboard panel reads (Prometheus's relabelling, emulated: anchored RE2-compatible regexes)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dbtier.engines.base import ScrapeJob, get_engine
from dbtier.monitoring.alerts import alert_rules
from dbtier.monitoring.dashboard import dashboard_queries, load_dashboard
from dbtier.monitoring.stack import StackPaths, metric_relabel, prometheus_config, stack_files
from dbtier.spec import ClusterSpec
from tests.unit.test_dashboard import metric_names

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ROUTED = ClusterSpec(name="orders", routing={"enabled": True})
JOBS = get_engine(ROUTED).scrape_jobs(ROUTED)


def kept(job: ScrapeJob, name: str, **series: str) -> bool:
    """Whether Prometheus keeps a series named ``name`` (with labels ``series``) of ``job``: its
    metric_relabel_configs, applied in order."""
    labels = {"__name__": name, **series}
    for rule in metric_relabel(job):
        action = rule.get("action", "replace")
        if action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not re.fullmatch(rule["regex"], k)}
            continue
        value = ";".join(labels.get(source, "") for source in rule["source_labels"])
        if action == "replace" and re.fullmatch(rule["regex"], value):
            labels[rule["target_label"]] = rule["replacement"]
        elif action == "drop" and re.fullmatch(rule["regex"], value):
            return False
    return "__tmp_dbtier_keep" not in labels


def test_promtool_accepts_the_config_of_a_routed_cluster_with_exporters(tmp_path: Path) -> None:
    paths = StackPaths(str(tmp_path), str(tmp_path / "metrics"), str(tmp_path / "ca.crt"))
    (tmp_path / "ca.crt").write_text("")
    for path, content in stack_files(ROUTED, paths).items():
        Path(path).write_text(content)
    done = subprocess.run([PROMTOOL, "check", "config", paths.prometheus_config], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = {j["job_name"] for j in prometheus_config(ROUTED, paths)["scrape_configs"]}
    assert jobs == {"patroni", "etcd", "haproxy", "postgres", "pgbouncer", "node"}


@pytest.mark.parametrize(("job", "name", "want"), [
    ("etcd", "grpc_server_handled_total", False),
    ("etcd", "etcd_network_peer_round_trip_time_seconds_bucket", False),
    ("etcd", "etcd_disk_wal_fsync_duration_seconds_bucket", True),
    ("etcd", "etcd_disk_wal_fsync_duration_seconds_sum", True),
    ("etcd", "go_goroutines", False),
    ("haproxy", "haproxy_server_bytes_in_total", False),
    ("haproxy", "haproxy_server_status", True),
    ("haproxy", "haproxy_backend_active_servers", True),
    ("postgres", "pg_settings_shared_buffers_bytes", False),
    ("postgres", "pg_settings_max_connections", True),
    ("postgres", "pg_up", True),
    ("patroni", "patroni_primary", True),
])
def test_the_drop_rules_drop_what_they_say(job: str, name: str, want: bool) -> None:
    assert kept(next(j for j in JOBS if j.job == job), name) is want


@pytest.mark.parametrize(("datname", "want"), [("template0", False), ("template1", False), ("app", True), ("postgres", True)])
def test_the_template_databases_rows_are_dropped(datname: str, want: bool) -> None:
    postgres = next(j for j in JOBS if j.job == "postgres")
    assert kept(postgres, "pg_stat_database_xact_commit", datname=datname) is want


def test_no_alert_rule_or_dashboard_panel_reads_a_dropped_name() -> None:
    exprs = [r["expr"] for g in alert_rules(ROUTED)["groups"] for r in g["rules"]]
    exprs += [expr for _, expr in dashboard_queries(load_dashboard(), ROUTED.name)]
    used = {name for expr in exprs for name in metric_names(expr)}
    dropped = sorted((job.job, name) for job in JOBS for name in used if not kept(job, name))
    assert dropped == []


def test_the_written_config_carries_the_rules(tmp_path: Path) -> None:
    paths = StackPaths(str(tmp_path), str(tmp_path / "metrics"), str(tmp_path / "ca.crt"))
    written = yaml.safe_load(stack_files(ROUTED, paths)[paths.prometheus_config])
    etcd = next(j for j in written["scrape_configs"] if j["job_name"] == "etcd")
    assert [r.get("action", "replace") for r in etcd["metric_relabel_configs"]] == ["replace", "drop", "labeldrop"]
