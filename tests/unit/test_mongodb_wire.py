"""The pymongo conversations of dbtier.engines.mongodb.rs against mockupdb (MongoDB's wire-protocol test server).

Each test drives one rs function on a thread, answers what the member is sent, and checks the exact command
and how dbtier reads the reply. Nothing is installed: no mongod runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from bson import Timestamp
from mockupdb import MockupDB

from dbtier.engines.mongodb import rs
from dbtier.engines.mongodb.config import MongoMember, MongoSettings, mongo_members, replset_config
from dbtier.errors import ClusterUnhealthy, ControlPlaneError
from tests.mockwire import command_sent

R = TypeVar("R")
FAST = rs.ClientTimeouts(server_selection_ms=1500, connect_ms=1000, socket_ms=3000)


def _member(server: MockupDB) -> MongoMember:
    return MongoMember("mongo0", server.host, server.port, 2, "/d/mongo0")


def _client(server: MockupDB, **auth: str) -> Any:
    return rs.member_client(server.host, server.port, timeouts=FAST, **auth)


def _go(pool: ThreadPoolExecutor, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Future[R]:
    return pool.submit(fn, *args, **kwargs)


def test_initiate_sends_the_config_with_priorities(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    members = mongo_members("/d", ["10.0.0.5"], MongoSettings())
    config = replset_config(members, MongoSettings())
    future = _go(pool, rs.initiate, _client(member_server), _member(member_server), config)
    request = member_server.receives(timeout=5)
    sent = command_sent(request.doc)
    assert list(sent) == ["replSetInitiate"] and request.doc["$db"] == "admin"
    assert [(m["host"], m["priority"]) for m in sent["replSetInitiate"]["members"]] == [
        ("10.0.0.5:27017", 2), ("10.0.0.5:27018", 1), ("10.0.0.5:27019", 1)]
    assert sent["replSetInitiate"]["settings"] == {"electionTimeoutMillis": 10000}
    request.ok()
    assert future.result(timeout=5) == "replica set rs0 initiated from mongo0 with 3 members"


def test_initiate_twice_is_a_sentence(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    future = _go(pool, rs.initiate, _client(member_server), _member(member_server), {"_id": "rs0", "members": []})
    member_server.receives(timeout=5).command_err(code=23, errmsg="already initialized")
    assert future.result(timeout=5) == "replica set rs0 was already initiated"


def test_wait_for_primary_rides_out_not_initiated_and_election(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    future = _go(pool, rs.wait_for_primary, _client(member_server), _member(member_server), 30, poll_s=0)
    first = member_server.receives(timeout=5)
    assert command_sent(first.doc) == {"replSetGetStatus": 1}
    first.command_err(code=94, errmsg="no replset config has been received")
    member_server.receives(timeout=5).ok(myState=2)  # a secondary for now
    member_server.receives(timeout=5).command_err(code=11602, errmsg="operation was interrupted")
    member_server.receives(timeout=5).ok(myState=1)
    assert future.result(timeout=5).startswith("mongo0 is primary after ")


def test_wait_for_primary_gives_up_naming_the_member(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    clock = iter([0.0, 100.0]).__next__
    future = _go(pool, rs.wait_for_primary, _client(member_server), _member(member_server), 30, poll_s=0, clock=clock)
    member_server.receives(timeout=5).command_err(code=94, errmsg="no replset config has been received")
    with pytest.raises(ClusterUnhealthy, match=r"mongo0 \(localhost:\d+\): not primary after 30 s .*NotYetInitialized"):
        future.result(timeout=5)


def test_create_users_with_roles(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    client, member = _client(member_server), _member(member_server)
    future = _go(pool, rs.ensure_user, client, member, "root", "pw-root", rs.root_roles())
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"createUser": "root", "pwd": "pw-root", "roles": [{"role": "root", "db": "admin"}]}
    request.ok()
    assert future.result(timeout=5) == "user root created"
    future = _go(pool, rs.ensure_user, client, member, "app", "pw-app", rs.app_roles("orders"))
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"createUser": "app", "pwd": "pw-app", "roles": [{"role": "readWrite", "db": "orders"}]}
    request.command_err(code=51003, errmsg="User \"app@admin\" already exists")
    update = member_server.receives(timeout=5)
    assert command_sent(update.doc) == {"updateUser": "app", "pwd": "pw-app", "roles": [{"role": "readWrite", "db": "orders"}]}
    update.ok()
    assert future.result(timeout=5) == "user app updated"


@pytest.mark.parametrize(
    ("code", "name", "transient"),
    [(10107, "NotWritablePrimary", True), (13435, "NotPrimaryNoSecondaryOk", True),
     (11602, "InterruptedDueToReplStateChange", True), (94, "NotYetInitialized", True),
     (13, "Unauthorized", False), (2, "BadValue", False)],
)
def test_error_replies_are_translated(member_server: MockupDB, pool: ThreadPoolExecutor, code: int, name: str,
                                      transient: bool) -> None:
    future = _go(pool, rs.ensure_user, _client(member_server), _member(member_server), "app", "pw-secret",
                 rs.app_roles("app"))
    member_server.receives(timeout=5).command_err(code=code, errmsg="refused", codeName=name)
    with pytest.raises(ControlPlaneError) as info:
        future.result(timeout=5)
    err = info.value
    assert isinstance(err, rs.MongoCommandError) and err.code == code and rs.is_transient(err) is transient
    message = err.one_line()
    assert message.startswith(f"mongo0 (localhost:{member_server.port}): createUser app: ") and name in message
    assert "pw-secret" not in message and "\n" not in str(err)


def test_auth_failure_names_the_member_and_the_fix(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    client = _client(member_server, username="root", password="wrong-pw")
    future = _go(pool, rs.replset_status, client, _member(member_server))
    request = member_server.receives(timeout=5)
    assert request.command_name == "saslStart"
    request.command_err(code=18, errmsg="Authentication failed.", codeName="AuthenticationFailed")
    with pytest.raises(rs.MongoCommandError, match="authentication failed .*password blocks") as info:
        future.result(timeout=5)
    assert info.value.code == 18 and not info.value.transient and "wrong-pw" not in str(info.value)


def test_no_answer_is_transient_and_short() -> None:
    client = rs.member_client("127.0.0.1", 1, timeouts=rs.ClientTimeouts(200, 200, 200))
    with pytest.raises(rs.MongoCommandError, match=r"mongo0 \(127.0.0.1:1\): replSetGetStatus: no answer") as info:
        rs.replset_status(client, MongoMember("mongo0", "127.0.0.1", 1, 2, "/d"))
    assert info.value.transient and len(str(info.value)) < 400


def test_step_down(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    future = _go(pool, rs.step_down, _client(member_server), _member(member_server), 30, 5)
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"replSetStepDown": 30, "secondaryCatchUpPeriodSecs": 5}
    request.ok()
    assert future.result(timeout=5) == "mongo0 stepped down (not electable for 30 s)"


def test_step_down_on_a_secondary_is_refused(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    future = _go(pool, rs.step_down, _client(member_server), _member(member_server))
    member_server.receives(timeout=5).command_err(code=10107, errmsg="not primary", codeName="NotWritablePrimary")
    with pytest.raises(rs.MongoCommandError, match="NotWritablePrimary"):
        future.result(timeout=5)


def test_oplog_tail_query_and_resume(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    client, member = _client(member_server), _member(member_server)
    cursor = rs.tail_oplog(client, Timestamp(1795654900, 3), await_ms=50)
    ticks = iter([0.0, 0.0, 0.0, 10.0]).__next__
    future = _go(pool, rs.read_batch, cursor, member, 100, 5.0, clock=ticks)
    find = member_server.receives(timeout=5)
    assert find.doc["$db"] == "local"
    assert command_sent(find.doc) == {"find": "oplog.rs", "filter": {"ts": {"$gt": Timestamp(1795654900, 3)}},
                              "tailable": True, "awaitData": True}
    entries = [{"ts": Timestamp(1795654900, 4), "op": "i"}, {"ts": Timestamp(1795654901, 0), "op": "u"}]
    find.ok(cursor={"id": 42, "ns": "local.oplog.rs", "firstBatch": entries})
    more = member_server.receives(timeout=5)
    assert command_sent(more.doc) == {"getMore": 42, "collection": "oplog.rs", "maxTimeMS": 50}
    more.ok(cursor={"id": 42, "ns": "local.oplog.rs", "nextBatch": []})
    batch = future.result(timeout=5)
    assert [e["ts"] for e in batch] == [Timestamp(1795654900, 4), Timestamp(1795654901, 0)]
    assert all(isinstance(e.raw, bytes) for e in batch)


def test_fresh_archive_tails_from_the_oldest_entry(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    cursor = rs.tail_oplog(_client(member_server), None, await_ms=50)
    future = _go(pool, rs.read_batch, cursor, _member(member_server), 1, time.monotonic() + 5)
    find = member_server.receives(timeout=5)
    assert find.doc["filter"] == {}
    find.ok(cursor={"id": 0, "ns": "local.oplog.rs", "firstBatch": [{"ts": Timestamp(1, 1)}]})
    assert len(future.result(timeout=5)) == 1


def test_oplog_window(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    future = _go(pool, rs.oplog_window, _client(member_server), _member(member_server))
    for order, ts in ((1, Timestamp(100, 1)), (-1, Timestamp(900, 4))):
        request = member_server.receives(timeout=5)
        assert request.doc["find"] == "oplog.rs" and request.doc["sort"] == {"$natural": order}
        assert request.doc["limit"] == 1
        request.ok(cursor={"id": 0, "ns": "local.oplog.rs", "firstBatch": [{"ts": ts}]})
    assert future.result(timeout=5) == (Timestamp(100, 1), Timestamp(900, 4))


# -- health from replSetGetStatus (pure, on replies shaped like the server's) -----------------------------

MEMBERS = mongo_members("/d", ["10.0.0.5"], MongoSettings())
NOW = datetime(2026, 11, 26, 1, 2, 3)


def _status(*states: tuple[str, float, int]) -> dict[str, Any]:
    return {"set": "rs0", "term": 3, "members": [
        {"name": m.address, "stateStr": state, "health": health, "optimeDate": NOW - timedelta(seconds=behind),
         "syncSourceHost": "" if state == "PRIMARY" else MEMBERS[0].address}
        for m, (state, behind, health) in zip(MEMBERS, states, strict=True)]}


@pytest.mark.parametrize(
    ("states", "healthy", "problem"),
    [
        ((("PRIMARY", 0, 1), ("SECONDARY", 1, 1), ("SECONDARY", 2, 1)), True, None),
        ((("PRIMARY", 0, 1), ("SECONDARY", 31, 1), ("SECONDARY", 2, 1)), False, "mongo1 lags 31 s behind the primary"),
        ((("SECONDARY", 0, 1), ("SECONDARY", 0, 1), ("SECONDARY", 0, 1)), False, "no primary"),
        ((("PRIMARY", 0, 1), ("PRIMARY", 0, 1), ("SECONDARY", 0, 1)), False, "more than one primary: mongo0, mongo1"),
        ((("PRIMARY", 0, 1), ("SECONDARY", 0, 1), ("(not reachable/healthy)", 0, 0)), False, "mongo2 is not reachable"),
        ((("PRIMARY", 0, 1), ("RECOVERING", 0, 1), ("SECONDARY", 0, 1)), False, "mongo1 is recovering"),
    ],
)
def test_assess(states: tuple[tuple[str, float, int], ...], healthy: bool, problem: str | None) -> None:
    health = rs.assess(_status(*states), MEMBERS, lag_limit_s=30)
    assert health.healthy is healthy
    if problem:
        assert any(p.startswith(problem) for p in health.problems), health.problems
    else:
        assert health.leader == "mongo0"


def test_member_rows_and_missing() -> None:
    rows = rs.member_rows(_status(("PRIMARY", 0, 1), ("SECONDARY", 4, 1), ("(not reachable/healthy)", 0, 0)), MEMBERS)
    assert [(r["name"], r["role"], r["state"], r["lag"]) for r in rows] == [
        ("mongo0", "primary", "running", ""), ("mongo1", "secondary", "syncing from 10.0.0.5:27017", "4 s"),
        ("mongo2", "down", "not reachable", "")]
    assert set(rows[0]) == {"name", "role", "state", "timeline", "lag", "ports"} and rows[0]["timeline"] == 3
    assert rs.assess(None, MEMBERS, 30).problems == ["no mongod member answers replSetGetStatus"]
    assert "mongo2 is not in the replica set" in rs.assess({"members": _status(("PRIMARY", 0, 1), ("SECONDARY", 0, 1),
                                                              ("SECONDARY", 0, 1))["members"][:2]}, MEMBERS, 30).problems
