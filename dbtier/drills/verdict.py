"""The drill verdict: pure arithmetic over the writer's log and what the checker read back.

Nothing here does I/O. Times are epoch seconds from one clock (the drill and its
writer run on the same host).

- RTO: from the fault to the first acknowledged write *sent* after it.
- Gap: from the last acknowledgement before the fault to the first one after it.
- Lost writes: acknowledged ids that are missing on the final primary.
- Split brain: an acknowledgement on an older timeline after one on a newer
  timeline, or two servers acknowledging writes on the same timeline; where the
  drill read the members' timeline histories, also what :mod:`dbtier.drills.history` finds.
- Old-primary window: writes the old primary acknowledged after the new primary's
  first (a probe writer pinned to the old primary counts them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dbtier.drills.history import MemberHistory, split_brain_from_histories


@dataclass(frozen=True)
class Attempt:
    """One line of the writer's log: a write it tried, and whether the server acknowledged it."""

    id: int
    sent: float
    done: float
    ok: bool
    port: int | None = None
    timeline: int | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attempt:
        """
        >>> Attempt.from_json({"id": 3, "sent": 1.0, "done": 1.01, "ok": True, "port": 5432, "timeline": 2})
        Attempt(id=3, sent=1.0, done=1.01, ok=True, port=5432, timeline=2, error=None)
        """
        return cls(
            id=int(data["id"]),
            sent=float(data["sent"]),
            done=float(data["done"]),
            ok=bool(data["ok"]),
            port=data.get("port"),
            timeline=data.get("timeline"),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class Expectation:
    """What a scenario must achieve. ``None`` means "not judged"."""

    leader_change: bool | None = None
    zero_loss: bool = True
    rto_budget_s: float | None = None
    max_gap_s: float | None = None
    rejoin_member: str | None = None
    rejoin_budget_s: float | None = None
    max_old_primary_window: int | None = None  # writes the old primary may acknowledge after the new one's first


@dataclass(frozen=True)
class Evidence:
    """What a network or host drill gathers besides the writer's log (empty for the other drills)."""

    histories: Mapping[str, MemberHistory] = field(default_factory=dict)  # read after the drill, by member
    old_primary_probe: Sequence[Attempt] = ()  # a writer pinned to the old primary: every attempt it made


@dataclass(frozen=True)
class Observed:
    """What the drill saw besides the writer's log."""

    fault_at: float
    leader_before: str | None
    leader_after: str | None
    primary_ids: frozenset[int]
    replica_ids: Mapping[str, frozenset[int]] = field(default_factory=dict)
    rejoin_s: float | None = None
    rejoin_lag: int | None = None
    events: Sequence[tuple[float, str]] = ()
    notes: Sequence[str] = ()
    problems: Sequence[str] = ()
    evidence: Evidence = field(default_factory=Evidence)


@dataclass(frozen=True)
class Verdict:
    """The record a drill leaves: numbers, reasons, and a timeline relative to the fault."""

    scenario: str
    passed: bool
    reasons: list[str]
    rto_s: float | None
    gap_s: float | None
    max_gap_s: float | None
    attempts: int
    acknowledged: int
    failed_attempts: int
    lost_writes: int
    lost_ids: list[int]
    split_brain: list[str]
    leader_before: str | None
    leader_after: str | None
    leader_changed: bool
    rejoin_s: float | None
    rejoin_lag: int | None
    timeline: list[tuple[float, str]]
    notes: list[str]
    budgets: Expectation = field(default_factory=Expectation)  # what it was judged against
    old_primary_window: int | None = None  # None: not measured (no probe, no new primary)

    @property
    def sentence(self) -> str:
        head = f"{self.scenario}: {'passed' if self.passed else 'FAILED'}"
        figures = f"RTO {_secs(self.rto_s)}, gap {_secs(self.gap_s)}, lost writes {self.lost_writes}"
        return f"{head} ({figures})" + ("" if self.passed else ": " + "; ".join(self.reasons))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def acks(attempts: Iterable[Attempt]) -> list[Attempt]:
    """The acknowledged attempts, in the order the writer got the acknowledgements."""
    return sorted((a for a in attempts if a.ok), key=lambda a: (a.done, a.id))


def first_ack_after(attempts: Iterable[Attempt], moment: float, not_port: int | None = None) -> Attempt | None:
    """The first acknowledged write sent at or after ``moment`` (by a server other than ``not_port``).

    >>> log = [Attempt(1, 0.0, 0.1, True, 1), Attempt(2, 1.0, 3.0, False), Attempt(3, 3.1, 3.2, True, 1)]
    >>> first_ack_after(log, 0.5).id, first_ack_after(log, 0.5, not_port=1)
    (3, None)
    """
    return next((a for a in acks(attempts) if a.sent >= moment and (not_port is None or a.port != not_port)), None)


def last_ack_before(attempts: Iterable[Attempt], moment: float) -> Attempt | None:
    """The last write acknowledged before ``moment``."""
    before = [a for a in acks(attempts) if a.done < moment]
    return before[-1] if before else None


def old_primary_port(attempts: Sequence[Attempt], fault_at: float) -> int | None:
    """The server that acknowledged the last write before the fault."""
    last = last_ack_before(attempts, fault_at)
    return None if last is None else last.port


def rto(attempts: Sequence[Attempt], fault_at: float, not_port: int | None = None) -> float | None:
    """Seconds from the fault to the first acknowledgement after it (by a new primary when ``not_port``).

    >>> rto([Attempt(1, 0.0, 0.1, True), Attempt(2, 5.0, 5.5, True)], 1.0)
    4.5
    """
    first = first_ack_after(attempts, fault_at, not_port)
    return None if first is None else round(first.done - fault_at, 3)


def ack_gap(attempts: Sequence[Attempt], fault_at: float, not_port: int | None = None) -> float | None:
    """Seconds between that first acknowledgement and the one before it: the outage clients saw.

    >>> ack_gap([Attempt(1, 0.0, 0.1, True), Attempt(2, 5.0, 5.5, True)], 1.0)
    5.4
    >>> ack_gap([Attempt(1, 0, 0.1, True, 1), Attempt(2, 1.1, 1.2, True, 1), Attempt(3, 3, 3.7, True, 2)], 1.0, 1)
    2.5
    """
    first = first_ack_after(attempts, fault_at, not_port)
    last = None if first is None else last_ack_before(attempts, first.done)
    if first is None or last is None:
        return None
    return round(first.done - last.done, 3)


def longest_gap(attempts: Sequence[Attempt]) -> float | None:
    """The longest stretch between two consecutive acknowledgements (the worst write outage).

    >>> longest_gap([Attempt(1, 0.0, 0.1, True), Attempt(2, 0.2, 0.3, True), Attempt(3, 1.0, 2.3, True)])
    2.0
    """
    done = [a.done for a in acks(attempts)]
    if len(done) < 2:
        return None
    return round(max(b - a for a, b in zip(done, done[1:], strict=False)), 3)


def lost_ids(attempts: Iterable[Attempt], present: Iterable[int]) -> list[int]:
    """Acknowledged ids that the final primary does not hold.

    >>> lost_ids([Attempt(1, 0, 0, True), Attempt(2, 0, 0, True), Attempt(3, 0, 0, False)], {1})
    [2]
    """
    have = set(present)
    return sorted(a.id for a in attempts if a.ok and a.id not in have)


def split_brain(attempts: Sequence[Attempt]) -> list[str]:
    """Evidence that two primaries acknowledged writes, one sentence per finding.

    >>> split_brain([Attempt(1, 0, 1, True, 5432, 1), Attempt(2, 0, 2, True, 5433, 2), Attempt(3, 0, 3, True, 5432, 1)])
    ['port 5432 acknowledged id 3 on timeline 1 after port 5433 had acknowledged id 2 on newer timeline 2']
    """
    findings: list[str] = []
    owner: dict[int, int] = {}
    newest: Attempt | None = None
    for ack in acks(attempts):
        if ack.timeline is None or ack.port is None:
            continue
        if newest is not None and newest.timeline is not None and ack.timeline < newest.timeline:
            findings.append(
                f"port {ack.port} acknowledged id {ack.id} on timeline {ack.timeline} after port "
                f"{newest.port} had acknowledged id {newest.id} on newer timeline {newest.timeline}"
            )
        elif owner.setdefault(ack.timeline, ack.port) != ack.port:
            findings.append(
                f"ports {owner[ack.timeline]} and {ack.port} both acknowledged writes on timeline {ack.timeline}"
            )
        if newest is None or (newest.timeline is not None and ack.timeline > newest.timeline):
            newest = ack
    return findings


def old_primary_window(attempts: Sequence[Attempt], probe: Sequence[Attempt], fault_at: float,
                       old_port: int | None) -> int | None:
    """Writes the old primary (``old_port``) acknowledged after the new primary's first acknowledgement, in the
    writer's log and the probe's; None when there is no new primary's acknowledgement to count from.

    >>> main = [Attempt(1, 9, 9.1, True, 5432), Attempt(2, 10.5, 14, False), Attempt(3, 14, 14.1, True, 5433)]
    >>> old_primary_window(main, [Attempt(1, 9, 9.1, True, 5432), Attempt(2, 11, 11.1, True, 5432)], 10, 5432)
    0
    >>> old_primary_window(main, [Attempt(5, 14.0, 14.3, True, 5432)], 10, 5432)
    1
    >>> old_primary_window(main[:2], [], 10, 5432) is None
    True
    """
    first = first_ack_after(attempts, fault_at, old_port)
    if first is None or old_port is None:
        return None
    return sum(1 for a in [*attempts, *probe] if a.ok and a.port == old_port and a.done > first.done)


def acked_timelines(attempts: Iterable[Attempt]) -> dict[int, int]:
    """How many writes were acknowledged on each timeline.

    >>> acked_timelines([Attempt(1, 0, 1, True, 1, 1), Attempt(2, 0, 1, True, 1, 2), Attempt(3, 0, 1, False)])
    {1: 1, 2: 1}
    """
    counts: dict[int, int] = {}
    for a in attempts:
        if a.ok and a.timeline is not None:
            counts[a.timeline] = counts.get(a.timeline, 0) + 1
    return counts


def replica_gaps(attempts: Sequence[Attempt], primary: frozenset[int], replicas: Mapping[str, frozenset[int]]) -> list[str]:
    """Acknowledged ids the primary holds but a replica (after catching up) does not."""
    wanted = {a.id for a in attempts if a.ok} & primary
    return [
        f"{name} is missing {len(wanted - ids)} acknowledged write(s) the primary holds"
        for name, ids in sorted(replicas.items())
        if wanted - ids
    ]


def judge(scenario: str, attempts: Sequence[Attempt], seen: Observed, expect: Expectation) -> Verdict:
    """Turn the evidence into a verdict with a reason per failed expectation."""
    old_port = old_primary_port(attempts, seen.fault_at) if expect.leader_change else None
    measured_rto, lost = rto(attempts, seen.fault_at, old_port), lost_ids(attempts, seen.primary_ids)
    evidence = seen.evidence
    brain = split_brain(attempts) + split_brain_from_histories(
        evidence.histories, seen.leader_after, acked_timelines([*attempts, *evidence.old_primary_probe]))
    window = old_primary_window(attempts, evidence.old_primary_probe, seen.fault_at, old_port) \
        if evidence.old_primary_probe else None
    changed = seen.leader_before is not None and seen.leader_after not in (None, seen.leader_before)
    reasons = list(seen.problems)
    reasons += _rto_reasons(measured_rto, longest_gap(attempts), expect)
    reasons += _loss_reasons(lost, brain, expect)
    reasons += _leader_reasons(seen, changed, expect)
    reasons += _rejoin_reasons(seen, expect)
    reasons += replica_gaps(attempts, seen.primary_ids, seen.replica_ids)
    reasons += _window_reasons(window, expect)
    return Verdict(
        scenario=scenario,
        passed=not reasons,
        reasons=reasons,
        rto_s=measured_rto,
        gap_s=ack_gap(attempts, seen.fault_at, old_port),
        max_gap_s=longest_gap(attempts),
        attempts=len(attempts),
        acknowledged=sum(1 for a in attempts if a.ok),
        failed_attempts=sum(1 for a in attempts if not a.ok),
        lost_writes=len(lost),
        lost_ids=lost[:20],
        split_brain=brain,
        leader_before=seen.leader_before,
        leader_after=seen.leader_after,
        leader_changed=changed,
        rejoin_s=seen.rejoin_s,
        rejoin_lag=seen.rejoin_lag,
        timeline=event_timeline(attempts, seen, old_port),
        notes=list(seen.notes),
        budgets=expect,
        old_primary_window=window,
    )


def _window_reasons(window: int | None, expect: Expectation) -> list[str]:
    if expect.max_old_primary_window is None or window is None or window <= expect.max_old_primary_window:
        return []
    return [f"the old primary acknowledged {window} write(s) after the new primary's first "
            f"(at most {expect.max_old_primary_window} allowed)"]


def _rto_reasons(measured: float | None, gap: float | None, expect: Expectation) -> list[str]:
    if measured is None:
        return ["no write was acknowledged after the fault"]
    reasons = []
    if expect.rto_budget_s is not None and measured > expect.rto_budget_s:
        reasons.append(f"RTO {measured:.2f} s is above the budget of {expect.rto_budget_s:g} s")
    if expect.max_gap_s is not None and gap is not None and gap > expect.max_gap_s:
        reasons.append(f"writes stalled for {gap:.2f} s, more than the {expect.max_gap_s:g} s allowed")
    return reasons


def _loss_reasons(lost: list[int], brain: list[str], expect: Expectation) -> list[str]:
    reasons = []
    if lost and expect.zero_loss:
        reasons.append(f"{len(lost)} acknowledged write(s) lost (first ids: {', '.join(map(str, lost[:5]))})")
    if brain:
        reasons.append(f"split brain: {brain[0]}" + (f" (and {len(brain) - 1} more)" if len(brain) > 1 else ""))
    return reasons


def _leader_reasons(seen: Observed, changed: bool, expect: Expectation) -> list[str]:
    if expect.leader_change is True and not changed:
        return [f"the leader did not change (still {seen.leader_after})"]
    if expect.leader_change is False and changed:
        return [f"the leader changed from {seen.leader_before} to {seen.leader_after} although it should not have"]
    return []


def _rejoin_reasons(seen: Observed, expect: Expectation) -> list[str]:
    if expect.rejoin_member is None:
        return []
    if seen.rejoin_s is None:
        return [f"{expect.rejoin_member} did not rejoin as a streaming replica"]
    if expect.rejoin_budget_s is not None and seen.rejoin_s > expect.rejoin_budget_s:
        return [f"{expect.rejoin_member} took {seen.rejoin_s:.1f} s to rejoin, above {expect.rejoin_budget_s:g} s"]
    return []


def event_timeline(attempts: Sequence[Attempt], seen: Observed, not_port: int | None = None) -> list[tuple[float, str]]:
    """Events as (seconds relative to the fault, what happened), the writer's milestones included."""
    events = list(seen.events)
    first = first_ack_after(attempts, seen.fault_at, not_port)
    last = last_ack_before(attempts, first.done if first else seen.fault_at)
    if last is not None:
        events.append((last.done, f"last acknowledged write before the outage (id {last.id}, port {last.port})"))
    if first is not None:
        events.append((first.done, f"first acknowledged write after the fault (id {first.id}, port {first.port}, "
                                   f"timeline {first.timeline})"))
    return [(round(t - seen.fault_at, 3), what) for t, what in sorted(events)]


def budget_lines(expect: Expectation) -> list[str]:
    """What a verdict was judged against, one sentence each.

    >>> budget_lines(Expectation(leader_change=True, rto_budget_s=30, rejoin_member="pg0", rejoin_budget_s=60))
    ['RTO at most 30 s', 'no acknowledged write lost', 'the leader must change', 'pg0 rejoins as a streaming replica within 60 s']
    >>> budget_lines(Expectation(leader_change=False, zero_loss=False, max_gap_s=5))
    ['RTO not judged', 'writes stall at most 5 s', 'lost acknowledged writes counted, not judged (asynchronous mode)', 'the leader must not change']
    """
    lines = [f"RTO at most {expect.rto_budget_s:g} s" if expect.rto_budget_s is not None else "RTO not judged"]
    if expect.max_gap_s is not None:
        lines.append(f"writes stall at most {expect.max_gap_s:g} s")
    lines.append("no acknowledged write lost" if expect.zero_loss
                 else "lost acknowledged writes counted, not judged (asynchronous mode)")
    if expect.leader_change is not None:
        lines.append("the leader must change" if expect.leader_change else "the leader must not change")
    if expect.rejoin_member is not None:
        within = f" within {expect.rejoin_budget_s:g} s" if expect.rejoin_budget_s is not None else ""
        lines.append(f"{expect.rejoin_member} rejoins as a streaming replica{within}")
    if expect.max_old_primary_window is not None:
        lines.append(f"the old primary acknowledges at most {expect.max_old_primary_window} write(s) after the "
                     "new primary's first")
    return lines


def _budget(value: float | None) -> str:
    return "not judged" if value is None else f"{value:g} s"


def summary_row(v: Verdict) -> dict[str, object]:
    """The drill summary artifact's row: measured figures beside the budgets they were judged against."""
    return {
        "scenario": v.scenario,
        "result": "pass" if v.passed else "FAIL",
        "RTO": _secs(v.rto_s),
        "RTO budget": _budget(v.budgets.rto_budget_s),
        "write gap": _secs(v.gap_s),
        "lost writes": v.lost_writes,
        "split brain": "yes" if v.split_brain else "no",
        "leader": f"{v.leader_before} -> {v.leader_after}",
        "rejoin": _secs(v.rejoin_s),
        "rejoin budget": _budget(v.budgets.rejoin_budget_s) if v.budgets.rejoin_member else "-",
        "old-primary window": "-" if v.old_primary_window is None else v.old_primary_window,
    }


def markdown_report(cluster: str, verdicts: Sequence[Verdict]) -> str:
    """The drill report: one summary table (figures beside their budgets), then each drill's budgets and timeline."""
    lines = [f"# Failover drills on {cluster}", "", "| scenario | result | RTO (budget) | gap | worst gap | lost writes | "
             "split brain | leader | rejoin (budget) |", "|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        rejoin_budget = f" ({_budget(v.budgets.rejoin_budget_s)})" if v.budgets.rejoin_member else ""
        lines.append(
            f"| {v.scenario} | {'pass' if v.passed else '**FAIL**'} | {_secs(v.rto_s)} "
            f"({_budget(v.budgets.rto_budget_s)}) | {_secs(v.gap_s)} | "
            f"{_secs(v.max_gap_s)} | {v.lost_writes} | {'yes' if v.split_brain else 'no'} | "
            f"{v.leader_before} → {v.leader_after} | {_secs(v.rejoin_s)}{rejoin_budget} |"
        )
    for v in verdicts:
        lines += ["", f"## {v.scenario}", "", f"Judged against: {'; '.join(budget_lines(v.budgets))}.", ""]
        lines += [f"- **{reason}**" for reason in v.reasons]
        if v.old_primary_window is not None:
            lines.append(f"- old-primary window: {v.old_primary_window} write(s) acknowledged by the old primary "
                         "after the new primary's first")
        lines += [f"- note: {note}" for note in v.notes]
        lines += [f"- `{offset:+8.2f} s` {what}" for offset, what in v.timeline]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DrillResult:
    """A verdict and where its evidence (verdict.json, the writer's log) was saved: a local directory of the
    machine that ran the drill (:func:`dbtier.workdir.drill_dir`). Every engine's drill returns one."""

    verdict: Verdict
    report_dir: str
