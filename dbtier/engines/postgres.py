"""PostgreSQL managed by Patroni, with etcd as its consensus store."""

from __future__ import annotations

import time
import uuid
from typing import Any

import requests
import yaml

from dbtier.engines import etcd
from dbtier.engines.base import ClusterStatus, Engine
from dbtier.engines.patroni_config import SUPERUSER, patroni_argv, render_patroni_config
from dbtier.errors import ClusterUnhealthy
from dbtier.health import Health, assess, member_rows, merge_live
from dbtier.procs import Service
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from dbtier.topology import PgMember, client_dsn, pg_member, pg_members


def fetch_cluster(spec: ClusterSpec, timeout: float = 2.0, avoid: str | None = None) -> dict[str, Any] | None:
    """Patroni's ``/cluster`` document from the first member that answers, skipping ``avoid`` (a frozen one)."""
    for member in pg_members(spec):
        if member.name == avoid:
            continue
        try:
            response = requests.get(f"{member.rest_url}/cluster", timeout=timeout)
            if response.ok:
                doc: dict[str, Any] = response.json()
                return doc
        except (requests.RequestException, ValueError):
            continue
    return None


def fetch_live(spec: ClusterSpec, timeout: float = 2.0) -> dict[str, dict[str, Any] | None]:
    """Each member's own ``GET /patroni`` answer (None for a member that does not answer)."""
    live: dict[str, dict[str, Any] | None] = {}
    for member in pg_members(spec):
        try:
            response = requests.get(f"{member.rest_url}/patroni", timeout=timeout)
            live[member.name] = response.json()
        except (requests.RequestException, ValueError):
            live[member.name] = None
    return live


def connect(conninfo: str, password: str, **kwargs: Any) -> Any:
    """A psycopg connection; the password goes as a keyword, never into the conninfo or a message."""
    import psycopg

    return psycopg.connect(conninfo, password=password, autocommit=True, **kwargs)


class PostgresEngine(Engine):
    name = "postgres"

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
                ports=[("ports.postgres", m.pg_port), ("ports.patroni", m.rest_port)],
            )
            for m in pg_members(spec)
        ]

    def member_files(self, spec: ClusterSpec, service: Service, passwords: Passwords) -> dict[str, bytes]:
        member = pg_member(spec, service.name)
        config = render_patroni_config(spec, member, passwords)
        return {member.config: yaml.safe_dump(config, sort_keys=False).encode()}

    def owned_port(self, spec: ClusterSpec, service: Service, port: int) -> str | None:
        if service.kind != "patroni":
            return None
        member = pg_member(spec, service.name)
        return member.data_dir if port == member.pg_port else None

    def wait_consensus(self, spec: ClusterSpec, timeout: float) -> str:
        return etcd.wait_for_quorum(spec, timeout)

    def status(self, spec: ClusterSpec) -> ClusterStatus:
        cluster = merge_live(fetch_cluster(spec), fetch_live(spec))
        health = assess(cluster, [m.name for m in pg_members(spec)])
        states = etcd.member_states(spec)
        quorum_ok, quorum_sentence = etcd.judge_quorum(states)
        if not quorum_ok:
            health = Health(False, health.leader, [*health.problems, quorum_sentence])
        return ClusterStatus(health=health, rows=member_rows(spec, cluster, states))

    def prepare_replicas(self, spec: ClusterSpec, passwords: Passwords, timeout: float) -> str:
        """Once the leader accepts writes, create each replica's replication slot on it.

        Patroni would create them on the leader's next HA loop (up to ``loop_wait`` later) and
        the replicas, already cloned, would wait that long to stream. Patroni adopts these slots:
        they carry the names it expects (one per member).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._superuser(spec, passwords) as conn:
                    leader_port = conn.info.port
                    existing = {row[0] for row in conn.execute("SELECT slot_name FROM pg_replication_slots")}
                    wanted = [m.name for m in pg_members(spec) if m.pg_port != leader_port]
                    for slot in wanted:
                        if slot not in existing:
                            conn.execute(
                                "SELECT pg_create_physical_replication_slot(%s) "
                                "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                                (slot, slot),
                            )
                made = [slot for slot in wanted if slot not in existing]
                return f"replication slots ready on the leader (port {leader_port}): " + (
                    f"created {', '.join(made)}" if made else "all present"
                )
            except Exception as err:  # noqa: BLE001 - the leader may still be bootstrapping
                if time.monotonic() > deadline:
                    raise ClusterUnhealthy(
                        f"no leader accepted writes within {timeout:.0f} s ({type(err).__name__}); "
                        f"see the patroni.log files under {spec.cluster_dir}"
                    ) from None
                time.sleep(0.3)

    def _superuser(self, spec: ClusterSpec, passwords: Passwords) -> Any:
        return connect(client_dsn(spec, SUPERUSER, "postgres"), passwords.superuser)

    def app_database_present(self, spec: ClusterSpec, passwords: Passwords) -> bool:
        with self._superuser(spec, passwords) as conn:
            role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (spec.app.user,)).fetchone()
            db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (spec.app.database,)).fetchone()
        return role is not None and db is not None

    def create_app_database(self, spec: ClusterSpec, passwords: Passwords) -> str:
        from psycopg import sql

        user, database = spec.app.user, spec.app.database
        with self._superuser(spec, passwords) as conn:
            # Send a SCRAM verifier, never the password itself, so no server log can show it.
            verifier = conn.pgconn.encrypt_password(passwords.app.encode(), user.encode(), b"scram-sha-256").decode()
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
            verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
            conn.execute(
                sql.SQL("{} {} WITH LOGIN PASSWORD {}").format(verb, sql.Identifier(user), sql.Literal(verifier))
            )
            have_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if not have_db:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(user))
                )
        made = "exists" if have_db else "created"
        return f"application role {user} {'updated' if exists else 'created'}, database {database} {made}"

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

    def _wait_for_row(self, spec: ClusterSpec, member: PgMember, passwords: Passwords, token: str, deadline: float) -> None:
        conninfo = f"host={member.host} port={member.pg_port} user={spec.app.user} dbname={spec.app.database} connect_timeout=3"
        while True:
            try:
                with connect(conninfo, passwords.app) as conn:
                    if conn.execute("SELECT 1 FROM dbtier_verify WHERE token = %s", (token,)).fetchone():
                        return
            except Exception as err:  # noqa: BLE001 - the table may not have replicated yet
                last = type(err).__name__
            else:
                last = "row not there yet"
            if time.monotonic() > deadline:
                raise ClusterUnhealthy(f"{member.name}: the verification row never arrived ({last}); replication is broken")
            time.sleep(0.2)
