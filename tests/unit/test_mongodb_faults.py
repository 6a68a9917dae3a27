"""The MongoDB drills' faults: the pure choices as tables, the waits against mockupdb, the signals against a
recording runner (no process is ever signalled here)."""

from __future__ import annotations

import re

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from mockupdb import MockupDB
from pymongo import MongoClient

from dbtier.engines.mongodb import faults, rs
from dbtier.engines.mongodb.config import MongoMember
from dbtier.errors import ClusterUnhealthy, DbtierError, Refused
from dbtier.providers.base import Completed, Runner
from tests.mockwire import command_sent

FAST = rs.ClientTimeouts(server_selection_ms=1500, connect_ms=1000, socket_ms=3000)
MEMBERS = [MongoMember(f"mongo{i}", "10.0.0.5", 27017 + i, 2 if i == 0 else 1, f"/d/mongo{i}", i) for i in range(3)]


def _status(*states: str) -> dict[str, Any]:
    return {"members": [{"name": m.address, "stateStr": s} for m, s in zip(MEMBERS, states, strict=False)]}


# -- which member, what to expect ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "states", "target"),
    [("crash", ("PRIMARY", "SECONDARY", "SECONDARY"), "mongo0"),
     ("freeze", ("SECONDARY", "PRIMARY", "SECONDARY"), "mongo1"),
     ("stepdown", ("SECONDARY", "SECONDARY", "PRIMARY"), "mongo2"),
     ("secondary-loss", ("PRIMARY", "SECONDARY", "SECONDARY"), "mongo1"),
     ("secondary-loss", ("SECONDARY", "(not reachable/healthy)", "PRIMARY"), "mongo0")],
)
def test_pick_target(scenario: str, states: tuple[str, ...], target: str) -> None:
    assert faults.pick_target(scenario, _status(*states), MEMBERS).name == target


@pytest.mark.parametrize(
    ("scenario", "status", "message"),
    [("crash", _status("SECONDARY", "SECONDARY", "SECONDARY"), "has 0 primaries"),
     ("crash", _status("PRIMARY", "PRIMARY", "SECONDARY"), "has 2 primaries"),
     ("crash", None, "has 0 primaries (mongo0 DOWN, mongo1 DOWN, mongo2 DOWN)"),
     ("secondary-loss", _status("PRIMARY", "RECOVERING", "STARTUP2"), "no member is SECONDARY"),
     ("partition", _status("PRIMARY"), "unknown 'partition' for MongoDB")],
)
def test_pick_target_refuses_an_unhealthy_set(scenario: str, status: Mapping[str, Any] | None, message: str) -> None:
    with pytest.raises(DbtierError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        faults.pick_target(scenario, status, MEMBERS)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("scenario", "w", "pause_s", "loss", "zero_loss", "leader_change", "max_gap_s"),
    [("crash", "majority", 0, "none", True, True, None),
     ("crash", "majority", 3, "none", True, True, None),  # paused secondaries: majority writes fail, none is lost
     ("crash", "1", 3, "shown", False, True, None),  # the w:1 loss demonstration
     ("crash", "1", 0, "possible", False, True, None),
     ("freeze", "majority", 0, "none", True, True, None),
     ("stepdown", "majority", 0, "none", True, True, None),
     ("stepdown", "1", 0, "possible", False, True, None),
     ("secondary-loss", "majority", 0, "none", True, False, 30),
     ("secondary-loss", "1", 3, "possible", False, False, 30)],
)
def test_expected_verdict_per_scenario_and_write_concern(scenario: str, w: str, pause_s: float, loss: str,
                                                         zero_loss: bool, leader_change: bool,
                                                         max_gap_s: float | None) -> None:
    assert faults.expected_loss(scenario, w, pause_s) == loss
    expect = faults.expectation(scenario, w, "mongo0", rto_budget_s=30, rejoin_budget_s=60)
    assert (expect.zero_loss, expect.leader_change, expect.max_gap_s) == (zero_loss, leader_change, max_gap_s)
    assert (expect.rto_budget_s, expect.rejoin_member, expect.rejoin_budget_s) == (30, "mongo0", 60)


@pytest.mark.parametrize(
    ("loss", "lost", "ok", "sentence"),
    [("none", [], True, "no acknowledged write lost (w: majority)"),
     ("none", [4, 5], False, "w: majority lost 2 acknowledged write(s) (first ids: 4, 5)"),
     ("shown", [7], True, "w: 1 lost 1 acknowledged write(s) (first ids: 7); w: majority keeps them"),
     ("shown", [], False, "the w: 1 demonstration lost no acknowledged write: pause the secondaries longer"),
     ("possible", [], True, "w: 1 lost 0 acknowledged write(s)")],
)
def test_loss_check(loss: faults.Loss, lost: list[int], ok: bool, sentence: str) -> None:
    assert faults.loss_check(loss, lost) == (ok, sentence)


@pytest.mark.parametrize(("pause_s", "timeout_ms", "ok"), [(0, 10000, True), (4.9, 10000, True), (5, 10000, False),
                                                            (2, 2000, False), (-1, 10000, False)])
def test_check_pause(pause_s: float, timeout_ms: int, ok: bool) -> None:
    if ok:
        assert faults.check_pause(pause_s, timeout_ms) == pause_s
    else:
        with pytest.raises(Refused, match="under half the election timeout"):
            faults.check_pause(pause_s, timeout_ms)


def test_bad_write_concern_is_refused() -> None:
    with pytest.raises(Refused, match="write concern '0': choose majority or 1"):
        faults.expected_loss("crash", "0")


# -- signals, through a recording runner -------------------------------------------------------------


class RecordingRunner(Runner):
    """Files it serves and the argv it was asked to run; ``kill -KILL`` makes the process go away."""

    host = "10.0.0.5"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.ran: list[list[str]] = []

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120,
            check: bool = True) -> Completed:
        self.ran.append(list(argv))
        if argv[:2] == ["kill", "-KILL"]:
            self.files = {k: v for k, v in self.files.items() if not k.startswith(f"/proc/{argv[2]}/")}
        return Completed(list(argv), 0, "", "")

    def read_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        raise AssertionError("a fault writes no file")

    def make_dirs(self, path: str, mode: int = 0o700) -> None:
        raise AssertionError("a fault makes no directory")

    def list_dir(self, path: str) -> list[str] | None:
        return None

    def remove_tree(self, path: str) -> None:
        raise AssertionError("a fault removes nothing")

    def rename(self, path: str, new_path: str) -> None:
        raise AssertionError("a fault renames nothing")

    def port_in_use(self, port: int) -> bool:
        return False


def _running(member: MongoMember, pid: int, config: str | None = None) -> dict[str, bytes]:
    cmdline = f"mongod\0--config\0{config or member.config}\0".encode()
    return {member.pidfile: f"{pid}\n".encode(), f"/proc/{pid}/stat": f"{pid} (mongod) S 1 1".encode(),
            f"/proc/{pid}/cmdline": cmdline}


def test_crash_kills_the_pid_of_the_members_pid_file_and_undo_starts_it() -> None:
    member = MEMBERS[0]
    runner, started = RecordingRunner(_running(member, 4242)), list[str]()

    def start(m: MongoMember) -> str:
        started.append(m.name)
        return f"{m.name} started"

    injected = faults.crash(runner, member, start, keep_down=lambda: "systemd keeps mongo0 down.", sleep=lambda _: None)
    assert member.pidfile == "/d/mongo0/mongod.pid"
    assert runner.ran == [["kill", "-KILL", "4242"]]
    assert injected.said == "SIGKILL sent to mongo0's mongod (pid 4242): gone. systemd keeps mongo0 down."
    assert injected.undo_what == "start mongo0 again" and started == []
    assert injected.undo() == "mongo0 started" and started == ["mongo0"]


def test_crash_refuses_a_pid_file_naming_another_process() -> None:
    member = MEMBERS[0]
    runner = RecordingRunner(_running(member, 4242, config="/elsewhere/mongod.conf"))
    with pytest.raises(DbtierError, match=r"crash: mongo0 \(10.0.0.5:27017\) has no running mongod \(pid file "
                                          r"/d/mongo0/mongod.pid\); start it"):
        faults.crash(runner, member, lambda m: "started")
    assert runner.ran == []


def test_crash_says_when_the_process_is_still_exiting() -> None:
    class Stubborn(RecordingRunner):
        def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:
            self.ran.append(list(argv))
            return Completed(list(argv), 0, "", "")

    ticks = iter(range(100)).__next__
    injected = faults.lose_secondary(Stubborn(_running(MEMBERS[1], 77)), MEMBERS[1], lambda m: "started",
                                     clock=lambda: float(ticks()), sleep=lambda _: None)
    assert injected.said == "SIGKILL sent to mongo1's mongod (pid 77): still exiting."


def test_freeze_stops_and_undo_continues_the_same_pid() -> None:
    runner = RecordingRunner(_running(MEMBERS[0], 4242))
    injected = faults.freeze(runner, MEMBERS[0])
    assert runner.ran == [["kill", "-STOP", "4242"]] and injected.undo_what == "SIGCONT mongo0"
    assert injected.undo() == "SIGCONT sent to mongo0's mongod (pid 4242)"
    assert runner.ran[-1] == ["kill", "-CONT", "4242"]


def test_pause_secondaries_stops_each_on_its_own_host() -> None:
    runners = {m.name: RecordingRunner(_running(m, 100 + m.index)) for m in MEMBERS[1:]}
    injected = faults.pause_secondaries(lambda m: runners[m.name], MEMBERS[1:])
    assert [r.ran for r in runners.values()] == [[["kill", "-STOP", "101"]], [["kill", "-STOP", "102"]]]
    assert injected.said.startswith("paused mongo1 and mongo2: ")
    injected.undo()
    assert [r.ran[-1] for r in runners.values()] == [["kill", "-CONT", "101"], ["kill", "-CONT", "102"]]


def test_a_secondary_that_cannot_be_paused_resumes_the_ones_already_paused() -> None:
    first, second = MEMBERS[1:]
    runners = {first.name: RecordingRunner(_running(first, 101)), second.name: RecordingRunner({})}  # no mongod
    with pytest.raises(DbtierError, match=re.escape(f"freeze: {second.label} has no running mongod")):
        faults.pause_secondaries(lambda m: runners[m.name], [first, second])
    assert runners[first.name].ran == [["kill", "-STOP", "101"], ["kill", "-CONT", "101"]], "never left frozen"


def test_the_w1_demonstration_writes_with_w_1_after_pausing_the_secondaries() -> None:
    scenario = faults.SCENARIOS["w1-loss"]
    assert (scenario.target, scenario.leader_change, scenario.w, scenario.pause_secondaries) == ("primary", True, "1",
                                                                                                 True)
    assert all(s.w == "majority" and not s.pause_secondaries for n, s in faults.SCENARIOS.items() if n != "w1-loss")
    assert faults.expected_loss("w1-loss", "1", faults.pause_for(10000)) == "shown"
    assert not faults.expectation("w1-loss", "1", "mongo0", 60, 120).zero_loss


# -- the waits, against mockupdb ----------------------------------------------------------------------


def _factory(server: MockupDB) -> Any:
    def make(member: MongoMember, user: str | None, password: str | None) -> MongoClient[Any]:
        assert user is None and password is None  # hello needs no credentials
        return rs.member_client(server.host, server.port, timeouts=FAST)

    return make


def test_wait_new_primary_rides_out_the_election(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    old, other = MEMBERS[0], MongoMember("mongo1", member_server.host, member_server.port, 1, "/d/mongo1", 1)
    clock = iter([0.0, 1.0, 2.0, 3.5]).__next__
    future = pool.submit(faults.wait_new_primary, [old, other], _factory(member_server), old, 30, 0,
                         clock=clock, sleep=lambda _: None)
    first = member_server.receives(timeout=5)
    assert command_sent(first.doc) == {"hello": 1}
    first.ok(isWritablePrimary=False, secondary=True, setName="rs0", maxWireVersion=21)
    member_server.receives(timeout=5).command_err(code=11602, errmsg="interrupted",
                                                  codeName="InterruptedDueToReplStateChange")
    member_server.receives(timeout=5).ok(isWritablePrimary=True, setName="rs0", maxWireVersion=21)
    member, waited = future.result(timeout=5)
    assert member == other and waited == 3.5


def test_wait_new_primary_gives_up_naming_the_old_primary(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    old, other = MEMBERS[0], MongoMember("mongo1", member_server.host, member_server.port, 1, "/d/mongo1", 1)
    clock = iter([0.0, 100.0]).__next__
    future = pool.submit(faults.wait_new_primary, [old, other], _factory(member_server), old, 30, 0,
                         clock=clock, sleep=lambda _: None)
    member_server.receives(timeout=5).ok(isWritablePrimary=False, secondary=True, setName="rs0", maxWireVersion=21)
    with pytest.raises(ClusterUnhealthy) as info:
        future.result(timeout=5)
    assert info.value.one_line() == ("no member other than mongo0 became primary within 30 s (last: mongo1 is "
                                     "SECONDARY); read the members' logs (/d/mongo1/mongod.log)")


def test_wait_rejoined_until_secondary(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    member = MongoMember("mongo0", member_server.host, member_server.port, 2, "/d/mongo0")
    clock = iter([0.0, 1.0, 2.0, 4.0]).__next__
    future = pool.submit(faults.wait_rejoined, member, _factory(member_server), 60, 0, clock=clock,
                         sleep=lambda _: None)
    member_server.receives(timeout=5).ok(isWritablePrimary=False, secondary=False, setName="rs0", maxWireVersion=21)
    member_server.receives(timeout=5).command_err(code=13436, errmsg="starting", codeName="NotPrimaryOrSecondary")
    member_server.receives(timeout=5).ok(isWritablePrimary=False, secondary=True, setName="rs0", maxWireVersion=21)
    assert future.result(timeout=5) == 4.0


def test_stepdown_asks_the_primary_as_root(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    member, asked = MongoMember("mongo0", member_server.host, member_server.port, 2, "/d/mongo0"), []

    def factory(m: MongoMember, user: str | None, password: str | None) -> MongoClient[Any]:
        asked.append((m.name, user, password))  # mockupdb answers no SCRAM handshake: connect without them
        return rs.member_client(member_server.host, member_server.port, timeouts=FAST)

    future = pool.submit(faults.stepdown, factory, member, "pw-root", 30)
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"replSetStepDown": 30, "secondaryCatchUpPeriodSecs": 10}
    request.ok()
    injected = future.result(timeout=5)
    assert asked == [("mongo0", "root", "pw-root")] and injected.said == "mongo0 stepped down (not electable for 30 s)"
    assert injected.undo() == "mongo0 may be elected again 30 s after its step-down"
