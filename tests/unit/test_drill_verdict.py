"""The drill verdict (pure): RTO, gaps, lost writes, split brain, rejoin, pass or fail."""

from __future__ import annotations

import pytest

from dbtier.drills.settings import DrillSettings, refusal
from dbtier.drills.verdict import (
    Attempt,
    Expectation,
    Observed,
    ack_gap,
    judge,
    longest_gap,
    lost_ids,
    markdown_report,
    rto,
    split_brain,
)

OLD, NEW = 5432, 5433
FAULT = 10.0


def ack(wid: int, sent: float, port: int = OLD, timeline: int = 1, took: float = 0.01) -> Attempt:
    return Attempt(wid, sent, sent + took, True, port, timeline)


def fail(wid: int, sent: float, took: float = 0.5) -> Attempt:
    return Attempt(wid, sent, sent + took, False, error="OperationalError: connection refused")


#: Writes every 0.5 s on the old primary, a 12 s outage at the fault, then the new primary on timeline 2.
FAILOVER = [ack(1, 9.0), ack(2, 9.5), fail(3, 10.1), fail(4, 15.0), ack(5, 22.0, NEW, 2), ack(6, 22.5, NEW, 2)]


def seen(present: set[int], **fields: object) -> Observed:
    base: dict[str, object] = {"fault_at": FAULT, "leader_before": "pg0", "leader_after": "pg1",
                               "primary_ids": frozenset(present)}
    base.update(fields)
    return Observed(**base)  # type: ignore[arg-type]


EXPECT_FAILOVER = Expectation(leader_change=True, zero_loss=True, rto_budget_s=30, rejoin_member="pg0",
                              rejoin_budget_s=60)


@pytest.mark.parametrize(
    ("attempts", "not_port", "want_rto", "want_gap"),
    [
        (FAILOVER, None, 12.01, 12.5),
        (FAILOVER, OLD, 12.01, 12.5),
        # the old primary keeps acknowledging during a switchover: RTO counts to the new primary's first ack
        ([ack(1, 9.5), ack(2, 10.2), ack(3, 11.0), ack(4, 13.0, NEW, 2)], OLD, 3.01, 2.0),
        ([ack(1, 9.5), ack(2, 10.2), ack(3, 11.0), ack(4, 13.0, NEW, 2)], None, 0.21, 0.7),
        ([ack(1, 9.5), fail(2, 10.5)], None, None, None),
        ([fail(1, 9.5), ack(2, 10.5)], None, 0.51, None),
    ],
)
def test_rto_and_gap(attempts: list[Attempt], not_port: int | None, want_rto: float | None, want_gap: float | None) -> None:
    assert rto(attempts, FAULT, not_port) == want_rto
    assert ack_gap(attempts, FAULT, not_port) == want_gap


@pytest.mark.parametrize(
    ("attempts", "present", "lost"),
    [
        (FAILOVER, {1, 2, 5, 6}, []),
        (FAILOVER, {1, 5, 6}, [2]),
        (FAILOVER, {1, 2, 3, 5, 6}, []),  # an unacknowledged write that did land is not a loss
        (FAILOVER, set(), [1, 2, 5, 6]),
        ([fail(1, 0), fail(2, 1)], set(), []),
    ],
)
def test_lost_ids_are_acknowledged_ids_missing_on_the_new_primary(
    attempts: list[Attempt], present: set[int], lost: list[int]
) -> None:
    assert lost_ids(attempts, present) == lost


@pytest.mark.parametrize(
    ("attempts", "finding"),
    [
        (FAILOVER, None),
        ([ack(1, 1), ack(2, 2, NEW, 2), ack(3, 3, OLD, 1)], "port 5432 acknowledged id 3 on timeline 1 after port 5433"),
        ([ack(1, 1), ack(2, 2, NEW, 1)], "ports 5432 and 5433 both acknowledged writes on timeline 1"),
        ([ack(1, 1), ack(2, 2, NEW, 2), ack(3, 3, OLD, 3)], None),  # a switch back on a newer timeline is fine
        ([Attempt(1, 1, 1.1, True), ack(2, 2)], None),  # no port/timeline recorded: nothing to judge
    ],
)
def test_split_brain(attempts: list[Attempt], finding: str | None) -> None:
    found = split_brain(attempts)
    if finding is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(finding)


def test_longest_gap() -> None:
    assert longest_gap(FAILOVER) == 12.5
    assert longest_gap([ack(1, 1)]) is None


@pytest.mark.parametrize(
    ("attempts", "observed", "expect", "passed", "reason"),
    [
        (FAILOVER, seen({1, 2, 5, 6}, rejoin_s=8.0), EXPECT_FAILOVER, True, None),
        # The case that must fail: acknowledged writes missing on the new primary are counted.
        (FAILOVER, seen({1, 5, 6}, rejoin_s=8.0), EXPECT_FAILOVER, False, "1 acknowledged write(s) lost (first ids: 2)"),
        # Asynchronous mode reports the loss honestly without failing on it.
        (FAILOVER, seen({1, 5, 6}, rejoin_s=8.0), Expectation(leader_change=True, zero_loss=False), True, None),
        (FAILOVER, seen({1, 2, 5, 6}, rejoin_s=8.0), Expectation(rto_budget_s=5), False, "RTO 12.01 s is above the budget of 5 s"),
        (FAILOVER, seen({1, 2, 5, 6}), EXPECT_FAILOVER, False, "pg0 did not rejoin as a streaming replica"),
        (FAILOVER, seen({1, 2, 5, 6}, rejoin_s=90.0), EXPECT_FAILOVER, False, "pg0 took 90.0 s to rejoin, above 60 s"),
        (FAILOVER, seen({1, 2, 5, 6}, leader_after="pg0", rejoin_s=1.0), EXPECT_FAILOVER, False, "the leader did not change"),
        (FAILOVER, seen({1, 2, 5, 6}), Expectation(leader_change=False), False, "the leader changed from pg0 to pg1"),
        (FAILOVER, seen({1, 2, 5, 6}), Expectation(max_gap_s=1.0), False, "writes stalled for 12.50 s, more than the 1 s"),
        ([ack(1, 9.0), fail(2, 10.5)], seen({1}), Expectation(), False, "no write was acknowledged after the fault"),
        ([ack(1, 9), ack(2, 10.5, NEW, 2), ack(3, 11, OLD, 1)], seen({1, 2, 3}), Expectation(), False, "split brain: port 5432"),
        (FAILOVER, seen({1, 2, 5, 6}, replica_ids={"pg2": frozenset({1, 2, 5})}), Expectation(), False,
         "pg2 is missing 1 acknowledged write(s) the primary holds"),
        (FAILOVER, seen({1, 2, 5, 6}, problems=["cluster not healthy"]), Expectation(), False, "cluster not healthy"),
    ],
)
def test_judge(attempts: list[Attempt], observed: Observed, expect: Expectation, passed: bool, reason: str | None) -> None:
    verdict = judge("crash", attempts, observed, expect)
    assert verdict.passed is passed, verdict.reasons
    if reason:
        assert any(r.startswith(reason) for r in verdict.reasons), verdict.reasons
    else:
        assert verdict.reasons == []


def test_verdict_record_and_report() -> None:
    verdict = judge("crash", FAILOVER, seen({1, 5, 6}, rejoin_s=8.0, events=[(10.0, "fault: SIGKILL pg0")]), EXPECT_FAILOVER)
    record = verdict.to_dict()
    assert record["lost_writes"] == 1 and record["lost_ids"] == [2]
    assert record["leader_changed"] is True
    assert (record["attempts"], record["acknowledged"], record["failed_attempts"]) == (6, 4, 2)
    assert [what.split(" (")[0] for _, what in verdict.timeline] == [
        "last acknowledged write before the outage", "fault: SIGKILL pg0", "first acknowledged write after the fault"]
    assert verdict.timeline[1][0] == 0.0
    report = markdown_report("orders", [verdict])
    assert "| crash | **FAIL** | 12.01 s (30 s) |" in report
    assert "Judged against: RTO at most 30 s; no acknowledged write lost; the leader must change; " in report
    assert "1 acknowledged write(s) lost" in report
    assert verdict.sentence.startswith("crash: FAILED (RTO 12.01 s, gap 12.50 s, lost writes 1)")


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        (DrillSettings(), False),
        (DrillSettings(production=True), True),
        (DrillSettings(production=True, allow_in_production=True), False),
    ],
)
def test_production_clusters_refuse_drills_unless_they_opt_in(settings: DrillSettings, refused: bool) -> None:
    assert (refusal(settings) is not None) is refused
