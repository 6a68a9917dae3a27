"""mongod.conf, the service, the replica-set document, the keyfile and the URIs (pure)."""

from __future__ import annotations

import pytest
import yaml

from dbtier.engines.mongodb.config import (
    MongoMember, MongoSettings, detached_argv, keyfile_problem, mongo_members, mongod_conf, mongod_service,
    new_keyfile, read_uri, redact_uri, render_mongod_conf, replset_config, write_keyfile, write_uri,
)
from dbtier.supervisors import render_unit

M0 = MongoMember("mongo0", "10.0.0.5", 27017, 2, "/var/lib/dbtier/c/mongo0")
MEMBERS = mongo_members("/var/lib/dbtier/c", ["10.0.0.5", "10.0.0.6", "10.0.0.7"], MongoSettings())


@pytest.mark.parametrize(
    ("settings", "path", "value"),
    [
        (MongoSettings(), ("net", "bindIp"), "10.0.0.5,127.0.0.1"),
        (MongoSettings(bind_localhost=False), ("net", "bindIp"), "10.0.0.5"),
        (MongoSettings(), ("net", "port"), 27017),
        (MongoSettings(), ("storage", "dbPath"), "/var/lib/dbtier/c/mongo0/data"),
        (MongoSettings(), ("replication", "replSetName"), "rs0"),
        (MongoSettings(replset="orders"), ("replication", "replSetName"), "orders"),
        (MongoSettings(oplog_size_mb=2048), ("replication", "oplogSizeMB"), 2048),
        (MongoSettings(), ("security", "keyFile"), "/var/lib/dbtier/c/mongo0/keyfile"),
        (MongoSettings(), ("systemLog", "path"), "/var/lib/dbtier/c/mongo0/mongod.log"),
        (MongoSettings(), ("processManagement", "fork"), False),
        (MongoSettings(tls=True), ("net", "tls", "mode"), "requireTLS"),
        (MongoSettings(tls=True), ("net", "tls", "certificateKeyFile"), "/var/lib/dbtier/c/mongo0/tls/mongod.pem"),
        (MongoSettings(tls=True), ("net", "tls", "CAFile"), "/var/lib/dbtier/c/mongo0/tls/ca.crt"),
    ],
)
def test_mongod_conf(settings: MongoSettings, path: tuple[str, ...], value: object) -> None:
    doc = yaml.safe_load(render_mongod_conf(M0, settings))
    assert doc == mongod_conf(M0, settings)
    for key in path:
        doc = doc[key]
    assert doc == value


@pytest.mark.parametrize(("settings", "has_tls"), [(MongoSettings(), False), (MongoSettings(tls=True), True)])
def test_tls_only_when_asked(settings: MongoSettings, has_tls: bool) -> None:
    assert ("tls" in mongod_conf(M0, settings)["net"]) is has_tls
    assert ("tls=true" in write_uri(MEMBERS, settings, "app", "pw", "app", tls_ca_file="/w/ca.crt").shown) is has_tls


def test_unit_and_detached_argv() -> None:
    service = mongod_service(M0, MongoSettings())
    unit = render_unit("c", "dbtier", service)
    lines = unit.splitlines()
    assert "User=dbtier" in lines and "Restart=on-failure" in lines
    assert '"mongod" "--config" "/var/lib/dbtier/c/mongo0/mongod.conf"' in unit
    assert not any(line.startswith("KillMode=") for line in lines)
    argv = detached_argv(M0, MongoSettings())
    assert argv[:2] == ["setsid", "-f"] and argv[-3:] == ["mongod", "--config", M0.config]
    assert service.ports == [("mongod", 27017)] and service.marker == M0.config


def test_replset_config_document() -> None:
    assert replset_config(MEMBERS, MongoSettings(election_timeout_ms=5000)) == {
        "_id": "rs0",
        "members": [
            {"_id": 0, "host": "10.0.0.5:27017", "priority": 2},
            {"_id": 1, "host": "10.0.0.6:27018", "priority": 1},
            {"_id": 2, "host": "10.0.0.7:27019", "priority": 1},
        ],
        "settings": {"electionTimeoutMillis": 5000},
    }


@pytest.mark.parametrize(
    ("content", "ok"),
    [(new_keyfile(), True), ("abcdef", True), ("abc", False), ("a" * 1025, False), ("not base64!", False),
     ("abcd\nefgh\n", True)],
)
def test_keyfile_problem(content: str, ok: bool) -> None:
    assert (keyfile_problem(content) is None) is ok


def test_new_keyfiles_differ_and_fit() -> None:
    a, b = new_keyfile(), new_keyfile()
    assert a != b and len(a.strip()) == 1008


def test_write_keyfile_mode() -> None:
    class Recorder:
        calls: list[tuple[str, bytes, int]] = []

        def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
            self.calls.append((path, data, mode))

    recorder = Recorder()
    write_keyfile(recorder, "/d/keyfile", "abcdef\n")  # type: ignore[arg-type]
    assert recorder.calls == [("/d/keyfile", b"abcdef\n", 0o400)]


@pytest.mark.parametrize(
    ("password", "encoded"),
    [("plain", "plain"), ("p@ss", "p%40ss"), ("a/b:c", "a%2Fb%3Ac"), ("sp ace%", "sp+ace%25")],
)
def test_uris_encode_and_redact(password: str, encoded: str) -> None:
    uri = write_uri(MEMBERS, MongoSettings(), "app", password, "app")
    assert uri.secret.startswith(f"mongodb://app:{encoded}@10.0.0.5:27017,10.0.0.6:27018,10.0.0.7:27019/app?")
    assert uri.secret.endswith("replicaSet=rs0&authSource=admin&w=majority")
    for shown in (str(uri), repr(uri), uri.shown, redact_uri(uri.secret)):
        assert encoded not in shown.split("@")[0] or encoded == "app"
        assert "**********" in shown
    reads = read_uri(MEMBERS, MongoSettings(), "app", password, "app")
    assert reads.secret.endswith("readPreference=secondaryPreferred") and "w=majority" not in reads.secret
