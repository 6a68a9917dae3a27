"""Bad input is refused in one line, with a meaningful exit code, and nothing is touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dbtier.errors import PreflightError
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import etcd_members, pg_members
from tests.clusters import listening, shared_tmpdir, spec_for_tests, write_spec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _provision_cli(spec_file: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.provision", "--spec", spec_file],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def _no_cluster_ports_listening(spec: ClusterSpec, except_port: int | None = None) -> bool:
    ports = [p for m in pg_members(spec) for p in (m.pg_port, m.rest_port)]
    ports += [p for m in etcd_members(spec) for p in (m.client_port, m.peer_port)]
    return not [p for p in ports if p != except_port and listening(p)]


@pytest.fixture
def spec() -> ClusterSpec:
    return spec_for_tests("refused", block=2, data_root=shared_tmpdir("dbtier-refusals-"))


@pytest.fixture
def busy_port(spec: ClusterSpec) -> Iterator[int]:
    """Somebody else listens on the second member's PostgreSQL port."""
    port = pg_members(spec)[1].pg_port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        yield port


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("members: 9\n", "invalid cluster spec: members: Input should be less than or equal to 7"),
        ("postgres: {patroni: {ttl: 10}}\n", "postgres.patroni.ttl: must be at least 20"),
        ("patroni: {ttl: 10}\n", "postgres.patroni.ttl: must be at least 20"),  # the old place: read, then refused
        ("engine: oracle\n", "engine: must be 'postgres'"),
        ("postgres: {routing: {enabled: true}, ports: {router: 5433}}\n",
         "postgres.ports.router (rw route): port 5433 is also postgres.ports.postgres (member 1); move one base port"),
    ],
)
def test_bad_spec_is_refused_before_anything_starts(tmp_path: object, content: str, words: str) -> None:
    path = os.path.join(str(tmp_path), "bad.yaml")
    with open(path, "w") as fh:
        fh.write(content)
    done = _provision_cli(path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dbtier: error: ") and words in lines[0], done.stderr


def test_port_in_use_is_refused_naming_the_field(spec: ClusterSpec, busy_port: int) -> None:
    done = _provision_cli(write_spec(spec, os.path.join(spec.data_root, "spec.yaml")))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"postgres.ports.postgres: 127.0.0.1:{busy_port} (for pg1) is already in use" in lines[0]
    assert not os.path.exists(spec.cluster_dir)
    assert _no_cluster_ports_listening(spec, except_port=busy_port)


def test_foreign_data_dir_is_refused_and_left_untouched(spec: ClusterSpec) -> None:
    foreign = os.path.join(spec.cluster_dir, "pg0", "pgdata")
    os.makedirs(foreign)
    with open(os.path.join(foreign, "PG_VERSION"), "w") as fh:
        fh.write("14\n")
    done = _provision_cli(write_spec(spec, os.path.join(spec.data_root, "spec.yaml")))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"dbtier: error: data_root: {spec.cluster_dir} is not empty and belongs to no dbtier cluster; choose another "
        "data_root or name, or move that directory away (dbtier will not initialise over it)"
    ]
    assert sorted(os.listdir(spec.cluster_dir)) == ["pg0"]
    assert open(os.path.join(foreign, "PG_VERSION")).read() == "14\n"
    assert _no_cluster_ports_listening(spec)


def test_the_flow_itself_refuses_too(prefect_harness: None, spec: ClusterSpec, busy_port: int) -> None:
    """Run from the Prefect UI or a deployment, the flow's first task makes the same refusal."""
    from flows.provision import provision

    with pytest.raises(PreflightError, match=f"postgres.ports.postgres: 127.0.0.1:{busy_port}"):
        provision(spec_path=write_spec(spec, os.path.join(spec.data_root, "spec.yaml")))
    assert not os.path.exists(spec.cluster_dir)
    assert _no_cluster_ports_listening(spec, except_port=busy_port)


def test_unknown_os_user_is_refused(spec: ClusterSpec, tmp_path: object) -> None:
    data = spec.model_dump(mode="json")
    data["os_user"] = "nosuchuser"
    path = os.path.join(spec.data_root, "spec.yaml")
    import yaml

    with open(path, "w") as fh:
        yaml.safe_dump(data, fh)
    done = _provision_cli(path)
    assert done.returncode == 2
    assert "os_user: no OS user 'nosuchuser' on this machine; run 'make setup'" in done.stderr
