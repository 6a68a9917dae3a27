"""Port plans belong to the spec's engine: PostgreSQL's members, Patroni, etcd, routers and poolers; a MongoDB
replica set's mongod members on ``mongodb.port + i`` and nothing else. The spec's refusals, the ephemeral-range
warning and the fix hints name the engine's own fields (tables: spec in, plan or one line out)."""

from __future__ import annotations

from typing import Any

import pytest

from dbtier.bootstrap import other_ports_hint
from dbtier.errors import SpecError
from dbtier.spec import REPO_ROOT, build_spec, drill_copy_plan, port_plan, restored_copy_plan
from flows._cli import cluster_ports
from flows._spec import port_warning

MONGO: dict[str, Any] = {"engine": "mongodb"}
EPHEMERAL = (32768, 60999)
RANGE_TAIL = ("lie in the kernel's ephemeral port range 32768-60999 (net.ipv4.ip_local_port_range), where an outgoing "
              "connection can hold them; choose base ports below 32768, or narrow that range")


def mongo(**fields: Any) -> dict[str, Any]:
    """A mongodb spec's data with ``fields`` laid over it."""
    return {**MONGO, **fields}


@pytest.mark.parametrize(
    ("data", "plan"),
    [
        pytest.param({"members": 1}, [("postgres.ports.postgres (member 0)", 5432),
                                      ("postgres.ports.patroni (member 0)", 8008),
                                      ("postgres.ports.etcd (etcd member 0 client)", 2379),
                                      ("postgres.ports.etcd (etcd member 0 peer)", 2380)], id="postgres-one-member"),
        pytest.param({"members": 2, "etcd_members": 1, "routing": {"enabled": True}},
                     [("postgres.ports.postgres (member 0)", 5432), ("postgres.ports.patroni (member 0)", 8008),
                      ("postgres.ports.postgres (member 1)", 5433), ("postgres.ports.patroni (member 1)", 8009),
                      ("postgres.ports.etcd (etcd member 0 client)", 2379),
                      ("postgres.ports.etcd (etcd member 0 peer)", 2380),
                      ("postgres.ports.router (rw route)", 5000), ("postgres.ports.router (ro route)", 5001),
                      ("postgres.ports.router (sync route)", 5002), ("postgres.ports.router (rw-pooled route)", 5003),
                      ("postgres.ports.router (ro-pooled route)", 5004), ("postgres.ports.router_stats", 7000),
                      ("postgres.ports.pgbouncer (member 0)", 6432), ("postgres.ports.pgbouncer (member 1)", 6433)],
                     id="postgres-routed-and-pooled"),
        pytest.param(mongo(members=1), [("mongodb.port (member 0)", 27017)], id="mongodb-one-member"),
        pytest.param(mongo(members=3, mongodb={"port": 28017}),
                     [("mongodb.port (member 0)", 28017), ("mongodb.port (member 1)", 28018),
                      ("mongodb.port (member 2)", 28019)], id="mongodb-three-members"),
    ],
)
def test_port_plan_is_the_engines(data: dict[str, Any], plan: list[tuple[str, int]]) -> None:
    assert port_plan(build_spec(data, environ={})) == plan


@pytest.mark.parametrize(
    ("data", "field", "ports"),
    [
        pytest.param({}, "postgres.ports.postgres", [5432, 5433, 5434], id="postgres-members"),
        pytest.param({}, "postgres.ports.patroni", [8008, 8009, 8010], id="postgres-patroni"),
        pytest.param({}, "postgres.ports.etcd", [2379, 2380, 2381, 2382, 2383, 2384], id="postgres-etcd"),
        pytest.param({}, "mongodb", [], id="postgres-has-no-mongodb"),
        pytest.param(mongo(), "postgres.ports.", [], id="mongodb-has-no-postgres-patroni-etcd"),
        pytest.param(mongo(members=7), "mongodb.port", list(range(27017, 27024)), id="mongodb-seven"),
    ],
)
def test_port_plan_fields(data: dict[str, Any], field: str, ports: list[int]) -> None:
    assert [p for f, p in port_plan(build_spec(data, environ={})) if f.startswith(field)] == ports


@pytest.mark.parametrize(
    ("data", "restored", "drill"),
    [
        pytest.param({"members": 1}, [5532, 8108, 2479, 2480], [5732, 8308, 2679, 2680], id="postgres"),
        pytest.param({"members": 3, "routing": {"enabled": True}, "backup": {"restore_drill": {"port_offset": 400}}},
                     None, [5832, 8408, 2779, 2780], id="postgres-drill-one-member-no-routing"),
        pytest.param(mongo(members=3), [27117, 27118, 27119], [27317], id="mongodb"),
        pytest.param(mongo(members=2, backup={"restore_drill": {"port_offset": 2}}), [27117, 27118], [27019],
                     id="mongodb-drill-offset-2"),
    ],
)
def test_copy_plans(data: dict[str, Any], restored: list[int] | None, drill: list[int]) -> None:
    spec = build_spec(data, environ={})
    if restored is not None:
        assert [p for _, p in restored_copy_plan(spec)] == restored
    assert [p for _, p in drill_copy_plan(spec)] == drill
    assert cluster_ports(spec) == {p for _, p in [*port_plan(spec), *restored_copy_plan(spec), *drill_copy_plan(spec)]}


@pytest.mark.parametrize(
    ("data", "line"),
    [
        pytest.param(mongo(backup={"restore_drill": {"port_offset": 1}}),
                     "backup.restore_drill.port_offset: the restore drill's copy (mongodb.port + 1) would put its "
                     "mongodb.port (member 0) on port 27018, which is the cluster's mongodb.port (member 1); choose an "
                     "offset that moves the copy past every port of the cluster (the default is 300)",
                     id="mongodb-drill-on-member-1"),
        pytest.param(mongo(members=7, backup={"restore_drill": {"port_offset": 6}}),
                     "backup.restore_drill.port_offset: the restore drill's copy (mongodb.port + 6) would put its "
                     "mongodb.port (member 0) on port 27023, which is the cluster's mongodb.port (member 6); choose an "
                     "offset that moves the copy past every port of the cluster (the default is 300)",
                     id="mongodb-drill-on-last-member"),
        pytest.param(mongo(mongodb={"port": 65534}),
                     "mongodb.port: Input should be less than or equal to 65000 (got 65534)",
                     id="mongodb-port-65534-three-members"),
        pytest.param(mongo(mongodb={"port": 65000}, backup={"restore_drill": {"port_offset": 536}}),
                     "backup.restore_drill.port_offset: the restore drill's copy (mongodb.port + 536) would need port "
                     "65536, past 65535; choose lower base ports or a smaller offset", id="mongodb-drill-past-65535"),
        pytest.param({"backup": {"restore_drill": {"port_offset": 1}}},
                     "backup.restore_drill.port_offset: the restore drill's copy (postgres.ports + 1) would put its "
                     "postgres.ports.postgres (member 0) on port 5433, which is the cluster's postgres.ports.postgres "
                     "(member 1); choose "
                     "an offset that moves the copy past every port of the cluster (the default is 300)",
                     id="postgres-drill-on-member-1-unchanged"),
    ],
)
def test_a_spec_whose_ports_cannot_work_is_refused_in_one_line(data: dict[str, Any], line: str) -> None:
    with pytest.raises(SpecError) as caught:
        build_spec(data, environ={})
    assert caught.value.one_line() == f"invalid cluster spec: {line}"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(mongo(), id="mongodb-defaults"),
        pytest.param(mongo(members=3, backup={"restore_drill": {"port_offset": 3}}), id="mongodb-drill-just-past"),
        pytest.param(mongo(members=7, mongodb={"port": 65000}, backup={"restore_drill": {"port_offset": 535}}),
                     id="mongodb-at-65535"),
    ],
)
def test_a_mongodb_spec_clear_of_its_copies_loads(data: dict[str, Any]) -> None:
    build_spec(data, environ={})


@pytest.mark.parametrize(
    ("data", "warning"),
    [
        pytest.param(mongo(members=1, mongodb={"port": 40000}), f"mongodb.port (member 0) 40000 (and 2 more) {RANGE_TAIL}",
                     id="mongodb-member-in-range"),
        pytest.param(mongo(members=3, mongodb={"port": 40000}), f"mongodb.port (member 0) 40000 (and 6 more) {RANGE_TAIL}",
                     id="mongodb-three-members-and-copies"),
        pytest.param(mongo(members=1, mongodb={"port": 32500}),
                     f"restore drill copy's mongodb.port (member 0) 32800 {RANGE_TAIL}", id="mongodb-drill-copy-in-range"),
        pytest.param(mongo(), None, id="mongodb-defaults"),
        pytest.param({"members": 1, "ports": {"postgres": 40000, "patroni": 8008, "etcd": 2379}},
                     f"postgres.ports.postgres (member 0) 40000 (and 2 more) {RANGE_TAIL}", id="postgres-unchanged"),
    ],
)
def test_ephemeral_warning_names_the_engines_field(data: dict[str, Any], warning: str | None) -> None:
    assert port_warning(build_spec(data, environ={}), EPHEMERAL) == warning


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        pytest.param(mongo(), "mongodb.port (member 1)", "choose other ports (e.g. DBTIER_MONGODB__PORT=...)",
                     id="mongodb-member"),
        pytest.param({}, "postgres.ports.postgres (member 0)",
                     "choose other ports (e.g. DBTIER_POSTGRES__PORTS__POSTGRES=...)",
                     id="postgres-member"),
        pytest.param({}, "postgres.ports.etcd (etcd member 0 client)",
                     "choose other ports (e.g. DBTIER_POSTGRES__PORTS__ETCD=...)",
                     id="etcd-member"),
        pytest.param({}, "postgres.ports.router_stats",
                     "choose other ports (e.g. DBTIER_POSTGRES__PORTS__ROUTER_STATS=...)",
                     id="no-member"),
    ],
)
def test_a_taken_port_suggests_the_fields_own_variable(data: dict[str, Any], field: str, hint: str) -> None:
    assert other_ports_hint(build_spec(data, environ={}), field) == hint


def test_the_mongodb_sample_plans(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m flows.provision --spec deployments/clusters/mongodb.yaml --plan``: from the spec alone, no API."""
    from flows.provision import main

    assert main(["--spec", str(REPO_ROOT / "deployments" / "clusters" / "mongodb.yaml"), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "mongodb.port (member 2) 27019" in out
    assert "postgres.ports.etcd" not in out and "postgres.ports.patroni" not in out
