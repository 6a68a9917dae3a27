"""Point-in-time targets of a MongoDB restore, and the plan that reaches one (pure).

dbtier's target: **the restore includes every operation with ts <= target**:

- ``2026-11-26 01:02:03+00`` (whole seconds, with a time zone): every operation of that second is in;
- ``ts:1764118923:7`` (an oplog timestamp): that entry is in, the next one is not;
- ``latest``: everything archived;
- ``dump:20261126-010203F``: that dump alone, consistent at its end.

mongorestore's ``--oplogLimit`` is exclusive, so ``limit = next timestamp after the target``
(``Timestamp(T + 1, 0)`` for a second). The plan restores the newest dump that ended by the target
(without its own oplog), then replays the archived entries after the dump's start up to the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from bson import Timestamp

from dbtier.engines.mongodb.dump import DumpRecord
from dbtier.engines.mongodb.oplog import MAX_INC, SliceRecord, chain_problems, next_ts, ts_when
from dbtier.errors import RestoreError

FIELD = "target"


@dataclass(frozen=True)
class MongoTarget:
    kind: str  # time | ts | latest | dump
    text: str
    ts: Timestamp | None = None  # the last operation included (time: Timestamp(T, MAX_INC))
    label: str = ""


def parse_target(text: str) -> MongoTarget:
    """Read a target as a user types it.

    >>> parse_target("2026-11-26 01:02:03+00").ts
    Timestamp(1795654923, 4294967295)
    >>> parse_target("ts:1764118923:7").ts, parse_target("latest").kind
    (Timestamp(1764118923, 7), 'latest')
    """
    text = text.strip()
    if text in ("", "latest"):
        return MongoTarget("latest", "latest")
    if text.startswith("dump:"):
        return MongoTarget("dump", text, label=text[5:])
    if text.startswith("ts:"):
        secs, _, inc = text[3:].partition(":")
        if not secs.isdigit() or not (inc or "0").isdigit() or int(inc or 0) > MAX_INC:
            raise RestoreError(f"{FIELD}: {text!r} is not an oplog timestamp; write it like ts:1764118923:7")
        return MongoTarget("ts", text, Timestamp(int(secs), int(inc or 0)))
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise RestoreError(f"{FIELD}: {text!r} is not latest, a time (2026-11-26 01:02:03+00), ts:T:I "
                           "or dump:LABEL") from None
    if at.tzinfo is None:
        raise RestoreError(f"{FIELD}: {text!r} has no time zone; add one, e.g. {text}+00")
    if at.microsecond:
        raise RestoreError(f"{FIELD}: {text!r} has a fraction of a second; oplog times are whole seconds: "
                           f"write {at.replace(microsecond=0).isoformat(sep=' ')} (that whole second is restored)")
    return MongoTarget("time", text, Timestamp(int(at.astimezone(timezone.utc).timestamp()), MAX_INC))


def describe(target: MongoTarget) -> str:
    """The target as the restore's artifact and summary say it, with dbtier's inclusive meaning.

    >>> describe(parse_target("2026-11-26 01:02:03+00"))
    'time 2026-11-26 01:02:03+00 (every operation of that second included)'
    >>> describe(parse_target("ts:1764118923:7")), describe(parse_target("latest")), describe(parse_target("dump:X"))
    ('oplog timestamp 1764118923:7 (that entry included)', 'latest (the newest archived oplog entry)', 'dump X alone')
    """
    if target.kind == "time":
        return f"time {target.text} (every operation of that second included)"
    if target.kind == "ts":
        return f"oplog timestamp {target.text[3:]} (that entry included)"
    if target.kind == "dump":
        return f"dump {target.label} alone"
    return "latest (the newest archived oplog entry)"


def oplog_limit(target_ts: Timestamp) -> Timestamp:
    """mongorestore's exclusive ``--oplogLimit`` for an inclusive target.

    >>> oplog_limit(Timestamp(1764118923, MAX_INC)), oplog_limit(Timestamp(1764118923, 7))
    (Timestamp(1764118924, 0), Timestamp(1764118923, 8))
    """
    return next_ts(target_ts)


@dataclass(frozen=True)
class PitrPlan:
    dump: DumpRecord
    #: The slices to replay, oldest first (empty: the dump alone, with its own oplog).
    slices: tuple[str, ...]
    replay_after: Timestamp
    limit: Timestamp | None

    @property
    def sentence(self) -> str:
        if not self.slices:
            return f"dump {self.dump.label} alone, consistent at its end"
        upto = f"before {ts_when(self.limit)}" if self.limit else "to the end"
        return f"dump {self.dump.label} + {len(self.slices)} oplog slice(s) replayed {upto}"


def plan_restore(target: MongoTarget, dumps: list[DumpRecord], slices: list[SliceRecord]) -> PitrPlan:
    """The plan that reaches ``target``, or a one-line RestoreError naming the field and the fix."""
    if not dumps:
        raise RestoreError("no dump to restore from; run the backup flow first")
    dumps = sorted(dumps, key=lambda d: d.oplog_end)
    if target.kind == "dump":
        found = next((d for d in dumps if d.label == target.label), None)
        if found is None:
            raise RestoreError(f"{FIELD}: no dump labelled {target.label!r}; newest: "
                               + ", ".join(d.label for d in dumps[-3:]))
        return PitrPlan(found, (), found.oplog_end, None)
    if not slices:
        raise RestoreError(f"{FIELD}: {target.text} needs archived oplog and there is none; "
                           "start the oplog archiver, or restore dump:LABEL")
    newest = slices[-1].end
    wanted = target.ts if target.ts is not None else newest  # latest: the newest archived entry
    if wanted < dumps[0].oplog_end:
        raise RestoreError(f"{FIELD}: {target.text} is before the oldest dump ends ({dumps[0].label}, "
                           f"{ts_when(dumps[0].oplog_end)}); pick a later time")
    if wanted > newest:
        raise RestoreError(f"{FIELD}: {target.text} is after the newest archived slice (it ends {ts_when(newest)}; "
                           f"whole seconds up to {newest.time - 1} are complete); pick an earlier target, or wait for "
                           "the archiver's next slice")
    dump = [d for d in dumps if d.oplog_end <= wanted][-1]
    needed = _covering(slices, dump, wanted, target.text)
    limit = None if target.kind == "latest" else oplog_limit(wanted)
    return PitrPlan(dump, tuple(s.name for s in needed), dump.oplog_start, limit)


def _covering(slices: list[SliceRecord], dump: DumpRecord, wanted: Timestamp, text: str) -> list[SliceRecord]:
    """The slices that hold every entry after the dump's start up to ``wanted``, without a gap."""
    gaps, overlaps = chain_problems(slices)
    if overlaps:
        raise RestoreError(f"oplog archive: {overlaps[0]}; repair the index before restoring")
    first = next((i for i, s in enumerate(slices) if s.end > dump.oplog_start), None)
    if first is None or slices[first].covers_after > dump.oplog_start:
        begins = ts_when(slices[first].start) if first is not None else "after it"
        raise RestoreError(f"{FIELD}: {text} needs the oplog from dump {dump.label}'s start "
                           f"({ts_when(dump.oplog_start)}) but the archive begins {begins}; pick dump:{dump.label} "
                           "or a time after a newer dump")
    for gap in gaps:
        if dump.oplog_start < gap.resumed and gap.after < wanted:
            raise RestoreError(f"{FIELD}: {text} falls in or after a gap of the oplog archive (nothing archived "
                               f"after {ts_when(gap.after)} until {ts_when(gap.resumed)}: the oplog rolled past what "
                               "was archived); pick a time before the gap, or after a dump newer than it")
    return [s for s in slices[first:] if s.covers_after < wanted]
