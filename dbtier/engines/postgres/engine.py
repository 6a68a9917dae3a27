"""PostgreSQL managed by Patroni, with etcd as its consensus store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from dbtier.engines.postgres import etcd, etcd_auth, patroni_rest
from dbtier.engines.base import ClusterStatus, Engine, EngineAlerts, HostPorts, ScrapeJob
from dbtier.audit import PGAUDIT, preloads_pgaudit
from dbtier.engines.postgres import pg_admin, pg_roles
from dbtier.engines.postgres import routing
from dbtier.engines.postgres import haproxy_config, keepalived_config, pg_exporters, pg_routes, pgbouncer_config
from dbtier.engines.postgres import pg_firewall
from dbtier.engines.postgres.patroni_config import patroni_argv, render_patroni_config
from dbtier.errors import ClusterUnhealthy, DbtierError
from dbtier.health import Health
from dbtier.engines.postgres.patroni_health import assess, member_rows, merge_live, role_holder
from dbtier.procs import Service
from dbtier.providers.base import Provider, Runner
from dbtier.secrets import Passwords, SecretRole
from dbtier.spec import ClusterSpec, port_plan, routing_plan
from dbtier.tls import CertHolder
from dbtier.engines.postgres.topology import PgMember, client_dsn, conninfo, etcd_members, pg_member, pg_members

if TYPE_CHECKING:
    from dbtier.backup.catalog import Catalog
    from dbtier.backup.archive import ArchiveVerdict
    from dbtier.backup.drill import CopyChecks, Marker
    from datetime import datetime

    from dbtier.backup.repos import BackupSecrets
    from dbtier.backup.restore import RestorePlan
    from dbtier.drills.verdict import DrillResult
    from dbtier.spec import DrillSettings


#: The libraries the server loaded at start (a row of :func:`pg_admin.run_sql`).
PRELOADED = "SELECT 'preload', current_setting('shared_preload_libraries')"


def _loads_pgaudit(rows: list[list[str]]) -> bool:
    """
    >>> _loads_pgaudit([["role", "app"], ["preload", "pg_stat_statements,pgaudit"]]), _loads_pgaudit([["preload", ""]])
    (True, False)
    """
    return any(row[0] == "preload" and preloads_pgaudit({"shared_preload_libraries": row[1]}) for row in rows)


def fetch_cluster(spec: ClusterSpec, timeout: float = 2.0, avoid: str | None = None) -> dict[str, Any] | None:
    """Patroni's ``/cluster`` document from the first member that answers, skipping ``avoid`` (a frozen one)."""
    for member in pg_members(spec):
        if member.name == avoid:
            continue
        doc = patroni_rest.get_json(spec, member, "/cluster", timeout)
        if doc is not None:
            return doc
    return None


def fetch_live(spec: ClusterSpec, timeout: float = 2.0) -> dict[str, dict[str, Any] | None]:
    """Each member's own ``GET /patroni`` answer (None for a member that does not answer)."""
    live: dict[str, dict[str, Any] | None] = {}
    for member in pg_members(spec):
        live[member.name] = patroni_rest.get_json(spec, member, "/patroni", timeout)
    return live


def connect(conninfo: str, password: str, **kwargs: Any) -> Any:
    """A psycopg connection; the password goes as a keyword, never into the conninfo or a message."""
    import psycopg

    return psycopg.connect(conninfo, password=password, autocommit=True, **kwargs)


#: What Prometheus drops of each job's scrape, but the names kept: measured on the 3-member default with routing,
#: the head held 8114 series, of which etcd's per-method gRPC counters were 2400, its histograms' buckets ~700,
#: HAProxy's per-server figures ~1300, PostgreSQL's settings ~750 and the template databases' rows ~350; without
#: them it holds about 1800 (bench/monitoring.py prints the figures).
ETCD_DROP = (r"grpc_server_.+", r"etcd_debugging_.+", r".+_bucket")
ETCD_KEEP = ("etcd_disk_wal_fsync_duration_seconds_bucket", "etcd_disk_backend_commit_duration_seconds_bucket")
HAPROXY_DROP = (r"haproxy_server_.+", r"haproxy_backend_agg_(server_)?check_status")
HAPROXY_KEEP = ("haproxy_server_status",)
POSTGRES_EXPORTER_DROP = (r"pg_settings_.+",)
POSTGRES_EXPORTER_KEEP = ("pg_settings_max_connections",)
#: The template databases' rows of pg_stat_database, pg_locks and pg_stat_activity: nothing runs there (~350 series).
POSTGRES_EXPORTER_DROP_LABELS = (("datname", "template0|template1"),)


#: PostgreSQL's secrets. The core four the cluster is first made with (one missing on an initialised cluster would
#: lock Patroni out); the others are made on the first provision that needs them: ``monitoring`` (a PostgreSQL role
#: with pg_monitor), ``restapi`` (Patroni REST's unsafe endpoints), ``etcd_root`` (etcd's root user), ``etcd`` (the
#: cluster's etcd user, limited to its prefix) and ``pgbouncer`` (the role PgBouncer looks client passwords up as,
#: through ``auth_query``).
POSTGRES_SECRETS: tuple[SecretRole, ...] = (
    *(SecretRole(name, core=True) for name in ("superuser", "replication", "rewind", "app")),
    *(SecretRole(name) for name in ("monitoring", "restapi", "etcd_root", "etcd", "pgbouncer")),
)


#: Services that get a certificate, by the kind of member that runs them.
PG_SERVICES: tuple[str, ...] = ("postgres", "patroni")
ETCD_SERVICES: tuple[str, ...] = ("etcd",)
ROUTER_SERVICES: tuple[str, ...] = ("haproxy",)
#: Services clients may reach through a router: their certificates also name the router hosts.
ROUTED_SERVICES: frozenset[str] = frozenset({"postgres", "pgbouncer"})


class PostgresEngine(Engine):
    name = "postgres"
    secret_roles = POSTGRES_SECRETS

    def dsn(self, spec: ClusterSpec, route: str | None = None, pooled: bool = False) -> str:
        """A libpq URI: through the router's ``route`` (default: rw with routers, direct without), or ``direct``,
        the multi-host DSN (:func:`dbtier.engines.postgres.topology.client_dsn`)."""
        return routing.routed_dsn(spec, route or routing.default_route(spec), pooled)

    def client_dsns(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        """The router's read-write, read-only and pooled DSNs where they exist, then the direct one.

        >>> [label for label, _ in PostgresEngine().client_dsns(ClusterSpec(routing={"enabled": True}))]
        ['read-write DSN', 'read-only DSN', 'pooled DSN', 'direct DSN']
        >>> PostgresEngine().client_dsns(ClusterSpec(members=1, etcd_members=1, tls={"enabled": False}))
        [('read-write DSN', 'postgresql://app@127.0.0.1:5432/app?target_session_attrs=read-write&connect_timeout=3')]
        """
        wanted = [("read-write DSN", "rw", False), ("read-only DSN", "ro", False), ("pooled DSN", "rw", True)]
        routes = [(label, routing.routed_dsn(spec, route, pooled)) for label, route, pooled in wanted
                  if routing.route_problem(spec, route, pooled) is None]
        return [*routes, ("direct DSN" if routes else "read-write DSN", client_dsn(spec))]

    def connect_hint(self, dsn: str, password_command: str) -> str:
        return f'PGPASSWORD=$({password_command}) psql "{dsn}"'

    def firewall_hosts(self, spec: ClusterSpec) -> list[str]:
        """The members' and etcd members' hosts (:func:`pg_firewall.cluster_hosts`)."""
        return pg_firewall.cluster_hosts(spec)

    def firewall_ports(self, spec: ClusterSpec, host: str) -> HostPorts:
        """PostgreSQL, routes and PgBouncer for clients; Patroni, etcd, stats, exporters for control
        (:func:`pg_firewall.host_ports`)."""
        return pg_firewall.host_ports(spec, host)

    def cert_holders(self, spec: ClusterSpec, host_names: Callable[[str], Sequence[str]]) -> list[CertHolder]:
        """Members first (``postgres``, ``patroni``, and ``pgbouncer`` where one runs beside), then etcd, then the
        routers. HAProxy passes TLS through, so a member's ``postgres`` and ``pgbouncer`` certificates also name
        every router host: a client that reached the member through a router checks the router's address."""
        pooled = {b.member.name for b in routing.bouncers(spec)}
        via = tuple(name for address in routing.router_addresses(spec) for name in (address, *host_names(address)))
        holders = [(m.name, m.host, m.dir, PG_SERVICES + (("pgbouncer",) if m.name in pooled else ()))
                   for m in pg_members(spec)]
        holders += [(m.name, m.host, m.dir, ETCD_SERVICES) for m in etcd_members(spec)]
        holders += [(r.name, r.host, r.dir, ROUTER_SERVICES) for r in routing.routers(spec)]
        return [CertHolder(name, service, host, directory, via if service in ROUTED_SERVICES else ())
                for name, host, directory, services in holders for service in services]

    def consensus_services(self, spec: ClusterSpec) -> list[Service]:
        return etcd.etcd_services(spec)

    def member_services(self, spec: ClusterSpec) -> list[Service]:
        return [
            Service(
                name=m.name,
                kind="patroni",
                host=m.host,
                argv=patroni_argv(spec, m),
                pidfile=f"{m.dir}/patroni.pid",
                logfile=f"{m.dir}/patroni.log",
                marker=m.config,
                ports=[("postgres.ports.postgres", m.pg_port), ("postgres.ports.patroni", m.rest_port)],
            )
            for m in pg_members(spec)
        ]

    def router_services(self, spec: ClusterSpec) -> list[Service]:
        """keepalived on each member host when the spec has a virtual IP (first: its unit lets HAProxy bind the
        address), HAProxy on each host (:func:`dbtier.engines.postgres.routing.routers`), PgBouncer beside each member. HAProxy
        runs in the foreground as one process (no master-worker: the pid file names the process on the ports)."""
        services = [
            Service(name=k.name, kind="keepalived", host=k.host,
                    argv=keepalived_config.keepalived_argv(spec.pg.binaries.keepalived, k),
                    pidfile=f"{k.dir}/run.pid", logfile=f"{k.dir}/keepalived.log", marker=k.config, ports=[],
                    reload_signal="HUP", as_root=True,
                    pre_start=[["/usr/sbin/sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1"]])
            for k in keepalived_config.keepers(spec)
        ]
        services += [
            Service(name=r.name, kind="haproxy", host=r.host, argv=[spec.pg.binaries.haproxy, "-db", "-f", r.config],
                    pidfile=f"{r.dir}/haproxy.pid", logfile=f"{r.dir}/haproxy.log", marker=r.config,
                    ports=[(f, p) for f, p in port_plan(spec) if f.startswith("postgres.ports.router")])
            for r in routing.routers(spec)
        ]
        services += [
            Service(name=b.name, kind="pgbouncer", host=b.host, argv=[spec.pg.binaries.pgbouncer, b.config],
                    pidfile=f"{b.dir}/pgbouncer.pid", logfile=f"{b.dir}/pgbouncer.log", marker=b.config,
                    ports=[(f"postgres.ports.pgbouncer (member {b.member.index})", b.port)], reload_signal="HUP")
            for b in routing.bouncers(spec)
        ]
        return services

    def required_programs(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        """Patroni, etcd, PostgreSQL, pgBackRest, and what routing asks for.

        >>> [field for field, _ in PostgresEngine().required_programs(ClusterSpec())]  # doctest: +NORMALIZE_WHITESPACE
        ['postgres.binaries.patroni', 'postgres.binaries.etcd', 'postgres.binaries.pg_bin_dir',
         'postgres.binaries.pgbackrest']
        """
        binaries = spec.pg.binaries
        wanted = [("postgres.binaries.patroni", binaries.patroni), ("postgres.binaries.etcd", binaries.etcd),
                  ("postgres.binaries.pg_bin_dir", f"{binaries.pg_bin_dir}/postgres"),
                  ("postgres.binaries.pgbackrest", binaries.pgbackrest)]
        routers, poolers = routing_plan(spec.pg.routing)
        if routers:
            wanted.append(("postgres.binaries.haproxy", binaries.haproxy))
        if poolers:
            wanted.append(("postgres.binaries.pgbouncer", binaries.pgbouncer))
        if spec.pg.routing.vip is not None:  # keepalived, and the curl its check runs
            wanted += [("postgres.binaries.keepalived", binaries.keepalived),
                       ("postgres.routing.vip (its check)", "/usr/bin/curl")]
        return wanted

    def exporter_services(self, spec: ClusterSpec) -> list[Service]:
        """PostgreSQL's exporter per member, node exporter per member host (see :mod:`pg_exporters`)."""
        return [pg_exporters.exporter_service(spec, e) for e in pg_exporters.exporters(spec)]

    def stack_services(self, spec: ClusterSpec, root: str) -> list[Service]:
        """dbtier's PgBouncer exporter, when there are PgBouncers (:mod:`pgbouncer_exporter`)."""
        return pg_exporters.bouncer_exporter_service(spec, root)

    def stack_service_files(self, spec: ClusterSpec, root: str, ca_file: str, passwords: Passwords) -> dict[str, bytes]:
        return pg_exporters.bouncer_exporter_files(spec, root, ca_file, passwords)

    def exporter_problems(self, spec: ClusterSpec) -> list[str]:
        return pg_exporters.port_problems(spec)

    def scrape_jobs(self, spec: ClusterSpec) -> list[ScrapeJob]:
        """Patroni's, etcd's and each router's HAProxy ``/metrics`` (HTTPS when TLS is on), and the exporters."""
        tls = spec.tls.enabled
        jobs = [ScrapeJob("patroni", [f"{m.host}:{m.rest_port}" for m in pg_members(spec)], tls),
                ScrapeJob("etcd", [f"{e.host}:{e.client_port}" for e in etcd.etcd_members(spec)], tls, drop=ETCD_DROP,
                          keep=ETCD_KEEP),
                ScrapeJob("haproxy", [f"{r.host}:{spec.pg.ports.router_stats}" for r in routing.routers(spec)], tls,
                          drop=HAPROXY_DROP, keep=HAPROXY_KEEP)]
        found = pg_exporters.exporters(spec)
        jobs.append(ScrapeJob("postgres", [e.address for e in found if e.job == "postgres"], False,
                              drop=POSTGRES_EXPORTER_DROP, keep=POSTGRES_EXPORTER_KEEP,
                              drop_labels=POSTGRES_EXPORTER_DROP_LABELS))
        via = pg_exporters.bouncer_exporter(spec)
        if via:
            jobs.append(ScrapeJob("pgbouncer", [f"{b.host}:{b.port}" for b in routing.bouncers(spec)], False, f"{via[0]}:{via[1]}"))
        jobs.append(ScrapeJob("node", [e.address for e in found if e.job == "node"], False))
        return [j for j in jobs if j.targets]

    def alert_rules(self, spec: ClusterSpec, thresholds: dict[str, float]) -> EngineAlerts:
        """Patroni's, etcd's, the routers' and PgBouncers' (:mod:`.pg_alerts`)."""
        from dbtier.engines.postgres import pg_alerts

        return pg_alerts.alert_rules(spec, thresholds)

    def wait_routes(self, spec: ClusterSpec, passwords: Passwords) -> str:
        """Within ``postgres.timeouts.routes``."""
        if not routing.routers(spec):
            return super().wait_routes(spec, passwords)
        return pg_routes.wait_routes(spec, passwords, lambda: fetch_cluster(spec), spec.pg.timeouts.routes)

    def router_views(self, spec: ClusterSpec) -> tuple[list[str], list[str]]:
        """Each router's HAProxy stats against Patroni's ``/cluster`` (see :mod:`pg_routes`)."""
        lines: list[str] = []
        problems: list[str] = []
        if not routing.routers(spec):
            return lines, problems
        patroni = pg_routes.roles(fetch_cluster(spec))
        for router in routing.routers(spec):
            states = pg_routes.router_servers(spec, router)
            if isinstance(states, str):
                lines.append(f"{router.name}: {states}")
                problems.append(f"{router.name}: {states}")
                continue
            lines.append(f"{router.name}: " + "; ".join(
                f"{route} -> {', '.join(members) or 'no server'}" for route, members in pg_routes.up_servers(states).items()))
            problems += pg_routes.view_problems(router.name, states, *patroni)
        return lines, problems

    def member_files(self, spec: ClusterSpec, service: Service, passwords: Passwords) -> dict[str, bytes]:
        if service.kind == "haproxy":
            router = next(r for r in routing.routers(spec) if r.name == service.name)
            return {router.config: haproxy_config.render_haproxy_config(spec, router).encode()}
        if service.kind == "keepalived":
            keeper = next(k for k in keepalived_config.keepers(spec) if k.name == service.name)
            return {keeper.config: keepalived_config.render_keepalived_config(spec, keeper).encode()}
        if service.kind == "pgbouncer":
            bouncer = next(b for b in routing.bouncers(spec) if b.name == service.name)
            # the monitoring role's verifier, for PgBouncer's exporter (its console's stats user), when it runs
            stats = pgbouncer_config.stats_verifier(spec, passwords.monitoring) if spec.monitoring.exporters.enabled else None
            return {bouncer.config: pgbouncer_config.render_pgbouncer_ini(spec, bouncer).encode(),
                    pgbouncer_config.auth_file_path(bouncer): pgbouncer_config.auth_file(passwords.pgbouncer, stats).encode(),
                    pgbouncer_config.hba_file_path(bouncer): pgbouncer_config.hba_file(spec).encode()}
        if service.kind in pg_exporters.KINDS:
            exporter = next(e for e in pg_exporters.exporters(spec) if e.name == service.name)
            return pg_exporters.exporter_files(exporter, passwords)
        member = pg_member(spec, service.name)
        config = render_patroni_config(spec, member, passwords)
        return {member.config: yaml.safe_dump(config, sort_keys=False).encode()}

    def owned_port(self, spec: ClusterSpec, service: Service, port: int) -> str | None:
        if service.kind != "patroni":
            return None
        member = pg_member(spec, service.name)
        return member.data_dir if port == member.pg_port else None

    def wait_consensus(self, spec: ClusterSpec) -> str:
        """etcd's quorum, within ``postgres.timeouts.etcd_quorum``."""
        return etcd.wait_for_quorum(spec, spec.pg.timeouts.etcd_quorum)

    def secure_consensus(self, spec: ClusterSpec, passwords: Passwords) -> str:
        return etcd_auth.secure(spec, passwords)

    def status(self, spec: ClusterSpec) -> ClusterStatus:
        cluster = merge_live(fetch_cluster(spec), fetch_live(spec))
        health = assess(cluster, [m.name for m in pg_members(spec)])
        states = etcd.member_states(spec)
        quorum_ok, quorum_sentence = etcd.judge_quorum(states)
        if not quorum_ok:
            health = Health(False, health.leader, [*health.problems, quorum_sentence])
        return ClusterStatus(health=health, rows=member_rows(spec, cluster, states))

    def prepare_replicas(self, spec: ClusterSpec, passwords: Passwords, timeout: float,
                         provider: Provider | None = None) -> str:
        """Once the leader accepts writes, create each replica's replication slot on it (over its socket).

        Patroni would create them on the leader's next HA loop (up to ``loop_wait`` later) and
        the replicas, already cloned, would wait that long to stream. Patroni adopts these slots:
        they carry the names it expects (one per member).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader, runner = self._leader_runner(spec, provider)
                rows = pg_admin.run_sql(runner, spec, leader, "postgres", [
                    "SELECT pg_is_in_recovery()", "SELECT slot_name FROM pg_replication_slots"], "reading slots")
                if rows[0] != ["f"]:
                    raise ClusterUnhealthy(f"{leader.name} is still in recovery")
                existing = {row[0] for row in rows[1:]}
                made = [m.name for m in pg_members(spec) if m.name != leader.name and m.name not in existing]
                pg_admin.run_sql(runner, spec, leader, "postgres", [
                    f"SELECT pg_create_physical_replication_slot({pg_roles.literal(slot)}) WHERE NOT EXISTS "
                    f"(SELECT 1 FROM pg_replication_slots WHERE slot_name = {pg_roles.literal(slot)})" for slot in made
                ], "creating replication slots")
                return f"replication slots ready on the leader {leader.name}: " + (
                    f"created {', '.join(made)}" if made else "all present"
                )
            except DbtierError as err:  # the leader may still be bootstrapping
                if time.monotonic() > deadline:
                    raise ClusterUnhealthy(
                        f"no leader accepted writes within {timeout:.0f} s ({err}); "
                        f"see the patroni.log files under {spec.cluster_dir}"
                    ) from None
                time.sleep(0.3)

    @staticmethod
    def _leader_runner(spec: ClusterSpec, provider: Provider | None) -> tuple[PgMember, Runner]:
        """The member Patroni names leader and a runner on its host: the superuser works there, over the socket."""
        from dbtier.providers.base import get_provider

        name = role_holder(fetch_cluster(spec), "leader")
        if name is None:
            raise ClusterUnhealthy(f"cluster {spec.name}: no member is leader")
        leader = pg_member(spec, name)
        return leader, (provider or get_provider(spec)).runner(spec, leader.host)

    def app_database_present(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> bool:
        """The app's database and every role of :mod:`pg_roles` exist, and pgaudit's extension is as audit wants."""
        leader, runner = self._leader_runner(spec, provider)
        rows = pg_admin.run_sql(runner, spec, leader, "postgres", [
            "SELECT 'role', rolname FROM pg_roles",
            f"SELECT 'db', datname FROM pg_database WHERE datname = {pg_roles.literal(spec.app.database)}",
            f"SELECT 'ext', extname FROM pg_extension WHERE extname = {pg_roles.literal(PGAUDIT)}",
            PRELOADED,
        ], "reading roles")
        roles = {name for kind, name in rows if kind == "role"}
        have_db, audited = ["db", spec.app.database] in rows, ["ext", PGAUDIT] in rows
        wanted = pg_roles.wanted_roles(spec.app) | ({pgbouncer_config.AUTH_USER} if routing.bouncers(spec) else set())
        return wanted <= roles and have_db and audited == _loads_pgaudit(rows)

    def create_app_database(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> str:
        """The app's role and database, its readonly and monitoring roles, their grants, pgaudit's extension;
        run on the leader's host over its socket."""
        app = spec.app
        leader, runner = self._leader_runner(spec, provider)
        rows = pg_admin.run_sql(runner, spec, leader, "postgres", [
            "SELECT 'role', rolname FROM pg_roles",
            f"SELECT 'db', datname FROM pg_database WHERE datname = {pg_roles.literal(app.database)}",
            PRELOADED,
        ], "reading roles")
        existing = {name for kind, name in rows if kind == "role"}
        have_db, audit = ["db", app.database] in rows, _loads_pgaudit(rows)
        # SCRAM verifiers, never the passwords themselves (and the statements run with logging off).
        verifiers = {app.user: pg_admin.scram_verifier(passwords.app),
                     pg_roles.MONITORING_USER: pg_admin.scram_verifier(passwords.monitoring)}
        # The extension follows what the server loaded (a spec's audit setting reaches a cluster when it is made):
        # pgaudit's event triggers fail without its library.
        plan = pg_roles.role_plan(app, verifiers, existing, have_db, audit)
        pg_admin.run_sql(runner, spec, leader, "postgres", plan.in_postgres, "creating roles")
        pg_admin.run_sql(runner, spec, leader, app.database, plan.in_app_database, "granting readonly")
        pooled = bool(routing.bouncers(spec))
        if pooled:
            auth = pgbouncer_config.pooler_role_plan(app, pg_admin.scram_verifier(passwords.pgbouncer),
                                                     pgbouncer_config.AUTH_USER in existing)
            pg_admin.run_sql(runner, spec, leader, "postgres", auth.in_postgres, "creating the pooler's auth user")
            pg_admin.run_sql(runner, spec, leader, app.database, auth.in_app_database, "creating the auth query")
        made = "exists" if have_db else "created"
        return (
            f"application role {app.user} {'updated' if app.user in existing else 'created'}, database {app.database} "
            f"{made}; roles {pg_roles.readonly_role(app)} and {pg_roles.MONITORING_USER} ready; "
            f"pgaudit {'on' if audit else 'off'}{'; the pooler looks logins up through auth_query' if pooled else ''} "
            f"(on {leader.name})"
        )

    def verify_replication(self, spec: ClusterSpec, passwords: Passwords, timeout: float) -> str:
        token = uuid.uuid4().hex
        started = time.monotonic()
        with connect(client_dsn(spec), passwords.app) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS dbtier_verify (token text PRIMARY KEY, written_at timestamptz DEFAULT now())"
            )
            conn.execute("INSERT INTO dbtier_verify (token) VALUES (%s)", (token,))
            primary_port = conn.info.port
        replicas = [m for m in pg_members(spec) if m.pg_port != primary_port]
        for member in replicas:
            self._wait_for_row(spec, member, passwords, token, started + timeout)
        return (
            f"verified: a row written on the primary (port {primary_port}) was read on "
            f"{len(replicas)} replica(s) within {time.monotonic() - started:.1f} s"
        )

    # -- archiving: pgBackRest (:mod:`.pgbackrest_ops`, imported here: it imports this module) --------------

    def archiving_configured(self, provider: Provider, spec: ClusterSpec) -> bool:
        """pgbackrest.conf on every member host."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.configured(provider, spec)

    def archives(self, spec: ClusterSpec) -> bool:
        """WAL archiving unless ``postgresql_parameters.archive_mode`` turns it off (the restore drill's copy).

        >>> [PostgresEngine().archives(ClusterSpec(postgresql_parameters=p))
        ...  for p in ({}, {"archive_mode": "on"}, {"archive_mode": "off"}, {"archive_mode": False})]
        [True, True, False, False]
        """
        return str(spec.pg.postgresql_parameters.get("archive_mode", "on")).lower() not in ("off", "false")

    def refuse_earlier_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """The stanza must be new in every repository (:func:`.pgbackrest_ops.refuse_earlier_stanza`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.refuse_earlier_stanza(provider, spec, secrets)

    def configure_archiving(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets, passwords: Passwords,
                            source: ClusterSpec | None = None,
                            source_secrets: BackupSecrets | None = None) -> list[str]:
        """pgbackrest.conf and its pgpass (the superuser's) on every member host, fs repositories created; with
        ``source``, the source's config the restore reads (:func:`.pgbackrest_ops.write_configs`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.write_configs(provider, spec, secrets, passwords.superuser, source=source,
                                 source_secrets=source_secrets)

    def start_archiving(self, provider: Provider, spec: ClusterSpec,
                        secrets: BackupSecrets | None = None) -> list[str]:
        """``stanza-create`` (idempotent) then ``check``: WAL reaches every repository (PostgreSQL's own
        archiver ships it, started with the members)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return [pgbackrest_ops.create_stanza(provider, spec)]

    # -- backups: pgBackRest (:mod:`.pgbackrest_ops`) ---------------------------------------------------------

    def backup_kinds(self, spec: ClusterSpec) -> tuple[str, ...]:
        """pgBackRest's types.

        >>> PostgresEngine().backup_kinds(ClusterSpec())
        ('full', 'diff', 'incr')
        """
        from dbtier.backup.catalog import KINDS

        return KINDS

    def read_catalog(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> Catalog:
        """``pgbackrest info`` on the first member's host (:func:`.pgbackrest_ops.catalog`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.catalog(provider, spec)

    def take_backup(self, provider: Provider, spec: ClusterSpec, kind: str, repo: int, secrets: BackupSecrets,
                    passwords: Passwords) -> str:
        """``pgbackrest backup`` from the leader (or a replica on its host) (:func:`.pgbackrest_ops.take_backup`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.take_backup(provider, spec, kind, repo)

    def verify_backup(self, provider: Provider, spec: ClusterSpec, repo: int, secrets: BackupSecrets) -> str:
        """``pgbackrest verify`` of the repository (:func:`.pgbackrest_ops.verify`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.verify(provider, spec, repo)

    def expire_backups(self, provider: Provider, spec: ClusterSpec, repo: int, keep_full: int, keep_diff: int,
                       secrets: BackupSecrets) -> None:
        """``pgbackrest expire`` (:func:`.pgbackrest_ops.expire`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        pgbackrest_ops.expire(provider, spec, repo, keep_full, keep_diff)

    def wait_for_restore(self, provider: Provider, spec: ClusterSpec, timeout: float) -> str:
        """Patroni's custom bootstrap runs ``pgbackrest restore``: wait until a member is promoted
        (:func:`.pgbackrest_ops.wait_for_restore`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.wait_for_restore(provider, spec, timeout)

    def flush_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                      passwords: Passwords) -> str:
        """``pgbackrest check`` on the primary: a fresh WAL file reaches every repository
        (:func:`.pgbackrest_ops.check`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.check(provider, spec)

    def judge_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                      passwords: Passwords) -> ArchiveVerdict:
        """``pg_stat_archiver`` and the waiting WAL files on the primary, read by the monitoring role
        (:func:`.wal_archive.judge_archive`)."""
        from dbtier.engines.postgres import pgbackrest_ops
        from dbtier.engines.postgres.wal_archive import judge_archive

        return judge_archive(pgbackrest_ops.archiver_stats(spec, passwords.monitoring), spec.backup.archive_lag_limit_s)

    def check_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """``pgbackrest check`` (:func:`.pgbackrest_ops.check`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.check(provider, spec)

    def drop_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """The cluster's stanza, from every repository (:func:`.pgbackrest_ops.drop_stanza`), when one exists
        (a failed restore may not have created it)."""
        from dbtier.engines.postgres import pgbackrest_ops

        catalog = pgbackrest_ops.read_source_catalog(provider, spec, spec, secrets)
        if not catalog.backups and catalog.wal_max is None and catalog.status == "missing stanza":
            return f"no stanza {spec.name} in any repository: nothing to drop"
        return pgbackrest_ops.drop_stanza(provider, spec, secrets)

    def archived_clusters(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> list[str]:
        """Every stanza the repositories hold (:func:`.pgbackrest_ops.stanzas`)."""
        from dbtier.engines.postgres import pgbackrest_ops

        return pgbackrest_ops.stanzas(provider, spec, secrets)

    def last_archived_time(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                           passwords: Passwords) -> datetime | None:
        """``pg_stat_archiver.last_archived_time`` on the primary, read by the monitoring role."""
        import psycopg

        from dbtier.engines.postgres import pgbackrest_ops
        from dbtier.errors import BackupError

        try:
            return pgbackrest_ops.archiver_stats(spec, passwords.monitoring).last_archived_time
        except psycopg.Error as err:
            raise BackupError(f"cluster {spec.name}: pg_stat_archiver unreadable on the primary "
                              f"({type(err).__name__})") from None

    # -- restore: pgBackRest restores during bring-up (Patroni's custom bootstrap), its target read against
    # pgBackRest's catalog first (:mod:`.pg_restore`) ---------------------------------------------------------

    restores_after_bring_up = False
    restores_in_place = True

    def parse_restore_target(self, target_text: str) -> str:
        """pgBackRest's targets (:func:`dbtier.backup.catalog.parse_target`).

        >>> PostgresEngine().parse_restore_target("latest")
        'latest'
        """
        from dbtier.backup.catalog import parse_target

        return parse_target(target_text).describe()

    def check_restore_target(self, provider: Provider, target: ClusterSpec, source: ClusterSpec, target_text: str,
                             secrets: BackupSecrets, repo: int | None) -> tuple[str, str]:
        """The backup of the source's catalog that serves the target (:func:`.pg_restore.check_restore_target`)."""
        from dbtier.engines.postgres import pg_restore

        return pg_restore.check_restore_target(provider, target, source, target_text, secrets, repo)

    def refuse_unarchived_tail(self, provider: Provider, source: ClusterSpec, target_text: str,
                               secrets: BackupSecrets, repo: int | None) -> str:
        """No transaction the target needs lives only in a stopped member's own WAL
        (:func:`.pg_restore.refuse_unarchived_tail`)."""
        from dbtier.engines.postgres import pg_restore

        return pg_restore.refuse_unarchived_tail(provider, source, target_text, secrets, repo)

    def settle_restore_target(self, provider: Provider, source: ClusterSpec, plan: RestorePlan,
                              secrets: BackupSecrets, repo: int | None) -> tuple[str, list[str]]:
        """A time in a quiet period becomes its backup to the end of the archive (:func:`.pg_restore.settle_target`)."""
        from dbtier.engines.postgres import pg_restore

        return pg_restore.settle_target(provider, source, plan, secrets, repo)

    def transport_problem(self, spec: ClusterSpec) -> str | None:
        """A running Patroni that answers in the other scheme than the spec's: a cluster provisioned before TLS
        was on (or one whose spec turned it off), which provision must not rewrite under it."""
        other = [m.name for m in pg_members(spec) if patroni_rest.answers_in_other_scheme(spec, m)]
        if not other:
            return None
        if spec.tls.enabled:
            return (f"tls.enabled: cluster {spec.name} runs without TLS ({', '.join(other)} answer plain HTTP); it was "
                    "provisioned before TLS was on: set tls.enabled: false in its spec to keep it as it is, or "
                    "restore its backup into a new cluster (dbtier restore --into NAME), which starts with TLS")
        return (f"tls.enabled: cluster {spec.name} runs with TLS ({', '.join(other)} answer HTTPS) but its spec says "
                "false; set tls.enabled: true (the default)")

    def stale_certificates(self, spec: ClusterSpec, provider: Provider | None = None) -> list[str]:
        from dbtier.engines.postgres.pg_reload import stale
        from dbtier.providers.base import get_provider

        return stale(provider or get_provider(spec), spec)

    def reload_certificates(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> list[str]:
        """``pg_reload_conf()`` on each member over its socket, checked by ``pg_conf_load_time()``, Patroni's
        ``POST /reload``, then every service's served certificate (see :mod:`dbtier.engines.postgres.pg_reload`)."""
        from dbtier.engines.postgres.control_plane import rest_login
        from dbtier.engines.postgres.pg_reload import reload_all
        from dbtier.providers.base import get_provider

        from dbtier.bootstrap import reload_service

        where = provider or get_provider(spec)

        def reload_routing() -> list[str]:
            said = [reload_service(where, spec, service) for service in self.router_services(spec)]
            return [sentence for sentence in said if sentence]

        return reload_all(where, spec, rest_login(passwords), reload_routing=reload_routing)

    # -- the restore drill: :mod:`dbtier.engines.postgres.restore_drill` ------------------------------------------

    def copy_changes(self, spec: ClusterSpec) -> dict[str, Any]:
        """Its own routers on its own ports, but never the source's virtual IP (one VRRP group, one address).

        >>> vip = {"address": "10.0.0.9", "interface": "eth0"}
        >>> hosts = [{"address": f"10.0.0.{i}"} for i in (1, 2, 3)]
        >>> spec = ClusterSpec(provider="ssh", ssh={"user": "u", "key_file": "/k", "hosts": hosts},
        ...                    backup={"repositories": [{"type": "fs", "shared": True}]},
        ...                    postgres={"routing": {"enabled": True, "vip": vip}})
        >>> PostgresEngine().copy_changes(spec)["postgres"]["routing"]["vip"], spec.pg.routing.vip.address
        (None, '10.0.0.9')
        """
        pg = spec.pg.model_dump(mode="json")
        return {"postgres": {**pg, "routing": {**pg["routing"], "vip": None}}}

    def throwaway_changes(self, spec: ClusterSpec) -> dict[str, Any]:
        """One etcd member, no WAL archiving (``archive_mode: off``), no synchronous standby to wait for, no routers.

        >>> c = PostgresEngine().throwaway_changes(ClusterSpec())["postgres"]
        >>> c["etcd_members"], c["postgresql_parameters"]["archive_mode"], c["synchronous_mode"], c["routing"]["enabled"]
        (1, 'off', False, False)
        """
        pg = spec.pg
        dumped = pg.model_dump(mode="json")
        return {"postgres": {**dumped, "etcd_members": 1, "synchronous_mode": False,
                             "postgresql_parameters": {**pg.postgresql_parameters, "archive_mode": "off"},
                             "routing": {**dumped["routing"], "enabled": False, "vip": None}}}

    def write_restore_marker(self, spec: ClusterSpec, passwords: Passwords) -> Marker:
        """Rows of table ``dbtier_restore_drill`` around the server's clock (the target is that time)."""
        from dbtier.engines.postgres import restore_drill

        return restore_drill.write_marker(spec, passwords.app)

    def check_restored_copy(self, provider: Provider, spec: ClusterSpec, marker: Marker,
                            passwords: Passwords) -> CopyChecks:
        """The marker rows, amcheck and the spec's check query, as the superuser over the primary's socket."""
        from dbtier.engines.postgres import restore_drill

        return restore_drill.check_copy(spec, provider, marker)

    def restore_drill_budgets(self, spec: ClusterSpec) -> list[str]:
        from dbtier.engines.postgres import restore_drill

        return restore_drill.budgets(spec)

    # -- failover drills: :mod:`dbtier.engines.postgres.scenarios` -----------------------------------------------------

    def drill_scenarios(self, spec: ClusterSpec) -> tuple[str, ...]:
        """:data:`.drill_settings.SCENARIOS` (the network and host drills last)."""
        from dbtier.engines.postgres.drill_settings import SCENARIOS

        return SCENARIOS

    def drill_route(self, spec: ClusterSpec, settings: DrillSettings) -> str:
        """The first router's rw route or the multi-host DSN (:func:`.drill_settings.writer_route`)."""
        from dbtier.engines.postgres.drill_settings import writer_route

        return writer_route(spec, settings)[1]

    def settle_s(self, spec: ClusterSpec) -> float:
        """One Patroni loop (``patroni.loop_wait``).

        >>> PostgresEngine().settle_s(ClusterSpec())
        10.0
        """
        return float(spec.pg.patroni.loop_wait)

    def cannot_run_drill(self, provider: Provider, spec: ClusterSpec, scenario: str) -> str | None:
        """The network and host drills' needs (:func:`.network.cannot_run`)."""
        from dbtier.engines.postgres import network

        return network.cannot_run(spec, scenario, provider)

    def run_drill(self, provider: Provider, spec: ClusterSpec, scenario: str, settings: DrillSettings,
                  passwords: Passwords) -> DrillResult:
        """:func:`dbtier.engines.postgres.scenarios.run` with the application's password and Patroni REST's login."""
        from dbtier.engines.postgres import scenarios
        from dbtier.engines.postgres.control_plane import rest_login

        return scenarios.run(spec, scenario, settings, passwords.app, provider=provider,
                             rest_login=rest_login(passwords))

    def _wait_for_row(self, spec: ClusterSpec, member: PgMember, passwords: Passwords, token: str, deadline: float) -> None:
        info = conninfo(spec, member.host, member.pg_port, spec.app.user, spec.app.database)
        while True:
            try:
                with connect(info, passwords.app) as conn:
                    if conn.execute("SELECT 1 FROM dbtier_verify WHERE token = %s", (token,)).fetchone():
                        return
            except Exception as err:  # noqa: BLE001 - the table may not have replicated yet
                last = type(err).__name__
            else:
                last = "row not there yet"
            if time.monotonic() > deadline:
                raise ClusterUnhealthy(f"{member.name}: the verification row never arrived ({last}); replication is broken")
            time.sleep(0.2)
