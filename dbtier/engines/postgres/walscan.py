"""Where the archive's last transaction lies, and what that means for a restore to a time (pure).

PostgreSQL stops a recovery to a time only at a transaction record (a commit or an abort) dated after the
target. A target inside a quiet period, after the last transaction the archive holds (a quiet night, or a
lost source whose last commit came before the target), has no such record: recovery reaches the end of the
archive and stops with ``FATAL: recovery ended before configured recovery target was reached``. Yet the
archive's end *is* the state at that time: nothing was committed between the last transaction and the
target. So such a target is restored as "the chosen backup, to the end of its archive".

The I/O (fetching segments with ``pgbackrest archive-get``, reading them with ``pg_waldump``) lives in
:mod:`dbtier.engines.postgres.pgbackrest_ops`; here are the names of the segments to read and what their records say.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from dbtier.engines.postgres.wal_archive import SEGMENTS_PER_XLOGID, WAL_RE, wal_position
from dbtier.backup.catalog import RestoreTarget

#: A transaction record in ``pg_waldump --rmgr=Transaction`` output (run with TZ=UTC), e.g.
#: ``desc: COMMIT 2026-12-02 01:02:03.123456 UTC`` or ``desc: ABORT_PREPARED 7: 2026-12-02 01:02:03.1 UTC``.
XACT_RE = re.compile(r"desc: (?:COMMIT|ABORT)(?:_PREPARED)?\b[^;]*?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")

#: How many segments back from the newest archived one the scan reads at most (16 MiB each).
MAX_SEGMENTS = 64


def last_transaction(waldump_out: str) -> datetime | None:
    """The time of the last commit or abort that ``pg_waldump`` printed, or None when there is none.

    >>> out = '''rmgr: Transaction len (rec/tot): 34/34, tx: 734, lsn: 0/03000060, prev 0/03000028, desc: COMMIT 2026-12-02 01:02:03.123456 UTC
    ... rmgr: Transaction len (rec/tot): 34/34, tx: 735, lsn: 0/03000090, prev 0/03000060, desc: ABORT 2026-12-02 01:02:04.5 UTC
    ... rmgr: Standby len (rec/tot): 50/50, tx: 0, lsn: 0/030000C8, prev 0/03000090, desc: RUNNING_XACTS'''
    >>> last_transaction(out).isoformat()
    '2026-12-02T01:02:04.500000+00:00'
    >>> last_transaction("rmgr: XLOG len (rec/tot): 24/24, desc: SWITCH") is None
    True
    """
    stamps = XACT_RE.findall(waldump_out)
    if not stamps:
        return None
    return datetime.fromisoformat(stamps[-1]).replace(tzinfo=timezone.utc)


def first_transaction(waldump_out: str) -> datetime | None:
    """The time of the first commit or abort that ``pg_waldump`` printed, or None.

    >>> first_transaction("desc: COMMIT 2026-12-02 01:02:03 UTC ... desc: COMMIT 2026-12-02 01:09:00 UTC").minute
    2
    """
    stamps = XACT_RE.findall(waldump_out)
    return datetime.fromisoformat(stamps[0]).replace(tzinfo=timezone.utc) if stamps else None


def unarchived_segments(names: list[str], archived_max: str | None) -> list[str]:
    """The WAL segments in a member's ``pg_wal`` past the newest archived one, oldest first.

    >>> unarchived_segments(["000000010000000000000004", "000000010000000000000005", "archive_status",
    ...                      "000000010000000000000006.partial", "00000002.history"], "000000010000000000000004")
    ['000000010000000000000005']
    >>> unarchived_segments(["000000010000000000000001"], None)
    ['000000010000000000000001']
    """
    floor = wal_position(archived_max)[1] if archived_max else -1
    segments = [n for n in names if WAL_RE.match(n) and wal_position(n)[1] > floor]
    return sorted(segments, key=lambda n: wal_position(n)[::-1])


def tail_refusal(target: RestoreTarget, member: str, first_unarchived: datetime | None) -> str | None:
    """Why an in-place restore to ``target`` would drop transactions that live only in a member's own WAL
    (committed, never archived), or None when it would not.

    >>> t = datetime(2026, 12, 2, 1, 0, tzinfo=timezone.utc)
    >>> tail_refusal(RestoreTarget("latest"), "pg0", t)[:61]
    "in_place: pg0's own WAL holds transactions that never reached"
    >>> tail_refusal(RestoreTarget("time", "x", t), "pg0", t.replace(hour=2)) is None   # all after the target
    True
    >>> tail_refusal(RestoreTarget("lsn", "0/3000028"), "pg0", t) is None
    True
    """
    if first_unarchived is None or target.kind not in ("latest", "time"):
        return None
    if target.kind == "time" and target.at is not None and first_unarchived > target.at:
        return None
    return (f"in_place: {member}'s own WAL holds transactions that never reached the archive (from "
            f"{first_unarchived.strftime('%Y-%m-%d %H:%M:%S')} UTC on), which this restore would drop; start the "
            "cluster (python -m flows.provision) so that it archives them, then stop it and restore, or restore "
            "into a new cluster (--into NAME)")


#: How a segment stored by pgBackRest (``<segment>-<sha1>.<ext>``) is decompressed (``repo-get`` only decrypts).
DECOMPRESS = {"zst": ["zstd", "-dcq"], "gz": ["gzip", "-dc"], "lz4": ["lz4", "-dc"], "bz2": ["bzip2", "-dc"]}

ARCHIVE_ID_RE = re.compile(r"^(\d+)-(\d+)$")


def archive_id(names: list[str]) -> str | None:
    """The newest archive id (``<pg version>-<db id>``) among the names under ``archive/<stanza>``.

    >>> archive_id(["archive.info", "archive.info.copy", "15-1", "15-2"])
    '15-2'
    >>> archive_id(["archive.info"]) is None
    True
    """
    ids = [n for n in names if ARCHIVE_ID_RE.match(n)]
    return max(ids, key=lambda n: int(n.split("-")[1])) if ids else None


def stored_segment(names: list[str], segment: str) -> tuple[str, list[str]] | None:
    """The stored file of ``segment`` among a WAL directory's names, and how to decompress it (``cat``: none).

    >>> stored_segment(["000000010000000000000003-1f2e.zst", "000000010000000000000004-aa.zst"], "000000010000000000000003")
    ('000000010000000000000003-1f2e.zst', ['zstd', '-dcq'])
    >>> stored_segment(["000000010000000000000003-1f2e"], "000000010000000000000003")
    ('000000010000000000000003-1f2e', ['cat'])
    >>> stored_segment(["000000010000000000000003.partial-1f.zst"], "000000010000000000000003") is None
    True
    """
    for name in sorted(names):
        if name.startswith(f"{segment}-"):
            ext = name.rsplit(".", 1)[-1] if "." in name else ""
            return name, DECOMPRESS.get(ext, ["cat"])
    return None


def segment_name(timeline: int, segment: int) -> str:
    """
    >>> segment_name(2, 256)
    '000000020000000100000000'
    """
    log, seg = divmod(segment, SEGMENTS_PER_XLOGID)
    return f"{timeline:08X}{log:08X}{seg:08X}"


def segments_back(newest: str, oldest: str | None, limit: int = MAX_SEGMENTS) -> Iterator[list[str]]:
    """From the newest archived segment back towards ``oldest`` (the base backup's first WAL), one list per
    segment number: the names it may have, newest timeline first (a promotion starts a new timeline at the
    same segment number, so the earlier segments of a history live on lower timelines).

    >>> [names for names in segments_back("000000020000000000000005", "000000010000000000000004")]
    [['000000020000000000000005', '000000010000000000000005'], ['000000020000000000000004', '000000010000000000000004']]
    >>> len(list(segments_back("000000010000000000000100", None, limit=3)))
    3
    """
    timeline, position = wal_position(newest)
    floor = wal_position(oldest)[1] if oldest else 0
    for number in range(position, max(floor, position - limit + 1) - 1, -1):
        yield [segment_name(tli, number) for tli in range(timeline, 0, -1)]


@dataclass(frozen=True)
class SettledTarget:
    """The target to restore, and the sentence that says how it was read."""

    target: RestoreTarget
    sentence: str


def settle_time_target(target: RestoreTarget, base_label: str, last_xact: datetime | None) -> SettledTarget:
    """A time target with no transaction after it in the archive becomes "``base_label`` to the end of the
    archive", which holds exactly what was committed before the time; any other target stays as it is.

    >>> from datetime import timedelta
    >>> t = datetime(2026, 12, 2, 1, 0, tzinfo=timezone.utc)
    >>> quiet = RestoreTarget("time", "2026-12-02 01:00:00+00:00", t)
    >>> settled = settle_time_target(quiet, "20261202-005000F", t - timedelta(minutes=5))
    >>> settled.target.kind, settled.target.value, settled.target.at == t
    ('end', '20261202-005000F', True)
    >>> settled.sentence
    'no transaction after 2026-12-02 01:00:00+00:00 in the archive (the last one at 2026-12-02 00:55:00 UTC): restoring backup 20261202-005000F to the end of its archive, which holds everything committed before the target'
    >>> settle_time_target(quiet, "L", t + timedelta(seconds=1)).target is quiet
    True
    >>> settle_time_target(RestoreTarget("latest"), "L", None).target.kind
    'latest'
    """
    if target.kind != "time" or target.at is None:
        return SettledTarget(target, f"target {target.describe()}")
    if last_xact is not None and last_xact > target.at:
        return SettledTarget(target, f"a transaction after {target.value} is archived: recovery stops at the target")
    last = f"the last one at {last_xact.strftime('%Y-%m-%d %H:%M:%S')} UTC" if last_xact else "none since the backup"
    return SettledTarget(
        replace(target, kind="end", value=base_label),
        f"no transaction after {target.value} in the archive ({last}): restoring backup {base_label} to the end "
        "of its archive, which holds everything committed before the target",
    )
