"""The MongoDB engine's first slice: the spec, its mongod services and files, and provision's refusal on a host
without mongod (pure tables, and one real ``python -m flows.provision``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbtier.engines.base import get_engine
from dbtier.engines.mongodb.config import keyfile_problem
from dbtier.engines.mongodb.engine import MongoEngine, StepNotBuilt, not_built
from dbtier.errors import SpecError
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec, build_spec, load_spec

REPO = Path(__file__).resolve().parent.parent.parent
SAMPLE = REPO / "deployments" / "clusters" / "mongodb.yaml"


def mongo_spec(**fields: Any) -> ClusterSpec:
    return build_spec({"name": "mongo", "engine": "mongodb", **fields}, environ={})


def test_the_sample_loads_with_the_defaults() -> None:
    spec = load_spec(SAMPLE, environ={})
    assert (spec.engine, spec.members) == ("mongodb", 3)
    assert spec.mongo.model_dump() == {"replset": "rs0", "port": 27017, "election_timeout_ms": 10000,
                                         "oplog_size_mb": None, "oplog_slice_s": 60, "oplog_archiving": True,
                                         "max_lag_s": 30, "binaries": {"mongod": "/usr/bin/mongod",
                                         "mongodump": "/usr/bin/mongodump", "mongorestore": "/usr/bin/mongorestore"}}
    assert spec.postgres is None
    assert spec.mongo.binaries.mongod == "/usr/bin/mongod"
    assert isinstance(get_engine(spec), MongoEngine) and get_engine(spec).name == "mongodb"


def test_postgres_stays_the_default_engine() -> None:
    assert (ClusterSpec().engine, get_engine(ClusterSpec()).name) == ("postgres", "postgres")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"routing": {"enabled": True}},
         "invalid cluster spec: routing: belongs to engine postgres (now postgres.routing), and this spec's engine is "
         "mongodb; remove it (HAProxy and PgBouncer route PostgreSQL only; a replica set's clients use its "
         "replica-set URI, dbtier dsn)"),
        ({"postgres": {"routing": {"enabled": True}}},
         "invalid cluster spec: postgres: is the section of engine postgres, and this spec's engine is mongodb"),
        ({"mongodb": {"replset": "rs 0"}}, "invalid cluster spec: mongodb.replset: String should match pattern"),
        ({"mongodb": {"replset": ""}}, "invalid cluster spec: mongodb.replset: String should match pattern"),
        ({"mongodb": {"port": 80}}, "invalid cluster spec: mongodb.port: Input should be greater than or equal to 1024"),
        ({"mongodb": {"oplog_size_mb": 10}}, "invalid cluster spec: mongodb.oplog_size_mb: Input should be greater"),
        ({"mongodb": {"shards": 2}}, "invalid cluster spec: mongodb.shards: is not a known field"),
        ({"engine": "mysql"}, "invalid cluster spec: engine: must be 'postgres' or 'mongodb'"),
    ],
)
def test_a_bad_mongodb_spec_is_refused_in_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        mongo_spec(**fields)
    line = caught.value.one_line()
    assert line.startswith(message), line
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "ports"),
    [
        ({}, [27017, 27018, 27019]),
        ({"members": 1}, [27017]),
        ({"members": 2}, [27017, 27018]),  # no etcd, so no odd count to keep
        ({"members": 5, "mongodb": {"port": 28000}}, [28000, 28001, 28002, 28003, 28004]),
    ],
)
def test_one_mongod_per_member_on_port_plus_index(fields: dict[str, Any], ports: list[int]) -> None:
    spec = mongo_spec(data_root="/d", **fields)
    engine = get_engine(spec)
    services = engine.member_services(spec)
    assert [s.ports for s in services] == [[(f"mongodb.port (member {i})", p)] for i, p in enumerate(ports)]
    assert [s.name for s in services] == [f"mongo{i}" for i in range(len(ports))]
    for i, service in enumerate(services):
        member_dir = f"/d/mongo/mongo{i}"
        assert (service.kind, service.host) == ("mongod", "127.0.0.1")
        assert service.argv == ["/usr/bin/mongod", "--config", f"{member_dir}/mongod.conf"]
        assert all(path.startswith(f"{member_dir}/") for path in (service.pidfile, service.logfile, service.marker))
    assert engine.consensus_services(spec) == []
    assert engine.required_programs(spec) == [("mongodb.binaries.mongod", "/usr/bin/mongod"),
                                              ("mongodb.binaries.mongodump", "/usr/bin/mongodump"),
                                              ("binaries.python", "/opt/dbtier/venv/bin/python")]


def test_member_files_are_its_mongod_conf_and_key_file_under_its_dir() -> None:
    spec = mongo_spec(data_root="/d", mongodb={"replset": "orders", "oplog_size_mb": 2048})
    engine = get_engine(spec)
    second = engine.member_services(spec)[1]
    secrets = Passwords.generate(engine.secret_roles)
    files = engine.member_files(spec, second, secrets)
    assert list(files) == ["/d/mongo/mongo1/mongod.conf", "/d/mongo/mongo1/keyfile"]
    assert files["/d/mongo/mongo1/keyfile"] == secrets.keyfile.encode() and keyfile_problem(secrets.keyfile) is None
    assert [engine.file_mode(spec, path) for path in files] == [0o600, 0o400]
    conf = yaml.safe_load(files["/d/mongo/mongo1/mongod.conf"])
    assert conf["net"]["port"] == 27018
    assert conf["replication"] == {"replSetName": "orders", "oplogSizeMB": 2048}
    assert conf["storage"]["dbPath"] == "/d/mongo/mongo1/data"
    assert conf["security"]["keyFile"] == "/d/mongo/mongo1/keyfile"


def test_a_step_not_built_still_refuses_in_one_line() -> None:
    with pytest.raises(StepNotBuilt, match=r"^engine mongodb: sharding is not built yet; use engine: postgres"):
        not_built("sharding")


def test_certificate_reload_without_tls_says_there_is_nothing_to_reload() -> None:
    spec = mongo_spec(tls={"enabled": False})
    assert get_engine(spec).reload_certificates(spec, Passwords(superuser="pw-root", app="pw-app")) == [
        "TLS is off: no mongod certificate to reload"]


def test_provision_on_a_host_without_mongod_refuses_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBTIER_", "PREFECT_"))}
    # Without PREFECT_API_URL no API is asked before the flow run, which the refusal comes before.
    env.update(DBTIER_DATA_ROOT=str(data_root), PREFECT_HOME=str(tmp_path / "prefect"))
    done = subprocess.run([sys.executable, "-m", "flows.provision", "--spec", str(SAMPLE)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("dbtier: error: mongodb.binaries.mongod: /usr/bin/mongod is missing on 127.0.0.1"), line
    assert "install MongoDB's server there" in line and "set mongodb.binaries.mongod" in line
    assert not data_root.exists(), "nothing is created under the data root"


def test_provision_prints_the_replica_set_uris_and_a_mongosh_line() -> None:
    spec = load_spec(SAMPLE, environ={})
    engine = get_engine(spec)
    dsns = engine.client_dsns(spec)
    assert [label for label, _ in dsns] == ["read-write URI", "read-scaling URI"]
    hosts = "127.0.0.1:27017,127.0.0.1:27018,127.0.0.1:27019"
    assert all(uri.startswith(f"mongodb://app@{hosts}/app?replicaSet=rs0&authSource=admin&") for _, uri in dsns)
    assert "w=majority" in dsns[0][1] and "readPreference=secondaryPreferred" in dsns[1][1]
    assert all("tls=true&tlsCAFile=" in uri for _, uri in dsns), "TLS is on by default: clients verify the CA"
    assert engine.dsn(spec, "direct") == engine.dsn(spec) == dsns[0][1]
    assert engine.connect_hint(dsns[0][1], "dbtier password") == f'mongosh "{dsns[0][1]}" --password "$(dbtier password)"'


@pytest.mark.parametrize(("route", "pooled", "words"), [
    ("sync", False, "--route: a MongoDB replica set has the routes rw (writes), ro (read scaling) and direct (rw); "
                    "sync is not one"),
    ("rw", True, "--pooled: a MongoDB replica set has no pooler (the driver pools its connections); drop --pooled"),
])
def test_a_route_the_set_lacks_is_one_line(route: str, pooled: bool, words: str) -> None:
    spec = load_spec(SAMPLE, environ={})
    with pytest.raises(SpecError) as refused:
        get_engine(spec).dsn(spec, route, pooled)
    assert refused.value.one_line() == words
