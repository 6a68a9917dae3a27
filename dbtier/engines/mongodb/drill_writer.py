"""The MongoDB drill writer and its acknowledged-write log (the PostgreSQL writer's twin).

The writer is its own process, so a frozen or dying member can never stall the flow. It inserts one
document ``{_id: <id>, drill: ID}`` with a strictly increasing id every 20-50 ms through the replica
set's URI and logs every attempt as one JSON line, in the format :class:`dbtier.drills.verdict.Attempt`
is read from (:func:`dbtier.drills.writer.read_attempts` reads it unchanged)::

    {"id": 7, "sent": 1733352000.1, "done": 1733352000.12, "ok": true, "port": 27018, "timeline": 3}
    {"id": 8, "sent": 1733352000.15, "done": 1733352002.15, "ok": false, "error": "NetworkTimeout: ..."}

``port`` is the member that acknowledged (the insert's own connection, from a command listener) and
``timeline`` the election term the acknowledgement was given in (the reply's ``opTime.t``, else its
``electionId``, else the topology's view of that member), so verdict's split-brain check reads terms.

    python -m dbtier.engines.mongodb.drill_writer --uri-file FILE --drill ID --log FILE [--w majority|1]

The URI, password included, is read from a file of mode 0600 (never argv, never the environment).
``serverSelectionTimeoutMS``, ``connectTimeoutMS`` and ``socketTimeoutMS`` are the deadline, and
``retryWrites`` is off, so a frozen primary turns into an error, never into an acknowledgement, and
one id is one attempt. The rest of the module starts and stops the writer and reads back the ids.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymongo import MongoClient, monitoring
from pymongo.errors import ConfigurationError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from dbtier.drills.writer import read_attempts  # noqa: F401 - the parent reads this writer's log with it
from dbtier.engines.mongodb import rs
from dbtier.engines.mongodb.config import MongoUri
from dbtier.errors import DbtierError, Refused

COLLECTION_PREFIX = "dbtier_drill_writes."
WRITE_CONCERNS = ("majority", "1")
#: The writer stops by itself after this long, should its parent forget it.
MAX_LIFETIME_S = 900.0
_DRILL_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def collection_name(drill: str) -> str:
    """One collection per drill, so two drills' ids never meet on ``_id``.

    >>> collection_name("20261204T224458-crash")
    'dbtier_drill_writes.20261204T224458-crash'
    >>> collection_name("a b")
    Traceback (most recent call last):
    ...
    dbtier.errors.Refused: --drill 'a b': use 1 to 100 letters, digits, '_' or '-' (it names a collection)
    """
    if not _DRILL_ID.match(drill):
        raise Refused(f"--drill {drill!r}: use 1 to 100 letters, digits, '_' or '-' (it names a collection)")
    return COLLECTION_PREFIX + drill


def write_concern(w: str) -> WriteConcern:
    """``majority`` (no acknowledged write may be lost) or ``1`` (the loss demonstration).

    >>> write_concern("majority").document, write_concern("1").document
    ({'w': 'majority'}, {'w': 1})
    """
    if w not in WRITE_CONCERNS:
        raise Refused(f"--w {w!r}: choose majority (the default) or 1")
    return WriteConcern(w="majority") if w == "majority" else WriteConcern(w=1)


def term_of(election_id: Any) -> int | None:
    """The election term an ``electionId`` carries (protocol version 1: 0x7fffffff, then the term).

    >>> term_of("7fffffff0000000000000003"), term_of(None), term_of("not-an-oid")
    (3, None, None)
    """
    text = str(election_id or "")
    if len(text) != 24 or not text.startswith("7fffffff"):
        return None
    try:
        return int(text[8:], 16)
    except ValueError:
        return None


def reply_term(reply: Any) -> int | None:
    """The term of a write's reply: ``opTime.t`` (a replica set member's write reply), else ``electionId``.

    >>> reply_term({"n": 1, "opTime": {"ts": 0, "t": 4}}), reply_term({"electionId": "7fffffff0000000000000005"})
    (4, 5)
    >>> reply_term({"n": 1}) is None
    True
    """
    if not isinstance(reply, Mapping):
        return None
    optime = reply.get("opTime")
    term = optime.get("t") if isinstance(optime, Mapping) else None
    if isinstance(term, int) and term >= 0:
        return int(term)
    return term_of(reply.get("electionId"))


# -- the writer process ----------------------------------------------------------------------------


def read_uri_file(path: str) -> str:
    """The URI (with its password) from a regular file no other user can read; else one line naming the fix."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise Refused(f"--uri-file {path}: no such file; the drill writes it (mode 0600) before it starts the writer")\
            from None
    if not stat.S_ISREG(info.st_mode):
        raise Refused(f"--uri-file {path}: not a regular file; give the 0600 file holding the write URI")
    if info.st_mode & 0o077:
        raise Refused(f"--uri-file {path}: mode {stat.S_IMODE(info.st_mode):04o} lets other users read the password; "
                      f"chmod 600 {path}")
    uri = Path(path).read_text().strip()
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise Refused(f"--uri-file {path}: holds no mongodb:// URI; write the replica set's write URI into it")
    return uri


class LastReply(monitoring.CommandListener):
    """Remembers the last acknowledged insert: the member that answered it and its reply."""

    def __init__(self) -> None:
        self.address: tuple[str, int | None] | None = None
        self.reply: dict[str, Any] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.address, self.reply = None, {}

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "insert":
            self.address, self.reply = event.connection_id, dict(event.reply)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


def writer_client(uri: str, deadline_s: float, listener: LastReply) -> MongoClient[Any]:
    """A client whose every wait is bounded by the deadline; no retried write (one id, one attempt)."""
    ms = max(1, int(deadline_s * 1000))
    return MongoClient(uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms,
                       retryWrites=False, event_listeners=[listener])


def _one_line(err: BaseException) -> str:
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)  # NotPrimaryError keeps the reply's code there
    if code is None and isinstance(details, Mapping):
        code = details.get("code")
    head = f"{type(err).__name__}" + (f" ({code})" if isinstance(code, int) else "")
    return " ".join(f"{head}: {err}".split())[:200]


def _database(client: MongoClient[Any], database: str | None) -> Any:
    """``database``, else the URI's (a URI without one is refused by pymongo's ConfigurationError)."""
    return client[database] if database else client.get_default_database()


def _term_seen(client: MongoClient[Any], address: tuple[str, int | None] | None) -> int | None:
    """The term of ``address`` as the driver's last hello of it said (no round trip)."""
    described = client.topology_description.server_descriptions().get(address) if address else None
    return None if described is None else term_of(described.election_id)


def write_once(client: MongoClient[Any], listener: LastReply, database: str, drill: str, wid: int,
               concern: WriteConcern) -> dict[str, Any]:
    """Try one insert; return its log record (an error of any kind is a failed attempt, never an ack)."""
    collection = client[database].get_collection(collection_name(drill), write_concern=concern)
    sent = time.time()
    try:
        collection.insert_one({"_id": wid, "drill": drill})
    except PyMongoError as err:
        return {"id": wid, "sent": sent, "done": time.time(), "ok": False, "error": _one_line(err)}
    done, address = time.time(), listener.address
    term = reply_term(listener.reply)
    port = None if address is None or address[1] is None else int(address[1])
    return {"id": wid, "sent": sent, "done": done, "ok": True, "port": port,
            "timeline": term if term is not None else _term_seen(client, address)}


def run(uri: str, database: str | None, drill: str, log: str, w: str, deadline_s: float,
        interval_ms: tuple[int, int]) -> int:
    """Write until SIGTERM (or the parent goes away); return how many attempts were made."""
    concern, listener = write_concern(w), LastReply()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        client = writer_client(uri, deadline_s, listener)
        name = _database(client, database).name
    except ConfigurationError as err:  # its message may quote the URI: name the kind only
        raise Refused(f"the write URI is not usable ({type(err).__name__}); give --database or a URI with a "
                      "database path") from None
    parent, started, wid = os.getppid(), time.monotonic(), 0
    try:
        with open(log, "a", buffering=1) as out:
            while not stopping.is_set() and os.getppid() == parent and time.monotonic() - started < MAX_LIFETIME_S:
                wid += 1
                out.write(json.dumps(write_once(client, listener, name, drill, wid, concern)) + "\n")
                stopping.wait(random.uniform(*interval_ms) / 1000.0)
    finally:
        client.close()
    return wid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Insert one document per write and log every attempt.")
    parser.add_argument("--uri-file", required=True, help="file of mode 0600 holding the write URI, password included")
    parser.add_argument("--drill", required=True, help="drill id: names the collection and the documents' drill field")
    parser.add_argument("--log", required=True, help="JSON-lines file to append the attempts to")
    parser.add_argument("--w", default="majority", choices=WRITE_CONCERNS, help="write concern (1: loss demonstration)")
    parser.add_argument("--deadline-s", type=float, default=2.0, help="client-side deadline per write, seconds")
    parser.add_argument("--database", default=None, help="database (default: the URI's)")
    parser.add_argument("--interval-ms", type=int, nargs=2, default=[20, 50], metavar=("MIN", "MAX"))
    args = parser.parse_args(argv)
    try:
        collection_name(args.drill)
        uri = read_uri_file(args.uri_file)
        run(uri, args.database, args.drill, args.log, args.w, args.deadline_s,
            (args.interval_ms[0], args.interval_ms[1]))
    except DbtierError as err:
        print(f"drill writer: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    return 0


# -- the drill's side: start, stop, read back ---------------------------------------------------


def writer_argv(uri_file: str, drill: str, log: str, w: str = "majority", deadline_s: float = 2.0,
                interval_ms: tuple[int, int] = (20, 50)) -> list[str]:
    """The writer's command line; it names the URI's file, never the URI.

    >>> writer_argv("/w/uri", "d1", "/w/w.jsonl", "1")[1:]  # doctest: +NORMALIZE_WHITESPACE
    ['-m', 'dbtier.engines.mongodb.drill_writer', '--uri-file', '/w/uri', '--drill', 'd1', '--log', '/w/w.jsonl',
     '--w', '1', '--deadline-s', '2.0', '--interval-ms', '20', '50']
    """
    return [sys.executable, "-m", "dbtier.engines.mongodb.drill_writer", "--uri-file", uri_file, "--drill", drill,
            "--log", log, "--w", w, "--deadline-s", str(deadline_s), "--interval-ms", str(interval_ms[0]),
            str(interval_ms[1])]


def write_uri_file(path: str, uri: MongoUri) -> None:
    """Write the URI's secret form with mode 0600 (the writer refuses any other)."""
    from dbtier.workdir import write_private

    write_private(path, (uri.secret + "\n").encode(), mode=0o600)


def writer_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without anything that looks like a secret (the writer needs none of it).

    >>> writer_env({"PATH": "/bin", "PGPASSWORD": "x", "PREFECT_API_KEY": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    {'PATH': '/bin'}
    """
    secretive = ("PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL")
    return {k: v for k, v in environ.items() if not k.startswith(("PG", "MONGO")) and not any(s in k.upper()
                                                                                             for s in secretive)}


def start_writer(argv: list[str], stderr_path: str) -> subprocess.Popen[bytes]:
    """Start the writer (no secret in its argv or environment); its stderr goes to ``stderr_path``."""
    cwd = Path(__file__).resolve().parents[3]
    with open(stderr_path, "ab") as err:
        return subprocess.Popen(argv, env=writer_env(os.environ), cwd=cwd, stdin=subprocess.DEVNULL,  # noqa: S603
                                stdout=subprocess.DEVNULL, stderr=err)


def stop_writer(proc: subprocess.Popen[bytes], stderr_path: str, timeout: float = 10.0) -> str:
    """Stop the writer we started, by its pid (SIGTERM, then SIGKILL), and say how it ended."""
    from dbtier.drills.writer import stop_writer as stop_drill_writer

    return stop_drill_writer(proc, stderr_path, timeout, name="MongoDB drill writer")


def present_ids(client: MongoClient[Any], drill: str, database: str | None = None, member: str = "the replica set")\
        -> frozenset[int]:
    """Every id of ``drill`` the set holds, read with ``readConcern: majority`` (what survives any failover)."""
    try:
        collection = _database(client, database).get_collection(collection_name(drill),
                                                                read_concern=ReadConcern("majority"))
        return frozenset(int(doc["_id"]) for doc in collection.find({"drill": drill}, {"_id": 1}))
    except PyMongoError as err:
        raise rs.translate(err, member, f"reading drill {drill}'s ids") from None


if __name__ == "__main__":
    sys.exit(main())
