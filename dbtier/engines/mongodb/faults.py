"""The MongoDB drills' faults: break one member of the replica set, each with its undo.

- crash: SIGKILL the primary's mongod (by its pid file); undo: start it again.
- freeze: SIGSTOP the primary's mongod; undo: SIGCONT it.
- stepdown: ``replSetStepDown`` on the primary; nothing to undo (it is electable again after ``seconds``).
- secondary-loss: SIGKILL a secondary's mongod; undo: start it again.
- w1-loss, the loss demonstration: the writer writes with ``w: 1``; SIGSTOP the secondaries for a moment, then
  SIGKILL the primary and SIGCONT the secondaries: the writes only the primary had are rolled back when it returns,
  and the verdict must show them lost (with ``w: majority`` those writes are never acknowledged instead).

Every pid is checked before it gets a signal (pid file, then ``/proc/PID/cmdline`` holding the member's
``mongod.conf``), so a drill only ever touches its own cluster's mongod. Starting a member is left to a
callable (the engine's bootstrap starts services; so may a test). The pure helpers choose the member to
hit from a status document and say what each scenario must show.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dbtier import procs
from dbtier.drills.verdict import Expectation
from dbtier.engines.mongodb import rs
from dbtier.engines.mongodb.config import MongoMember
from dbtier.engines.mongodb.steps import ROOT_USER, ClientFactory
from dbtier.errors import ClusterUnhealthy, DbtierError, Refused
from dbtier.providers.base import Runner

Loss = Literal["none", "possible", "shown"]


@dataclass(frozen=True)
class MongoScenario:
    """One drill: which member it hits, whether the primary must change, and what it does."""

    target: Literal["primary", "secondary"]
    leader_change: bool
    what: str
    w: Literal["majority", "1"] = "majority"  # the writer's write concern
    pause_secondaries: bool = False  # SIGSTOP the secondaries before the fault (the w: 1 demonstration)


SCENARIOS: dict[str, MongoScenario] = {
    "crash": MongoScenario("primary", True, "SIGKILL the primary's mongod, then start it again"),
    "freeze": MongoScenario("primary", True, "SIGSTOP the primary's mongod past the election timeout, then SIGCONT"),
    "stepdown": MongoScenario("primary", True, "replSetStepDown on the primary"),
    "secondary-loss": MongoScenario("secondary", False, "SIGKILL a secondary's mongod, then start it again"),
    "w1-loss": MongoScenario("primary", True, "with w: 1, SIGSTOP the secondaries, SIGKILL the primary, SIGCONT the "
                             "secondaries, start the primary again: the writes only it had are rolled back",
                             w="1", pause_secondaries=True),
}


@dataclass(frozen=True)
class Injected:
    """A fault in place: what was done, and how to undo it (``undo()`` returns a sentence)."""

    said: str
    undo_what: str
    undo: Callable[[], str]


# -- pure: which member, what to expect ------------------------------------------------------------


def _scenario(name: str) -> MongoScenario:
    if name not in SCENARIOS:
        raise Refused(f"scenario: unknown {name!r} for MongoDB; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def member_states(status: Mapping[str, Any] | None, members: list[MongoMember]) -> dict[str, str]:
    """Each member's ``stateStr`` in a ``replSetGetStatus`` (or :func:`steps.status_from_hellos`) document.

    >>> ms = [MongoMember("mongo0", "h", 1, 2, "/d"), MongoMember("mongo1", "h", 2, 1, "/d")]
    >>> member_states({"members": [{"name": "h:1", "stateStr": "PRIMARY"}]}, ms)
    {'mongo0': 'PRIMARY', 'mongo1': 'DOWN'}
    """
    listed = {str(m.get("name")): m for m in (status or {}).get("members", [])}
    return {m.name: str(listed.get(m.address, {}).get("stateStr", "DOWN")) for m in members}


def pick_target(scenario: str, status: Mapping[str, Any] | None, members: list[MongoMember]) -> MongoMember:
    """The member ``scenario`` hits: the one primary, or the first secondary; else one line saying why not."""
    wanted = "PRIMARY" if _scenario(scenario).target == "primary" else "SECONDARY"
    states = member_states(status, members)
    primaries = [m for m in members if states[m.name] == "PRIMARY"]
    if len(primaries) != 1:
        seen = ", ".join(f"{n} {s}" for n, s in states.items())
        raise ClusterUnhealthy(f"drill {scenario}: the replica set has {len(primaries)} primaries ({seen}); "
                               "run dbtier status and drill a healthy set")
    found = next((m for m in members if states[m.name] == wanted), None)
    if found is None:
        raise ClusterUnhealthy(f"drill {scenario}: no member is {wanted} ({', '.join(map(str, states.items()))}); "
                               "run dbtier status and drill a healthy set")
    return found


def secondaries(status: Mapping[str, Any] | None, members: list[MongoMember]) -> list[MongoMember]:
    """The members in SECONDARY state (the ones the w:1 demonstration pauses)."""
    states = member_states(status, members)
    return [m for m in members if states[m.name] == "SECONDARY"]


def expected_loss(scenario: str, w: str, pause_s: float = 0.0) -> Loss:
    """What the lost-write count must show: ``none`` with ``w: majority`` whatever the fault; with ``w: 1``,
    ``shown`` when the secondaries were paused before the primary went (the demonstration), else ``possible``."""
    if w not in ("majority", "1"):
        raise Refused(f"write concern {w!r}: choose majority or 1")
    if w == "majority":
        return "none"
    return "shown" if pause_s > 0 and _scenario(scenario).target == "primary" else "possible"


def expectation(scenario: str, w: str, target: str, rto_budget_s: float, rejoin_budget_s: float) -> Expectation:
    """What verdict's :func:`~dbtier.drills.verdict.judge` holds the drill to: zero loss only with majority,
    a new primary for the primary faults (a stalled write no longer than the RTO budget for the others), and
    ``target`` SECONDARY again within ``rejoin_budget_s``."""
    spec = _scenario(scenario)
    return Expectation(leader_change=spec.leader_change, zero_loss=w == "majority", rto_budget_s=rto_budget_s,
                       max_gap_s=None if spec.leader_change else rto_budget_s, rejoin_member=target,
                       rejoin_budget_s=rejoin_budget_s)


def loss_check(expected: Loss, lost: list[int]) -> tuple[bool, str]:
    """(as expected, the sentence for the report) for the lost acknowledged writes a verdict counted."""
    ids = ", ".join(map(str, lost[:5]))
    if expected == "none":
        return (not lost, "no acknowledged write lost (w: majority)" if not lost
                else f"w: majority lost {len(lost)} acknowledged write(s) (first ids: {ids})")
    if expected == "shown":
        return (bool(lost), f"w: 1 lost {len(lost)} acknowledged write(s) (first ids: {ids}); w: majority keeps them"
                if lost else "the w: 1 demonstration lost no acknowledged write: pause the secondaries longer")
    return True, f"w: 1 lost {len(lost)} acknowledged write(s)" + (f" (first ids: {ids})" if lost else "")


def pause_for(election_timeout_ms: int) -> float:
    """How long the w: 1 demonstration pauses the secondaries: 60% of the longest pause :func:`check_pause` allows,
    at most 3 s (at a write every 20-50 ms, dozens of writes only the primary acknowledged).

    >>> pause_for(10000), pause_for(5000), pause_for(2000)
    (3.0, 1.5, 0.6)
    """
    return check_pause(round(min(3.0, election_timeout_ms / 2000 * 0.6), 2), election_timeout_ms)


def check_pause(pause_s: float, election_timeout_ms: int) -> float:
    """The secondaries' pause must end well before the primary steps down for want of a majority.

    >>> check_pause(3, 10000)
    3
    >>> check_pause(6, 10000)
    Traceback (most recent call last):
    ...
    dbtier.errors.Refused: pause of 6 s: keep it under half the election timeout (5 s), or the primary steps down before the crash
    """
    limit = election_timeout_ms / 2000
    if not 0 <= pause_s < limit:
        raise Refused(f"pause of {pause_s:g} s: keep it under half the election timeout ({limit:g} s), or the primary "
                      "steps down before the crash")
    return pause_s


# -- finding and signalling our mongod -------------------------------------------------------------


def live_pid(runner: Runner, member: MongoMember) -> int | None:
    """The member's mongod, when its pid file names a live process started with the member's mongod.conf."""
    pid = procs.read_pid(runner, member.pidfile)
    return pid if pid is not None and procs.pid_matches(runner, pid, member.config) else None


def _signal(runner: Runner, member: MongoMember, signame: str, fault: str) -> int:
    pid = live_pid(runner, member)
    if pid is None:
        raise DbtierError(f"{fault}: {member.label} has no running mongod (pid file {member.pidfile}); start it "
                          "(dbtier provision) and drill a healthy set")
    runner.run(["kill", f"-{signame}", str(pid)], check=False)
    return pid


def _gone(runner: Runner, member: MongoMember, pid: int, timeout: float, clock: Callable[[], float],
          sleep: Callable[[float], None]) -> bool:
    deadline = clock() + timeout
    while procs.pid_matches(runner, pid, member.config):
        if clock() >= deadline:
            return False
        sleep(0.05)
    return True


def crash(runner: Runner, member: MongoMember, start: Callable[[MongoMember], str],
          keep_down: Callable[[], str | None] | None = None, *, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Injected:
    """SIGKILL ``member``'s mongod; ``keep_down`` tells its supervisor not to restart it; undo: ``start(member)``."""
    pid = _signal(runner, member, "KILL", "crash")
    state = "gone" if _gone(runner, member, pid, 10.0, clock, sleep) else "still exiting"
    held = keep_down() if keep_down is not None else None
    said = " ".join(filter(None, [f"SIGKILL sent to {member.name}'s mongod (pid {pid}): {state}.", held]))
    return Injected(said, f"start {member.name} again", lambda: start(member))


def lose_secondary(runner: Runner, member: MongoMember, start: Callable[[MongoMember], str],
                   keep_down: Callable[[], str | None] | None = None, **waits: Any) -> Injected:
    """The secondary-loss fault: :func:`crash` aimed at a secondary."""
    return crash(runner, member, start, keep_down, **waits)


def freeze(runner: Runner, member: MongoMember) -> Injected:
    """SIGSTOP ``member``'s mongod (it neither answers nor steps down); undo: SIGCONT the same pid."""
    pid = _signal(runner, member, "STOP", "freeze")

    def thaw() -> str:
        runner.run(["kill", "-CONT", str(pid)], check=False)
        return f"SIGCONT sent to {member.name}'s mongod (pid {pid})"

    return Injected(f"SIGSTOP sent to {member.name}'s mongod (pid {pid})", f"SIGCONT {member.name}", thaw)


def pause_secondaries(runner_for: Callable[[MongoMember], Runner], members: list[MongoMember]) -> Injected:
    """SIGSTOP every secondary (the w:1 demonstration, just before the primary's crash); undo: SIGCONT them. When
    one cannot be paused, the ones already paused are resumed before the error goes on."""
    frozen: list[Injected] = []
    try:
        for m in members:
            frozen.append(freeze(runner_for(m), m))
    except DbtierError:
        for done in frozen:
            done.undo()
        raise
    names = " and ".join(m.name for m in members)
    return Injected(f"paused {names}: " + "; ".join(f.said for f in frozen), f"SIGCONT {names}",
                    lambda: "; ".join(f.undo() for f in frozen))


def stepdown(factory: ClientFactory, member: MongoMember, root_password: str, seconds: int = 60) -> Injected:
    """``replSetStepDown`` on the primary ``member``; there is nothing to undo (electable again after ``seconds``)."""
    with factory(member, ROOT_USER, root_password) as client:
        said = rs.step_down(client, member, seconds)
    return Injected(said, f"nothing to undo on {member.name}",
                    lambda: f"{member.name} may be elected again {seconds} s after its step-down")


# -- waiting for the set ---------------------------------------------------------------------------


def _hello(client: Any, member: MongoMember) -> tuple[dict[str, Any] | None, str]:
    try:
        return rs.command(client, member.label, "hello", {"hello": 1}), ""
    except rs.MongoCommandError as err:
        return None, err.one_line()


def wait_new_primary(members: list[MongoMember], factory: ClientFactory, old: MongoMember, timeout: float,
                     poll_s: float = 0.2, *, clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> tuple[MongoMember, float]:
    """Ask every member but ``old`` (it may be frozen) its own ``hello`` until one is the writable primary;
    return it and the seconds waited. ``factory`` should time out quickly: a dead member is asked every poll."""
    others = [m for m in members if m.name != old.name]
    started, seen = clock(), "no answer yet"
    clients = {m.name: factory(m, None, None) for m in others}
    try:
        while True:
            for member in others:
                reply, said = _hello(clients[member.name], member)
                if reply is not None and reply.get("isWritablePrimary"):
                    return member, round(clock() - started, 3)
                seen = said or f"{member.name} is {'SECONDARY' if (reply or {}).get('secondary') else 'not primary'}"
            if clock() - started >= timeout:
                raise ClusterUnhealthy(f"no member other than {old.name} became primary within {timeout:g} s (last: "
                                       f"{seen}); read the members' logs ({', '.join(m.log for m in others)})")
            sleep(poll_s)
    finally:
        for client in clients.values():
            client.close()


def wait_rejoined(member: MongoMember, factory: ClientFactory, timeout: float, poll_s: float = 0.5, *,
                  clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> float:
    """Seconds until ``member`` says it is SECONDARY again (its own ``hello``); else one line naming its log."""
    started, seen = clock(), "no answer yet"
    with factory(member, None, None) as client:
        while True:
            reply, said = _hello(client, member)
            if reply is not None and reply.get("secondary"):
                return round(clock() - started, 3)
            seen = said or ("it is primary" if (reply or {}).get("isWritablePrimary") else "not secondary yet")
            if clock() - started >= timeout:
                raise ClusterUnhealthy(f"{member.label} is not SECONDARY again within {timeout:g} s ({seen}); read "
                                       f"its log {member.log}")
            sleep(poll_s)
