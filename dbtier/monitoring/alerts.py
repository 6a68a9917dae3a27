"""The alert rules dbtier ships, as Prometheus rule groups with the spec's thresholds (pure: spec in, rules out).

Every target Prometheus scrapes for a cluster carries a ``cluster`` label and a ``job``: ``patroni`` (Patroni's
``/metrics``), ``etcd``, ``postgres`` (postgres_exporter), ``pgbouncer`` (its exporter), ``haproxy`` (HAProxy's
``/metrics``), ``node`` (node exporter, with dbtier's own metrics from its textfile collector: see
:mod:`dbtier.monitoring.metrics`). Each rule names what broke and where in its summary, and its
``runbook`` annotation says what to run. ``promtool test rules`` cases for every rule are in
``tests/unit/test_alert_rules.py``.
"""

from __future__ import annotations

from typing import Any

from dbtier.spec import ClusterSpec

#: The rule groups' names, in the order of the file.
GROUPS = ("dbtier-members", "dbtier-recovery", "dbtier-routing", "dbtier-hosts")


def _hours(h: float) -> str:
    """A Prometheus duration literal in seconds.

    >>> _hours(1.5)
    '5400'
    """
    return str(int(h * 3600))


def _rule(alert: str, expr: str, for_s: int, severity: str, summary: str, runbook: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert, "expr": expr}
    if for_s:
        rule["for"] = f"{for_s}s"
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "runbook": runbook}
    return rule


def thresholds(spec: ClusterSpec) -> dict[str, float]:
    """The numbers the rules use, the spec's defaults derived from its other sections.

    >>> t = thresholds(ClusterSpec())
    >>> t["archive_lag_s"], t["full_backup_max_age_h"], t["replication_lag_bytes"]
    (300, 192.0, 16777216)
    """
    a = spec.monitoring.alerts
    return {
        "replication_lag_bytes": a.replication_lag_bytes,
        "archive_lag_s": a.archive_lag_s if a.archive_lag_s is not None else spec.backup.archive_lag_limit_s,
        "full_backup_max_age_h": (a.full_backup_max_age_h if a.full_backup_max_age_h is not None
                                  else (spec.backup.full_every_days + 1) * 24),
        "diff_backup_max_age_h": a.diff_backup_max_age_h,
        "restore_drill_max_age_h": a.restore_drill_max_age_h,
        "failover_drill_max_age_h": a.failover_drill_max_age_h,
        "certificate_days": a.certificate_days,
        "disk_free_ratio": a.disk_free_ratio,
        "disk_full_within_h": a.disk_full_within_h,
        "down_for_s": a.down_for_s,
    }


def alert_rules(spec: ClusterSpec) -> dict[str, Any]:
    """The rules file of ``spec``'s cluster (``{"groups": [...]}``, dump it as YAML).

    >>> rules = alert_rules(ClusterSpec(name="orders"))
    >>> [g["name"] for g in rules["groups"]] == list(GROUPS)
    True
    >>> sorted(r["alert"] for g in rules["groups"] for r in g["rules"])[:4]
    ['DbtierArchiveLagHigh', 'DbtierArchivingFailing', 'DbtierBackupTooOld', 'DbtierCertificateExpiring']
    """
    t = thresholds(spec)
    c = f'cluster="{spec.name}"'
    down = int(t["down_for_s"])
    status = f"dbtier status --spec <the {spec.name} spec>"
    members = [
        _rule("DbtierTargetDown", f'up{{{c}}} == 0', down, "critical",
              "{{ $labels.job }} at {{ $labels.instance }} does not answer Prometheus",
              f"{status}; the service's log under its member directory"),
        _rule("DbtierPostgresDown", f'patroni_postgres_running{{{c}}} == 0', down, "critical",
              "PostgreSQL of {{ $labels.name }} is not running (Patroni says so)",
              f"{status}; <member dir>/patroni.log"),
        _rule("DbtierNoLeader", f'max by (cluster) (patroni_cluster_unlocked{{{c}}}) == 1', down, "critical",
              "cluster {{ $labels.cluster }} has no leader: nobody holds the leader lock",
              f"{status}; dbtier drill refuses until it is healthy"),
        _rule("DbtierFailsafeActive", f'max by (cluster) (patroni_failsafe_mode_is_active{{{c}}}) == 1', 60, "warning",
              "cluster {{ $labels.cluster }} runs in failsafe mode: etcd is out of reach",
              f"{status}: the etcd rows"),
        _rule("DbtierReplicaNotStreaming",
              f'patroni_replica{{{c}}} == 1 and on (cluster, name) patroni_postgres_streaming{{{c}}} == 0', down,
              "warning", "replica {{ $labels.name }} does not stream from the primary",
              f"{status}; <member dir>/patroni.log"),
        _rule("DbtierReplicationLag",
              f'max by (cluster) (patroni_xlog_location{{{c}}} and on (cluster, name) patroni_primary{{{c}}} == 1)'
              f' - on (cluster) group_right ()'
              f' (patroni_xlog_replayed_location{{{c}}} and on (cluster, name) patroni_replica{{{c}}} == 1)'
              f' > {int(t["replication_lag_bytes"])}', 120, "warning",
              "replica {{ $labels.name }} is {{ $value | humanize1024 }}B behind the primary",
              f"{status}: the lag column"),
        _rule("DbtierEtcdNoLeader", f'etcd_server_has_leader{{{c}}} == 0', 60, "critical",
              "etcd member {{ $labels.instance }} sees no etcd leader", f"{status}: the etcd rows"),
    ]
    recovery = [
        _rule("DbtierArchivingFailing",
              f'dbtier_archive_ok{{{c}}} == 0 or on (cluster) increase(pg_stat_archiver_failed_count{{{c}}}[5m]) > 0',
              0, "critical", "WAL archiving of {{ $labels.cluster }} fails: point-in-time restore stops at the last good file",
              "dbtier archive-health --spec <spec>; the member's pgbackrest log"),
        _rule("DbtierArchiveLagHigh", f'dbtier_archive_lag_seconds{{{c}}} > {int(t["archive_lag_s"])}', 0, "warning",
              "WAL of {{ $labels.cluster }} waited {{ $value | humanizeDuration }} to be archived",
              "dbtier archive-health --spec <spec>"),
        _rule("DbtierBackupTooOld",
              f'time() - max by (cluster, repo) (dbtier_backup_newest_timestamp_seconds{{{c},kind="full"}})'
              f' > {_hours(t["full_backup_max_age_h"])}'
              f' or time() - max by (cluster, repo) (dbtier_backup_newest_timestamp_seconds{{{c},kind=~"full|diff"}})'
              f' > {_hours(t["diff_backup_max_age_h"])}', 0, "critical",
              "the newest backup of {{ $labels.cluster }} in repository {{ $labels.repo }} is {{ $value | humanizeDuration }} old",
              "dbtier backup --spec <spec>; is the schedule served (dbtier serve --list)?"),
        _rule("DbtierRestoreDrillFailed", f'dbtier_restore_drill_passed{{{c}}} == 0', 0, "critical",
              "the last restore drill of {{ $labels.cluster }} failed: the backups may not restore",
              "the drill's verdict artifact; dbtier restore-drill --spec <spec>"),
        _rule("DbtierRestoreDrillNotRun",
              f'time() - dbtier_restore_drill_timestamp_seconds{{{c}}} > {_hours(t["restore_drill_max_age_h"])}',
              0, "warning", "no restore drill of {{ $labels.cluster }} for {{ $value | humanizeDuration }}",
              "dbtier restore-drill --spec <spec>; is the schedule served?"),
        _rule("DbtierFailoverDrillFailed", f'dbtier_failover_drill_passed{{{c}}} == 0', 0, "critical",
              "the last {{ $labels.scenario }} drill of {{ $labels.cluster }} failed",
              "the drill's verdict artifact; dbtier drill --scenario <scenario>"),
        _rule("DbtierFailoverDrillNotRun",
              f'time() - max by (cluster) (dbtier_failover_drill_timestamp_seconds{{{c}}}) > '
              f'{_hours(t["failover_drill_max_age_h"])}', 0, "warning",
              "no failover drill of {{ $labels.cluster }} for {{ $value | humanizeDuration }}",
              "dbtier drill --scenario switchover; is the schedule served?"),
        _rule("DbtierCertificateExpiring",
              f'dbtier_certificate_expiry_timestamp_seconds{{{c}}} - time() < {int(t["certificate_days"]) * 86400}',
              0, "warning", "a certificate of {{ $labels.cluster }} expires in {{ $value | humanizeDuration }}",
              "dbtier certs --spec <spec>; dbtier rotate-certs"),
    ]
    routing = [
        _rule("DbtierNoPrimaryBehindRouter",
              f'haproxy_backend_active_servers{{{c},proxy=~"rw|rw-pooled"}} == 0', down, "critical",
              "router {{ $labels.instance }} has no primary behind its {{ $labels.proxy }} route",
              f"{status}: the router lines"),
        _rule("DbtierPgBouncerDown", f'pgbouncer_up{{{c}}} == 0', down, "critical",
              "PgBouncer at {{ $labels.instance }} does not answer its exporter", "<member dir>/pgbouncer/pgbouncer.log"),
    ]
    fs = f'{c},fstype!~"tmpfs|overlay|squashfs|nsfs"'
    hosts = [
        _rule("DbtierDiskFillingUp",
              f'predict_linear(node_filesystem_avail_bytes{{{fs}}}[1h], {_hours(t["disk_full_within_h"])}) < 0'
              f' and node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}} < 0.5', 600, "warning",
              "{{ $labels.mountpoint }} on {{ $labels.instance }} fills up within "
              f"{t['disk_full_within_h']:g} h at its last hour's rate", "free space, or move data_root"),
        _rule("DbtierDiskAlmostFull",
              f'node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}} < {t["disk_free_ratio"]:g}',
              300, "critical", "{{ $labels.mountpoint }} on {{ $labels.instance }} has {{ $value | humanizePercentage }} free",
              "free space; backup retention (backup.retention)"),
    ]
    return {"groups": [{"name": name, "rules": rules}
                       for name, rules in zip(GROUPS, (members, recovery, routing, hosts), strict=True)]}
