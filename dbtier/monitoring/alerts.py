"""The alert rules dbtier ships, as Prometheus rule groups with the spec's thresholds (pure: spec in, rules out).

Every target Prometheus scrapes for a cluster carries a ``cluster`` label and a ``job`` (the engine's: ``patroni``,
``etcd``, ``postgres``, ``pgbouncer``, ``haproxy`` for PostgreSQL, ``mongodb`` for a replica set; ``node``, node
exporter, with dbtier's own metrics from its textfile collector: see :mod:`dbtier.monitoring.metrics`). The members'
rules and the routers' are the engine's (:meth:`dbtier.engines.base.Engine.alert_rules`); the backups', drills',
certificates' and hosts' are here, for every engine. Each rule names what broke and where in its summary, and its
``runbook`` annotation says what to run. ``promtool test rules`` cases for every rule are in
``tests/unit/test_alert_rules.py``.
"""

from __future__ import annotations

from typing import Any

from dbtier.engines.base import get_engine
from dbtier.spec import ClusterSpec

#: The rule groups' names, in the order of the file.
GROUPS = ("dbtier-members", "dbtier-recovery", "dbtier-routing", "dbtier-hosts")


def hours(h: float) -> str:
    """A Prometheus duration literal in seconds.

    >>> hours(1.5)
    '5400'
    """
    return str(int(h * 3600))


def rule(alert: str, expr: str, for_s: int, severity: str, summary: str, runbook: str) -> dict[str, Any]:
    """One alert rule: it fires when ``expr`` has held for ``for_s`` seconds; ``summary`` says what broke and where,
    ``runbook`` what to run."""
    found: dict[str, Any] = {"alert": alert, "expr": expr}
    if for_s:
        found["for"] = f"{for_s}s"
    found["labels"] = {"severity": severity}
    found["annotations"] = {"summary": summary, "runbook": runbook}
    return found


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
    engine = get_engine(spec).alert_rules(spec, t)
    members = [
        rule("DbtierTargetDown", f'up{{{c}}} == 0', down, "critical",
             "{{ $labels.job }} at {{ $labels.instance }} does not answer Prometheus",
             f"{status}; the service's log under its member directory"),
        *engine.members,
    ]
    recovery = [
        rule("DbtierArchivingFailing",
             f'dbtier_archive_ok{{{c}}} == 0' + (f" or {engine.archive_failing}" if engine.archive_failing else ""),
             0, "critical", f"{engine.archive_what} of {{{{ $labels.cluster }}}} fails: point-in-time restore stops at "
             "the last good file", f"dbtier archive-health --spec <spec>; {engine.archive_log}"),
        rule("DbtierArchiveLagHigh", f'dbtier_archive_lag_seconds{{{c}}} > {int(t["archive_lag_s"])}', 0, "warning",
             f"{engine.archived} of {{{{ $labels.cluster }}}} waited {{{{ $value | humanizeDuration }}}} to be archived",
              "dbtier archive-health --spec <spec>"),
        rule("DbtierBackupTooOld",
              f'time() - max by (cluster, repo) (dbtier_backup_newest_timestamp_seconds{{{c},kind="full"}})'
              f' > {hours(t["full_backup_max_age_h"])}'
              f' or time() - max by (cluster, repo) (dbtier_backup_newest_timestamp_seconds{{{c},kind=~"full|diff"}})'
              f' > {hours(t["diff_backup_max_age_h"])}', 0, "critical",
              "the newest backup of {{ $labels.cluster }} in repository {{ $labels.repo }} is {{ $value | humanizeDuration }} old",
              "dbtier backup --spec <spec>; is the schedule served (dbtier serve --list)?"),
        rule("DbtierRestoreDrillFailed", f'dbtier_restore_drill_passed{{{c}}} == 0', 0, "critical",
              "the last restore drill of {{ $labels.cluster }} failed: the backups may not restore",
              "the drill's verdict artifact; dbtier restore-drill --spec <spec>"),
        rule("DbtierRestoreDrillNotRun",
              f'time() - dbtier_restore_drill_timestamp_seconds{{{c}}} > {hours(t["restore_drill_max_age_h"])}',
              0, "warning", "no restore drill of {{ $labels.cluster }} for {{ $value | humanizeDuration }}",
              "dbtier restore-drill --spec <spec>; is the schedule served?"),
        rule("DbtierFailoverDrillFailed", f'dbtier_failover_drill_passed{{{c}}} == 0', 0, "critical",
              "the last {{ $labels.scenario }} drill of {{ $labels.cluster }} failed",
              "the drill's verdict artifact; dbtier drill --scenario <scenario>"),
        rule("DbtierFailoverDrillNotRun",
              f'time() - max by (cluster) (dbtier_failover_drill_timestamp_seconds{{{c}}}) > '
              f'{hours(t["failover_drill_max_age_h"])}', 0, "warning",
              "no failover drill of {{ $labels.cluster }} for {{ $value | humanizeDuration }}",
              "dbtier drill --scenario switchover; is the schedule served?"),
        rule("DbtierCertificateExpiring",
              f'dbtier_certificate_expiry_timestamp_seconds{{{c}}} - time() < {int(t["certificate_days"]) * 86400}',
              0, "warning", "a certificate of {{ $labels.cluster }} expires in {{ $value | humanizeDuration }}",
              "dbtier certs --spec <spec>; dbtier rotate-certs"),
    ]
    fs = f'{c},fstype!~"tmpfs|overlay|squashfs|nsfs"'
    hosts = [
        rule("DbtierDiskFillingUp",
              f'predict_linear(node_filesystem_avail_bytes{{{fs}}}[1h], {hours(t["disk_full_within_h"])}) < 0'
              f' and node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}} < 0.5', 600, "warning",
              "{{ $labels.mountpoint }} on {{ $labels.instance }} fills up within "
              f"{t['disk_full_within_h']:g} h at its last hour's rate", "free space, or move data_root"),
        rule("DbtierDiskAlmostFull",
              f'node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}} < {t["disk_free_ratio"]:g}',
              300, "critical", "{{ $labels.mountpoint }} on {{ $labels.instance }} has {{ $value | humanizePercentage }} free",
              "free space; backup retention (backup.retention)"),
    ]
    return {"groups": [{"name": name, "rules": rules}
                       for name, rules in zip(GROUPS, (members, recovery, engine.routing, hosts), strict=True) if rules]}
