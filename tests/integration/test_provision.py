"""A real three-member cluster brought up through the provision flow, checked as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from blocks.passwords import load_passwords
from dbtier import procs
from dbtier.bootstrap import all_services
from dbtier.engines.base import get_engine
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import client_dsn, etcd_members, pg_members
from tests.clusters import listening, rest_json, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("itest", block=1, data_root=shared_tmpdir("dbtier-itest-"))


@pytest.fixture(scope="module")
def provisioned(prefect_harness: None, spec: ClusterSpec) -> Iterator[dict[str, Any]]:
    """three_node_cluster_with_leader: provisioned through the flow, stopped by PID afterwards."""
    from flows.provision import provision

    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        result = provision(spec_path=spec_file)
        yield {"result": result, "spec_file": spec_file}


def _cluster(spec: ClusterSpec) -> dict[str, Any]:
    doc: dict[str, Any] = rest_json(spec, pg_members(spec)[0], "/cluster")
    return doc


def _pids(spec: ClusterSpec) -> dict[str, int | None]:
    provider = get_provider(spec)
    return {s.name: procs.running_pid(provider.runner(spec, s.host), s) for s in all_services(get_engine(spec), spec)}


def test_one_leader_and_two_streaming_replicas_in_patroni(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    members = _cluster(spec)["members"]
    roles = sorted(m["role"] for m in members)
    assert roles == ["leader", "replica", "replica"]
    assert all(m["state"] == "streaming" for m in members if m["role"] == "replica")
    assert provisioned["result"]["leader"] in {m["name"] for m in members if m["role"] == "leader"}


def test_primary_sees_two_streaming_replicas_in_pg_stat_replication(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    password = load_passwords(spec).superuser
    with psycopg.connect(client_dsn(spec, "postgres", "postgres"), password=password) as conn:
        rows = conn.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
        slots = conn.execute("SELECT slot_name, active FROM pg_replication_slots").fetchall()
    assert sorted(state for _, state in rows) == ["streaming", "streaming"]
    assert len(slots) == 2 and all(active for _, active in slots)


def test_row_written_through_dsn_is_read_on_each_replica(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    password = load_passwords(spec).app
    with psycopg.connect(client_dsn(spec), password=password, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS itest_rows (id serial PRIMARY KEY, note text)")
        conn.execute("INSERT INTO itest_rows (note) VALUES ('written through the DSN')")
        primary_port = conn.info.port
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    replicas = [m for m in pg_members(spec) if m.pg_port != primary_port]
    assert len(replicas) == 2
    for member in replicas:
        conninfo = f"host=127.0.0.1 port={member.pg_port} user=app dbname=app connect_timeout=3"
        found, recovery = None, None
        deadline = time.monotonic() + 15
        while found is None and time.monotonic() < deadline:
            try:
                with psycopg.connect(conninfo, password=password) as conn:
                    recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    found = conn.execute("SELECT note FROM itest_rows WHERE note = 'written through the DSN'").fetchone()
            except psycopg.Error:
                pass  # the table itself may not have replicated yet
            if found is None:
                time.sleep(0.1)
        assert recovery == (True,), member.name
        assert found == ("written through the DSN",), member.name


def test_hba_uses_scram_on_tcp_and_checksums_are_on(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    password = load_passwords(spec).superuser
    with psycopg.connect(client_dsn(spec, "postgres", "postgres"), password=password) as conn:
        hba = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
        checksums = conn.execute("SHOW data_checksums").fetchone()
    assert hba and all(method == "scram-sha-256" or (kind == "hostnossl" and method == "reject") for kind, method in hba)
    assert {kind for kind, _ in hba} == {"local", "hostssl", "hostnossl"}
    assert checksums == ("on",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(client_dsn(spec, "postgres", "postgres"), password="wrong").close()


def test_database_processes_do_not_run_as_root(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    for name, pid in _pids(spec).items():
        assert pid is not None, name
        assert os.stat(f"/proc/{pid}").st_uid != 0, name


def test_second_provision_changes_nothing(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    from flows.provision import provision

    before = _pids(spec)
    passwords = load_passwords(spec)
    result = provision(spec_path=provisioned["spec_file"])
    assert result["changed"] is False
    assert _pids(spec) == before
    assert load_passwords(spec).values() == passwords.values()


def test_provision_cli_prints_the_member_table_and_a_dsn_without_password(
    provisioned: dict[str, Any], spec: ClusterSpec
) -> None:
    """What a user sees at the end of `make provision` (here on a healthy cluster: nothing changed)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [sys.executable, "-m", "flows.provision", "--spec", provisioned["spec_file"]],
        capture_output=True, text=True, cwd=REPO, timeout=180, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("name "))
    assert header.split() == ["name", "role", "state", "timeline", "lag", "ports"]
    rows = [line.split()[0] for line in lines if line.startswith(("pg", "etcd"))]
    assert rows == ["pg0", "pg1", "pg2", "etcd0", "etcd1", "etcd2"]
    assert f"read-write DSN: {client_dsn(spec)}" in lines
    assert "(nothing changed)" in done.stdout and "password --role app" in done.stdout
    assert not [s for s in load_passwords(spec).values() if s in done.stdout + done.stderr]


def test_status_cli_exit_code_follows_health(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    cli = [sys.executable, "-m", "dbtier.cli", "status", "--spec", provisioned["spec_file"]]
    healthy = subprocess.run(cli, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "healthy: leader" in healthy.stdout
    assert "backups: none yet" in healthy.stdout and "WAL archived up to 00000001" in healthy.stdout


def test_spec_stored_as_a_block_drives_the_status_flow(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    from blocks.cluster_spec import ClusterSpecBlock
    from flows.status import status

    ClusterSpecBlock.from_spec(spec).save("itest-spec", overwrite=True)
    loaded = ClusterSpecBlock.load("itest-spec")
    assert loaded.get_spec() == spec
    result = status(spec_block="itest-spec")
    assert result["healthy"] is True and result["problems"] == []
    assert [row["name"] for row in result["members"]][:3] == ["pg0", "pg1", "pg2"]


def test_lost_secret_block_is_refused_not_regenerated(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    """New passwords would lock Patroni out of its own cluster: provision says so and changes nothing."""
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    from dbtier.errors import SecretError
    from dbtier.secrets import block_name
    from flows.provision import provision

    name = block_name(spec, "replication")
    kept = load_passwords(spec).replication
    before = _pids(spec)
    Secret.delete(name)
    try:
        with pytest.raises(SecretError, match=f"{name}: no such Secret block in .*, but cluster itest .* was initialised"):
            provision(spec_path=provisioned["spec_file"])
        assert _pids(spec) == before
    finally:
        Secret(value=SecretStr(kept)).save(name, overwrite=True)
    assert load_passwords(spec).replication == kept


def test_provision_restarts_what_is_missing(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    """Stop one etcd member and one replica's Patroni (by PID), then provision starts just those."""
    from flows.provision import provision

    engine, provider = get_engine(spec), get_provider(spec)
    leader = next(m["name"] for m in _cluster(spec)["members"] if m["role"] == "leader")
    replica = next(s for s in engine.member_services(spec) if s.name != leader)
    etcd = engine.consensus_services(spec)[2]
    before = _pids(spec)
    for service in (replica, etcd):
        procs.stop(provider.runner(spec, service.host), service)
    cli = [sys.executable, "-m", "dbtier.cli", "status", "--spec", provisioned["spec_file"]]
    degraded = subprocess.run(cli, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert degraded.returncode == 1
    assert "unhealthy" in degraded.stdout

    result = provision(spec_path=provisioned["spec_file"])
    after = _pids(spec)
    assert result["changed"] is True
    assert after[replica.name] not in (None, before[replica.name])
    assert after[etcd.name] not in (None, before[etcd.name])
    untouched = set(before) - {replica.name, etcd.name}
    assert {n: after[n] for n in untouched} == {n: before[n] for n in untouched}
    assert get_engine(spec).status(spec).health.healthy


def test_secrets_stay_out_of_logs_parameters_and_artifacts(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    secrets = load_passwords(spec).values()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(limit=200)
        runs = client.read_flow_runs(limit=50)
        artifacts = client.read_artifacts(limit=50)
    assert len(logs) > 10, "the flow runs should have logged their steps"
    table = next(a for a in artifacts if a.key == f"{spec.name}-members")
    assert "pg0" in str(table.data) and "etcd2" in str(table.data)
    published = " ".join(
        [log.message for log in logs]
        + [repr(run.parameters) for run in runs]
        + [f"{a.data} {a.description}" for a in artifacts]
        + [repr(provisioned["result"])]
    )
    for name in ("pg0", "pg1", "pg2", "etcd0"):
        member_dir = f"{spec.cluster_dir}/{name}"
        for log_file in os.listdir(member_dir):
            if log_file.endswith(".log"):
                published += open(os.path.join(member_dir, log_file), errors="replace").read()
    leaked = [i for i, secret in enumerate(secrets) if secret in published]
    assert leaked == []


def test_teardown_leaves_no_process_and_no_port_but_keeps_data(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    from flows.teardown import teardown

    pids = [pid for pid in _pids(spec).values() if pid]
    teardown(spec_path=provisioned["spec_file"])
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    ports = [p for m in pg_members(spec) for p in (m.pg_port, m.rest_port)]
    ports += [p for m in etcd_members(spec) for p in (m.client_port, m.peer_port)]
    assert [p for p in ports if listening(p)] == []
    assert os.path.isdir(pg_members(spec)[0].data_dir)


def test_teardown_with_wipe_deletes_the_data(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    from flows.teardown import teardown

    teardown(spec_path=provisioned["spec_file"], wipe=True)
    assert not os.path.exists(spec.cluster_dir)
