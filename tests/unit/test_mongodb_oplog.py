"""Oplog slices, gaps, the resume point and point-in-time targets, at their boundaries (pure)."""

from __future__ import annotations

import bson
import pytest
from bson import Timestamp
from bson.raw_bson import RawBSONDocument

from dbtier.engines.mongodb.dump import DumpRecord
from dbtier.engines.mongodb.oplog import (
    MAX_INC, SliceRecord, chain_problems, decode_slice, encode_slice, index_json, next_ts, parse_index,
    parse_slice_name, replay_bytes, resume_filter, resume_point, rolled_past, should_close, slice_name, window_warning,
)
from dbtier.engines.mongodb.pitr import oplog_limit, parse_target, plan_restore
from dbtier.errors import BackupError, RestoreError

T = 1795654900  # 2026-11-26 01:01:40 UTC


def ts(seconds: int, inc: int = 0) -> Timestamp:
    return Timestamp(T + seconds, inc)


def rec(start: Timestamp, end: Timestamp, after: Timestamp | None, count: int = 3) -> SliceRecord:
    return SliceRecord(start, end, slice_name(start, end), count, after)


# slices 0..60, 61..120 (chained), then a gap: the next one resumed after 120 but starts at 200 ... see GAPPED
CHAIN = [rec(ts(0, 1), ts(60, 2), None), rec(ts(61, 1), ts(120, 5), ts(60, 2)), rec(ts(121, 1), ts(180, 1), ts(120, 5))]
GAPPED = [*CHAIN[:2], rec(ts(200, 1), ts(260, 1), ts(190, 1)), rec(ts(261, 1), ts(300, 1), ts(260, 1))]
DUMP = DumpRecord("20261126-010150F", ts(5, 0), ts(10, 0))


@pytest.mark.parametrize(
    ("start", "end"),
    [(Timestamp(1, 0), Timestamp(1, 0)), (Timestamp(1764118923, 1), Timestamp(1764118983, 12)),
     (Timestamp(0, 0), Timestamp(2**32 - 1, MAX_INC))],
)
def test_slice_names_round_trip(start: Timestamp, end: Timestamp) -> None:
    assert parse_slice_name(slice_name(start, end)) == (start, end)


def test_slice_names_sort_as_timestamps() -> None:
    pairs = [(Timestamp(9, 2), Timestamp(9, 10)), (Timestamp(10, 1), Timestamp(10, 1)), (Timestamp(9, 10), Timestamp(9, 11))]
    assert sorted(slice_name(*p) for p in pairs) == [slice_name(*p) for p in sorted(pairs)]
    assert parse_slice_name("index.json") is None
    with pytest.raises(ValueError):
        slice_name(Timestamp(2, 0), Timestamp(1, 0))


def test_index_round_trip_and_damage() -> None:
    assert parse_index(index_json(reversed(CHAIN))) == CHAIN
    with pytest.raises(BackupError, match="oplog index"):
        parse_index('{"slices": [{"start": "x"}]}')


@pytest.mark.parametrize(
    ("records", "gaps", "overlaps"),
    [
        (CHAIN, [], 0),
        (GAPPED, [(ts(120, 5), ts(200, 1))], 0),
        ([CHAIN[0], rec(ts(60, 2), ts(70, 0), ts(60, 1))], [], 1),  # starts at the previous end: overlap
        ([CHAIN[0], rec(ts(61, 0), ts(70, 0), None)], [(ts(60, 2), ts(61, 0))], 0),  # restarted from scratch
    ],
)
def test_chain(records: list[SliceRecord], gaps: list[tuple[Timestamp, Timestamp]], overlaps: int) -> None:
    found, overlapping = chain_problems(records)
    assert [(g.after, g.resumed) for g in found] == gaps
    assert len(overlapping) == overlaps


@pytest.mark.parametrize(
    ("records", "oldest", "resume", "query", "rolled"),
    [
        ([], None, None, {}, False),
        ([], ts(0), None, {}, False),
        (CHAIN, ts(0), ts(180, 1), {"ts": {"$gt": ts(180, 1)}}, False),
        (CHAIN, ts(180, 1), ts(180, 1), {"ts": {"$gt": ts(180, 1)}}, False),  # the resume entry is still there
        (CHAIN, ts(180, 2), ts(180, 1), {"ts": {"$gt": ts(180, 1)}}, True),  # the oplog rolled past it
    ],
)
def test_resume(records: list[SliceRecord], oldest: Timestamp | None, resume: Timestamp | None,
                query: dict[str, object], rolled: bool) -> None:
    assert resume_point(records) == resume
    assert resume_filter(resume) == query
    assert rolled_past(resume, oldest) is rolled


@pytest.mark.parametrize(
    ("opened", "now", "count", "closes"),
    [(0, 59.9, 5, False), (0, 60, 5, True), (0, 600, 0, False), (0, 1, 1000, True), (0, 1, 999, False)],
)
def test_should_close(opened: float, now: float, count: int, closes: bool) -> None:
    assert should_close(opened, now, count, slice_s=60, max_entries=1000) is closes


@pytest.mark.parametrize(
    ("oldest", "newest", "dump_end", "warns"),
    [(ts(0), ts(3600), ts(1800), False), (ts(0), ts(3600), ts(0), False), (ts(1000), ts(3600), ts(500), True),
     (ts(0), ts(10), None, True)],
)
def test_window_warning(oldest: Timestamp, newest: Timestamp, dump_end: Timestamp | None, warns: bool) -> None:
    assert (window_warning(oldest, newest, dump_end) is not None) is warns


def test_slice_bytes_round_trip_and_replay_bounds() -> None:
    entries = [RawBSONDocument(bson.encode({"ts": ts(s, i), "op": "i"})) for s, i in [(1, 0), (2, 0), (2, 1), (3, 0)]]
    data = encode_slice(entries)
    assert [e["ts"] for e in decode_slice(data)] == [e["ts"] for e in entries]
    replay = bson.decode_all(replay_bytes([data], after=ts(1, 0), limit=ts(3, 0)))
    assert [d["ts"] for d in replay] == [ts(2, 0), ts(2, 1)]


def test_a_replay_leaves_the_new_sets_users_and_roles_alone() -> None:
    """A createUser, a password change or a role of the source is not replayed: the new set keeps its own."""
    ops = [("app.orders", "i"), ("admin.system.users", "i"), ("admin.system.users", "u"), ("admin.system.roles", "i"),
           ("admin.system.version", "u"), ("admin.events", "i"), ("app.orders", "d")]
    entries = [RawBSONDocument(bson.encode({"ts": ts(10 + n, 0), "op": op, "ns": ns})) for n, (ns, op) in enumerate(ops)]
    replay = bson.decode_all(replay_bytes([encode_slice(entries)], after=ts(0, 0), limit=None))
    assert [(d["ns"], d["op"]) for d in replay] == [("app.orders", "i"), ("admin.events", "i"), ("app.orders", "d")]


# -- targets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target_ts", "limit"),
    [
        ("2026-11-26 01:02:03+00", Timestamp(T + 23, MAX_INC), Timestamp(T + 24, 0)),  # the whole second is in
        ("2026-11-26T03:02:03+02:00", Timestamp(T + 23, MAX_INC), Timestamp(T + 24, 0)),
        ("ts:1795654923:7", Timestamp(T + 23, 7), Timestamp(T + 23, 8)),  # that entry is in, the next is not
        ("ts:1795654923", Timestamp(T + 23, 0), Timestamp(T + 23, 1)),
        (f"ts:1795654923:{MAX_INC}", Timestamp(T + 23, MAX_INC), Timestamp(T + 24, 0)),
    ],
)
def test_target_to_exclusive_limit(text: str, target_ts: Timestamp, limit: Timestamp) -> None:
    target = parse_target(text)
    assert target.ts == target_ts
    assert oplog_limit(target_ts) == limit == next_ts(target_ts)
    assert target_ts < limit  # inclusive target, exclusive limit: nothing between them


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-11-26 01:02:03", "has no time zone"),
        ("2026-11-26 01:02:03.5+00", "whole seconds"),
        ("ts:12:x", "not an oplog timestamp"),
        (f"ts:12:{MAX_INC + 1}", "not an oplog timestamp"),
        ("yesterday", "is not latest, a time"),
    ],
)
def test_bad_target_text(text: str, message: str) -> None:
    with pytest.raises(RestoreError, match=message) as info:
        parse_target(text)
    assert str(info.value).startswith("target: ") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "slices", "limit"),
    [
        ("ts:1795654910:0", [CHAIN[0].name], ts(10, 1)),  # exactly the dump's end
        ("ts:1795654960:2", [CHAIN[0].name], ts(60, 3)),  # exactly a slice's end: the next slice is not needed
        ("ts:1795654960:3", [CHAIN[0].name, CHAIN[1].name], ts(60, 4)),
        ("2026-11-26 01:02:40+00", [CHAIN[0].name, CHAIN[1].name], ts(61, 0)),  # second 60, whole
        ("ts:1795655080:1", [s.name for s in CHAIN], ts(180, 2)),  # the newest archived entry
        ("latest", [s.name for s in CHAIN], None),
    ],
)
def test_plan_restore_accepts(text: str, slices: list[str], limit: Timestamp | None) -> None:
    plan = plan_restore(parse_target(text), [DUMP], CHAIN)
    assert plan.dump == DUMP and list(plan.slices) == slices and plan.limit == limit
    assert plan.replay_after == DUMP.oplog_start


@pytest.mark.parametrize(
    ("text", "dumps", "slices", "message"),
    [
        ("ts:1795654909:9", [DUMP], CHAIN, "before the oldest dump ends"),  # one entry before the dump's end
        ("ts:1795655080:2", [DUMP], CHAIN, "after the newest archived slice"),  # one entry after the newest
        ("2026-11-26 01:04:40+00", [DUMP], CHAIN, "after the newest archived slice"),  # second 180 not complete
        ("ts:1795655030:0", [DUMP], GAPPED, "gap of the oplog archive"),  # inside the gap 120..200
        ("ts:1795655150:0", [DUMP], GAPPED, "gap of the oplog archive"),  # after it, no newer dump
        ("latest", [], CHAIN, "no dump to restore from"),
        ("latest", [DUMP], [], "needs archived oplog"),
        ("latest", [DumpRecord("20261126-010130F", ts(-10), ts(-5))], CHAIN, "the archive begins"),
        ("dump:20261126-000000F", [DUMP], CHAIN, "no dump labelled"),
    ],
)
def test_plan_restore_refuses(text: str, dumps: list[DumpRecord], slices: list[SliceRecord], message: str) -> None:
    with pytest.raises(RestoreError, match=message) as info:
        plan_restore(parse_target(text), dumps, slices)
    assert "\n" not in str(info.value)


def test_gap_boundaries() -> None:
    at_gap_start = plan_restore(parse_target("ts:1795655020:5"), [DUMP], GAPPED)  # ts(120, 5): before the gap
    assert list(at_gap_start.slices) == [GAPPED[0].name, GAPPED[1].name]
    newer = DumpRecord("20261126-010530F", ts(210), ts(230))
    after = plan_restore(parse_target("ts:1795655150:0"), [DUMP, newer], GAPPED)  # a dump after the gap serves it
    assert after.dump == newer and list(after.slices) == [GAPPED[2].name]


def test_dump_alone() -> None:
    plan = plan_restore(parse_target("dump:20261126-010150F"), [DUMP], [])
    assert plan.slices == () and plan.limit is None and "alone" in plan.sentence
