"""Split brain from timeline histories, and the old-primary window, as the verdict judges them (pure)."""

from __future__ import annotations

import pytest

from dbtier.drills.history import MemberHistory, Switch, forked_timelines, off_history, parse_dump
from dbtier.drills.verdict import Attempt, Evidence, Expectation, Observed, judge, old_primary_window

OLD, NEW = 5432, 5433
FAULT = 10.0
TL2 = (Switch(1, "0/3000060"),)
TL2_ELSEWHERE = (Switch(1, "0/5000000"),)
TL3 = (Switch(1, "0/3000060"), Switch(2, "0/7000000"))


def ack(wid: int, sent: float, port: int = OLD, timeline: int = 1) -> Attempt:
    return Attempt(wid, sent, sent + 0.01, True, port, timeline)


def fail(wid: int, sent: float) -> Attempt:
    return Attempt(wid, sent, sent + 0.5, False, error="OperationalError: timeout")


def member(name: str, timeline: int | None, **files: tuple[Switch, ...]) -> MemberHistory:
    return MemberHistory(name, timeline, {int(k[2:]): v for k, v in files.items()})


@pytest.mark.parametrize(
    ("members", "findings"),
    [
        # a clean failover: the new primary made timeline 2, the others copied its history file
        ([member("pg0", 2, tl2=TL2), member("pg1", 2, tl2=TL2), member("pg2", 2, tl2=TL2)], 0),
        # a member still on timeline 1 (no file) with the others on 2: no fork
        ([member("pg0", 1), member("pg1", 2, tl2=TL2)], 0),
        # two failovers, one member only holds the newer file: it still agrees
        ([member("pg0", 3, tl3=TL3), member("pg1", 3, tl2=TL2, tl3=TL3)], 0),
        # split brain: both promoted onto timeline 2 from different points of timeline 1
        ([member("pg0", 2, tl2=TL2_ELSEWHERE), member("pg1", 2, tl2=TL2), member("pg2", 2, tl2=TL2)], 2),
    ],
)
def test_forked_timelines(members: list[MemberHistory], findings: int) -> None:
    found = forked_timelines(members)
    assert len(found) == findings
    assert all("were both promoted onto timeline 2 from different histories" in f for f in found)


@pytest.mark.parametrize(
    ("histories", "acked", "want"),
    [
        ({"pg1": member("pg1", 2, tl2=TL2), "pg0": member("pg0", 2)}, {1: 50, 2: 30}, []),
        ({"pg1": member("pg1", 2, tl2=TL2), "pg0": member("pg0", 3)}, {1: 50, 2: 30},
         ["pg0 is on timeline 3, which is not in the history of the survivor pg1 (timelines 1, 2)"]),
        ({"pg1": member("pg1", 2, tl2=TL2)}, {1: 50, 2: 30, 4: 1},
         ["1 write(s) acknowledged on timeline 4, which is not in the history of the survivor pg1 (timelines 1, 2)"]),
        # the survivor's history could not be read: nothing to judge against
        ({"pg0": member("pg0", 3)}, {3: 1}, []),
    ],
)
def test_off_history(histories: dict[str, MemberHistory], acked: dict[int, int], want: list[str]) -> None:
    assert off_history(histories, "pg1", acked) == want


def test_parse_dump_reads_every_history_file_and_ignores_strays() -> None:
    dump = ("==> 00000002.history\n1\t0/3000060\tno recovery target specified\n"
            "==> backup_label.history\nnot a history\n==> 00000003.history\n1\t0/3000060\tx\n\n2\t0/7000000\ty\n")
    assert parse_dump(dump) == {2: TL2, 3: TL3}
    assert parse_dump("") == {}


#: The writer's log of a failover: old primary until 9.5, outage, new primary from 22.
FAILOVER = [ack(1, 9.0), ack(2, 9.5), fail(3, 10.1), ack(5, 22.0, NEW, 2), ack(6, 22.5, NEW, 2)]


@pytest.mark.parametrize(
    ("probe", "window"),
    [
        ([], None),  # no probe: not measured
        ([ack(1, 9.0), ack(2, 9.4), fail(3, 10.0), fail(4, 25.0)], 0),
        ([ack(1, 9.0), ack(2, 21.0), ack(3, 22.1), ack(4, 23.0)], 2),  # the old primary went on past the new one's first
    ],
)
def test_old_primary_window(probe: list[Attempt], window: int | None) -> None:
    assert (old_primary_window(FAILOVER, probe, FAULT, OLD) if probe else None) == window


def observed(histories: dict[str, MemberHistory], probe: list[Attempt]) -> Observed:
    return Observed(fault_at=FAULT, leader_before="pg0", leader_after="pg1", primary_ids=frozenset({1, 2, 5, 6}),
                    evidence=Evidence(histories=histories, old_primary_probe=probe))


CLEAN = {"pg0": member("pg0", 2, tl2=TL2), "pg1": member("pg1", 2, tl2=TL2)}
FORKED = {"pg0": member("pg0", 2, tl2=TL2_ELSEWHERE), "pg1": member("pg1", 2, tl2=TL2)}
SYNC = Expectation(leader_change=True, rto_budget_s=30, max_old_primary_window=0)


@pytest.mark.parametrize(
    ("histories", "probe", "expect", "passed", "reason"),
    [
        (CLEAN, [ack(1, 9.0), fail(2, 10.0)], SYNC, True, None),
        (FORKED, [ack(1, 9.0), fail(2, 10.0)], SYNC, False,
         "split brain: timeline history: pg0 and pg1 were both promoted onto timeline 2 from different histories"),
        (CLEAN, [ack(1, 9.0), ack(2, 22.2)], SYNC, False,
         "the old primary acknowledged 1 write(s) after the new primary's first (at most 0 allowed)"),
        # asynchronous mode: the window is reported, not judged
        (CLEAN, [ack(1, 9.0), ack(2, 22.2)], Expectation(leader_change=True, zero_loss=False), True, None),
    ],
)
def test_the_verdict_judges_histories_and_the_window(histories: dict[str, MemberHistory], probe: list[Attempt],
                                                     expect: Expectation, passed: bool, reason: str | None) -> None:
    verdict = judge("partition-primary", FAILOVER, observed(histories, probe), expect)
    assert verdict.passed is passed, verdict.reasons
    if reason:
        assert verdict.reasons[0].startswith(reason)
    assert verdict.old_primary_window == (1 if probe[-1].ok else 0)


def test_a_drill_without_evidence_is_judged_as_before() -> None:
    seen = Observed(fault_at=FAULT, leader_before="pg0", leader_after="pg1", primary_ids=frozenset({1, 2, 5, 6}))
    verdict = judge("crash", FAILOVER, seen, Expectation(leader_change=True, rto_budget_s=30))
    assert verdict.passed and verdict.old_primary_window is None and verdict.split_brain == []
