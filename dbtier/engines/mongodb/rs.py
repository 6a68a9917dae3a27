"""The pymongo conversations with the members: initiate, users, status, step-down, the oplog.

The only module of the engine that imports pymongo. Every pymongo error is translated here into a
:class:`MongoCommandError` that names the member, the step and the fix, and says whether waiting
may cure it (``transient``, for a ``retry_condition_fn``). Passwords are sent, never shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import CodecOptions, Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo import CursorType, MongoClient
from pymongo.cursor import Cursor
from pymongo.errors import ConnectionFailure, NotPrimaryError, OperationFailure, PyMongoError

from dbtier.engines.mongodb.config import MongoMember
from dbtier.engines.mongodb.oplog import resume_filter
from dbtier.errors import ClusterUnhealthy, ControlPlaneError
from dbtier.health import Health

NOT_YET_INITIALIZED = 94
ALREADY_INITIALIZED = 23
AUTH_FAILED = 18
UNAUTHORIZED = 13
USER_EXISTS = 51003
#: Codes an election (or a member still starting) explains: waiting may cure them.
ELECTION_CODES = {10107: "NotWritablePrimary", 13435: "NotPrimaryNoSecondaryOk", 13436: "NotPrimaryOrSecondary",
                  11602: "InterruptedDueToReplStateChange", 189: "PrimarySteppedDown", 91: "ShutdownInProgress",
                  11600: "InterruptedAtShutdown", 262: "ExceededTimeLimit"}
OPLOG = "oplog.rs"


class MongoCommandError(ControlPlaneError):
    """A member refused a command or did not answer it (the member is named; ``transient``: waiting may cure it)."""

    def __init__(self, message: str, *, member: str = "", code: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.member = member
        self.code = code
        self.transient = transient


def is_transient(err: BaseException) -> bool:
    """For a ``retry_condition_fn``: retry only what an election or a starting member explains."""
    return isinstance(err, MongoCommandError) and err.transient


@dataclass(frozen=True)
class ClientTimeouts:
    server_selection_ms: int = 5000
    connect_ms: int = 3000
    socket_ms: int = 15000


def member_client(host: str, port: int, *, username: str | None = None, password: str | None = None,
                  tls_ca_file: str | None = None, timeouts: ClientTimeouts = ClientTimeouts()) -> MongoClient[Any]:
    """A client of one member (``directConnection``): initiate, its own status, step-down, the oplog."""
    kwargs: dict[str, Any] = {}
    if username is not None:
        kwargs.update(username=username, password=password, authSource="admin")
    if tls_ca_file:
        kwargs.update(tls=True, tlsCAFile=tls_ca_file)
    return MongoClient(host, port, directConnection=True, serverSelectionTimeoutMS=timeouts.server_selection_ms,
                       connectTimeoutMS=timeouts.connect_ms, socketTimeoutMS=timeouts.socket_ms, **kwargs)


def _code(err: PyMongoError) -> int | None:
    if isinstance(err, OperationFailure):
        return err.code
    details = getattr(err, "details", None)  # NotPrimaryError keeps the reply document there
    code = details.get("code") if isinstance(details, Mapping) else None  # a dict, or the cursor's raw BSON
    return int(code) if isinstance(code, int) else None


def translate(err: PyMongoError, member: str, doing: str) -> MongoCommandError:
    """One line naming the member, the step, the server's code and the fix."""
    code = _code(err)
    where = f"{member}: {doing}"
    if code == NOT_YET_INITIALIZED:
        return MongoCommandError(f"{where}: the replica set is not initiated (NotYetInitialized); run provision, whose "
                                 "bootstrap initiates it", member=member, code=code, transient=True)
    if code in ELECTION_CODES:
        return MongoCommandError(f"{where}: refused with {ELECTION_CODES[code]} ({code}): it is not the primary or an "
                                 "election is under way; retry once a primary is elected (dbtier status shows it)",
                                 member=member, code=code, transient=True)
    if code == AUTH_FAILED:
        return MongoCommandError(f"{where}: authentication failed (AuthenticationFailed): the password dbtier holds "
                                 "does not match the member's user; check the cluster's password blocks",
                                 member=member, code=code)
    if code == UNAUTHORIZED:
        return MongoCommandError(f"{where}: not authorized (Unauthorized); connect as the cluster's root user",
                                 member=member, code=code)
    if isinstance(err, ConnectionFailure) and not isinstance(err, NotPrimaryError):
        first = str(err).split(",")[0].split("\n")[0][:160]
        return MongoCommandError(f"{where}: no answer ({type(err).__name__}: {first}); check that its mongod runs "
                                 "and its port is reachable", member=member, transient=True)
    details = getattr(err, "details", None) or {}
    errmsg = details.get("errmsg", "") if isinstance(details, Mapping) else ""
    name = details.get("codeName", "") if isinstance(details, Mapping) else ""
    return MongoCommandError(f"{where}: failed: {name or type(err).__name__} ({code}): {' '.join(str(errmsg).split())}",
                             member=member, code=code)


@contextmanager
def translated(member: str, doing: str) -> Iterator[None]:
    """Inside it, a driver error becomes :func:`translate`'s one line naming ``member`` and what it was ``doing``."""
    try:
        yield
    except PyMongoError as err:
        raise translate(err, member, doing) from None


def command(client: MongoClient[Any], member: str, doing: str, cmd: dict[str, Any]) -> dict[str, Any]:
    with translated(member, doing):
        return dict(client.admin.command(cmd))


# -- bootstrap -------------------------------------------------------------------------------------


def initiate(client: MongoClient[Any], member: MongoMember, config: dict[str, Any]) -> str:
    """``replSetInitiate`` on the first member, through the localhost exception; a second run says so."""
    try:
        command(client, member.label, "replSetInitiate", {"replSetInitiate": config})
    except MongoCommandError as err:
        if err.code == ALREADY_INITIALIZED:
            return f"replica set {config['_id']} was already initiated"
        raise
    return f"replica set {config['_id']} initiated from {member.name} with {len(config['members'])} members"


def wait_for_primary(client: MongoClient[Any], member: MongoMember, timeout_s: float, poll_s: float = 0.5, *,
                     clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> str:
    """Wait until ``member`` itself is primary (users are created there, through the localhost exception)."""
    started = clock()
    seen = "no answer yet"
    while True:
        try:
            status = command(client, member.label, "replSetGetStatus", {"replSetGetStatus": 1})
            if status.get("myState") == 1:
                return f"{member.name} is primary after {clock() - started:.1f} s"
            seen = f"its state is {status.get('myState')}"
        except MongoCommandError as err:
            if not err.transient:
                raise
            seen = str(err)
        if clock() - started >= timeout_s:
            raise ClusterUnhealthy(f"{member.label}: not primary after {timeout_s:.0f} s ({seen}); read its log "
                                   f"{member.log}")
        sleep(poll_s)


def ensure_user(client: MongoClient[Any], member: MongoMember, user: str, password: str,
                roles: list[dict[str, str]]) -> str:
    """``createUser`` in ``admin``; an existing user gets this password and these roles (``updateUser``)."""
    try:
        command(client, member.label, f"createUser {user}", {"createUser": user, "pwd": password, "roles": roles})
        return f"user {user} created"
    except MongoCommandError as err:
        if err.code != USER_EXISTS:
            raise
    command(client, member.label, f"updateUser {user}", {"updateUser": user, "pwd": password, "roles": roles})
    return f"user {user} updated"


def root_roles() -> list[dict[str, str]]:
    return [{"role": "root", "db": "admin"}]


def monitor_roles() -> list[dict[str, str]]:
    return [{"role": "clusterMonitor", "db": "admin"}]


def app_roles(database: str) -> list[dict[str, str]]:
    return [{"role": "readWrite", "db": database}]


def step_down(client: MongoClient[Any], member: MongoMember, seconds: int = 60, catch_up_s: int = 10) -> str:
    """``replSetStepDown`` on the primary: it stays a secondary for ``seconds``."""
    try:
        command(client, member.label, "replSetStepDown",
                {"replSetStepDown": seconds, "secondaryCatchUpPeriodSecs": catch_up_s})
    except MongoCommandError as err:
        if err.code is None and err.transient:  # servers before 4.2 close every connection as they step down
            return f"{member.name} closed its connections while stepping down"
        raise
    return f"{member.name} stepped down (not electable for {seconds} s)"


# -- health ----------------------------------------------------------------------------------------


def replset_status(client: MongoClient[Any], member: MongoMember) -> dict[str, Any]:
    return command(client, member.label, "replSetGetStatus", {"replSetGetStatus": 1})


def _by_address(status: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {str(m.get("name")): m for m in (status or {}).get("members", [])}


def lag_seconds(info: dict[str, Any], primary: dict[str, Any] | None) -> float | None:
    """How far a member of a ``replSetGetStatus`` document is behind its primary (None: not known)."""
    mine, theirs = info.get("optimeDate"), (primary or {}).get("optimeDate")
    if isinstance(mine, datetime) and isinstance(theirs, datetime):
        return max(0.0, (theirs - mine).total_seconds())
    return None


def _role_state(info: dict[str, Any]) -> tuple[str, str]:
    if not info:
        return "down", "not in the replica set"
    if info.get("health", 1) == 0:
        return "down", "not reachable"
    state = str(info.get("stateStr", "?")).lower()
    if state == "primary":
        return "primary", "running"
    if state == "secondary":
        return "secondary", f"syncing from {info['syncSourceHost']}" if info.get("syncSourceHost") else "no sync source"
    return state, state


def assess(status: dict[str, Any] | None, members: list[MongoMember], lag_limit_s: float) -> Health:
    """Healthy: every member listed, exactly one primary, every other a secondary within ``lag_limit_s``."""
    if status is None:
        return Health(False, None, ["no mongod member answers replSetGetStatus"])
    listed = _by_address(status)
    primaries = [m for m in members if _role_state(listed.get(m.address, {}))[0] == "primary"]
    problems: list[str] = []
    if not primaries:
        problems.append("no primary")
    elif len(primaries) > 1:
        problems.append("more than one primary: " + ", ".join(m.name for m in primaries))
    primary = listed[primaries[0].address] if len(primaries) == 1 else None
    for m in members:
        info = listed.get(m.address, {})
        role, state = _role_state(info)
        if role == "primary":
            continue
        if role != "secondary":
            problems.append(f"{m.name} is {state}")
            continue
        lag = lag_seconds(info, primary)
        if lag is not None and lag > lag_limit_s:
            problems.append(f"{m.name} lags {lag:.0f} s behind the primary (limit {lag_limit_s:.0f} s)")
    return Health(not problems, primaries[0].name if len(primaries) == 1 else None, problems)


def member_rows(status: dict[str, Any] | None, members: list[MongoMember]) -> list[dict[str, Any]]:
    """The member table, in the columns of the PostgreSQL one (``timeline`` holds the election term)."""
    listed = _by_address(status)
    primary = next((i for i in listed.values() if str(i.get("stateStr")) == "PRIMARY"), None)
    rows = []
    for m in members:
        info = listed.get(m.address, {})
        role, state = _role_state(info)
        lag = "" if role in ("primary", "down") else lag_seconds(info, primary)
        rows.append({"name": m.name, "role": role, "state": state, "timeline": (status or {}).get("term", ""),
                     "lag": "" if lag in ("", None) else f"{lag:.0f} s", "ports": f"mongod {m.port}"})
    return rows


# -- the oplog -------------------------------------------------------------------------------------


def _oplog(client: MongoClient[Any]) -> Any:
    return client.local.get_collection(OPLOG, codec_options=CodecOptions(document_class=RawBSONDocument))


def oplog_window(client: MongoClient[Any], member: MongoMember) -> tuple[Timestamp, Timestamp] | None:
    """(oldest, newest) entry timestamps of the member's oplog, or None when it is empty."""
    with translated(member.label, "reading the oplog's bounds"):
        plain = client.local[OPLOG]
        oldest = plain.find_one({}, {"ts": 1}, sort=[("$natural", 1)])
        newest = plain.find_one({}, {"ts": 1}, sort=[("$natural", -1)])
    if oldest is None or newest is None:
        return None
    return oldest["ts"], newest["ts"]


def tail_oplog(client: MongoClient[Any], resume: Timestamp | None, await_ms: int = 1000) -> Cursor[Any]:
    """A tailable, awaitData cursor over the entries after ``resume`` (raw BSON, as slices store them)."""
    return _oplog(client).find(resume_filter(resume), cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(await_ms)


def read_batch(cursor: Cursor[Any], member: MongoMember, max_entries: int, deadline: float, *,
               clock: Callable[[], float] = time.monotonic) -> list[RawBSONDocument]:
    """The entries the cursor gives until ``deadline`` or ``max_entries`` (an empty wait ends at the deadline)."""
    out: list[RawBSONDocument] = []
    with translated(member.label, "tailing the oplog"):
        while len(out) < max_entries and cursor.alive and clock() < deadline:
            try:
                out.append(next(cursor))
            except StopIteration:
                continue
    return out
