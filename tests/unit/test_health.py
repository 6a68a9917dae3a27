"""The health verdict from Patroni's /cluster document (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from dbtier.health import format_table

from dbtier.engines.postgres.patroni_health import assess, member_rows
from dbtier.spec import build_spec

EXPECTED = ["pg0", "pg1", "pg2"]


def _m(name: str, role: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "state": state, **extra}


@pytest.mark.parametrize(
    ("members", "healthy", "problem"),
    [
        ([_m("pg0", "leader", "running"), _m("pg1", "replica", "streaming"), _m("pg2", "replica", "streaming")], True, None),
        ([_m("pg0", "leader", "running"), _m("pg1", "sync_standby", "streaming"), _m("pg2", "replica", "streaming")], True, None),
        ([_m("pg0", "leader", "running"), _m("pg1", "replica", "streaming")], False, "pg2 is not in the cluster"),
        ([_m("pg0", "leader", "running"), _m("pg1", "replica", "running"), _m("pg2", "replica", "streaming")], False, "pg1 is running, not streaming"),
        ([_m("pg0", "replica", "streaming"), _m("pg1", "replica", "streaming"), _m("pg2", "replica", "streaming")], False, "no leader"),
        ([_m("pg0", "leader", "running"), _m("pg1", "leader", "running"), _m("pg2", "replica", "streaming")], False, "more than one leader"),
        ([_m("pg0", "leader", "stopped"), _m("pg1", "replica", "streaming"), _m("pg2", "replica", "streaming")], False, "leader pg0 is stopped"),
        ([_m("pg0", "leader", "running"), _m("pg1", "replica", "starting"), _m("pg2", "replica", "streaming")], False, "pg1 is starting"),
    ],
)
def test_assess(members: list[dict[str, Any]], healthy: bool, problem: str | None) -> None:
    health = assess({"members": members}, EXPECTED)
    assert health.healthy is healthy
    if problem:
        assert any(problem in p for p in health.problems), health.problems
        assert health.sentence.startswith("unhealthy: ")


def test_nobody_answers() -> None:
    assert assess(None, EXPECTED).problems == ["no Patroni member answers its REST API"]


def test_member_table_lists_every_member_with_ports() -> None:
    spec = build_spec({}, environ={})
    doc = {"members": [_m("pg0", "leader", "running", timeline=2), _m("pg1", "replica", "streaming", timeline=2, lag=0)]}
    rows = member_rows(spec, doc, {"etcd0": "leader"})
    assert [r["name"] for r in rows] == ["pg0", "pg1", "pg2", "etcd0", "etcd1", "etcd2"]
    assert rows[2]["role"] == "down" and rows[2]["state"] == "not answering"
    assert rows[0]["ports"] == "pg 5432 / rest 8008"
    assert rows[3]["state"] == "leader" and rows[3]["ports"] == "client 2379 / peer 2380"
    table = format_table(rows)
    assert table.splitlines()[0].split() == ["name", "role", "state", "timeline", "lag", "ports"]
