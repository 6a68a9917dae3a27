"""The restore drill of a replica set (dbtier.engines.mongodb.restore_drill): its tables, and its conversations with
a member (mockupdb): the marker inserts and their target, the checks on the copy. No mongod runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import pytest
from bson import Timestamp
from mockupdb import MockupDB

from dbtier import bootstrap
from dbtier.backup.drill import MARKER_TABLE, Marker, judge_copy
from dbtier.backup.restore import throwaway_spec
from dbtier.engines.base import get_engine
from dbtier.engines.mongodb import restore_drill, rs
from dbtier.engines.mongodb.config import MongoMember, MongoSettings, write_uri
from dbtier.errors import SpecError
from dbtier.plan import provision_plan
from dbtier.spec import ClusterSpec, build_spec
from tests.mockwire import command_sent

FAST = rs.ClientTimeouts(server_selection_ms=1500, connect_ms=1000, socket_ms=3000)
TS = Timestamp(1764900000, 7)


def _member(server: MockupDB) -> MongoMember:
    return MongoMember("mongo0", server.host, server.port, 2, "/d/mongo0", 0)


def _uri(server: MockupDB) -> Any:
    return write_uri([_member(server)], MongoSettings(ports=(server.port,), priorities=(2,)), "app", "pw-app", "app")


def _writer(server: MockupDB, seen: list[Any]) -> Any:
    """The set's write URI, answered by the mock member (mockupdb cannot answer SCRAM: no credentials sent)."""

    def make(uri: Any) -> Any:
        seen.append(uri)
        return rs.member_client(server.host, server.port, timeouts=FAST)

    return make


# -- the tables ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "count", "problem"), [
    ({"ok": 1, "n": 100, "operationTime": TS}, 100, None),
    ({"ok": 1, "n": 99, "operationTime": TS}, 100, "99 of 100 documents written"),
    ({"ok": 1, "n": 3, "operationTime": TS, "writeErrors": [{"index": 3, "code": 13, "errmsg": "not authorized"}]}, 4,
     "document 3 was not written (13: not authorized)"),
    ({"ok": 1, "n": 2, "operationTime": TS, "writeConcernError": {"code": 64, "errmsg": "timed out"}}, 2,
     "not acknowledged by a majority (64: timed out)"),
    ({"ok": 1, "n": 2, "operationTime": 1764900000}, 2,
     "the reply has no operationTime: the drill needs a replica set, not a standalone mongod"),
])
def test_what_is_wrong_with_an_insert_reply(reply: dict[str, Any], count: int, problem: str | None) -> None:
    assert restore_drill.insert_problem(reply, count) == problem


@pytest.mark.parametrize(("replies", "sentence", "ok"), [
    ({"orders": {"valid": True}, MARKER_TABLE: {"valid": True}}, "validate: 2 collections of database app valid", True),
    ({"orders": {"valid": False, "errors": ["record 7 has a bad BSON size", "more"]}, "x": {"valid": True}},
     "validate: orders invalid (record 7 has a bad BSON size); 1 of 2 collections of database app valid", False),
    ({"orders": {"valid": False}}, "validate: orders invalid (no reason given); 0 of 1 collections of database app "
     "valid", False),
    ({}, "validate: database app holds no collection", False),
])
def test_validate_findings(replies: dict[str, dict[str, Any]], sentence: str, ok: bool) -> None:
    assert restore_drill.validate_finding("app", replies) == (sentence, ok)


def test_the_copy_of_a_replica_set_has_one_member_and_no_archiver() -> None:
    source = ClusterSpec(engine="mongodb", name="orders")
    copy = throwaway_spec(source)
    engine = get_engine(copy)
    assert (copy.name, copy.members, copy.mongo.port, copy.mongo.oplog_archiving) == ("orders-drill", 1, 27317,
                                                                                          False)
    assert engine.archives(source) and not engine.archives(copy)
    assert [s.name for s in bootstrap.all_services(engine, source)][-3:] == [f"mongo{i}-oplog-archiver" for i in range(3)]
    assert [s.name for s in bootstrap.all_services(engine, copy)] == ["mongo0"], "provision starts no archiver"
    plan = "\n".join(provision_plan(engine, copy))
    assert "archiver" not in plan and "mongo0" in plan
    assert copy.postgres is None, "no PostgreSQL setting in the copy"


def test_a_check_query_in_a_mongodb_spec_is_refused_in_one_line() -> None:
    with pytest.raises(SpecError) as info:
        build_spec({"engine": "mongodb", "backup": {"restore_drill": {"check_query": "SELECT true"}}}, environ={})
    assert str(info.value) == (
        "invalid cluster spec: backup.restore_drill.check_query: belongs to engine postgres, and this spec's engine is "
        "mongodb; remove it (it is SQL; the drill of a replica set checks its marker documents, validate and the "
        "application user)")


# -- the markers ---------------------------------------------------------------------------------------


def test_the_markers_are_two_majority_inserts_and_the_target_is_the_first_ones_optime(
        member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    seen: list[Any] = []
    uri = _uri(member_server)
    future = pool.submit(restore_drill.write_marker, _writer(member_server, seen), uri, "app", 3, 2,
                         drill_id="d1", sleep=lambda _: None)
    before = member_server.receives(timeout=5)
    sent = command_sent(before.doc)
    assert before.doc["$db"] == "app"
    assert (sent["insert"], sent["ordered"], dict(sent["writeConcern"])) == (MARKER_TABLE, True,
                                                                             {"w": "majority", "wtimeout": 10000})
    assert [dict(d) for d in sent["documents"]] == [{"drill_id": "d1", "phase": "before", "n": n} for n in (1, 2, 3)]
    before.ok(n=3, operationTime=TS)
    after = member_server.receives(timeout=5)
    assert [dict(d)["phase"] for d in command_sent(after.doc)["documents"]] == ["after", "after"]
    after.ok(n=2, operationTime=Timestamp(TS.time, TS.inc + 2))
    marker = future.result(timeout=5)
    assert marker == Marker("d1", 3, 2, datetime.fromtimestamp(TS.time, timezone.utc), f"ts:{TS.time}:{TS.inc}")
    assert seen == [uri]


def test_a_marker_insert_a_majority_did_not_acknowledge_is_one_line_without_the_password(
        member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    uri = _uri(member_server)
    future = pool.submit(restore_drill.write_marker, _writer(member_server, []), uri, "app", 3, 2, drill_id="d1",
                         sleep=lambda _: None)
    member_server.receives(timeout=5).ok(n=3, operationTime=TS,
                                         writeConcernError={"code": 64, "errmsg": "waiting for replication timed out"})
    with pytest.raises(rs.MongoCommandError) as info:
        future.result(timeout=5)
    assert str(info.value) == (f"{uri}: writing the restore drill's before markers: not acknowledged by a majority "
                               "(64: waiting for replication timed out)")
    assert "pw-app" not in str(info.value)


def test_a_marker_refused_for_a_wrong_password_is_translated(member_server: MockupDB,
                                                             pool: ThreadPoolExecutor) -> None:
    uri = _uri(member_server)
    future = pool.submit(restore_drill.write_marker, _writer(member_server, []), uri, "app", 3, 2, drill_id="d1",
                         sleep=lambda _: None)
    member_server.receives(timeout=5).command_err(code=13, errmsg="command insert requires authentication",
                                                  codeName="Unauthorized")
    with pytest.raises(rs.MongoCommandError) as info:
        future.result(timeout=5)
    assert str(info.value).startswith(f"{uri}: ")
    assert "Unauthorized" in str(info.value) and "pw-app" not in str(info.value)


# -- the checks on the copy ----------------------------------------------------------------------------


def _answer_checks(server: MockupDB, counts: list[dict[str, Any]], collections: dict[str, dict[str, Any]],
                   user_reads: int | None) -> list[dict[str, Any]]:
    """Answer the copy's checks in the order they come: the count, listCollections, each validate, the user's read."""
    sent = []
    count = server.receives(timeout=5)
    sent.append(command_sent(count.doc))
    count.ok(cursor={"id": 0, "ns": f"app.{MARKER_TABLE}", "firstBatch": counts})
    listing = server.receives(timeout=5)
    sent.append(command_sent(listing.doc))
    listing.ok(cursor={"id": 0, "ns": "app.$cmd.listCollections",
                       "firstBatch": [{"name": name, "type": "collection"} for name in collections]})
    for _ in collections:
        request = server.receives(timeout=5)
        command = command_sent(request.doc)
        sent.append(command)
        request.ok(**collections[command["validate"]])
    read = server.receives(timeout=5)
    sent.append(command_sent(read.doc))
    if user_reads is None:
        read.command_err(code=18, errmsg="Authentication failed.", codeName="AuthenticationFailed")
    else:
        read.ok(cursor={"id": 0, "ns": f"app.{MARKER_TABLE}", "firstBatch": [{"_id": 1, "n": user_reads}]})
    return sent


def _check(server: MockupDB, pool: ThreadPoolExecutor, calls: list[Any]) -> Any:
    def factory(member: MongoMember, user: str | None, password: str | None) -> Any:
        calls.append((member.name, user, password))
        return rs.member_client(member.host, member.port, timeouts=FAST)

    marker = Marker("d1", 100, 10, datetime.fromtimestamp(TS.time, timezone.utc), f"ts:{TS.time}:{TS.inc}")
    return pool.submit(restore_drill.check_copy, _member(server), factory, "pw-root", _writer(server, []),
                       _uri(server), "app", "app", marker)


def test_the_copy_is_counted_validated_and_read_by_the_application_user(member_server: MockupDB,
                                                                        pool: ThreadPoolExecutor) -> None:
    calls: list[Any] = []
    future = _check(member_server, pool, calls)
    sent = _answer_checks(member_server, [{"_id": "before", "n": 100}],
                          {"orders": {"valid": True}, MARKER_TABLE: {"valid": True}}, 100)
    checks = future.result(timeout=5)
    assert sent[0]["aggregate"] == MARKER_TABLE and list(sent[0]["pipeline"]) == restore_drill.count_pipeline("d1")
    assert sent[1]["listCollections"] == 1 and dict(sent[1]["filter"]) == {"type": "collection"}
    assert sorted(c["validate"] for c in sent[2:4]) == sorted(["orders", MARKER_TABLE])
    assert sent[4]["aggregate"] == MARKER_TABLE and dict(sent[4]["pipeline"][0]) == {"$match": {"drill_id": "d1"}}
    assert calls == [("mongo0", "root", "pw-root")]
    assert (checks.found_before, checks.found_after) == (100, 0)
    assert checks.findings == (("validate: 2 collections of database app valid", True),
                               ("user app: signed in through the copy's URI and read its 100 marker documents", True))
    spec = ClusterSpec(engine="mongodb")
    verdict = judge_copy(Marker("d1", 100, 10, datetime.now(timezone.utc)), checks, "marker", 20.0, 900,
                         get_engine(spec).restore_drill_budgets(spec))
    assert verdict.passed, verdict.sentences


def test_a_copy_holding_later_markers_an_invalid_collection_and_a_locked_out_user_fails_on_each(
        member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    future = _check(member_server, pool, [])
    _answer_checks(member_server, [{"_id": "before", "n": 100}, {"_id": "after", "n": 10}],
                   {"orders": {"valid": False, "errors": ["index orders_1 is missing 2 keys"]}}, None)
    checks = future.result(timeout=5)
    assert (checks.found_before, checks.found_after) == (100, 10)
    (validated, ok_v), (user, ok_u) = checks.findings
    assert not ok_v and validated == ("validate: orders invalid (index orders_1 is missing 2 keys); 0 of 1 "
                                      "collections of database app valid")
    assert not ok_u and user.startswith("user app: could not read the markers through the copy's URI: ")
    assert "AuthenticationFailed" in user and "pw-app" not in user
    verdict = judge_copy(Marker("d1", 100, 10, datetime.now(timezone.utc)), checks, "marker", 20.0, 900, [])
    assert not verdict.passed
    assert verdict.sentences[0].endswith("(expected 100 and 0)")
