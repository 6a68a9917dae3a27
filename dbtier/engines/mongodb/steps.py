"""Bootstrap's steps for a replica set, over the wire: initiate, users, status, the write check, certificates.

Each step takes the members, the passwords as plain strings and a :data:`ClientFactory` (``member, user,
password -> client``; no user: no credentials, the localhost exception), so a test points it at mockupdb.
Errors are :class:`dbtier.engines.mongodb.rs.MongoCommandError` lines naming the member and the fix.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient, ReadPreference
from pymongo.errors import PyMongoError
from pymongo.write_concern import WriteConcern

from dbtier.engines.base import ClusterStatus
from dbtier.engines.mongodb import rs
from dbtier.engines.mongodb.config import MongoMember, MongoSettings, MongoUri, replset_config
from dbtier.errors import ClusterUnhealthy
from dbtier.health import Health

#: ``member, user, password -> client`` of that member alone (``directConnection``); no user: no credentials.
ClientFactory = Callable[[MongoMember, "str | None", "str | None"], "MongoClient[Any]"]
#: ``uri -> client`` of the whole set (the write URI: the driver finds the primary).
SetClientFactory = Callable[[MongoUri], "MongoClient[Any]"]
ROOT_USER = "root"
#: The user dbtier's exporter signs in as (role ``clusterMonitor``: ``hello`` and ``replSetGetStatus``, no data).
MONITOR_USER = "monitoring"
#: A secondary further behind its primary is a problem of ``status``. The spec holds no lag limit in seconds
#: (PostgreSQL's are in bytes), so the replica set's is this.
LAG_LIMIT_S = 30.0
VERIFY_COLLECTION = "dbtier_verify"


def _primary_of(members: list[MongoMember], name: str | None) -> MongoMember:
    return next((m for m in members if m.name == name), members[0])


# -- initiate --------------------------------------------------------------------------------------


def initiate_replset(members: list[MongoMember], settings: MongoSettings, factory: ClientFactory, timeout: float,
                     poll_s: float = 0.5) -> str:
    """``replSetInitiate`` on member 0 through the localhost exception, then wait until it is primary (its users
    are created there next). A set initiated earlier is left as it is: wait_until_healthy, the step after, waits
    for whichever member is primary now."""
    first = members[0]
    try:
        with factory(first, None, None) as client:
            said = rs.initiate(client, first, replset_config(members, settings))
            if said.endswith("was already initiated"):
                return said
            waited = rs.wait_for_primary(client, first, timeout, poll_s)
    except rs.MongoCommandError as err:
        if err.code != rs.UNAUTHORIZED:
            raise
        # Only an initiated set's primary can hold users, and once one exists the localhost exception is closed.
        return f"replica set {settings.replset} was already initiated (its users exist)"
    return f"{said}; {waited}"


# -- users -----------------------------------------------------------------------------------------


def ensure_users(member: MongoMember, factory: ClientFactory, root_password: str, app_user: str, app_password: str,
                 database: str, monitor_password: str | None = None) -> str:
    """``root`` (role root on admin) first, through the localhost exception while no user exists, else
    authenticated as root; then the application user with ``readWrite`` on its database (both in ``admin``); with
    ``monitor_password``, the exporter's user ``monitoring`` (``clusterMonitor``) last."""
    said: list[str] = []
    try:
        with factory(member, None, None) as client:
            said.append(rs.ensure_user(client, member, ROOT_USER, root_password, rs.root_roles()))
    except rs.MongoCommandError as err:
        if err.code != rs.UNAUTHORIZED:  # Unauthorized: a user exists, the localhost exception is closed
            raise
    with factory(member, ROOT_USER, root_password) as client:
        if not said:
            said.append(rs.ensure_user(client, member, ROOT_USER, root_password, rs.root_roles()))
        said.append(rs.ensure_user(client, member, app_user, app_password, rs.app_roles(database)))
        if monitor_password is not None:
            said.append(rs.ensure_user(client, member, MONITOR_USER, monitor_password, rs.monitor_roles()))
    return f"{'; '.join(said)} (readWrite on {database}, on {member.name})"


def users_wanted(reply: dict[str, Any], app_user: str, database: str, monitor: bool = False) -> bool:
    """Both users listed by ``usersInfo``, the application user with readWrite on its database (with ``monitor``,
    the exporter's user too, with clusterMonitor).

    >>> users = [{"user": "root", "roles": [{"role": "root", "db": "admin"}]},
    ...          {"user": "app", "roles": [{"role": "readWrite", "db": "app"}]}]
    >>> users_wanted({"users": users}, "app", "app"), users_wanted({"users": users[:1]}, "app", "app")
    (True, False)
    >>> users_wanted({"users": users}, "app", "orders"), users_wanted({"users": users}, "app", "app", monitor=True)
    (False, False)
    >>> users_wanted({"users": [*users, {"user": "monitoring", "roles": [{"role": "clusterMonitor", "db": "admin"}]}]},
    ...              "app", "app", monitor=True)
    True
    """
    listed = {str(u.get("user")): u for u in reply.get("users", [])}
    app, monitoring = listed.get(app_user), listed.get(MONITOR_USER)
    if monitor and (monitoring is None or rs.monitor_roles()[0] not in monitoring.get("roles", [])):
        return False
    return ROOT_USER in listed and app is not None and rs.app_roles(database)[0] in app.get("roles", [])


def users_present(member: MongoMember, factory: ClientFactory, root_password: str, app_user: str,
                  database: str, monitor: bool = False) -> bool:
    """Authenticated as root, ``usersInfo`` shows the users (:func:`users_wanted`); a root password the set refuses
    means not yet."""
    wanted = [ROOT_USER, app_user, *([MONITOR_USER] if monitor else [])]
    cmd = {"usersInfo": [{"user": user, "db": "admin"} for user in wanted]}
    try:
        with factory(member, ROOT_USER, root_password) as client:
            reply = rs.command(client, member.label, "usersInfo", cmd)
    except rs.MongoCommandError as err:
        if err.code == rs.AUTH_FAILED:  # no root user yet (or another password): create_app_database says which
            return False
        raise
    return users_wanted(reply, app_user, database, monitor)


# -- status ----------------------------------------------------------------------------------------


def unanswered_rows(members: list[MongoMember], errors: dict[str, rs.MongoCommandError]) -> list[dict[str, Any]]:
    """The member table when no member gave its status: each member's short reason.

    >>> m = MongoMember("mongo0", "h", 27017, 2, "/d")
    >>> unanswered_rows([m], {"mongo0": rs.MongoCommandError("x", code=94)})[0]["state"]
    'not initiated (94)'
    """
    rows = rs.member_rows(None, members)
    for row in rows:
        err = errors.get(row["name"])
        if err is not None:
            reason = "not initiated" if err.code == rs.NOT_YET_INITIALIZED else "no answer" if err.code is None else "refused"
            row["state"] = reason if err.code is None else f"{reason} ({err.code})"
    return rows


def cluster_status(members: list[MongoMember], factory: ClientFactory, root_password: str | None = None,
                   lag_limit_s: float = LAG_LIMIT_S) -> ClusterStatus:
    """``replSetGetStatus`` from the first member that answers (as root when a password is given); no member
    answering is an unhealthy status naming why, never an exception."""
    user = ROOT_USER if root_password is not None else None
    errors: dict[str, rs.MongoCommandError] = {}
    for member in members:
        try:
            with factory(member, user, root_password) as client:
                status = rs.replset_status(client, member)
        except rs.MongoCommandError as err:
            errors[member.name] = err
            continue
        return ClusterStatus(rs.assess(status, members, lag_limit_s), rs.member_rows(status, members))
    if root_password is None and errors and all(e.code == rs.UNAUTHORIZED for e in errors.values()):
        return hello_status(members, factory, lag_limit_s)  # users exist: read what hello tells without them
    problems = ["no mongod member answers replSetGetStatus", *(e.one_line() for e in errors.values())]
    return ClusterStatus(Health(False, None, problems), unanswered_rows(members, errors))


def status_from_hellos(replies: dict[str, dict[str, Any] | None], members: list[MongoMember]) -> dict[str, Any]:
    """A ``replSetGetStatus``-shaped document from each member's own ``hello`` (None: it did not answer).

    >>> ms = [MongoMember("mongo0", "h", 1, 2, "/d"), MongoMember("mongo1", "h", 2, 1, "/d")]
    >>> doc = status_from_hellos({"mongo0": {"isWritablePrimary": True}, "mongo1": None}, ms)
    >>> [(m["name"], m["stateStr"], m["health"]) for m in doc["members"]]
    [('h:1', 'PRIMARY', 1), ('h:2', '(not reachable/healthy)', 0)]
    """
    listed = []
    for m in members:
        reply = replies.get(m.name)
        if reply is None:
            listed.append({"name": m.address, "stateStr": "(not reachable/healthy)", "health": 0})
            continue
        state = ("PRIMARY" if reply.get("isWritablePrimary") else "SECONDARY" if reply.get("secondary")
                 else "NOT PRIMARY OR SECONDARY")
        listed.append({"name": m.address, "stateStr": state, "health": 1,
                       "optimeDate": (reply.get("lastWrite") or {}).get("lastWriteDate")})
    return {"members": listed}


def hello_status(members: list[MongoMember], factory: ClientFactory, lag_limit_s: float = LAG_LIMIT_S) -> ClusterStatus:
    """Each member's own ``hello`` (no credentials needed): its role and last write, not its sync source."""
    replies: dict[str, dict[str, Any] | None] = {}
    for member in members:
        try:
            with factory(member, None, None) as client:
                replies[member.name] = rs.command(client, member.label, "hello", {"hello": 1})
        except rs.MongoCommandError:
            replies[member.name] = None
    doc = status_from_hellos(replies, members)
    rows = [{**row, "state": "secondary"} if row["role"] == "secondary" else row for row in rs.member_rows(doc, members)]
    return ClusterStatus(rs.assess(doc, members, lag_limit_s), rows)


# -- the write check -------------------------------------------------------------------------------


def _has_marker(client: MongoClient[Any], member: MongoMember, database: str, token: str) -> bool:
    collection = client[database].get_collection(VERIFY_COLLECTION, read_preference=ReadPreference.SECONDARY_PREFERRED)
    try:
        return collection.find_one({"_id": token}) is not None
    except PyMongoError as err:
        raise rs.translate(err, member.label, "reading the verification document") from None


def _write_marker(writer: SetClientFactory, uri: MongoUri, members: list[MongoMember], database: str, token: str,
                  timeout: float) -> MongoMember | None:
    """Insert the marker with ``w: majority``; the member that took it (None: not one of ``members``)."""
    with writer(uri) as client:
        concern = WriteConcern("majority", wtimeout=max(1, int(timeout * 1000)))
        try:
            client[database].get_collection(VERIFY_COLLECTION, write_concern=concern).insert_one({"_id": token})
            address = client.address
        except PyMongoError as err:
            raise rs.translate(err, str(uri), "writing the verification document") from None
    return next((m for m in members if address is not None and (m.host, m.port) == address), None)


def verify_writes(members: list[MongoMember], uri: MongoUri, writer: SetClientFactory, factory: ClientFactory,
                  app_user: str, app_password: str, database: str, timeout: float, poll_s: float = 0.2, *,
                  token: str | None = None, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> str:
    """Write one marker on the primary (``w: majority``), then read it on every secondary directly."""
    token = token or uuid.uuid4().hex
    started = clock()
    primary = _write_marker(writer, uri, members, database, token, timeout)
    secondaries = [m for m in members if m != primary]
    for member in secondaries:
        last = "not there yet"
        with factory(member, app_user, app_password) as client:
            while True:
                try:
                    if _has_marker(client, member, database, token):
                        break
                except rs.MongoCommandError as err:
                    if not err.transient:
                        raise
                    last = err.one_line()
                if clock() - started >= timeout:
                    raise ClusterUnhealthy(f"{member.label}: the verification document written on the primary did not "
                                           f"arrive within {timeout:g} s ({last}); replication to it is broken: read "
                                           f"its log {member.log}")
                sleep(poll_s)
    where = primary.name if primary else "the primary"
    return (f"verified: a document written on {where} (w: majority) was read on {len(secondaries)} secondary(ies) "
            f"within {clock() - started:.1f} s")


# -- certificates ----------------------------------------------------------------------------------


def rotate_certificates(members: list[MongoMember], factory: ClientFactory, root_password: str,
                        tls: bool) -> list[str]:
    """``rotateCertificates`` (MongoDB 5.0+) on each member as root: it reads its certificate files again."""
    if not tls:
        return ["TLS is off: no mongod certificate to reload"]
    said = []
    for member in members:
        with factory(member, ROOT_USER, root_password) as client:
            rs.command(client, member.label, "rotateCertificates", {"rotateCertificates": 1})
        said.append(f"{member.name} read its certificates again (rotateCertificates)")
    return said
