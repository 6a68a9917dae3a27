"""Oplog slices, their index, gap maths and point-in-time targets (pure).

A slice holds every oplog entry with ``after < ts <= end`` (the archiver's query was
``{"ts": {"$gt": after}}``); the archive's first slice has ``after=None`` and starts at the
oldest entry the oplog still held. Slices chain when each one's ``after`` is the previous ``end``.

dbtier's target: **the restore includes every operation with ts <= target**. A time target is a whole
second of UTC (every operation of that second is in); ``ts:T:I`` names one oplog entry (it is in).
mongorestore's ``--oplogLimit`` is exclusive, so the limit is the first timestamp after the target:
``Timestamp(T + 1, 0)`` for a second, ``Timestamp(T, I + 1)`` for an entry.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import bson
from bson import Timestamp
from bson.raw_bson import RawBSONDocument

from dbtier.errors import BackupError

MAX_INC = 2**32 - 1
_SLICE = re.compile(r"^oplog-(\d{10})\.(\d{10})-(\d{10})\.(\d{10})\.bson\.gz$")


def ts_text(ts: Timestamp) -> str:
    """mongorestore's form (``--oplogLimit``).

    >>> ts_text(Timestamp(1764118923, 7))
    '1764118923:7'
    """
    return f"{ts.time}:{ts.inc}"


def ts_when(ts: Timestamp) -> str:
    """
    >>> ts_when(Timestamp(1764118923, 7))
    '2025-11-26 01:02:03+00:00 (1764118923:7)'
    """
    return f"{datetime.fromtimestamp(ts.time, timezone.utc).isoformat(sep=' ')} ({ts_text(ts)})"


def next_ts(ts: Timestamp) -> Timestamp:
    """The first timestamp after ``ts``.

    >>> next_ts(Timestamp(5, 1)), next_ts(Timestamp(5, MAX_INC))
    (Timestamp(5, 2), Timestamp(6, 0))
    """
    return Timestamp(ts.time + 1, 0) if ts.inc >= MAX_INC else Timestamp(ts.time, ts.inc + 1)


def prev_ts(ts: Timestamp) -> Timestamp:
    """The last timestamp before ``ts``.

    >>> prev_ts(Timestamp(5, 1)), prev_ts(Timestamp(5, 0))
    (Timestamp(5, 0), Timestamp(4, 4294967295))
    """
    return Timestamp(ts.time - 1, MAX_INC) if ts.inc == 0 else Timestamp(ts.time, ts.inc - 1)


# -- slices and the index --------------------------------------------------------------------------


def slice_name(start: Timestamp, end: Timestamp) -> str:
    """A name that sorts as the slices do.

    >>> slice_name(Timestamp(1764118923, 1), Timestamp(1764118983, 12))
    'oplog-1764118923.0000000001-1764118983.0000000012.bson.gz'
    """
    if end < start:
        raise ValueError("a slice ends at or after its start")
    return f"oplog-{start.time:010d}.{start.inc:010d}-{end.time:010d}.{end.inc:010d}.bson.gz"


def parse_slice_name(name: str) -> tuple[Timestamp, Timestamp] | None:
    """(start, end) of a slice file, or None for any other name."""
    match = _SLICE.match(name)
    if not match:
        return None
    a, b, c, d = (int(g) for g in match.groups())
    return Timestamp(a, b), Timestamp(c, d)


@dataclass(frozen=True)
class SliceRecord:
    """One archived slice: its first and last entry, its file, how many entries, what it resumed after."""

    start: Timestamp
    end: Timestamp
    name: str
    count: int
    after: Timestamp | None

    @property
    def covers_after(self) -> Timestamp:
        """Every entry with ts after this (and up to ``end``) is in the slice."""
        return self.after if self.after is not None else prev_ts(self.start)

    def as_dict(self) -> dict[str, object]:
        return {"start": ts_text(self.start), "end": ts_text(self.end), "name": self.name, "count": self.count,
                "after": ts_text(self.after) if self.after is not None else None}


def parse_ts(text: str) -> Timestamp:
    """
    >>> parse_ts("1764118923:7"), parse_ts("1764118923")
    (Timestamp(1764118923, 7), Timestamp(1764118923, 0))
    """
    seconds, _, inc = text.partition(":")
    return Timestamp(int(seconds), int(inc or 0))


def index_json(records: Iterable[SliceRecord]) -> str:
    return json.dumps({"slices": [r.as_dict() for r in records]}, indent=1) + "\n"


def parse_index(text: str) -> list[SliceRecord]:
    """The index file's records, oldest first; a damaged index is a BackupError."""
    try:
        rows = json.loads(text)["slices"]
        records = [SliceRecord(parse_ts(r["start"]), parse_ts(r["end"]), str(r["name"]), int(r["count"]),
                               parse_ts(r["after"]) if r.get("after") else None) for r in rows]
    except (ValueError, KeyError, TypeError) as err:
        raise BackupError(f"oplog index: unreadable ({err}); rebuild it from the slice names") from None
    return sorted(records, key=lambda r: (r.start, r.end))


@dataclass(frozen=True)
class Gap:
    """Oplog entries after ``after`` and before ``resumed`` were never archived."""

    after: Timestamp
    resumed: Timestamp

    @property
    def sentence(self) -> str:
        return f"gap in the oplog archive after {ts_when(self.after)} until {ts_when(self.resumed)}"


def chain_problems(records: list[SliceRecord]) -> tuple[list[Gap], list[str]]:
    """The gaps between consecutive slices and any overlap (a slice starting at or before the previous end)."""
    gaps: list[Gap] = []
    overlaps: list[str] = []
    for prev, cur in zip(records, records[1:], strict=False):
        if cur.start <= prev.end:
            overlaps.append(f"slice {cur.name} overlaps {prev.name}")
        elif cur.after != prev.end:
            gaps.append(Gap(prev.end, cur.start))
    return gaps, overlaps


def resume_point(records: list[SliceRecord]) -> Timestamp | None:
    """Where the archiver resumes after a restart: the last archived end (None: from the oldest entry)."""
    return records[-1].end if records else None


def resume_filter(resume: Timestamp | None) -> dict[str, object]:
    """
    >>> resume_filter(Timestamp(5, 1)), resume_filter(None)
    ({'ts': {'$gt': Timestamp(5, 1)}}, {})
    """
    return {} if resume is None else {"ts": {"$gt": resume}}


def rolled_past(resume: Timestamp | None, oldest: Timestamp | None) -> bool:
    """True when the oplog no longer holds the resume point: entries after it may be lost (a gap)."""
    return resume is not None and oldest is not None and oldest > resume


def should_close(opened_s: float, now_s: float, count: int, slice_s: float, max_entries: int) -> bool:
    """A slice with entries closes once it is ``slice_s`` old or holds ``max_entries``."""
    return count > 0 and (now_s - opened_s >= slice_s or count >= max_entries)


def window_warning(oldest: Timestamp, newest: Timestamp, last_dump_end: Timestamp | None) -> str | None:
    """A warning when the oplog no longer reaches back to the last dump (only the archive bridges it)."""
    if last_dump_end is None:
        return "no dump yet: run the backup flow"
    window, since = newest.time - oldest.time, newest.time - last_dump_end.time
    if window < since:
        return (f"the oplog window ({window} s) is shorter than the time since the last dump ({since} s): "
                "a restore relies on the archive alone; grow oplogSizeMB or dump more often")
    return None


# -- slice contents --------------------------------------------------------------------------------


def encode_slice(entries: Iterable[RawBSONDocument]) -> bytes:
    """A slice file: the raw BSON entries, gzip-compressed (``oplog.bson`` once decompressed)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for entry in entries:
            gz.write(entry.raw)
    return buf.getvalue()


def decode_slice(data: bytes) -> Iterator[RawBSONDocument]:
    raw = gzip.decompress(data)
    opts = bson.CodecOptions(document_class=RawBSONDocument)
    yield from bson.decode_iter(raw, opts)


#: The namespaces of users, roles and the auth schema. A restore leaves them to the new set: its own root,
#: application and monitoring users, whose passwords are in its own Secret blocks. ``mongorestore --drop`` would
#: replace them with the source's (and the new set's credentials with them, mid-restore), and a replayed
#: ``createUser`` or password change of the source would do the same.
AUTH_NAMESPACES = ("admin.system.users", "admin.system.roles", "admin.system.version")


def replay_bytes(slices: Iterable[bytes], after: Timestamp, limit: Timestamp | None) -> bytes:
    """The ``oplog.bson`` a replay reads: entries with ``after < ts < limit``, in order, but none on
    :data:`AUTH_NAMESPACES`."""
    return b"".join(e.raw for data in slices for e in decode_slice(data)
                    if e["ts"] > after and (limit is None or e["ts"] < limit) and e.get("ns") not in AUTH_NAMESPACES)
