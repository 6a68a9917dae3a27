"""PostgreSQL's alert rules: Patroni's members, etcd, the routers and PgBouncers (pure; the shared rules and the
file are :mod:`dbtier.monitoring.alerts`'s)."""

from __future__ import annotations

from dbtier.engines.base import EngineAlerts
from dbtier.monitoring.alerts import rule
from dbtier.spec import ClusterSpec


def alert_rules(spec: ClusterSpec, t: dict[str, float]) -> EngineAlerts:
    """Patroni's and etcd's rules, the routers', and pgBackRest's failures as archiving failures.

    >>> found = alert_rules(ClusterSpec(name="orders"), {"down_for_s": 30, "replication_lag_bytes": 1024})
    >>> [r["alert"] for r in found.members][:2], [r["alert"] for r in found.routing]
    (['DbtierPostgresDown', 'DbtierNoLeader'], ['DbtierNoPrimaryBehindRouter', 'DbtierPgBouncerDown'])
    """
    c = f'cluster="{spec.name}"'
    down = int(t["down_for_s"])
    status = f"dbtier status --spec <the {spec.name} spec>"
    members = [
        rule("DbtierPostgresDown", f'patroni_postgres_running{{{c}}} == 0', down, "critical",
             "PostgreSQL of {{ $labels.name }} is not running (Patroni says so)",
             f"{status}; <member dir>/patroni.log"),
        rule("DbtierNoLeader", f'max by (cluster) (patroni_cluster_unlocked{{{c}}}) == 1', down, "critical",
             "cluster {{ $labels.cluster }} has no leader: nobody holds the leader lock",
             f"{status}; dbtier drill refuses until it is healthy"),
        rule("DbtierFailsafeActive", f'max by (cluster) (patroni_failsafe_mode_is_active{{{c}}}) == 1', 60, "warning",
             "cluster {{ $labels.cluster }} runs in failsafe mode: etcd is out of reach",
             f"{status}: the etcd rows"),
        rule("DbtierReplicaNotStreaming",
             f'patroni_replica{{{c}}} == 1 and on (cluster, name) patroni_postgres_streaming{{{c}}} == 0', down,
             "warning", "replica {{ $labels.name }} does not stream from the primary",
             f"{status}; <member dir>/patroni.log"),
        rule("DbtierReplicationLag",
             f'max by (cluster) (patroni_xlog_location{{{c}}} and on (cluster, name) patroni_primary{{{c}}} == 1)'
             f' - on (cluster) group_right ()'
             f' (patroni_xlog_replayed_location{{{c}}} and on (cluster, name) patroni_replica{{{c}}} == 1)'
             f' > {int(t["replication_lag_bytes"])}', 120, "warning",
             "replica {{ $labels.name }} is {{ $value | humanize1024 }}B behind the primary",
             f"{status}: the lag column"),
        rule("DbtierEtcdNoLeader", f'etcd_server_has_leader{{{c}}} == 0', 60, "critical",
             "etcd member {{ $labels.instance }} sees no etcd leader", f"{status}: the etcd rows"),
    ]
    routing = [
        rule("DbtierNoPrimaryBehindRouter",
             f'haproxy_backend_active_servers{{{c},proxy=~"rw|rw-pooled"}} == 0', down, "critical",
             "router {{ $labels.instance }} has no primary behind its {{ $labels.proxy }} route",
             f"{status}: the router lines"),
        rule("DbtierPgBouncerDown", f'pgbouncer_up{{{c}}} == 0', down, "critical",
             "PgBouncer at {{ $labels.instance }} does not answer its exporter", "<member dir>/pgbouncer/pgbouncer.log"),
    ]
    return EngineAlerts(members, routing, archive_failing=f"on (cluster) increase(pg_stat_archiver_failed_count{{{c}}}[5m]) > 0",
                        archive_what="WAL archiving", archived="WAL", archive_log="the member's pgbackrest log")
