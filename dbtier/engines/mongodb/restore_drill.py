"""The restore drill on a replica set: marker documents around one oplog entry, and the checks on the restored copy
(the markers counted by phase, ``validate`` on every collection of the application database, the application user
signing in through the copy's URI).

The marker's target is the oplog timestamp of the last "before" insert (``ts:T:I``, that entry included: see
:mod:`.pitr`), taken from the insert's reply (``operationTime``), so the drill needs no clock and no whole second
between the two phases.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from bson import Timestamp
from pymongo.errors import PyMongoError

from dbtier.backup.drill import MARKER_TABLE, CopyChecks, Marker
from dbtier.engines.mongodb import rs
from dbtier.engines.mongodb.config import MongoMember, MongoUri
from dbtier.engines.mongodb.steps import ROOT_USER, ClientFactory, SetClientFactory

#: How long the marker inserts wait for a majority of the members.
WTIMEOUT_MS = 10000


def budgets(user: str, database: str) -> list[str]:
    """The copy's checks in words, for the verdict.

    >>> budgets("app", "app")
    ['validate on every collection of database app', "user app signs in through the copy's URI and reads the markers"]
    """
    return [f"validate on every collection of database {database}",
            f"user {user} signs in through the copy's URI and reads the markers"]


def insert_command(drill_id: str, phase: str, count: int) -> dict[str, Any]:
    """One ordered insert of ``count`` marker documents, acknowledged by a majority.

    >>> c = insert_command("d1", "before", 2)
    >>> c["insert"], c["documents"], c["writeConcern"]
    ('dbtier_restore_drill', [{'drill_id': 'd1', 'phase': 'before', 'n': 1}, {'drill_id': 'd1', 'phase': 'before', 'n': 2}], {'w': 'majority', 'wtimeout': 10000})
    """
    return {"insert": MARKER_TABLE, "documents": [{"drill_id": drill_id, "phase": phase, "n": n}
                                                  for n in range(1, count + 1)],
            "ordered": True, "writeConcern": {"w": "majority", "wtimeout": WTIMEOUT_MS}}


def insert_problem(reply: dict[str, Any], count: int) -> str | None:
    """What is wrong with an insert's reply (None: every document written, a majority has it, its time is known).

    >>> ok = {"ok": 1, "n": 2, "operationTime": Timestamp(1764900000, 3)}
    >>> insert_problem(ok, 2) is None
    True
    >>> insert_problem({**ok, "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"}}, 2)
    'not acknowledged by a majority (64: waiting for replication timed out)'
    >>> insert_problem({**ok, "n": 1, "writeErrors": [{"index": 1, "code": 11000, "errmsg": "E11000 duplicate"}]}, 2)
    'document 1 was not written (11000: E11000 duplicate)'
    >>> insert_problem({"ok": 1, "n": 2}, 2)
    'the reply has no operationTime: the drill needs a replica set, not a standalone mongod'
    """
    errors = reply.get("writeErrors") or []
    if errors:
        first = errors[0]
        return f"document {first.get('index')} was not written ({first.get('code')}: {first.get('errmsg', '')})"
    concern = reply.get("writeConcernError")
    if concern:
        return f"not acknowledged by a majority ({concern.get('code')}: {concern.get('errmsg', '')})"
    if reply.get("n") != count:
        return f"{reply.get('n')} of {count} documents written"
    if not isinstance(reply.get("operationTime"), Timestamp):
        return "the reply has no operationTime: the drill needs a replica set, not a standalone mongod"
    return None


def _insert(client: Any, uri: MongoUri, database: str, drill_id: str, phase: str, count: int) -> Timestamp:
    doing = f"writing the restore drill's {phase} markers"
    try:
        reply = dict(client[database].command(insert_command(drill_id, phase, count)))
    except PyMongoError as err:
        raise rs.translate(err, str(uri), doing) from None
    problem = insert_problem(reply, count)
    if problem:
        raise rs.MongoCommandError(f"{uri}: {doing}: {problem}", member=str(uri))
    ts: Timestamp = reply["operationTime"]
    return ts


def write_marker(writer: SetClientFactory, uri: MongoUri, database: str, before: int = 100, after: int = 10, *,
                 drill_id: str | None = None, sleep: Callable[[float], None] = time.sleep) -> Marker:
    """``before`` marker documents, then ``after`` more, through the set's write URI (the application user); the
    target is the oplog timestamp of the first insert's last document."""
    drill_id = drill_id or uuid.uuid4().hex[:12]
    with writer(uri) as client:
        ts = _insert(client, uri, database, drill_id, "before", before)
        sleep(0.2)
        _insert(client, uri, database, drill_id, "after", after)
    return Marker(drill_id, before, after, datetime.fromtimestamp(ts.time, timezone.utc), f"ts:{ts.time}:{ts.inc}")


def count_pipeline(drill_id: str) -> list[dict[str, Any]]:
    """The marker documents of one drill, counted by phase.

    >>> count_pipeline("d1")
    [{'$match': {'drill_id': 'd1'}}, {'$group': {'_id': '$phase', 'n': {'$sum': 1}}}]
    """
    return [{"$match": {"drill_id": drill_id}}, {"$group": {"_id": "$phase", "n": {"$sum": 1}}}]


def validate_finding(database: str, replies: dict[str, dict[str, Any]]) -> tuple[str, bool]:
    """The verdict's sentence on each collection's ``validate`` reply.

    >>> validate_finding("app", {"a": {"valid": True}, "b": {"valid": True}})
    ('validate: 2 collections of database app valid', True)
    >>> validate_finding("app", {"a": {"valid": True}, "b": {"valid": False, "errors": ["bad record 7"]}})
    ('validate: b invalid (bad record 7); 1 of 2 collections of database app valid', False)
    >>> validate_finding("app", {})
    ('validate: database app holds no collection', False)
    """
    if not replies:
        return f"validate: database {database} holds no collection", False
    invalid = {name: reply for name, reply in replies.items() if not reply.get("valid")}
    counted = f"{len(replies) - len(invalid)} of {len(replies)}" if invalid else str(len(replies))
    said = f"{counted} collections of database {database} valid"
    if not invalid:
        return f"validate: {said}", True
    shown = [f"{name} invalid ({'; '.join(str(e) for e in (reply.get('errors') or [])[:1]) or 'no reason given'})"
             for name, reply in sorted(invalid.items())]
    return f"validate: {', '.join(shown)}; {said}", False


def _validate(client: Any, member: MongoMember, database: str) -> tuple[str, bool]:
    try:
        with rs.translated(member.label, "listing the collections to validate"):
            names = sorted(client[database].list_collection_names(filter={"type": "collection"}))
        replies = {}
        for name in names:
            with rs.translated(member.label, f"validating {database}.{name}"):
                replies[name] = dict(client[database].command({"validate": name}))
    except rs.MongoCommandError as err:
        return f"validate: failed: {err.one_line()}", False
    return validate_finding(database, replies)


def _user_check(writer: SetClientFactory, uri: MongoUri, user: str, database: str, drill_id: str,
                expected: int) -> tuple[str, bool]:
    who = f"user {user}"
    try:
        with writer(uri) as client, rs.translated(str(uri), "reading the markers as the application user"):
            read = client[database][MARKER_TABLE].count_documents({"drill_id": drill_id})
    except rs.MongoCommandError as err:
        return f"{who}: could not read the markers through the copy's URI: {err.one_line()}", False
    if read != expected:
        return f"{who}: read {read} marker documents through the copy's URI, root counted {expected}", False
    return f"{who}: signed in through the copy's URI and read its {read} marker documents", True


def check_copy(primary: MongoMember, factory: ClientFactory, root_password: str, writer: SetClientFactory,
               app_uri: MongoUri, app_user: str, database: str, marker: Marker) -> CopyChecks:
    """As root on the copy's primary: the markers by phase and ``validate`` on every collection of ``database``;
    then the application user through the copy's write URI (the users the restore left must let it in)."""
    with factory(primary, ROOT_USER, root_password) as client:
        with rs.translated(primary.label, "counting the restore drill's markers"):
            rows = list(client[database][MARKER_TABLE].aggregate(count_pipeline(marker.drill_id)))
        counts = {str(row["_id"]): int(row["n"]) for row in rows}
        integrity = _validate(client, primary, database)
    found_before, found_after = counts.get("before", 0), counts.get("after", 0)
    user = _user_check(writer, app_uri, app_user, database, marker.drill_id, found_before + found_after)
    return CopyChecks(found_before, found_after, (integrity, user))
