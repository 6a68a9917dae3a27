"""The continuous oplog archiver: tail one member's ``local.oplog.rs`` and write contiguous slices.

    python -m dbtier.engines.mongodb.archiver --uri-file FILE --cluster NAME --member NAME
        (--repo-path DIR | --s3-bucket NAME --s3-endpoint URL --s3-credentials-file FILE [--s3-region R]
         [--s3-prefix /dbtier] [--s3-ca-file PEM]) [--slice-s 60]

Each member has its own archive, ``oplog/<cluster>/<member>/`` of the repository (:func:`~dbtier.engines.mongodb.archiving.archive_location`),
written by that member's archiver only: the index has one writer, so no lock is needed. The URI file and the S3
credentials file are 0600 files (:func:`read_secret_file`); no secret is on argv or in the environment.

The index (``index.json``) is the archive's truth. A start resumes after the last indexed ``end``
with the query ``{"ts": {"$gt": end}}``, so two runs chain with neither a gap nor an overlap. A slice is
written before the index names it: a crash between the two leaves an orphan file the index never
names (ignored, or overwritten when the same slice is written again), never an entry without its file.

A gap is recorded in the index itself: when the oplog no longer holds the resume point (its oldest entry
is newer), the next slice's ``after`` is None ("no continuity claimed") instead of the previous ``end``,
so :func:`~dbtier.engines.mongodb.oplog.chain_problems` reports the gap for as long as the index lives.
The window is checked again once the cursor's first entries have arrived (the oplog only ever loses its
oldest entries, so a resume point still held then was held when the query ran).

The process is meant to run under a supervisor (:func:`~dbtier.engines.mongodb.archiving.archiver_service`): it
exits 2 on bad options and 1 on any error at run time (one line on stderr, naming the member), and 0 on SIGTERM
or SIGINT, after writing the slice it holds; the restart resumes exactly.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from bson import Timestamp
from bson.raw_bson import RawBSONDocument

from dbtier.engines.mongodb import rs
from dbtier.engines.mongodb.archiving import Options, UsageError, parse_options, parse_s3_credentials
from dbtier.engines.mongodb.config import MongoMember, redact_uri
from dbtier.engines.mongodb.oplog import (
    Gap, SliceRecord, chain_problems, encode_slice, index_json, parse_index, parse_slice_name, resume_point,
    rolled_past, should_close, slice_name, ts_when, window_warning,
)
from dbtier.errors import BackupError, DbtierError, SecretError

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.cursor import Cursor

INDEX = "index.json"
Window = tuple[Timestamp, Timestamp] | None


class SliceStore(Protocol):
    """Where slices and the index go: a directory (:class:`DirStore`) or an S3 prefix (:class:`~dbtier.engines.mongodb.s3store.S3Store`).

    Contract: each ``write_*`` is atomic (a reader sees the old bytes or the new, never a part of them)
    and raises :class:`BackupError` on failure; ``read_index`` is None while the archive is empty.
    """

    def names(self) -> list[str]: ...

    def read_index(self) -> str | None: ...

    def read_slice(self, name: str) -> bytes: ...

    def write_slice(self, name: str, data: bytes) -> None: ...

    def write_index(self, text: str) -> None: ...


class DirStore:
    """A :class:`SliceStore` in a filesystem directory: write a hidden temporary file, fsync, rename."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextmanager
    def _os(self, doing: str) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            raise BackupError(f"oplog archive {self.path}: cannot {doing} ({err.strerror})") from None

    def names(self) -> list[str]:
        if not os.path.isdir(self.path):
            return []
        with self._os("list it"):
            return sorted(n for n in os.listdir(self.path) if not n.startswith("."))

    def read_index(self) -> str | None:
        if not os.path.exists(os.path.join(self.path, INDEX)):
            return None
        with self._os(f"read {INDEX}"), open(os.path.join(self.path, INDEX), encoding="utf-8") as f:
            return f.read()

    def read_slice(self, name: str) -> bytes:
        with self._os(f"read {name}"), open(os.path.join(self.path, checked_name(name)), "rb") as f:
            return f.read()

    def write_slice(self, name: str, data: bytes) -> None:
        self._write(checked_name(name), data)

    def write_index(self, text: str) -> None:
        self._write(INDEX, text.encode("utf-8"))

    def _write(self, name: str, data: bytes) -> None:
        final, temp = os.path.join(self.path, name), os.path.join(self.path, f".{name}.tmp")
        with self._os(f"write {name}"):
            os.makedirs(self.path, exist_ok=True)
            with open(temp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)
            dir_fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def checked_name(name: str) -> str:
    """``name`` if it can name a slice (no path, not hidden), else a BackupError."""
    if "/" in name or name.startswith(".") or not name:
        raise BackupError(f"oplog archive: {name!r} is not a slice name")
    return name


# -- pure decisions --------------------------------------------------------------------------------


def read_records(store: SliceStore) -> list[SliceRecord]:
    """The indexed slices, oldest first (none for an empty archive)."""
    text = store.read_index()
    return [] if text is None else parse_index(text)


def orphans(names: list[str], records: list[SliceRecord]) -> list[str]:
    """Slice files the index does not name (written, then a crash before the index was).

    >>> orphans(["index.json", slice_name(Timestamp(1, 1), Timestamp(2, 1))], [])
    ['oplog-0000000001.0000000001-0000000002.0000000001.bson.gz']
    """
    indexed = {r.name for r in records}
    return [n for n in names if parse_slice_name(n) and n not in indexed]


def resume_gap(resume: Timestamp | None, window: Window) -> Gap | None:
    """The gap a resume would leave: archived up to ``resume``, the oplog now starts later (None: no gap)."""
    oldest = window[0] if window else None
    return Gap(resume, oldest) if resume is not None and oldest is not None and rolled_past(resume, oldest) else None


def gap_sentence(gap: Gap) -> str:
    """
    >>> gap_sentence(Gap(Timestamp(1764118923, 7), Timestamp(1764118983, 1)))[:52]
    'gap: archived up to 2025-11-26 01:02:03+00:00 (17641'
    """
    return (f"gap: archived up to {ts_when(gap.after)}, the oplog now starts at {ts_when(gap.resumed)}; entries "
            "between may be lost to the archive: take a dump")


@dataclass(frozen=True)
class ArchiveHealth:
    """The archive's verdict: lag behind now, gaps (live and recorded), overlaps, the window warning."""

    healthy: bool
    lag_s: float | None
    gap: str | None = None
    gaps: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    warning: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def sentence(self) -> str:
        if not self.healthy:
            return "oplog archive unhealthy: " + "; ".join(self.problems)
        return f"oplog archive healthy: last slice {self.lag_s:.0f} s ago" + (f" ({self.warning})" if self.warning else "")


def archive_health(records: list[SliceRecord], window: Window, last_dump_end: Timestamp | None, now_s: float,
                   lag_limit_s: float = 300) -> ArchiveHealth:
    """Healthy: slices exist, the last ended within ``lag_limit_s`` of ``now_s`` (wall-clock seconds), no live
    gap (the oplog rolled past the last end), no overlap, and no recorded gap after the last dump (a gap the
    newest dump bridges no longer stops a restore from it). The window warning alone leaves it healthy."""
    if not records:
        return ArchiveHealth(False, None, problems=["no oplog slice archived yet: is the archiver running?"])
    lag = max(0.0, now_s - records[-1].end.time)
    gaps, overlaps = chain_problems(records)
    live = resume_gap(records[-1].end, window)
    warning = window_warning(window[0], window[1], last_dump_end) if window else None
    problems = [gap_sentence(live)] if live else []
    problems += [g.sentence for g in gaps if last_dump_end is None or g.resumed > last_dump_end] + overlaps
    if lag > lag_limit_s:
        problems.append(f"the last slice ended {lag:.0f} s ago (limit {lag_limit_s:.0f} s)")
    return ArchiveHealth(not problems, lag, gap_sentence(live) if live else None, [g.sentence for g in gaps],
                         overlaps, warning, problems)


def member_of_uri(uri: str, name: str) -> tuple[MongoMember, str | None, str | None, str | None]:
    """(member, user, password, CA file) of a one-host ``mongodb://`` URI; errors show it redacted."""
    parts = urlsplit(uri)
    if parts.scheme != "mongodb":
        raise SecretError("archiver URI: not a mongodb:// URI (give one member as mongodb://user:password@host:port/)")
    if "," in parts.netloc or not parts.hostname:
        raise SecretError(f"archiver URI {redact_uri(uri)}: give one member as mongodb://user:password@host:port/")
    query = parse_qs(parts.query)
    ca = query.get("tlsCAFile", [None])[0]
    if query.get("tls", ["false"])[0] == "true" and not ca:
        raise SecretError(f"archiver URI {redact_uri(uri)}: tls=true needs tlsCAFile")
    try:
        port = parts.port or 27017
    except ValueError:
        raise SecretError(f"archiver URI {redact_uri(uri)}: the port is not a number") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return MongoMember(name, parts.hostname, port, 0, ""), user, password, ca


# -- the archiver ----------------------------------------------------------------------------------


class OplogArchiver:
    """Tails one member's oplog into a store: :meth:`start`, then :meth:`step` until stopped, then :meth:`flush`.

    Every method returns the sentence of what it did (None when nothing was written); the clock is injected
    so a test drives it step by step.
    """

    def __init__(self, client: MongoClient[Any], member: MongoMember, store: SliceStore, *, slice_s: float = 60,
                 max_entries: int = 10000, poll_s: float = 1.0, await_ms: int = 1000,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.member, self.store = client, member, store
        self.slice_s, self.max_entries, self.poll_s, self.await_ms = slice_s, max_entries, poll_s, await_ms
        self.clock, self.sleep = clock, sleep
        self.records: list[SliceRecord] = []
        self.gap: Gap | None = None  # a gap found and not yet recorded by a slice
        self._resume: Timestamp | None = None  # the last archived end
        self._pending: list[RawBSONDocument] = []
        self._opened = 0.0
        self._cursor: Cursor[Any] | None = None
        self._from: Timestamp | None = None  # what the open cursor's query resumed after
        self._checked = False  # the window was checked after that cursor's first entries

    def start(self) -> str:
        """Read the index, check the oplog window, open the tailable cursor after the last archived end."""
        self.records = read_records(self.store)
        self._resume = resume_point(self.records)
        self.gap = resume_gap(self._resume, rs.oplog_window(self.client, self.member))
        self._open(self._resume)
        stray = orphans(self.store.names(), self.records)
        said = (f"{self.member.label}: " + (gap_sentence(self.gap) + "; tailing from the oldest entry" if self.gap else
                f"resuming after {ts_when(self._resume)} ({len(self.records)} slices archived)" if self._resume else
                "empty archive: tailing from the oldest entry"))
        return said + (f"; ignoring {len(stray)} orphan slice(s) the index does not name" if stray else "")

    def _open(self, after: Timestamp | None) -> None:
        self._cursor = rs.tail_oplog(self.client, after, self.await_ms)
        self._from, self._checked = after, False

    def step(self) -> str | None:
        """Read entries for up to ``poll_s``; write the slice once :func:`should_close` says so."""
        if self._cursor is None:
            raise BackupError("oplog archiver: step() before start()")
        now = self.clock()
        deadline = now + self.poll_s if not self._pending else min(now + self.poll_s, self._opened + self.slice_s)
        batch = rs.read_batch(self._cursor, self.member, self.max_entries - len(self._pending), deadline,
                              clock=self.clock)
        said = self._check_window() if batch and not self._checked else None
        if batch and not self._pending:
            self._opened = now
        self._pending.extend(batch)
        if not self._cursor.alive:  # the server closed it (an empty oplog): reopen after the last entry read
            self._open(self._pending[-1]["ts"] if self._pending else self._resume)
            if not batch:
                self.sleep(self.poll_s)
        if should_close(self._opened, self.clock(), len(self._pending), self.slice_s, self.max_entries):
            return self.flush() if said is None else f"{said}; {self.flush()}"
        return said

    def _check_window(self) -> str | None:
        """Once per cursor: if the oplog no longer holds what its query resumed after, entries may be lost."""
        self._checked = True
        gap = self.gap or resume_gap(self._from, rs.oplog_window(self.client, self.member))
        if gap is None or gap is self.gap:
            return None
        said = self.flush()  # the entries read before the gap still chain
        self.gap = gap
        return f"{said}; {gap_sentence(gap)}" if said else gap_sentence(gap)

    def flush(self) -> str | None:
        """Write the entries held as one slice, then the index naming it (the slice first, see the module doc)."""
        if not self._pending:
            return None
        entries, start, end = self._pending, self._pending[0]["ts"], self._pending[-1]["ts"]
        if self._resume is not None and start <= self._resume:
            raise BackupError(f"{self.member.label}: the oplog returned {ts_when(start)}, at or before the archived "
                              f"end {ts_when(self._resume)}; refusing to write an overlapping slice")
        after = None if self.gap or self._resume is None else self._resume
        record = SliceRecord(start, end, slice_name(start, end), len(entries), after)
        self.store.write_slice(record.name, encode_slice(entries))
        self.store.write_index(index_json([*self.records, record]))
        self.records, self._resume, self._pending = [*self.records, record], end, []
        broke, self.gap = self.gap is not None, None
        return f"slice {record.name}: {len(entries)} entries" + (" (after a gap)" if broke else "")

    def run_forever(self, stopped: Callable[[], bool], say: Callable[[str], None]) -> str:
        """The supervised loop: start, step until ``stopped()``, write what is held, close the cursor."""
        say(self.start())
        try:
            while not stopped():
                said = self.step()
                if said:
                    say(said)
            said = self.flush()
            if said:
                say(said)
        finally:
            if self._cursor is not None:
                self._cursor.close()
        return f"{self.member.label}: stopped after {len(self.records)} slices archived"


# -- the command-line edge -------------------------------------------------------------------------


def read_secret_file(path: str, what: str) -> str:
    """The text of a file only its owner can read (a secret never travels on argv), stripped."""
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(f"{what} {path}: mode {stat.S_IMODE(mode):o} lets others read it; chmod 600 it")
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as err:
        raise SecretError(f"{what} {path}: cannot read it ({err.strerror})") from None
    if not text:
        raise SecretError(f"{what} {path}: empty")
    return text


def read_uri_file(path: str) -> str:
    """The URI, from a file only its owner can read."""
    return read_secret_file(path, "URI file")


def open_store(options: Options) -> SliceStore:
    """The store the options name; boto3 is imported only for an S3 one."""
    if options.s3 is None:
        return DirStore(options.location)
    from dbtier.engines.mongodb.s3store import S3Store, s3_client

    s3 = options.s3
    key_id, secret = parse_s3_credentials(read_secret_file(s3.credentials_file, "S3 credentials file"),
                                          s3.credentials_file)
    client = s3_client(s3.endpoint, s3.region, key_id, secret, verify=s3.ca_file or s3.verify_tls,
                       path_style=s3.path_style)
    return S3Store(client, s3.bucket, options.location)


def error_line(member: str, err: DbtierError) -> str:
    """The one line printed for ``err``, naming the member once.

    >>> error_line("mongo1", SecretError("URI file /u: empty"))
    'dbtier-archiver: error: mongo1: URI file /u: empty'
    >>> error_line("mongo1", BackupError("mongo1 (h:1): refused"))
    'dbtier-archiver: error: mongo1 (h:1): refused'
    """
    line = err.one_line()
    named = line.startswith((f"{member} ", f"{member}:"))
    return f"dbtier-archiver: error: {line if named else f'{member}: {line}'}"


def run(options: Options, stopped: Callable[[], bool], say: Callable[[str], None]) -> str:
    """Open the store and the member's client, archive until ``stopped()``, close the client."""
    store = open_store(options)
    member, user, password, ca = member_of_uri(read_uri_file(options.uri_file), options.member)
    client = rs.member_client(member.host, member.port, username=user, password=password, tls_ca_file=ca)
    try:
        archiver = OplogArchiver(client, member, store, slice_s=options.slice_s, max_entries=options.max_entries,
                                 poll_s=min(1.0, options.slice_s))
        return archiver.run_forever(stopped, say)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the archiver until SIGTERM or SIGINT (exit 0, after writing the slice it holds); bad options are one
    line on stderr (exit 2), any error at run time one line naming the member (exit 1)."""
    try:
        options = parse_options(argv)
    except UsageError as err:
        print(f"dbtier-archiver: error: {err.one_line()}", file=sys.stderr, flush=True)
        return err.exit_code
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(run(options, stop.is_set, lambda line: print(line, flush=True)), flush=True)
    except DbtierError as err:
        print(error_line(options.member, err), file=sys.stderr, flush=True)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
