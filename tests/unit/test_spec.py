"""The cluster spec: defaults, layering, and one-line refusals naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dbtier.errors import SpecError
from dbtier.spec import (
    DEFAULT_SPEC_PATH,
    ClusterSpec,
    MongoDBSettings,
    PostgresSettings,
    apply_env_overrides,
    build_spec,
    layout_notice,
    load_spec,
    port_plan,
)


def test_default_spec_file_is_the_seed_layout() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH, environ={})
    assert (spec.name, spec.engine, spec.provider, spec.members, spec.pg.etcd_size(spec.members)) == (
        "dbtier", "postgres", "local", 3, 3)
    ports = dict(port_plan(spec))
    assert [p for f, p in port_plan(spec) if f.startswith("postgres.ports.postgres")] == [5432, 5433, 5434]
    assert [p for f, p in port_plan(spec) if f.startswith("postgres.ports.patroni")] == [8008, 8009, 8010]
    assert [p for f, p in port_plan(spec)
            if f.startswith("postgres.ports.etcd")] == [2379, 2380, 2381, 2382, 2383, 2384]
    assert spec.pg.routing.enabled and len(ports) == 12 + 5 + 1 + 3
    routed = ports
    assert [p for f, p in routed.items() if f.startswith("postgres.ports.router ")] == [5000, 5001, 5002, 5003, 5004]
    assert routed["postgres.ports.router_stats"] == 7000
    assert [p for f, p in routed.items() if f.startswith("postgres.ports.pgbouncer")] == [6432, 6433, 6434]
    assert spec == ClusterSpec.model_validate(spec.model_dump())


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        ({"members": 9}, "members:", "less than or equal to 7"),
        ({"members": 0}, "members:", "greater than or equal to 1"),
        ({"members": 4}, "postgres.etcd_members: 4 is even", "set postgres.etcd_members"),
        ({"members": 3, "postgres": {"etcd_members": 2}}, "postgres.etcd_members: 2 is even", "odd"),
        ({"members": 3, "etcd_members": 2}, "postgres.etcd_members: 2 is even", "odd"),  # the old place
        ({"engine": "mysql"}, "engine:", "postgres"),
        ({"provider": "cloud"}, "provider:", "local"),
        ({"name": "Bad_Name"}, "name:", "lowercase"),
        ({"data_root": "relative/dir"}, "data_root:", "absolute"),
        ({"postgres": {"patroni": {"ttl": 10}}}, "postgres.patroni.ttl:", "at least 20"),
        ({"patroni": {"ttl": 10}}, "postgres.patroni.ttl:", "at least 20"),
        ({"postgres": {"patroni": {"ttl": 20, "loop_wait": 10, "retry_timeout": 10}}}, "postgres.patroni:",
         "must not exceed ttl"),
        ({"postgres": {"ports": {"postgres": 8008}}}, "postgres.ports.patroni (member 0): port 8008", "do not overlap"),
        ({"postgres": {"ports": {"etcd": 65535}}}, "postgres.ports.etcd:", "less than or equal to 65000"),
        ({"ports": {"postgres": 80}}, "postgres.ports.postgres:", "greater than or equal to 1024"),
        ({"postgres": {"port": 5432}}, "postgres.port:", "not a known field"),
        ({"postgres": 5432}, "postgres:", "valid dictionary"),
        ({"ports": {"postgres": 6432}, "postgres": {"ports": {"postgres": 7432}}},
         "ports.postgres: set both in the old "
         "place (6432) and as postgres.ports.postgres (7432)", "keep postgres.ports.postgres only"),
        ({"memebers": 3}, "memebers:", "not a known field"),
        ({"allowed_client_networks": ["nonsense"]}, "allowed_client_networks:", "CIDR"),
        ({"os_user": "Root User"}, "os_user:", "pattern"),
    ],
)
def test_bad_specs_are_refused_in_one_line_naming_the_field(data: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(SpecError) as err:
        build_spec(data, environ={})
    message = err.value.one_line()
    assert "\n" not in str(err.value)
    assert field in message and hint in message, message


MONGO = {"engine": "mongodb"}


@pytest.mark.parametrize(
    ("data", "environ", "field", "fix"),
    [
        ({**MONGO, "ports": {"postgres": 6432}}, {}, "ports: belongs to engine postgres", "mongodb.port + i"),
        ({**MONGO, "patroni": {"ttl": 40}}, {}, "patroni: belongs to engine postgres", "election_timeout_ms"),
        ({**MONGO, "synchronous_mode": True}, {}, "synchronous_mode: belongs to engine postgres", "set engine: postgres"),
        ({**MONGO, "etcd_members": 1}, {}, "etcd_members: belongs to engine postgres", "remove it"),
        ({**MONGO, "postgresql_parameters": {"work_mem": "64MB"}}, {}, "postgresql_parameters: belongs", "remove it"),
        ({**MONGO, "binaries": {"pgbackrest": "/opt/pgbackrest"}}, {}, "binaries.pgbackrest: belongs", "remove it"),
        (MONGO, {"DBTIER_PORTS__POSTGRES": "6432"}, "ports: belongs to engine postgres", "mongodb.port"),
        ({"mongodb": {"port": 28017}}, {}, "mongodb: is the section of engine mongodb, and this spec's engine is "
         "postgres", "or set engine: mongodb"),
        ({**MONGO, "postgres": {"synchronous_mode": True}}, {}, "postgres: is the section of engine postgres, and "
         "this spec's engine is mongodb", "or set engine: postgres"),
        (MONGO, {"DBTIER_POSTGRES__PATRONI__TTL": "40"}, "postgres: is the section of engine postgres", "remove it"),
        ({**MONGO, "binaries": {"pgbackrest": "/opt/pgbackrest"}}, {}, "binaries.pgbackrest: belongs to engine "
         "postgres (now postgres.binaries.pgbackrest)", "remove it"),
        ({**MONGO, "backup": {"restore_drill": {"check_query": "select 1"}}}, {}, "backup.restore_drill.check_query: "
         "belongs to engine postgres", "marker documents"),
        ({}, {"DBTIER_BINARIES__MONGOD": "/opt/mongod"}, "binaries.mongod: belongs to engine mongodb", "remove it"),
    ],
)
def test_a_setting_of_the_other_engine_is_refused_not_ignored(data: dict[str, Any], environ: dict[str, str],
                                                              field: str, fix: str) -> None:
    with pytest.raises(SpecError) as err:
        build_spec(data, environ=environ)
    assert field in err.value.one_line() and fix in err.value.one_line(), err.value.one_line()


def test_a_saved_spec_reloads_as_it_was() -> None:
    """A saved spec writes every field, the other engine's section as null: it loads again as it was."""
    for data in (MONGO, {}):
        spec = build_spec(data, environ={})
        assert build_spec(spec.model_dump(mode="json"), environ={}) == spec
    mongo = build_spec({**MONGO, "mongodb": {"port": 28017, "binaries": {"mongod": "/opt/m/mongod"}}}, environ={})
    assert (mongo.mongo.port, mongo.mongo.binaries.mongod) == (28017, "/opt/m/mongod")
    from dbtier.backup.restore import derive_target

    restored = derive_target(mongo, "mongo-restored", 100)  # what restore saves for the new set
    assert build_spec(restored.model_dump(mode="json"), environ={}).mongo.port == 28117


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {"members": 3}),
        ({"DBTIER_MEMBERS": "5"}, {"members": 5}),
        ({"DBTIER_POSTGRES__PATRONI__TTL": "40"}, {"members": 3, "postgres": {"patroni": {"ttl": 40}}}),
        ({"DBTIER_PATRONI__TTL": "40"}, {"members": 3, "postgres": {"patroni": {"ttl": 40}}}),  # the old place
        ({"DBTIER_SYNCHRONOUS_MODE": "true"}, {"members": 3, "postgres": {"synchronous_mode": True}}),
        ({"DBTIER_SPEC": "/x.yaml", "HOME": "/root"}, {"members": 3}),
        ({"DBTIER_POSTGRESQL_PARAMETERS__WORK_MEM": "64MB"},
         {"members": 3, "postgres": {"postgresql_parameters": {"work_mem": "64MB"}}}),
        ({"DBTIER_ENGINE": "mongodb", "DBTIER_MONGODB__PORT": "28017"},
         {"members": 3, "engine": "mongodb", "mongodb": {"port": 28017}}),
    ],
)
def test_environment_overrides_lay_over_the_file(environ: dict[str, str], expected: dict[str, Any]) -> None:
    assert apply_env_overrides({"members": 3}, environ) == expected


def test_each_spec_holds_its_own_engines_section_only() -> None:
    pg, mongo = build_spec({}, environ={}), build_spec(MONGO, environ={})
    assert (pg.postgres, pg.mongodb) == (PostgresSettings(), None)
    assert (mongo.postgres, mongo.mongodb) == (None, MongoDBSettings())
    with pytest.raises(SpecError, match="MongoDB's settings were asked for"):
        pg.mongo  # noqa: B018
    with pytest.raises(SpecError, match="PostgreSQL's settings were asked for"):
        mongo.pg  # noqa: B018


OLD_LAYOUT = """name: orders
ports: {postgres: 6432}
patroni: {ttl: 40}
synchronous_mode: true
etcd_members: 1
postgresql_parameters: {work_mem: 64MB}
audit: {log: ddl}
routing: {enabled: true, pooler: {enabled: false}}
timeouts: {healthy: 90, etcd_quorum: 45, routes: 30}
binaries: {pgbackrest: /opt/pgbackrest, node_exporter: /opt/node}
"""

NEW_LAYOUT = """name: orders
postgres:
  ports: {postgres: 6432}
  patroni: {ttl: 40}
  synchronous_mode: true
  etcd_members: 1
  postgresql_parameters: {work_mem: 64MB}
  audit: {log: ddl}
  routing: {enabled: true, pooler: {enabled: false}}
  timeouts: {etcd_quorum: 45, routes: 30}
  binaries: {pgbackrest: /opt/pgbackrest}
timeouts: {healthy: 90}
binaries: {node_exporter: /opt/node}
"""


def test_a_spec_in_the_old_layout_loads_as_the_new_and_says_what_moved(tmp_path: Path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OLD_LAYOUT)
    new.write_text(NEW_LAYOUT)
    assert load_spec(new, environ={}) == load_spec(old, environ={})
    spec = load_spec(new, environ={})
    assert (spec.pg.ports.postgres, spec.pg.patroni.ttl, spec.pg.synchronous_mode, spec.pg.etcd_size(spec.members),
            spec.pg.postgresql_parameters, spec.pg.audit.log, spec.pg.binaries.pgbackrest, spec.binaries.node_exporter
            ) == (6432, 40, True, 1, {"work_mem": "64MB"}, "ddl", "/opt/pgbackrest", "/opt/node")
    assert (spec.pg.routing.enabled, spec.pg.routing.pooler.enabled, spec.pg.timeouts.etcd_quorum,
            spec.pg.timeouts.routes, spec.timeouts.healthy) == (True, False, 45, 30, 90)
    assert layout_notice(new, environ={}) is None
    assert layout_notice(old, environ={}) == (
        f"spec {old}: ports, patroni, etcd_members, synchronous_mode, postgresql_parameters, audit, routing, "
        "timeouts.etcd_quorum, timeouts.routes, binaries.pgbackrest are in the old place and read under postgres:; "
        "move them there (deployments/clusters/default.yaml shows the layout)")


SAVED_BEFORE = Path(__file__).parent / "specs_saved_before_sections"


@pytest.mark.parametrize(("name", "engine", "ports"), [
    ("orders-restored", "postgres", (5532, 8108, 2479)),
    ("mongo-restored", "mongodb", (27117,)),
])
def test_a_spec_saved_before_the_sections_loads(name: str, engine: str, ports: tuple[int, ...]) -> None:
    """What restore saved (every field, each engine's at its defaults) by the version before the sections: the
    other engine's defaults are dropped, its own settings land in its section."""
    path = SAVED_BEFORE / f"{name}.yaml"
    spec = load_spec(path, environ={})
    assert (spec.name, spec.engine, spec.hosts_of) == (name, engine, name.split("-")[0])
    if engine == "postgres":
        assert spec.mongodb is None and spec.pg.synchronous_mode is True
        assert (spec.pg.ports.postgres, spec.pg.ports.patroni, spec.pg.ports.etcd) == ports
    else:
        assert spec.postgres is None and (spec.mongo.port,) == ports
    notice = layout_notice(path, environ={})
    assert notice is not None and f" are in the old place and read under {engine}:;" in notice, notice


def test_the_other_engines_settings_away_from_their_defaults_are_still_refused() -> None:
    for data, words in (({"mongodb": {"replset": "rs0"}, "binaries": {"mongod": "/usr/bin/mongod"}}, None),
                        ({"mongodb": {"replset": "rs1"}}, "mongodb: is the section of engine mongodb"),
                        ({"binaries": {"mongod": "/opt/mongod"}}, "binaries.mongod: belongs to engine mongodb"),
                        ({"engine": "mongodb", "routing": {"enabled": False}, "timeouts": {"etcd_quorum": 60}}, None),
                        ({"engine": "mongodb", "routing": {"enabled": True}},
                         "routing: belongs to engine postgres .now postgres.routing., and this spec's engine is "
                         "mongodb; remove it .HAProxy and PgBouncer route PostgreSQL only"),
                        ({"engine": "mongodb", "timeouts": {"etcd_quorum": 30}},
                         "timeouts.etcd_quorum: belongs to engine postgres")):
        if words is None:
            spec = build_spec(data, environ={})
            assert (spec.mongodb if spec.engine == "postgres" else spec.postgres) is None
        else:
            with pytest.raises(SpecError, match=words):
                build_spec(data, environ={})


def test_every_sample_spec_is_in_the_new_layout() -> None:
    samples = sorted(DEFAULT_SPEC_PATH.parent.glob("*.yaml"))
    assert {load_spec(path, environ={}).engine for path in samples} == {"postgres", "mongodb"} and len(samples) >= 5
    assert [layout_notice(path, environ={}) for path in samples] == [None] * len(samples)


def test_environment_wins_over_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: orders\nmembers: 3\npatroni: {ttl: 30}\n")
    spec = load_spec(path, environ={"DBTIER_MEMBERS": "5", "DBTIER_PATRONI__LOOP_WAIT": "5"})
    assert (spec.name, spec.members, spec.pg.patroni.ttl, spec.pg.patroni.loop_wait) == ("orders", 5, 30, 5)


def test_bad_environment_value_names_the_field() -> None:
    with pytest.raises(SpecError, match="members: .*less than or equal to 7"):
        build_spec({}, environ={"DBTIER_MEMBERS": "11"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: [unclosed", "is not valid YAML at line 1"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_unreadable_spec_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SpecError, match=message):
        load_spec(path, environ={})


def test_missing_spec_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read .*pass an existing YAML file with --spec"):
        load_spec(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize("path", sorted((Path(DEFAULT_SPEC_PATH).parent).glob("*.yaml")), ids=lambda p: p.name)
def test_every_sample_spec_is_valid(path: Path) -> None:
    spec = load_spec(path, environ={})
    assert spec.name and spec.members in (1, 3, 5, 7)
