"""The monitoring stack on real processes: Prometheus, Alertmanager and node exporter in front of a routed cluster.

Runbook (local provider, port block 25; the stack on +70..+72, the test's webhook receiver on +73; scrapes and
rule evaluations every 2 s so that nothing waits long):
1. ``monitor`` before anything listens on a busy port is refused in one line;
2. ``make monitor``'s flow: the exporters start on the hosts; every target (Patroni x3, etcd x3, HAProxy, node
   exporter, PostgreSQL's exporter x3, each PgBouncer x3 through dbtier's PgBouncer exporter) is up, every rule
   loaded, every query of the Grafana dashboard returns data;
3. WAL archiving broken for real (the repository made unwritable): archive health fails, the archiving alert fires
   in Prometheus, reaches Alertmanager, which posts it to the webhook; healed, it resolves and the webhook hears so;
4. an old backup (dbtier's own metric, time-shifted, not a sleep) fires the backup-age alert;
5. the replicas stop streaming (the primary refuses the replication role's logins and ends its walsenders): the
   streaming alert fires for both, ``dbtier status`` says so on its alerts line; allowed again, it resolves;
6. teardown stops the exporters and the stack with the cluster.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from blocks.passwords import load_passwords
from dbtier.engines.base import get_engine
from dbtier.engines.postgres.patroni_config import SUPERUSER
from dbtier.engines.postgres.engine import connect
from dbtier.errors import BackupError
from dbtier.monitoring import run
from dbtier.monitoring.alerts import alert_rules
from dbtier.monitoring.dashboard import dashboard_queries, load_dashboard
from dbtier.monitoring.metrics import backup_samples, failover_drill_samples, restore_drill_samples
from dbtier.monitoring.textfile import write_metrics
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import client_dsn, conninfo
from tests.clusters import TEST_PORT_BASE, dbtier_metric, eventually, listening, provisioned_by_flow, shared_tmpdir, spec_for_tests

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK = 25
BASE = TEST_PORT_BASE + 100 * BLOCK
HOOK_PORT = BASE + 73


class Hook(ThreadingHTTPServer):
    """The webhook receiver: every notification Alertmanager posts, as JSON."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", HOOK_PORT), HookHandler)


class HookHandler(BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        return


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    server = Hook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    made = spec_for_tests("mon", block=BLOCK, data_root=shared_tmpdir("dbtier-monitoring-"), routing={"enabled": True})
    data = made.model_dump(mode="json")
    data["monitoring"].update({"scrape_interval_s": 2, "evaluation_interval_s": 2,
                               "webhook_url": f"http://127.0.0.1:{HOOK_PORT}/alerts"})
    data["monitoring"]["alerts"]["down_for_s"] = 2
    data["monitoring"]["exporters"]["enabled"] = True
    data["backup"]["archive_timeout_s"] = 60
    return ClusterSpec.model_validate(data)


@pytest.fixture(scope="module")
def monitored(prefect_harness: None, spec: ClusterSpec, hook: Hook) -> Iterator[dict[str, Any]]:
    from flows.monitoring import monitoring

    with provisioned_by_flow(spec, wipe=True) as spec_file:
        try:
            try:
                result = monitoring(spec_path=spec_file)
            except Exception:
                for service in get_engine(spec).exporter_services(spec):  # why an exporter is down, in the report
                    with open(service.logfile, errors="replace") as log:
                        print(f"--- {service.logfile}\n{log.read()[-2000:]}")
                raise
            yield {"spec_file": spec_file, "result": result}
        finally:
            run.stop_stack(spec)  # by pid, whatever the tests did


def notified(hook: Hook, alert: str, status: str) -> list[dict[str, Any]]:
    return [a for n in hook.received for a in n.get("alerts", [])
            if a["labels"].get("alertname") == alert and a["status"] == status]


def test_a_busy_monitoring_port_is_refused_in_one_line(spec: ClusterSpec, prefect_harness: None) -> None:
    """Runs first: nothing of the stack listens yet."""
    from tests.clusters import write_spec

    path = write_spec(spec, os.path.join(spec.data_root, "busy.yaml"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", spec.monitoring.ports.alertmanager))
        sock.listen(1)
        done = subprocess.run([sys.executable, "-m", "flows.monitoring", "--spec", path], capture_output=True,
                              text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"dbtier: error: monitoring.ports.alertmanager: 127.0.0.1:{spec.monitoring.ports.alertmanager} (for "
        "alertmanager) is already in use; choose another port in monitoring.ports or stop what holds it"]
    assert not listening(spec.monitoring.ports.prometheus)


def test_every_target_is_up_and_every_rule_loaded(monitored: dict[str, Any], spec: ClusterSpec) -> None:
    states = run.target_states(spec)
    assert sorted((job, health) for job, _, health, _ in states) == sorted(
        [("patroni", "up")] * 3 + [("etcd", "up")] * 3 + [("haproxy", "up"), ("node", "up")]
        + [("postgres", "up")] * 3 + [("pgbouncer", "up")] * 3)
    loaded = {r["name"] for g in run.prometheus_api(spec, "rules")["groups"] for r in g["rules"]}
    assert loaded == {r["alert"] for g in alert_rules(spec)["groups"] for r in g["rules"]}
    assert monitored["result"]["targets"].startswith("Prometheus scrapes 14 targets, all up")
    # The exporters log in: PostgreSQL's sees its member (pg_up 1, over TLS as the monitoring role).
    pg_up = run.prometheus_api(spec, "query", query=f'pg_up{{cluster="{spec.name}"}}')["result"]
    assert sorted(float(r["value"][1]) for r in pg_up) == [1.0, 1.0, 1.0]
    # dbtier's PgBouncer exporter reads each console (as the monitoring role, over TLS): one sample per PgBouncer,
    # labelled with that PgBouncer's address; the queries the app sends through each one are counted there.
    bouncers = [f"127.0.0.1:{spec.pg.ports.pgbouncer + i}" for i in range(3)]
    up = run.prometheus_api(spec, "query", query=f'pgbouncer_up{{cluster="{spec.name}"}}')["result"]
    assert sorted((r["metric"]["instance"], float(r["value"][1])) for r in up) == [(b, 1.0) for b in bouncers]
    app_password = load_passwords(spec).app
    for i in range(3):
        with connect(conninfo(spec, "127.0.0.1", spec.pg.ports.pgbouncer + i, spec.app.user, spec.app.database),
                     app_password, prepare_threshold=None) as conn:
            for _ in range(5):
                conn.execute("SELECT 1")
    query = f'pgbouncer_stats_queries_pooled_total{{cluster="{spec.name}",database="{spec.app.database}"}} >= 5'
    eventually("each PgBouncer's queries reach Prometheus", lambda: {
        r["metric"]["instance"] for r in run.prometheus_api(spec, "query", query=query)["result"]} == set(bouncers),
        timeout=30)
    # Patroni's own metrics arrive with the cluster label: one primary, two streaming replicas.
    primaries = run.prometheus_api(spec, "query", query=f'sum(patroni_primary{{cluster="{spec.name}"}})')
    assert float(primaries["result"][0]["value"][1]) == 1
    # dbtier's own: provision left the first certificate's expiry, and Prometheus reads it through node exporter.
    expiry = dbtier_metric(spec.name, "certificates", "dbtier_certificate_expiry_timestamp_seconds")
    assert expiry is not None and expiry - time.time() > 90 * 86400, "months of validity"
    seen = run.prometheus_api(spec, "query", query="dbtier_certificate_expiry_timestamp_seconds")["result"]
    assert [float(r["value"][1]) for r in seen] == [expiry] and seen[0]["metric"]["job"] == "node"


def test_broken_archiving_reaches_the_webhook_and_healing_resolves_it(monitored: dict[str, Any], spec: ClusterSpec,
                                                                     hook: Hook) -> None:
    from flows.archive_health import archive_health

    repository = os.path.join(spec.data_root, "backups")
    passwords = load_passwords(spec)
    mode = os.stat(repository).st_mode & 0o777
    os.chmod(repository, 0o000)  # pgBackRest (the database OS user) can no longer write a WAL file there
    try:
        def archiving_failed() -> bool:
            with connect(client_dsn(spec, SUPERUSER, "postgres"), passwords.superuser) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS mon_probe (x int)")
                conn.execute("INSERT INTO mon_probe VALUES (1)")
                conn.execute("SELECT pg_switch_wal()")
                return bool(conn.execute("SELECT failed_count > 0 FROM pg_stat_archiver").fetchone()[0])

        eventually("the archiver fails", archiving_failed, timeout=60)
        with pytest.raises(BackupError):
            archive_health(spec_path=monitored["spec_file"])
        fired = eventually("DbtierArchivingFailing reaches the webhook",
                         lambda: notified(hook, "DbtierArchivingFailing", "firing"), timeout=90)
        assert fired[0]["labels"]["cluster"] == spec.name and fired[0]["labels"]["severity"] == "critical"
        assert "WAL archiving of mon fails" in fired[0]["annotations"]["summary"]
    finally:
        os.chmod(repository, mode)

    def healthy_again() -> bool:
        with connect(client_dsn(spec, SUPERUSER, "postgres"), passwords.superuser) as conn:
            conn.execute("SELECT pg_switch_wal()")  # a new .ready file wakes the archiver out of its back-off
        time.sleep(1)
        try:
            return bool(archive_health(spec_path=monitored["spec_file"])["healthy"])
        except BackupError:
            time.sleep(2)
            return False

    eventually("archive health passes again", healthy_again, timeout=120)
    resolved = eventually("the webhook hears it resolved", lambda: notified(hook, "DbtierArchivingFailing", "resolved"),
                        timeout=120)
    assert resolved[0]["labels"]["cluster"] == spec.name


def test_an_old_backup_fires_the_backup_age_alert(monitored: dict[str, Any], spec: ClusterSpec, hook: Hook) -> None:
    nine_days_ago = time.time() - 9 * 86400
    write_metrics(spec.name, "backup", backup_samples({(1, "full"): nine_days_ago, (1, "diff"): nine_days_ago}))
    fired = eventually("DbtierBackupTooOld reaches the webhook", lambda: notified(hook, "DbtierBackupTooOld", "firing"),
                     timeout=90)
    assert fired[0]["labels"]["repo"] == "1"
    assert "is 9d" in fired[0]["annotations"]["summary"]


def firing(spec: ClusterSpec, alert: str) -> list[dict[str, Any]]:
    return [a for a in run.prometheus_api(spec, "alerts")["alerts"]
            if a["labels"].get("alertname") == alert and a["state"] == "firing"]


def test_replicas_that_stop_streaming_fire_the_streaming_alert_and_status_says_so(monitored: dict[str, Any],
                                                                                    spec: ClusterSpec) -> None:
    from dbtier.engines.postgres.patroni_config import REPLICATION_USER

    passwords = load_passwords(spec)

    def replication(login: bool) -> None:
        with connect(client_dsn(spec, SUPERUSER, "postgres"), passwords.superuser) as conn:
            conn.execute(f"ALTER ROLE {REPLICATION_USER} {'LOGIN' if login else 'NOLOGIN'}")
            if not login:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")

    query = f'patroni_replica{{cluster="{spec.name}"}} == 1'
    replicas = sorted(r["metric"]["name"] for r in run.prometheus_api(spec, "query", query=query)["result"])
    assert len(replicas) == 2
    replication(login=False)
    try:
        alerts = eventually("DbtierReplicaNotStreaming fires for both replicas",
                            lambda: len(firing(spec, "DbtierReplicaNotStreaming")) == 2 and firing(spec, "DbtierReplicaNotStreaming"),
                            timeout=90)
        assert sorted(a["labels"]["name"] for a in alerts) == replicas
        done = subprocess.run([sys.executable, "-m", "dbtier.cli", "status", "--spec", monitored["spec_file"]],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        line = next((x for x in done.stdout.splitlines() if x.startswith("alerts:")), "")
        assert "DbtierReplicaNotStreaming" in line and line.count("DbtierReplicaNotStreaming") == 2, done.stdout + done.stderr
        assert all(name in line for name in replicas), line
    finally:
        replication(login=True)
    eventually("both replicas stream again",
               lambda: sorted(float(r["value"][1]) for r in run.prometheus_api(
                   spec, "query", query=f'patroni_postgres_streaming{{cluster="{spec.name}"}} and on (cluster, name) '
                                        f'patroni_replica{{cluster="{spec.name}"}} == 1')["result"]) == [1.0, 1.0], timeout=90)
    eventually("the streaming alert resolves", lambda: not firing(spec, "DbtierReplicaNotStreaming"), timeout=60)


def test_every_dashboard_query_returns_data(monitored: dict[str, Any], spec: ClusterSpec) -> None:
    """The Grafana dashboard's queries against the live Prometheus (Grafana is in no registry here). The drills'
    figures are written as the drill flows write them (their textfile), not by running drills in this module."""
    now = time.time()
    write_metrics(spec.name, "restore-drill", restore_drill_samples(True, 12.5, now))
    write_metrics(spec.name, "drill-crash", failover_drill_samples("crash", True, 9.0, 0, now))
    write_metrics(spec.name, "backup", backup_samples({(1, "full"): now}))
    queries = [(title, expr.replace("$__rate_interval", "1m")) for title, expr in dashboard_queries(load_dashboard(), spec.name)]

    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in queries
                if not run.prometheus_api(spec, "query", query=expr)["result"]]

    eventually("every dashboard query returns data", lambda: not empty(), timeout=60)
    assert len(queries) >= 20


def test_teardown_stops_the_stack_with_the_cluster(monitored: dict[str, Any], spec: ClusterSpec) -> None:
    from flows.teardown import teardown

    said = teardown(spec_path=monitored["spec_file"])
    assert any(s.startswith("prometheus (pid") for s in said), said
    ports = spec.monitoring.ports
    assert not [p for p in (ports.prometheus, ports.alertmanager, ports.node_exporter) if listening(p)]
    assert run.stack_running(spec) == []
    exporters = spec.monitoring.exporters
    assert not [p for p in range(exporters.postgres, exporters.postgres + 3) if listening(p)], "the exporters stopped"
    assert not listening(exporters.pgbouncer), "dbtier's PgBouncer exporter stopped with the stack"


def test_no_password_reaches_the_stacks_files(monitored: dict[str, Any], spec: ClusterSpec) -> None:
    """But the PgBouncer exporter's pgpass file, which holds the monitoring role's password only, mode 0600."""
    root = run.stack_paths(spec).root
    passwords = load_passwords(spec)
    pgpass = os.path.join(root, "pgbouncer-exporter.pgpass")
    text = ""
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if os.path.isfile(path) and path != pgpass:
            with open(path, errors="replace") as fh:
                text += fh.read()
    assert text and not [s for s in passwords.values() if s in text]
    assert os.stat(pgpass).st_mode & 0o777 == 0o600
    with open(pgpass) as fh:
        secret = fh.read()
    assert [s for s in passwords.values() if s in secret] == [passwords.monitoring]
