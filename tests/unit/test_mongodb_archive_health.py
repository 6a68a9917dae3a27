"""Archive health of a replica set: the verdict in a table, and the engine reading real index files (tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bson import Timestamp as T

from dbtier.backup.repos import BackupSecrets
from dbtier.engines.mongodb.archive_health import judge
from dbtier.engines.mongodb.oplog import SliceRecord
from dbtier.secrets import Passwords

NOW, LIMIT = 10_000, 300


def s(start: int, end: int, after: int | None = None) -> SliceRecord:
    return SliceRecord(T(start, 1), T(end, 1), f"s{start}", 2, T(after, 1) if after is not None else None)


CHAIN = [s(9000, 9600), s(9601, 9960, 9600)]  # newest entry 40 s old
DUMP = (T(9100, 1), T(9110, 1))  # the newest dump's first and last oplog entries
WINDOW = (T(5000, 1), T(9990, 1))  # the primary's oplog: 4990 s, reaching back past the dump


@pytest.mark.parametrize(("archives", "dump", "window", "healthy", "behind", "says"), [
    pytest.param({"mongo0": CHAIN, "mongo1": CHAIN}, DUMP, WINDOW, True, 0,
                 ["oplog archive keeps up: newest entry 40 s old (limit 300 s) in mongo1"], id="healthy"),
    pytest.param({"mongo0": [s(9000, 9600)], "mongo1": []}, DUMP, WINDOW, False, 2,
                 ["oplog archive lags 400 s", "over the limit of 300 s",
                  "mongo0, mongo1 archived nothing in the last 300 s"], id="lagging"),
    pytest.param({"mongo0": CHAIN, "mongo1": []}, DUMP, WINDOW, True, 1,
                 ["keeps up", "mongo1 archived nothing in the last 300 s (another member's archive serves restores)"],
                 id="one-archiver-behind"),
    pytest.param({"mongo0": [s(9000, 9200), s(9300, 9960)]}, DUMP, WINDOW, False, 0,
                 ["mongo0: gap in the oplog archive after", "(the oplog rolled past what was archived); no restore "
                  "reaches a time after it: take a dump now"], id="gap-after-the-dump"),
    pytest.param({"mongo0": [s(9000, 9050), s(9060, 9960)]}, DUMP, WINDOW, True, 0,
                 ["keeps up", "mongo0: gap in the oplog archive after", "a newer dump covers it"],
                 id="gap-healed-by-a-newer-dump"),
    pytest.param({"mongo0": [s(9000, 9600), s(9500, 9960, 9600)]}, DUMP, WINDOW, False, 0,
                 ["mongo0: slice s9500 overlaps s9000; repair its index"], id="overlap"),
    pytest.param({"mongo0": [], "mongo1": []}, DUMP, WINDOW, False, 2,
                 ["no member has archived any oplog yet"], id="empty"),
    pytest.param({"mongo0": CHAIN}, DUMP, (T(9500, 1), T(9990, 1)), True, 0,
                 ["keeps up", "the oplog window (490 s) is shorter than the time since the last dump (880 s): a "
                  "restore relies on the archive alone"], id="window-shorter-than-since-the-dump"),
    pytest.param({"mongo0": CHAIN}, None, WINDOW, True, 0, ["keeps up", "no dump yet: run the backup flow"],
                 id="no-dump"),
    pytest.param({"mongo0": CHAIN}, None, None, True, 0, ["no dump yet"], id="no-primary-no-dump"),
])
def test_the_verdict(archives: dict[str, list[SliceRecord]], dump: tuple[T, T] | None, window: tuple[T, T] | None,
                     healthy: bool, behind: int, says: list[str]) -> None:
    verdict = judge(archives, NOW, LIMIT, dump, window)
    assert (verdict.healthy, verdict.pending_segments) == (healthy, behind), verdict.sentence
    assert all(part in verdict.sentence for part in says), verdict.sentence
    assert "\n" not in verdict.sentence
    row = verdict.artifact_row()
    assert row["healthy"] == ("yes" if healthy else "NO") and row["members behind"] == behind


def test_the_engine_reads_every_members_index_and_the_newest_dump(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A set without a primary that answers (no mongod here): the archive is judged anyway, without the window."""
    from dbtier.engines.mongodb import backup
    from dbtier.engines.mongodb.engine import MongoEngine, members
    from dbtier.errors import ClusterUnhealthy
    from tests.unit.test_mongodb_restore import AT, FileProvider, source_spec, ts, write_archive

    source, provider = source_spec(tmp_path), FileProvider()
    clock = iter([ts(10), ts(20)])
    backup.take(provider, source, 1, BackupSecrets(), "pw", members(source)[0], lambda: next(clock), now=AT)
    write_archive(source, "mongo0", [(0, 30, False), (40, 90, False)])  # a gap after the dump
    write_archive(source, "mongo1", [(0, 30, False), (31, 90, True)])

    def no_primary(*_: object) -> None:
        raise ClusterUnhealthy("no member answers")

    engine = MongoEngine()
    monkeypatch.setattr(engine, "_primary", no_primary)
    monkeypatch.setattr("time.time", lambda: float(ts(100).time))
    verdict = engine.judge_archive(provider, source, BackupSecrets(), Passwords(superuser="r", app="a", keyfile="k"))
    assert not verdict.healthy and verdict.lag_s == 10.0
    assert verdict.sentence.startswith("mongo0: gap in the oplog archive after") and "take a dump now" in verdict.sentence
    assert "mongo2 archived nothing in the last 300 s" in verdict.sentence


def test_the_end_to_end_check_names_every_archiver_that_does_not_run(tmp_path: Path) -> None:
    from dbtier.engines.mongodb.engine import MongoEngine
    from dbtier.errors import BackupError
    from tests.unit.test_mongodb_restore import FileProvider, source_spec

    source = source_spec(tmp_path)
    with pytest.raises(BackupError) as stopped:
        MongoEngine().check_archive(FileProvider(), source, BackupSecrets())
    assert stopped.value.one_line() == ("mongo0-oplog-archiver, mongo1-oplog-archiver, mongo2-oplog-archiver: not "
                                        "running; start them with python -m flows.provision (it starts every archiver)")
