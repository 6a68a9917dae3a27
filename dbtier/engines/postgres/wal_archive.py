"""WAL file arithmetic and PostgreSQL's archiving health verdict (pure, in the manner of Barman's xlog.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from dbtier.backup.archive import ArchiveVerdict
from dbtier.errors import BackupError

WAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
SEGMENTS_PER_XLOGID = 0x100  # 16 MiB segments: 4 GiB of WAL per log id


def wal_position(name: str) -> tuple[int, int]:
    """(timeline, absolute segment number) of a WAL file name.

    >>> wal_position("000000010000000000000003")
    (1, 3)
    >>> wal_position("000000020000000100000000")
    (2, 256)
    """
    match = WAL_RE.match(name)
    if not match:
        raise BackupError(f"{name!r} is not a WAL file name")
    timeline, log, seg = (int(g, 16) for g in match.groups())
    return timeline, log * SEGMENTS_PER_XLOGID + seg


def segments_between(older: str, newer: str) -> int:
    """How many segments ``newer`` is past ``older`` (timelines ignored: a promotion keeps counting).

    >>> segments_between("000000010000000000000003", "000000010000000000000005")
    2
    >>> segments_between("0000000100000000000000FF", "000000020000000100000000")
    1
    """
    return wal_position(newer)[1] - wal_position(older)[1]


@dataclass(frozen=True)
class ArchiverStats:
    """``pg_stat_archiver`` and the current WAL file, read on the primary at ``now``."""

    now: datetime
    current_wal: str
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    ready_count: int = 0
    oldest_ready: datetime | None = None


def judge_archive(stats: ArchiverStats, lag_limit_s: float) -> ArchiveVerdict:
    """Is archiving keeping up? Lag is the age of the oldest finished WAL file not archived yet
    (its ``.ready`` file in ``archive_status``).

    The current file is not finished (``archive_timeout`` closes it), so an idle primary whose
    last archive is old is not lagging. A failure newer than the last success is a failure.

    >>> from datetime import timedelta, timezone
    >>> t = datetime(2026, 11, 26, 3, tzinfo=timezone.utc)
    >>> idle = ArchiverStats(t, "000000010000000000000009", 8, "000000010000000000000008", t - timedelta(hours=1),
    ...                      0, None, None, ready_count=1, oldest_ready=t - timedelta(seconds=2))
    >>> judge_archive(idle, 300).lag_s   # an hour-old last archive, but the waiting file finished 2 s ago
    2.0
    """
    pending = stats.ready_count
    lag = (stats.now - stats.oldest_ready).total_seconds() if stats.oldest_ready is not None else 0.0
    failing = stats.last_failed_time is not None and (
        stats.last_archived_time is None or stats.last_failed_time > stats.last_archived_time
    )
    if failing:
        return ArchiveVerdict(False, pending, lag, f"archiving is failing: {stats.last_failed_wal} failed last "
                              f"({stats.failed_count} failures in all); see the primary's PostgreSQL log")
    if lag > lag_limit_s:
        return ArchiveVerdict(False, pending, lag, f"archive lags {lag:.0f} s ({pending} WAL file(s) waiting), "
                              f"over the limit of {lag_limit_s:.0f} s")
    last = stats.last_archived_wal or "none yet"
    return ArchiveVerdict(True, pending, lag, f"archiving keeps up: last archived {last}, {pending} waiting, "
                          f"lag {lag:.0f} s (limit {lag_limit_s:.0f} s), {stats.archived_count} archived")
