"""PostgreSQL least privilege, audit, reject lines and no TCP trust while restoring, on real members.

Runbook on a three-member cluster (local provider, port block 20) whose clients may come from 127.0.20.0/24:
1. the roles exist with the right attributes and memberships; the app role owns only its database;
2. readonly reads the app's tables and writes nothing; the app creates nothing in the postgres database;
3. monitoring sees every replica in pg_stat_replication;
4. a DDL statement is an AUDIT line in the leader's log, connections and disconnections are logged, and no
   password verifier is;
5. from a client address (127.0.20.77, not a member's), the superuser and the replication role are rejected,
   the app gets in;
6. a restore: while its recovery runs, the restoring member's pg_hba_file_rules hold no trust on a host line.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import prefect.settings
import psycopg
import pytest

from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.backup.restore import derive_target
from dbtier.engines.base import get_engine
from dbtier.engines.postgres.patroni_config import REPLICATION_USER, SUPERUSER
from dbtier.engines.postgres.pg_roles import MONITORING_USER
from dbtier.engines.postgres.engine import connect
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec, build_spec
from dbtier.engines.postgres.topology import PgMember, client_dsn, pg_members
from tests.clusters import (RESTORE_OFFSET, TEST_PORT_BASE, one_member, provisioned_by_flow, shared_tmpdir,
                            spec_for_tests, write_spec)

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK = 20
#: A client network of this suite's own (the whole of 127/8 is this machine's loopback, no alias needed) and a
#: client address in it that is no member's; the proxy that makes connections come from it listens on the
#: block's last port.
CLIENT_NET, CLIENT_ADDRESS, PROXY_PORT = "127.0.20.0/24", "127.0.20.77", TEST_PORT_BASE + 100 * BLOCK + 89


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("sec", block=BLOCK, data_root=shared_tmpdir("dbtier-pgsec-"),
                          allowed_client_networks=[CLIENT_NET])


@pytest.fixture(scope="module")
def secured_cluster(prefect_harness: None, spec: ClusterSpec) -> Iterator[str]:
    """A healthy three-member cluster provisioned by the flow; stopped by PID and wiped after."""
    with provisioned_by_flow(spec, wipe=True) as spec_file:
        yield spec_file


def _superuser(spec: ClusterSpec, database: str = "postgres") -> Any:
    return connect(client_dsn(spec, SUPERUSER, database), load_passwords(spec).superuser)


def _leader(spec: ClusterSpec) -> PgMember:
    with _superuser(spec) as conn:
        port = conn.info.port
    return next(m for m in pg_members(spec) if m.pg_port == port)


def test_roles_have_least_privilege(secured_cluster: str, spec: ClusterSpec) -> None:
    app, readonly = spec.app.user, f"{spec.app.user}_readonly"
    with _superuser(spec) as conn:
        rows = conn.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname", ([app, readonly, MONITORING_USER],)).fetchall()
        members = set(conn.execute(
            "SELECT r.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid "
            "JOIN pg_roles m ON m.oid = a.member WHERE m.rolname = ANY(%s)", ([app, readonly, MONITORING_USER],)))
        owned = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = %s", (app,))]
    assert rows == [
        (app, True, False, False, False, False, False),
        (readonly, False, False, False, False, False, False),
        (MONITORING_USER, True, False, False, False, False, False),
    ]
    assert members == {("pg_monitor", MONITORING_USER)}, "monitoring is in pg_monitor; the others in nothing"
    assert owned == [spec.app.database], "the app role owns its database and no other"


def test_readonly_reads_and_the_app_creates_nothing_in_postgres(secured_cluster: str, spec: ClusterSpec) -> None:
    passwords = load_passwords(spec)
    with connect(client_dsn(spec), passwords.app) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ledger (id int PRIMARY KEY)")  # made after provision: default grants
        conn.execute("INSERT INTO ledger VALUES (1) ON CONFLICT DO NOTHING")
    with _superuser(spec) as conn:  # a person who reads: a login role granted <app>_readonly
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute(f"CREATE ROLE reader LOGIN PASSWORD 'reader-pw' IN ROLE {spec.app.user}_readonly")
    with connect(client_dsn(spec, "reader"), "reader-pw") as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO ledger VALUES (2)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE mine (id int)")
    with connect(client_dsn(spec, database="postgres"), passwords.app) as conn:
        for statement in ("CREATE TABLE public.squat (id int)", "CREATE SCHEMA squat", "CREATE TEMP TABLE squat (id int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_monitoring_sees_every_replica(secured_cluster: str, spec: ClusterSpec) -> None:
    password = load_passwords(spec).monitoring
    with connect(client_dsn(spec, MONITORING_USER, "postgres"), password) as conn:
        states = [r[0] for r in conn.execute("SELECT state FROM pg_stat_replication")]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE nope (id int)")
    assert states == ["streaming", "streaming"], "pg_monitor shows the replicas' state (NULL without it)"


def _log(spec: ClusterSpec, member: PgMember) -> str:
    data = get_provider(spec).runner(spec, member.host).read_file(f"{member.dir}/patroni.log")
    return (data or b"").decode(errors="replace")


def test_ddl_and_connections_are_audited_and_no_verifier_is_logged(secured_cluster: str, spec: ClusterSpec) -> None:
    leader = _leader(spec)
    with connect(client_dsn(spec), load_passwords(spec).app) as conn:
        conn.execute("CREATE TABLE audited_thing (id int)")
    deadline = time.monotonic() + 10
    while "disconnection: session time" not in _log(spec, leader) and time.monotonic() < deadline:
        time.sleep(0.2)
    log = _log(spec, leader)
    assert any("AUDIT: SESSION" in line and "CREATE TABLE audited_thing" in line for line in log.splitlines()), log[-3000:]
    assert f"connection authorized: user={spec.app.user} database={spec.app.database}" in log
    assert "disconnection: session time" in log
    for member in pg_members(spec):
        assert "SCRAM-SHA-256$" not in _log(spec, member), f"{member.name}: a password verifier reached the log"


class SourceAddressProxy:
    """Forwards TCP connections from 127.0.0.1:``port`` to ``target``, leaving from ``source`` (so PostgreSQL sees
    that client address); one thread, stopped by ``close``."""

    def __init__(self, port: int, target: tuple[str, int], source: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.target, self.source, self.stopped = target, source, threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection(self.target, source_address=(self.source, 0))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        with a, b:
            while not self.stopped.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                    except OSError:  # a side that reset (a rejected TLS connection)
                        return
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(timeout=5)


def test_every_tcp_connection_is_tls_and_a_clear_one_is_rejected(secured_cluster: str, spec: ClusterSpec) -> None:
    """The DSN dbtier prints verifies the server; sslmode=disable gets the hostnossl reject; replication runs
    over TLS; every TCP line pg_hba holds is hostssl (or a hostnossl reject)."""
    dsn = client_dsn(spec)
    assert "sslmode=verify-full" in dsn and "sslrootcert=" in dsn
    with connect(dsn, load_passwords(spec).app) as conn:
        assert conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
    leader = _leader(spec)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        connect(f"host={leader.host} port={leader.pg_port} user={spec.app.user} dbname={spec.app.database} "
                "sslmode=disable connect_timeout=5", load_passwords(spec).app)
    with _superuser(spec) as conn:
        streams = conn.execute("SELECT r.application_name, s.ssl FROM pg_stat_replication r "
                               "JOIN pg_stat_ssl s USING (pid)").fetchall()
        rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules WHERE type <> 'local'").fetchall()
    assert len(streams) == 2 and all(ssl for _, ssl in streams), streams
    assert rules and all(kind == "hostssl" or (kind == "hostnossl" and how == "reject") for kind, how in rules), rules


@pytest.fixture()
def from_client_network(secured_cluster: str, spec: ClusterSpec) -> Iterator[str]:
    """A conninfo prefix reaching the leader from CLIENT_ADDRESS (in allowed_client_networks, no member's)."""
    leader = _leader(spec)
    proxy = SourceAddressProxy(PROXY_PORT, (leader.host, leader.pg_port), CLIENT_ADDRESS)
    try:
        yield f"host=127.0.0.1 port={PROXY_PORT} connect_timeout=5"
    finally:
        proxy.close()


def test_member_roles_are_rejected_from_client_networks(from_client_network: str, spec: ClusterSpec) -> None:
    passwords = load_passwords(spec)
    with connect(f"{from_client_network} user={spec.app.user} dbname={spec.app.database}", passwords.app) as conn:
        assert conn.execute("SELECT host(inet_client_addr())").fetchone()[0] == CLIENT_ADDRESS
    for user, password, extra in ((SUPERUSER, passwords.superuser, ""), (REPLICATION_USER, passwords.replication, ""),
                                  (REPLICATION_USER, passwords.replication, " replication=true")):
        with pytest.raises(psycopg.OperationalError, match=f'pg_hba.conf rejects .*host "{CLIENT_ADDRESS}"'):
            connect(f"{from_client_network} user={user} dbname=postgres{extra}", password)


def _restore_in_background(source_file: str, target_file: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value())}
    return subprocess.Popen([sys.executable, "-m", "flows.restore", "--spec", source_file, "--target", "latest",
                             "--target-spec", target_file], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@dataclass
class RestoreWatch:
    """What a restoring member showed: its pg_hba.conf read while recovery ran (Patroni keeps hot standby off
    during a custom bootstrap that keeps pgBackRest's recovery settings, so no session is possible then), the
    pg_hba_file_rules a session over its socket read once it took connections while the bootstrap's trust was
    still in place (before Patroni put dbtier's pg_hba back), and how a TCP login as the superuser then ended."""

    file_during_recovery: list[list[str]] = field(default_factory=list)
    rules: list[tuple[Any, ...]] = field(default_factory=list)
    tcp_superuser: str = ""
    refusals: dict[str, int] = field(default_factory=dict)


def _hba_file(spec: ClusterSpec, member: PgMember) -> list[list[str]]:
    data = get_provider(spec).runner(spec, member.host).read_file(f"{member.data_dir}/pg_hba.conf") or b""
    lines = [line.split("#", 1)[0].split() for line in data.decode().splitlines()]
    return [fields for fields in lines if fields]


def _watch_restore(copy: ClusterSpec, member: PgMember, restore: subprocess.Popen[str], timeout: float) -> RestoreWatch:
    """Poll ``member``'s socket with a wrong password (only ``trust`` lets it in) until it takes a session."""
    watch, deadline = RestoreWatch(), time.monotonic() + timeout
    while time.monotonic() < deadline and restore.poll() is None:
        try:
            conn = psycopg.connect(host=member.socket_dir, port=member.pg_port, user=SUPERUSER, dbname="postgres",
                                   password="not-the-password", autocommit=True, connect_timeout=2)
        except psycopg.OperationalError as err:
            said = " ".join(str(err).split())
            watch.refusals[said[-100:]] = watch.refusals.get(said[-100:], 0) + 1
            if "Hot standby mode is disabled" in said and not watch.file_during_recovery:  # recovery is running
                watch.file_during_recovery = _hba_file(copy, member)
            time.sleep(0.01)
            continue
        with conn:
            watch.rules = list(conn.execute("SELECT line_number, type, database, user_name, address, auth_method "
                                            "FROM pg_hba_file_rules"))
        try:
            connect(f"host={member.host} port={member.pg_port} user={SUPERUSER} dbname=postgres connect_timeout=3",
                    "not-the-password").close()
            watch.tcp_superuser = "logged in"
        except psycopg.OperationalError as err:
            watch.tcp_superuser = " ".join(str(err).split())
        return watch
    raise AssertionError(f"{member.name} never took a session with the bootstrap's trust: {watch.refusals}")


def test_a_restore_opens_no_tcp_trust_while_recovering(secured_cluster: str, spec: ClusterSpec) -> None:
    from flows.backup import backup

    backup(spec_path=secured_cluster, kind="full")
    # WAL to replay: 20 segments after the backup, switched in one superuser session (a session per switch took 24 s).
    with connect(client_dsn(spec), load_passwords(spec).app) as conn, _superuser(spec) as su:
        conn.execute("CREATE TABLE IF NOT EXISTS ledger (id int PRIMARY KEY)")
        for i in range(20):
            conn.execute("INSERT INTO ledger VALUES (%s) ON CONFLICT DO NOTHING", (1000 + i,))
            su.execute("SELECT pg_switch_wal()")
    copy = build_spec(one_member(derive_target(spec, "sec-restored", RESTORE_OFFSET)), environ={})
    target_file = write_spec(copy, os.path.join(spec.data_root, "restored.yaml"))
    member = pg_members(copy)[0]
    restore = _restore_in_background(secured_cluster, target_file)
    try:
        watch = _watch_restore(copy, member, restore, timeout=240)
        out, err = restore.communicate(timeout=300)
        assert restore.returncode == 0, err[-3000:]
    finally:
        if restore.poll() is None:
            restore.kill()
            restore.communicate()
        bootstrap.stop_services(get_engine(copy), get_provider(copy), copy)
        if bootstrap.is_initialised(get_engine(copy), get_provider(copy), copy):
            bootstrap.wipe(get_engine(copy), get_provider(copy), copy)
    during = watch.file_during_recovery
    assert during, f"recovery was never seen running: {watch.refusals}"
    assert not [line for line in during if line[0] != "local" and line[-1] == "trust"], during
    assert ["local", "all", SUPERUSER, "trust"] in during, "Patroni's bootstrap trust is there, on the socket only"
    assert watch.rules, "a session over the socket read pg_hba_file_rules while the bootstrap's trust was open"
    assert not [r for r in watch.rules if r[1] != "local" and r[5] == "trust"], watch.rules
    assert {r[1] for r in watch.rules} == {"local"}, watch.rules
    assert "password authentication failed" in watch.tcp_superuser or "no pg_hba.conf entry" in watch.tcp_superuser, (
        f"a TCP login as the superuser with a wrong password, meanwhile: {watch.tcp_superuser}")
