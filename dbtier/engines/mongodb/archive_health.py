"""Archive health of a replica set: are the oplog archivers keeping up, and can every time since the newest dump be
restored? (pure: the flow reads the indexes and the primary's oplog bounds; :func:`judge` decides.)

- **lag**: the age of the newest archived entry in the best member's archive, against ``backup.archive_lag_limit_s``
  (mongod writes a no-op to its oplog every 10 s, so an idle set's archive ages by a slice at most);
- **a gap** (the oplog rolled past what an archiver had shipped, recorded in its index): unhealthy while it spoils a
  restore, i.e. until a dump newer than the gap exists; an overlap always;
- **the oplog window**: a warning when it is shorter than the time since the newest dump (only the archive then
  bridges the two; :func:`~dbtier.engines.mongodb.oplog.window_warning`).
"""

from __future__ import annotations

from collections.abc import Mapping

from bson import Timestamp

from dbtier.backup.archive import ArchiveVerdict
from dbtier.engines.mongodb.oplog import SliceRecord, chain_problems, ts_when, window_warning

#: What the verdict's count is of, in the artifact.
WAITING = "members behind"


def judge(archives: Mapping[str, list[SliceRecord]], now_s: float, lag_limit_s: float,
          newest_dump: tuple[Timestamp, Timestamp] | None, window: tuple[Timestamp, Timestamp] | None) -> ArchiveVerdict:
    """The verdict on the members' archives (member name to its index, oldest first) at ``now_s``;
    ``newest_dump``: the newest dump's (first, last) oplog entries; ``window``: the primary's (oldest, newest).

    >>> from bson import Timestamp as T
    >>> s = lambda a, b, after=None: SliceRecord(T(a, 1), T(b, 1), f"s{a}", 2, T(after, 1) if after else None)
    >>> v = judge({"mongo0": [s(100, 160), s(161, 220, 160)], "mongo1": []}, 250, 300, (T(90, 1), T(95, 1)),
    ...           (T(10, 1), T(240, 1)))
    >>> v.healthy, v.pending_segments, v.lag_s, v.sentence.split(";")[0]
    (True, 1, 30.0, 'oplog archive keeps up: newest entry 30 s old (limit 300 s) in mongo0')
    >>> judge({"mongo0": []}, 250, 300, None, None).sentence
    'no member has archived any oplog yet: check the archivers run (dbtier status) and their logs; no dump yet: run the backup flow'
    """
    ends = {name: records[-1].end for name, records in archives.items() if records}
    behind = [name for name in archives if name not in ends or now_s - ends[name].time > lag_limit_s]
    problems: list[str] = []
    notes: list[str] = []
    for name, records in sorted(archives.items()):
        gaps, overlaps = chain_problems(records)
        problems += [f"{name}: {overlap}; repair its index" for overlap in overlaps]
        for gap in gaps:
            healed = newest_dump is not None and newest_dump[0] > gap.resumed
            (notes if healed else problems).append(
                f"{name}: {gap.sentence} (the oplog rolled past what was archived)"
                + ("; a newer dump covers it" if healed else "; no restore reaches a time after it: take a dump now"))
    if not ends:
        lag, best = float("inf"), None
        problems.insert(0, "no member has archived any oplog yet: check the archivers run (dbtier status) and "
                        "their logs")
    else:
        best = max(ends, key=lambda name: (ends[name], name))
        lag = max(0.0, float(now_s - ends[best].time))
        if lag > lag_limit_s:
            problems.insert(0, f"oplog archive lags {lag:.0f} s (its newest entry: {ts_when(ends[best])}, in {best}), "
                            f"over the limit of {lag_limit_s:.0f} s; check the archivers run and reach the repository")
    if ends and behind:
        notes.append(f"{', '.join(sorted(behind))} archived nothing in the last {lag_limit_s:.0f} s (another member's "
                     "archive serves restores)")
    warning = window_warning(*window, newest_dump[1] if newest_dump else None) if window else (
        None if newest_dump else "no dump yet: run the backup flow")
    if warning:
        notes.append(warning)
    if problems:
        return ArchiveVerdict(False, len(behind), lag if ends else 0.0, "; ".join([*problems, *notes]),
                              waiting_label=WAITING)
    head = f"oplog archive keeps up: newest entry {lag:.0f} s old (limit {lag_limit_s:.0f} s) in {best}"
    return ArchiveVerdict(True, len(behind), lag, "; ".join([head, *notes]), waiting_label=WAITING)
