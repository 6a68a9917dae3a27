"""Bootstrap's replica-set steps (dbtier.engines.mongodb.steps) against mockupdb: each step runs on a thread, the
test answers what each member is sent and checks the exact command. No mongod runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from mockupdb import MockupDB

from dbtier.engines.mongodb import rs, steps
from dbtier.engines.mongodb.config import MongoMember, MongoSettings, write_uri
from dbtier.errors import ClusterUnhealthy
from tests.mockwire import command_sent

FAST = rs.ClientTimeouts(server_selection_ms=1500, connect_ms=1000, socket_ms=3000)
NOW = datetime(2026, 12, 4, 1, 2, 3)
Calls = list[tuple[str, str | None, str | None]]


@pytest.fixture
def two_more_servers(stopping: list[threading.Thread]) -> Iterator[list[MockupDB]]:
    """Two more members answering hello as mongod 7.0 would (the conftest's member_server is the first)."""
    servers = [MockupDB(auto_ismaster={"maxWireVersion": 21, "minWireVersion": 0}, verbose=False) for _ in range(2)]
    for server in servers:
        server.run()
    yield servers
    for server in servers:
        thread = threading.Thread(target=server.stop, daemon=True)
        thread.start()
        stopping.append(thread)


def _members(*servers: MockupDB) -> list[MongoMember]:
    return [MongoMember(f"mongo{i}", s.host, s.port, 2 if i == 0 else 1, f"/d/mongo{i}", i) for i, s in enumerate(servers)]


def _factory(calls: Calls, *, send_credentials: bool = False) -> steps.ClientFactory:
    """Direct clients of the mock members; records who asked with which user. mockupdb cannot answer SCRAM, so
    credentials are sent only when the test answers the authentication itself."""

    def make(member: MongoMember, user: str | None, password: str | None) -> Any:
        calls.append((member.name, user, password))
        auth = {"username": user, "password": password} if send_credentials and user else {}
        return rs.member_client(member.host, member.port, timeouts=FAST, **auth)

    return make


def _status_reply(members: list[MongoMember], states: list[str]) -> dict[str, Any]:
    return {"set": "rs0", "term": 4, "myState": 1, "members": [
        {"name": m.address, "stateStr": s, "health": 1, "optimeDate": NOW - timedelta(seconds=0 if s == "PRIMARY" else 2),
         "syncSourceHost": "" if s == "PRIMARY" else members[0].address} for m, s in zip(members, states, strict=True)]}


# -- initiate ------------------------------------------------------------------------------------------


def test_initiate_then_poll_until_primary(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    members = [*_members(member_server), MongoMember("mongo1", "10.0.0.6", 27018, 1, "/d/mongo1", 1),
               MongoMember("mongo2", "10.0.0.7", 27019, 1, "/d/mongo2", 2)]
    calls: Calls = []
    future = pool.submit(steps.initiate_replset, members, MongoSettings(), _factory(calls), 5, 0)
    request = member_server.receives(timeout=5)
    sent = command_sent(request.doc)["replSetInitiate"]
    assert request.doc["$db"] == "admin"
    assert [(m["_id"], m["host"], m["priority"]) for m in sent["members"]] == [
        (0, members[0].address, 2), (1, "10.0.0.6:27018", 1), (2, "10.0.0.7:27019", 1)]
    request.ok()
    poll = member_server.receives(timeout=5)
    assert command_sent(poll.doc) == {"replSetGetStatus": 1}
    poll.command_err(code=94, errmsg="no replset config has been received")
    member_server.receives(timeout=5).ok(myState=2)
    member_server.receives(timeout=5).ok(myState=1)
    said = future.result(timeout=5)
    assert said.startswith("replica set rs0 initiated from mongo0 with 3 members; mongo0 is primary after ")
    assert calls == [("mongo0", None, None)], "through the localhost exception: no credentials"


def test_initiate_an_initiated_set_is_fine(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    future = pool.submit(steps.initiate_replset, _members(member_server), MongoSettings(ports=(1,), priorities=(2,)),
                         _factory([]), 5, 0)
    member_server.receives(timeout=5).command_err(code=23, errmsg="already initialized", codeName="AlreadyInitialized")
    assert future.result(timeout=5) == "replica set rs0 was already initiated"  # no wait for mongo0: any primary will do


def test_initiate_a_secured_set_is_fine(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    """Once users exist mongod answers an unauthenticated replSetInitiate with Unauthorized, not AlreadyInitialized."""
    future = pool.submit(steps.initiate_replset, _members(member_server), MongoSettings(ports=(1,), priorities=(2,)),
                         _factory([]), 5, 0)
    request = member_server.receives(timeout=5)
    assert "replSetInitiate" in request.doc
    request.command_err(code=13, errmsg="command replSetInitiate requires authentication", codeName="Unauthorized")
    assert future.result(timeout=5) == "replica set rs0 was already initiated (its users exist)"


# -- users ---------------------------------------------------------------------------------------------


def test_root_through_the_localhost_exception_then_the_app_user(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    calls: Calls = []
    [member] = _members(member_server)
    future = pool.submit(steps.ensure_users, member, _factory(calls), "pw-root", "app", "pw-app", "orders")
    root = member_server.receives(timeout=5)
    assert command_sent(root.doc) == {"createUser": "root", "pwd": "pw-root", "roles": [{"role": "root", "db": "admin"}]}
    assert root.doc["$db"] == "admin"
    root.ok()
    app = member_server.receives(timeout=5)
    assert command_sent(app.doc) == {"createUser": "app", "pwd": "pw-app", "roles": [{"role": "readWrite", "db": "orders"}]}
    app.ok()
    assert future.result(timeout=5) == "user root created; user app created (readWrite on orders, on mongo0)"
    assert calls == [("mongo0", None, None), ("mongo0", "root", "pw-root")]


def test_existing_users_are_updated_as_root(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    calls: Calls = []
    [member] = _members(member_server)
    future = pool.submit(steps.ensure_users, member, _factory(calls), "pw-root", "app", "pw-app", "app")
    member_server.receives(timeout=5).command_err(code=13, errmsg="command createUser requires authentication",
                                                  codeName="Unauthorized")
    member_server.receives(timeout=5).command_err(code=51003, errmsg='User "root@admin" already exists')
    update_root = member_server.receives(timeout=5)
    assert command_sent(update_root.doc) == {"updateUser": "root", "pwd": "pw-root", "roles": [{"role": "root", "db": "admin"}]}
    update_root.ok()
    member_server.receives(timeout=5).command_err(code=51003, errmsg='User "app@admin" already exists')
    update_app = member_server.receives(timeout=5)
    assert command_sent(update_app.doc) == {"updateUser": "app", "pwd": "pw-app", "roles": [{"role": "readWrite", "db": "app"}]}
    update_app.ok()
    assert future.result(timeout=5) == "user root updated; user app updated (readWrite on app, on mongo0)"
    assert calls == [("mongo0", None, None), ("mongo0", "root", "pw-root")]


def test_a_wrong_root_password_is_one_line_naming_the_member_and_the_fix(member_server: MockupDB,
                                                                        pool: ThreadPoolExecutor) -> None:
    [member] = _members(member_server)
    future = pool.submit(steps.ensure_users, member, _factory([], send_credentials=True), "pw-wrong-root", "app",
                         "pw-app", "app")
    member_server.receives(timeout=5).command_err(code=13, errmsg="requires authentication", codeName="Unauthorized")
    sasl = member_server.receives(timeout=5)
    assert sasl.command_name == "saslStart"
    sasl.command_err(code=18, errmsg="Authentication failed.", codeName="AuthenticationFailed")
    with pytest.raises(rs.MongoCommandError) as info:
        future.result(timeout=5)
    line = info.value.one_line()
    assert line.startswith(f"{member.label}: createUser root: authentication failed") and "password blocks" in line
    assert "pw-wrong-root" not in line and "pw-app" not in line and "\n" not in str(info.value)


def test_users_present_asks_users_info_as_root(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    calls: Calls = []
    [member] = _members(member_server)
    future = pool.submit(steps.users_present, member, _factory(calls), "pw-root", "app", "app")
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"usersInfo": [{"user": "root", "db": "admin"}, {"user": "app", "db": "admin"}]}
    request.ok(users=[{"user": "root", "roles": [{"role": "root", "db": "admin"}]},
                      {"user": "app", "roles": [{"role": "readWrite", "db": "app"}]}])
    assert future.result(timeout=5) is True
    assert calls == [("mongo0", "root", "pw-root")]


# -- status --------------------------------------------------------------------------------------------


def test_status_rows_of_a_three_member_set(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    members = [*_members(member_server), MongoMember("mongo1", "10.0.0.6", 27018, 1, "/d/mongo1", 1),
               MongoMember("mongo2", "10.0.0.7", 27019, 1, "/d/mongo2", 2)]
    calls: Calls = []
    future = pool.submit(steps.cluster_status, members, _factory(calls), "pw-root")
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"replSetGetStatus": 1}
    request.ok(**_status_reply(members, ["PRIMARY", "SECONDARY", "SECONDARY"]))
    status = future.result(timeout=5)
    assert status.health.healthy and status.health.leader == "mongo0", status.health.problems
    assert [(r["name"], r["role"], r["state"], r["timeline"], r["lag"], r["ports"]) for r in status.rows] == [
        ("mongo0", "primary", "running", 4, "", f"mongod {member_server.port}"),
        ("mongo1", "secondary", f"syncing from {members[0].address}", 4, "2 s", "mongod 27018"),
        ("mongo2", "secondary", f"syncing from {members[0].address}", 4, "2 s", "mongod 27019")]
    assert calls == [("mongo0", "root", "pw-root")], "the first member that answers is enough"


def test_status_of_a_set_not_initiated_is_unhealthy_not_an_exception(member_server: MockupDB,
                                                                     pool: ThreadPoolExecutor) -> None:
    members = _members(member_server)
    future = pool.submit(steps.cluster_status, members, _factory([]))
    member_server.receives(timeout=5).command_err(code=94, errmsg="no replset config has been received",
                                                  codeName="NotYetInitialized")
    status = future.result(timeout=5)
    assert not status.health.healthy and status.health.leader is None
    assert status.health.problems[0] == "no mongod member answers replSetGetStatus"
    assert "NotYetInitialized" in status.health.problems[1] and members[0].label in status.health.problems[1]
    assert [(r["name"], r["role"], r["state"]) for r in status.rows] == [("mongo0", "down", "not initiated (94)")]


def test_status_without_credentials_once_users_exist_reads_hello(member_server: MockupDB,
                                                                 pool: ThreadPoolExecutor) -> None:
    members = _members(member_server)
    future = pool.submit(steps.cluster_status, members, _factory([]))
    member_server.receives(timeout=5).command_err(code=13, errmsg="requires authentication", codeName="Unauthorized")
    hello = member_server.receives(timeout=5)
    assert command_sent(hello.doc) == {"hello": 1}
    hello.ok(isWritablePrimary=True, setName="rs0", maxWireVersion=21, lastWrite={"lastWriteDate": NOW})
    status = future.result(timeout=5)
    assert status.health.healthy and status.health.leader == "mongo0", status.health.problems
    assert [(r["name"], r["role"], r["state"]) for r in status.rows] == [("mongo0", "primary", "running")]


# -- the write check -----------------------------------------------------------------------------------


def _verify(members: list[MongoMember], primary: MockupDB, timeout: float) -> Callable[[], str]:
    uri = write_uri(members, MongoSettings(), "app", "pw-app", "app")

    def writer(got: Any) -> Any:
        assert got is uri
        return rs.member_client(primary.host, primary.port, timeouts=FAST)

    return lambda: steps.verify_writes(members, uri, writer, _factory([]), "app", "pw-app", "app", timeout, 0.02,
                                       token="t0k3n")


def _answer_finds(server: MockupDB, found: list[dict[str, Any]]) -> None:
    """Every find the member gets is answered with ``found``."""

    def answer(request: Any) -> bool:
        if request.command_name != "find":
            return False
        assert request.doc["$db"] == "app" and command_sent(request.doc)["filter"] == {"_id": "t0k3n"}
        return bool(request.ok(cursor={"id": 0, "ns": "app.dbtier_verify", "firstBatch": found}))

    server.autoresponds(answer)


def _answer_insert(primary: MockupDB) -> None:
    insert = primary.receives(timeout=5)
    assert insert.doc["$db"] == "app"
    sent = command_sent(insert.doc)
    assert (sent["insert"], sent["writeConcern"]["w"]) == ("dbtier_verify", "majority")
    assert [dict(d) for d in sent["documents"]] == [{"_id": "t0k3n"}]
    insert.ok(n=1)


def test_verify_reads_the_marker_on_every_secondary(member_server: MockupDB, two_more_servers: list[MockupDB],
                                                    pool: ThreadPoolExecutor) -> None:
    members = _members(member_server, *two_more_servers)
    for server in two_more_servers:
        _answer_finds(server, [{"_id": "t0k3n"}])
    future = pool.submit(_verify(members, member_server, 5))
    _answer_insert(member_server)
    said = future.result(timeout=5)
    assert said.startswith("verified: a document written on mongo0 (w: majority) was read on 2 secondary(ies) within ")


def test_a_secondary_without_the_marker_is_named(member_server: MockupDB, two_more_servers: list[MockupDB],
                                                 pool: ThreadPoolExecutor) -> None:
    members = _members(member_server, *two_more_servers)
    with_it, without = two_more_servers
    _answer_finds(with_it, [{"_id": "t0k3n"}])
    _answer_finds(without, [])
    future = pool.submit(_verify(members, member_server, 0.5))
    _answer_insert(member_server)
    with pytest.raises(ClusterUnhealthy) as info:
        future.result(timeout=5)
    assert str(info.value).startswith(f"{members[2].label}: the verification document written on the primary did "
                                      "not arrive within 0.5 s (not there yet)")
    assert "pw-app" not in str(info.value)


# -- certificates --------------------------------------------------------------------------------------


def test_rotate_certificates_on_each_member(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    calls: Calls = []
    future = pool.submit(steps.rotate_certificates, _members(member_server), _factory(calls), "pw-root", True)
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"rotateCertificates": 1}
    request.ok()
    assert future.result(timeout=5) == ["mongo0 read its certificates again (rotateCertificates)"]
    assert calls == [("mongo0", "root", "pw-root")]
    assert steps.rotate_certificates(_members(member_server), _factory(calls), "pw-root", False) == [
        "TLS is off: no mongod certificate to reload"]


def test_the_exporters_monitoring_user_comes_last_with_cluster_monitor(member_server: MockupDB,
                                                                       pool: ThreadPoolExecutor) -> None:
    [member] = _members(member_server)
    future = pool.submit(steps.ensure_users, member, _factory([]), "pw-root", "app", "pw-app", "app", "pw-mon")
    for _ in range(2):  # root, then the app user
        member_server.receives(timeout=5).ok()
    monitor = member_server.receives(timeout=5)
    assert command_sent(monitor.doc) == {"createUser": "monitoring", "pwd": "pw-mon",
                                 "roles": [{"role": "clusterMonitor", "db": "admin"}]}
    monitor.ok()
    assert future.result(timeout=5) == ("user root created; user app created; user monitoring created "
                                        "(readWrite on app, on mongo0)")


def test_a_set_made_before_the_monitoring_user_is_not_complete(member_server: MockupDB,
                                                               pool: ThreadPoolExecutor) -> None:
    """So provision makes the user on a set made before it (create_app_database runs again)."""
    [member] = _members(member_server)
    future = pool.submit(steps.users_present, member, _factory([]), "pw-root", "app", "app", True)
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"usersInfo": [{"user": "root", "db": "admin"}, {"user": "app", "db": "admin"},
                                               {"user": "monitoring", "db": "admin"}]}
    request.ok(users=[{"user": "root", "roles": [{"role": "root", "db": "admin"}]},
                      {"user": "app", "roles": [{"role": "readWrite", "db": "app"}]}])
    assert future.result(timeout=5) is False
