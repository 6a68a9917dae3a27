"""The archive health verdict every engine's judge returns (PostgreSQL's WAL arithmetic and judge live in
:mod:`dbtier.engines.postgres.wal_archive`; MongoDB's in :mod:`dbtier.engines.mongodb.archive_health`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchiveVerdict:
    healthy: bool
    pending_segments: int
    lag_s: float
    sentence: str
    #: What ``pending_segments`` counts, in the artifact (the engine's words).
    waiting_label: str = "WAL files waiting"

    def row(self) -> dict[str, object]:
        return {"healthy": self.healthy, "pending_segments": self.pending_segments, "lag_s": round(self.lag_s, 1),
                "verdict": self.sentence}

    def artifact_row(self) -> dict[str, object]:
        """The archive health artifact's row, in words.

        >>> ArchiveVerdict(True, 0, 0.44, "archiving keeps up").artifact_row()
        {'healthy': 'yes', 'WAL files waiting': 0, 'lag': '0.4 s', 'verdict': 'archiving keeps up'}
        """
        return {"healthy": "yes" if self.healthy else "NO", self.waiting_label: self.pending_segments,
                "lag": f"{self.lag_s:.1f} s", "verdict": self.sentence}
