"""Routing and pooling on real HAProxy and PgBouncer processes, in front of a synchronous three-member cluster.

Runbook (local provider, port block 24; the routes on +60..+64, stats on +65, PgBouncers on +80..+82):
1. before anything runs, a router port somebody else holds is refused in one line and nothing starts;
2. provision prints an rw, an ro and a pooled DSN, and each works with psql;
3. writes through rw land on the leader, reads through ro on replicas (both of them, over several connections),
   sync on Patroni's synchronous standby; HAProxy's own stats agree;
4. PgBouncer: the app logs in through auth_query (no app password beside the pooler), a wrong password, the
   superuser and the replication role are refused, and so is plain TCP;
5. a router cuts sessions to a member whose Patroni stops answering, though its PostgreSQL still runs;
   status shows each router's view, and flags one that disagrees with Patroni (exit 1);
6. with no replica's Patroni answering, ro lands on the primary;
7. a switchover: the old session through rw is gone, new ones land on the new leader, a pooled client with
   a retry loop keeps writing; then a switchover drill writes through the router and loses nothing (the crash
   drill through the routers runs on the lab, test_lab.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from blocks.passwords import load_passwords
from dbtier import procs
from dbtier.engines.postgres import faults
from dbtier.drills.settings import DrillSettings
from dbtier.engines.postgres import pg_routes
from dbtier.engines.postgres.control_plane import rest_login
from dbtier.engines.postgres.patroni_config import REPLICATION_USER, SUPERUSER
from dbtier.engines.postgres.pg_roles import MONITORING_USER
from dbtier.engines.postgres.pgbouncer_config import AUTH_USER, auth_file_path
from dbtier.engines.postgres.patroni_health import role_holder
from dbtier.providers.base import get_provider
from dbtier.engines.postgres.routing import bouncers, routed_dsn, routers
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import pg_member, pg_members
from tests.clusters import (dbtier_metric, eventually, listening, provisioned_by_flow, run_log_lines, shared_tmpdir, spec_for_tests,
                            write_spec)

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK = 24
FAST = DrillSettings(rto_budget_s=40, rejoin_budget_s=60, settle_s=1.0, tail_s=0.5, healthy_timeout_s=90)
#: Flow runs whose every log line must hold no password.
RUNS: list[Any] = []


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("route", block=BLOCK, data_root=shared_tmpdir("dbtier-routing-"),
                          routing={"enabled": True}, synchronous_mode=True)


@pytest.fixture(scope="module")
def routed(prefect_harness: None, spec: ClusterSpec) -> Iterator[str]:
    with provisioned_by_flow(spec, wipe=True) as spec_file:
        yield spec_file


def _app(spec: ClusterSpec, route: str, pooled: bool = False, **kwargs: Any) -> Any:
    options = {"prepare_threshold": None} if pooled else {}
    return psycopg.connect(routed_dsn(spec, route, pooled), password=load_passwords(spec).app, autocommit=True,
                           **options, **kwargs)


def _landed(conn: Any) -> tuple[int, bool]:
    """(PostgreSQL port, in recovery) of the member a routed connection reached."""
    row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    return int(row[0]), bool(row[1])


def _roles(spec: ClusterSpec) -> tuple[str | None, list[str], list[str]]:
    return pg_routes.roles(faults.cluster_doc(spec))


def _routes_agree(spec: ClusterSpec) -> bool:
    patroni = _roles(spec)
    if patroni[0] is None or len(patroni[1]) != 2 or not patroni[2]:
        return False
    views = [pg_routes.router_servers(spec, r) for r in routers(spec)]
    landings = pg_routes.route_view(spec, load_passwords(spec))
    return (not pg_routes.route_problems(landings, *patroni)
            and all(not isinstance(v, str) and not pg_routes.view_problems("r", v, *patroni) for v in views))


def test_a_router_port_in_use_is_refused_in_one_line_before_anything_starts(spec: ClusterSpec) -> None:
    """Runs first, before the module's cluster exists."""
    port = spec.pg.ports.router + 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        done = subprocess.run([sys.executable, "-m", "flows.provision", "--spec",
                               write_spec(spec, os.path.join(spec.data_root, "refused.yaml"))],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"postgres.ports.router (ro route): 127.0.0.1:{port} (for router0) is already in use" in lines[0]
    assert not os.path.exists(spec.cluster_dir)
    assert not [p for p in (spec.pg.ports.postgres, spec.pg.ports.router, spec.pg.ports.pgbouncer) if listening(p)]


def test_provision_prints_routed_dsns_that_work_with_psql(routed: str, spec: ClusterSpec) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run([sys.executable, "-m", "flows.provision", "--spec", routed],
                          capture_output=True, text=True, cwd=REPO, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
               if line.startswith(("read-write DSN:", "read-only DSN:", "pooled DSN:", "direct DSN:"))}
    assert printed == {"read-write DSN": routed_dsn(spec, "rw"), "read-only DSN": routed_dsn(spec, "ro"),
                       "pooled DSN": routed_dsn(spec, "rw", pooled=True), "direct DSN": routed_dsn(spec, "direct")}
    passwords = load_passwords(spec)
    assert not [p for p in passwords.values() if p in done.stdout + done.stderr]
    leader = pg_member(spec, _roles(spec)[0] or "")
    for label, expect_recovery in (("read-write DSN", "f"), ("read-only DSN", "t"), ("pooled DSN", "f")):
        psql = subprocess.run(["psql", "-XAtc", "SELECT inet_server_port(), pg_is_in_recovery()", printed[label]],
                              capture_output=True, text=True, timeout=30, env={**env, "PGPASSWORD": passwords.app})
        assert psql.returncode == 0, f"{label}: {psql.stderr}"
        port, recovery = psql.stdout.strip().split("|")
        assert recovery == expect_recovery, label
        if expect_recovery == "f":
            assert int(port) == leader.pg_port, label


def test_writes_land_on_the_leader_reads_on_replicas_sync_on_the_sync_standby(routed: str, spec: ClusterSpec) -> None:
    eventually("routes agree with Patroni", lambda: _routes_agree(spec))
    leader, replicas, sync = _roles(spec)
    port_of = {m.pg_port: m.name for m in pg_members(spec)}
    with _app(spec, "rw") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS routed (id serial PRIMARY KEY, note text)")
        conn.execute("INSERT INTO routed (note) VALUES ('through rw')")
        assert port_of[_landed(conn)[0]] == leader
    readers = []
    for _ in range(6):  # leastconn over both replicas: held connections spread
        conn = _app(spec, "ro")
        readers.append(conn)
        port, recovery = _landed(conn)
        assert recovery and port_of[port] in replicas
        assert conn.execute("SELECT count(*) FROM routed WHERE note = 'through rw'").fetchone()[0] >= 1
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO routed (note) VALUES ('through ro')")
    assert {port_of[_landed(c)[0]] for c in readers} == set(replicas)
    for conn in readers:
        conn.close()
    with _app(spec, "sync") as conn:
        assert [port_of[_landed(conn)[0]]] == sync
    for router in routers(spec):
        states = pg_routes.router_servers(spec, router)
        assert not isinstance(states, str), states
        up = pg_routes.up_servers(states)
        assert up["rw"] == [leader] and up["rw-pooled"] == [leader] and up["sync"] == sync
        assert sorted(up["ro"]) == sorted(replicas) and sorted(up["ro-pooled"]) == sorted(replicas)


def test_pgbouncer_authenticates_through_auth_query_and_refuses_the_rest(routed: str, spec: ClusterSpec) -> None:
    passwords = load_passwords(spec)
    with _app(spec, "rw", pooled=True) as conn:
        assert conn.execute("SELECT current_user, ssl FROM pg_stat_ssl, current_user "
                            "WHERE pid = pg_backend_pid()").fetchone() == (spec.app.user, True)
        conn.execute("INSERT INTO routed (note) VALUES ('pooled')")
    for bouncer in bouncers(spec):  # the auth user's own line and the console stats user's verifier; no app line
        content = open(auth_file_path(bouncer)).read()
        lines = content.splitlines()
        assert lines[0] == f'"{AUTH_USER}" "{passwords.pgbouncer}"' and len(lines) == 2
        assert lines[1].startswith(f'"{MONITORING_USER}" "SCRAM-SHA-256$') and passwords.monitoring not in content
        assert oct(os.stat(auth_file_path(bouncer)).st_mode & 0o777) == "0o600"
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(routed_dsn(spec, "rw", pooled=True), password="wrong", connect_timeout=5).close()
    for user, password in ((SUPERUSER, passwords.superuser), (REPLICATION_USER, passwords.replication),
                           (AUTH_USER, passwords.pgbouncer)):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(routed_dsn(spec, "rw", pooled=True, user=user), password=password, connect_timeout=5).close()
    plain = f"host=127.0.0.1 port={bouncers(spec)[0].port} dbname={spec.app.database} user={spec.app.user} sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(plain, password=passwords.app, connect_timeout=5).close()
    through_router = routed_dsn(spec, "rw", pooled=True).split("?")[0] + "?sslmode=disable&connect_timeout=5"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(through_router, password=passwords.app).close()


def test_a_router_cuts_sessions_to_a_member_whose_patroni_stops_answering(routed: str, spec: ClusterSpec) -> None:
    """Patroni of one replica frozen (SIGSTOP) for a few seconds: its PostgreSQL runs on, but the router marks
    it down and shuts its sessions; thawed, it comes back. Far shorter than the TTL: no failover."""
    provider = get_provider(spec)
    eventually("routes agree with Patroni", lambda: _routes_agree(spec))
    _, replicas, _ = _roles(spec)
    port_of = {m.pg_port: m.name for m in pg_members(spec)}
    sessions = [c for c in (_app(spec, "ro") for _ in range(4))]
    victim = port_of[_landed(sessions[0])[0]]
    member = pg_member(spec, victim)
    runner = provider.runner(spec, member.host)
    patroni_pid = procs.running_pid(runner, faults.service_named(spec, victim))
    postmaster = faults.postmaster_pid(runner, member)
    assert patroni_pid and postmaster and victim in replicas
    mine = [c for c in sessions if port_of[_landed(c)[0]] == victim]
    os.kill(patroni_pid, 19)  # SIGSTOP
    try:
        started = time.monotonic()

        def cut() -> bool:
            try:
                mine[0].execute("SELECT 1")
            except psycopg.OperationalError:
                return True
            return False

        eventually(f"the router cuts the sessions to {victim}", cut, timeout=15)
        cut_after = time.monotonic() - started
    finally:
        os.kill(patroni_pid, 18)  # SIGCONT
    print(f"router cut the sessions to {victim} {cut_after:.1f} s after its Patroni stopped answering")
    assert faults.postmaster_pid(runner, member) == postmaster  # PostgreSQL never restarted: the router cut them
    for conn in sessions:
        conn.close()
    eventually("routes agree again", lambda: _routes_agree(spec))


def _status(spec_file: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    return subprocess.run([sys.executable, "-m", "dbtier.cli", "status", "--spec", spec_file],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env=env)


def test_status_shows_each_routers_view_and_flags_one_that_disagrees(routed: str, spec: ClusterSpec) -> None:
    """The leader's Patroni frozen a few seconds (far below the TTL: it stays leader): HAProxy takes it out of
    rw while Patroni still names it leader, and status says so and exits 1."""
    provider = get_provider(spec)
    eventually("routes agree with Patroni", lambda: _routes_agree(spec))
    leader, replicas, sync = _roles(spec)
    done = _status(routed)
    assert done.returncode == 0, done.stdout + done.stderr
    view = next(line for line in done.stdout.splitlines() if line.startswith("router0: "))
    assert view.startswith(f"router0: rw -> {leader}; ro -> ") and f"; sync -> {sync[0]}; rw-pooled -> {leader};" in view
    member = pg_member(spec, leader or "")
    patroni_pid = procs.running_pid(provider.runner(spec, member.host), faults.service_named(spec, member.name))
    assert patroni_pid
    os.kill(patroni_pid, 19)  # SIGSTOP
    try:
        def rw_out() -> bool:
            states = pg_routes.router_servers(spec, routers(spec)[0])
            return not isinstance(states, str) and pg_routes.up_servers(states)["rw"] == []

        eventually("HAProxy takes the frozen leader out of rw", rw_out, timeout=15)
        done = _status(routed)
    finally:
        os.kill(patroni_pid, 18)  # SIGCONT
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"router disagrees: router0: HAProxy sends rw to no server, but Patroni says the leader is {leader}"
            in done.stdout.splitlines()), done.stdout
    eventually("routes agree again", lambda: _routes_agree(spec))


def test_ro_lands_on_the_primary_when_no_replica_is_healthy(routed: str, spec: ClusterSpec) -> None:
    provider = get_provider(spec)
    eventually("routes agree with Patroni", lambda: _routes_agree(spec))
    leader, replicas, _ = _roles(spec)
    port_of = {m.pg_port: m.name for m in pg_members(spec)}
    killed = [faults.kill_service(provider, spec, name) for name in replicas]
    try:
        def on_primary() -> bool:
            try:
                with _app(spec, "ro", connect_timeout=3) as conn:
                    return port_of[_landed(conn)[0]] == leader
            except psycopg.OperationalError:
                return False

        eventually("ro falls back to the primary", on_primary, timeout=30)
        with _app(spec, "ro", pooled=True) as conn:
            assert port_of[_landed(conn)[0]] == leader
    finally:
        for name in replicas:
            faults.restart_service(provider, spec, name)
    assert len(killed) == 2
    eventually("both replicas stream and routes agree again", lambda: _routes_agree(spec), timeout=90)


def test_a_switchover_moves_rw_cuts_old_sessions_and_a_pooled_client_retries_through(routed: str,
                                                                                     spec: ClusterSpec) -> None:
    eventually("routes agree with Patroni", lambda: _routes_agree(spec))
    leader, _, sync = _roles(spec)
    port_of = {m.pg_port: m.name for m in pg_members(spec)}
    old = _app(spec, "rw")
    assert port_of[_landed(old)[0]] == leader
    stop, gaps, written = threading.Event(), [], []

    def pooled_writer() -> None:
        conn, last_ok = None, time.monotonic()
        while not stop.is_set():
            try:
                conn = conn or _app(spec, "rw", pooled=True, connect_timeout=2)
                conn.execute("INSERT INTO routed (note) VALUES ('pooled retry') RETURNING id")
                now = time.monotonic()
                gaps.append(now - last_ok)
                last_ok = now
                written.append(port_of[_landed(conn)[0]])
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
            time.sleep(0.05)
        if conn is not None:
            conn.close()

    thread = threading.Thread(target=pooled_writer, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        faults.switchover(spec, leader or "", sync[0], rest_login(load_passwords(spec)))
        new = eventually("a new leader", lambda: (role_holder(faults.cluster_doc(spec), "leader") or leader) != leader
                    and role_holder(faults.cluster_doc(spec), "leader"))

        def rw_on_new() -> bool:
            try:
                with _app(spec, "rw", connect_timeout=3) as conn:
                    return port_of[_landed(conn)[0]] == new
            except psycopg.OperationalError:
                return False

        eventually("rw reaches the new leader", rw_on_new)
        eventually("the pooled client writes on the new leader", lambda: written and written[-1] == new, timeout=30)
    finally:
        stop.set()
        thread.join(timeout=10)
    with pytest.raises(psycopg.OperationalError):
        old.execute("SELECT 1")
    old.close()
    assert written[0] == leader and written[-1] == new
    print(f"pooled client through the switchover: {len(written)} writes, longest gap {max(gaps):.2f} s")


# The crash drill through the routers runs on the lab (test_lab.py), where each host has its own router.
@pytest.mark.parametrize("scenario", ["switchover"])
def test_drills_through_the_router_lose_no_acknowledged_write(routed: str, spec: ClusterSpec, scenario: str) -> None:
    from flows.failover_drill import failover_drill

    eventually("routes agree with Patroni", lambda: _routes_agree(spec), timeout=90)
    state = failover_drill(scenario=scenario, spec_path=routed, settings=FAST, return_state=True)
    RUNS.append(state.state_details.flow_run_id)
    (verdict,) = state.result()
    assert verdict["passed"] and verdict["leader_changed"], verdict["reasons"]
    assert verdict["lost_writes"] == 0
    assert f"the writer wrote through router0's rw route (127.0.0.1:{spec.pg.ports.router})" in verdict["notes"]
    print(f"{scenario} through the router: RTO {verdict['rto_s']:.2f} s, lost {verdict['lost_writes']}")
    left = f"drill-{scenario}"  # what Prometheus reads of it
    assert dbtier_metric(spec.name, left, "dbtier_failover_drill_passed", scenario=scenario) == 1
    assert dbtier_metric(spec.name, left, "dbtier_failover_drill_rto_seconds") == pytest.approx(verdict["rto_s"])
    assert dbtier_metric(spec.name, left, "dbtier_failover_drill_lost_writes") == 0


def test_no_password_reaches_a_log_line_of_the_drills_or_the_routers(routed: str, spec: ClusterSpec) -> None:
    assert len(RUNS) == 1, "run the module as a whole: the drill"
    lines = run_log_lines(RUNS)
    assert any(f"the writer writes through router0's rw route (127.0.0.1:{spec.pg.ports.router})" in line
               for line in lines)
    for directory in [*(r.dir for r in routers(spec)), *(b.dir for b in bouncers(spec))]:
        for name in os.listdir(directory):
            if name.endswith(".log"):
                with open(os.path.join(directory, name), errors="replace") as fh:
                    lines += fh.read().splitlines()
    secrets = list(load_passwords(spec).values())
    assert not [i for i, secret in enumerate(secrets) if any(secret in line for line in lines)]
