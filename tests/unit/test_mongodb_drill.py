"""The MongoDB drill runbook against fakes: a writer that logs synthetic attempts, a fault layer and a status that
record what the runbook asked, in order. No mongod, no process is signalled; the verdict is the real one."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dbtier.engines.postgres import drill_settings as pg_drills
from dbtier.drills.verdict import DrillResult
from dbtier.engines.base import get_engine
from dbtier.engines.mongodb import drill
from dbtier.engines.mongodb.config import MongoMember
from dbtier.engines.mongodb.engine import members
from dbtier.engines.mongodb.faults import Injected
from dbtier.errors import ClusterUnhealthy, Refused
from dbtier.providers.base import get_provider
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec, DrillSettings

SPECS = Path(__file__).resolve().parents[2] / "deployments" / "clusters"
APP_PASSWORD, ROOT_PASSWORD = "app-Pw-7f3e9c", "root-Pw-1b2d4a"
PASSWORDS = Passwords(app=APP_PASSWORD, superuser=ROOT_PASSWORD, keyfile="key-Pw-99aa")
FAST = DrillSettings(settle_s=0, tail_s=0, replica_loss_hold_s=0, rto_budget_s=30, rejoin_budget_s=60)


def _line(wid: int, at: float, ok: bool, port: int | None = None, term: int | None = None) -> str:
    if not ok:
        return json.dumps({"id": wid, "sent": at, "done": at + 0.01, "ok": False, "error": "NetworkTimeout: timed out"})
    return json.dumps({"id": wid, "sent": at, "done": at + 0.01, "ok": True, "port": port, "timeline": term})


@dataclass
class FakeSet:
    """The writer, the faults and the set, each call recorded; mongo0 (27017) is primary, mongo1 takes over."""

    members: list[MongoMember]
    calls: list[str] = field(default_factory=list)
    missing: frozenset[int] = frozenset()  # acknowledged ids the set does not hold
    new_primary_fails: BaseException | None = None
    log: str = ""
    after_port: int = 27018
    after_term: int = 2
    w: str = "majority"  # the write concern the writer must be started with

    def wait_healthy(self, timeout: float) -> str:
        self.calls.append("wait_healthy")
        return "replica set healthy"

    def status(self) -> dict[str, Any]:
        self.calls.append("status")
        states = ["PRIMARY", "SECONDARY", "SECONDARY"]
        return {"members": [{"name": m.address, "stateStr": s} for m, s in zip(self.members, states, strict=True)]}

    def start_writer(self, argv: list[str], stderr_path: str) -> str:
        uri_file = argv[argv.index("--uri-file") + 1]
        assert stat.S_IMODE(os.stat(uri_file).st_mode) == 0o600, "the URI file is private before the writer starts"
        assert APP_PASSWORD in Path(uri_file).read_text() and argv[argv.index("--w") + 1] == self.w
        assert not any(APP_PASSWORD in a for a in argv), "the writer's argv names the file, never the password"
        self.calls.append("start_writer")
        self.log = argv[argv.index("--log") + 1]
        before = time.time() - 1.0
        Path(self.log).write_text("".join(_line(i, before + i * 0.05, True, 27017, 1) + "\n" for i in (1, 2, 3)))
        return "writer-handle"

    def stop_writer(self, writer: Any, stderr_path: str) -> str:
        assert writer == "writer-handle"
        self.calls.append("stop_writer")
        now = time.time()  # after the fault: one write failed, the next ones acknowledged by the new primary
        lines = [_line(4, now, False)] + [_line(i, now + i * 0.05, True, self.after_port, self.after_term)
                                           for i in (5, 6, 7)]
        with open(self.log, "a") as out:
            out.write("".join(line + "\n" for line in lines))
        return "MongoDB drill writer (pid 4242) stopped with exit code 0"

    def pause(self, members: list[MongoMember]) -> Injected:
        self.calls.append(f"pause {' '.join(m.name for m in members)}")

        def resume() -> str:
            self.calls.append("resume")
            return "SIGCONT sent"

        return Injected("paused", "SIGCONT the secondaries", resume)

    def inject(self, scenario: str, target: MongoMember) -> Injected:
        self.calls.append(f"inject {scenario} {target.name}")

        def undo() -> str:
            self.calls.append("undo")
            return f"started {target.name} again"

        return Injected(f"{scenario} on {target.name}", f"undo {scenario} on {target.name}", undo)

    def wait_new_primary(self, old: MongoMember, timeout: float) -> tuple[MongoMember, float]:
        self.calls.append(f"wait_new_primary {old.name}")
        if self.new_primary_fails is not None:
            raise self.new_primary_fails
        return self.members[1], 1.5

    def wait_rejoined(self, member: MongoMember, timeout: float) -> float:
        self.calls.append(f"wait_rejoined {member.name}")
        return 2.0

    def present_ids(self, drill_id: str) -> frozenset[int]:
        self.calls.append("present_ids")
        return frozenset({1, 2, 3, 5, 6, 7}) - self.missing


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClusterSpec:
    monkeypatch.setenv("DBTIER_WORK_DIR", str(tmp_path / "work"))
    return ClusterSpec(name="mongo", engine="mongodb", members=3, data_root=str(tmp_path / "data"),
                       tls={"enabled": False})


@pytest.fixture
def healthy_set(spec: ClusterSpec) -> Iterator[FakeSet]:
    yield FakeSet(members(spec))


def _run(spec: ClusterSpec, fake: FakeSet, scenario: str = "crash") -> DrillResult:
    return drill.run(get_provider(spec), spec, scenario, FAST, PASSWORDS, ops=fake)


# -- the runbook's order -----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["crash", "freeze", "stepdown"])
def test_a_primary_fault_runs_the_runbook_in_order_and_passes(spec: ClusterSpec, healthy_set: FakeSet,
                                                              scenario: str) -> None:
    result = _run(spec, healthy_set, scenario)
    assert healthy_set.calls == ["wait_healthy", "start_writer", "status", f"inject {scenario} mongo0",
                                 "wait_new_primary mongo0", "undo", "wait_rejoined mongo0", "wait_healthy",
                                 "stop_writer", "present_ids"]
    v = result.verdict
    assert v.passed, v.reasons
    assert (v.leader_before, v.leader_after, v.leader_changed) == ("mongo0", "mongo1", True)
    assert (v.lost_writes, v.acknowledged, v.failed_attempts) == (0, 6, 1)
    assert v.rejoin_s is not None and v.budgets.rejoin_member == "mongo0" and v.budgets.zero_loss
    assert "no acknowledged write lost (w: majority)" in v.notes
    assert "MongoDB drill writer (pid 4242) stopped with exit code 0" in v.notes


def test_secondary_loss_waits_for_no_new_primary_and_reads_the_leader_again(spec: ClusterSpec,
                                                                           healthy_set: FakeSet) -> None:
    healthy_set.after_port, healthy_set.after_term = 27017, 1  # the primary keeps acknowledging
    result = _run(spec, healthy_set, "secondary-loss")
    assert healthy_set.calls == ["wait_healthy", "start_writer", "status", "inject secondary-loss mongo1", "undo",
                                 "wait_rejoined mongo1", "status", "wait_healthy", "stop_writer", "present_ids"]
    v = result.verdict
    assert v.passed, v.reasons
    assert (v.leader_before, v.leader_after, v.leader_changed) == ("mongo0", "mongo0", False)


def test_the_undo_runs_when_no_new_primary_comes_and_the_verdict_says_so(spec: ClusterSpec,
                                                                        healthy_set: FakeSet) -> None:
    healthy_set.new_primary_fails = ClusterUnhealthy("no member other than mongo0 became primary within 40 s")
    v = _run(spec, healthy_set).verdict
    assert healthy_set.calls.index("wait_new_primary mongo0") < healthy_set.calls.index("undo") \
        < healthy_set.calls.index("stop_writer")
    assert not v.passed and v.leader_after is None
    assert "no member other than mongo0 became primary within 40 s" in v.reasons


def test_the_undo_and_the_writers_stop_run_when_a_wait_breaks(spec: ClusterSpec, healthy_set: FakeSet) -> None:
    healthy_set.new_primary_fails = RuntimeError("the wait broke")
    with pytest.raises(RuntimeError, match="the wait broke"):
        _run(spec, healthy_set)
    assert healthy_set.calls[-3:] == ["wait_new_primary mongo0", "undo", "stop_writer"]
    [drill_dir] = list((Path(os.environ["DBTIER_WORK_DIR"]) / "mongo" / "drills").iterdir())
    assert not (drill_dir / "write.uri").exists(), "the URI file goes with the writer"


@pytest.fixture
def quick_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drill.faults, "pause_for", lambda election_timeout_ms: 0.01)


def test_the_w1_demonstration_resumes_the_secondaries_before_the_primary_and_shows_the_loss(
        spec: ClusterSpec, healthy_set: FakeSet, quick_pause: None) -> None:
    healthy_set.w, healthy_set.missing = "1", frozenset({3})  # acknowledged by the primary alone, then rolled back
    v = _run(spec, healthy_set, "w1-loss").verdict
    assert healthy_set.calls == ["wait_healthy", "start_writer", "status", "pause mongo1 mongo2",
                                 "inject w1-loss mongo0", "resume", "wait_new_primary mongo0", "undo",
                                 "wait_rejoined mongo0", "wait_healthy", "stop_writer", "present_ids"]
    assert v.passed, v.reasons
    assert v.lost_ids == [3] and not v.budgets.zero_loss
    assert "w: 1 lost 1 acknowledged write(s) (first ids: 3); w: majority keeps them" in v.notes


def test_a_w1_demonstration_that_lost_nothing_fails_saying_so(spec: ClusterSpec, healthy_set: FakeSet,
                                                              quick_pause: None) -> None:
    healthy_set.w = "1"
    v = _run(spec, healthy_set, "w1-loss").verdict
    assert not v.passed
    assert "the w: 1 demonstration lost no acknowledged write: pause the secondaries longer" in v.reasons


def test_the_secondaries_are_resumed_when_the_crash_fails(spec: ClusterSpec, healthy_set: FakeSet,
                                                          quick_pause: None, monkeypatch: pytest.MonkeyPatch) -> None:
    healthy_set.w = "1"

    def crash_fails(scenario: str, target: MongoMember) -> Injected:
        healthy_set.calls.append("inject fails")
        raise RuntimeError("kill failed")

    monkeypatch.setattr(healthy_set, "inject", crash_fails)
    with pytest.raises(RuntimeError, match="kill failed"):
        _run(spec, healthy_set, "w1-loss")
    assert healthy_set.calls[-3:] == ["inject fails", "resume", "stop_writer"]


# -- the verdict, from the writer's log and the ids the set holds ------------------------------------


def test_acknowledged_ids_the_set_lacks_fail_the_verdict_naming_them(spec: ClusterSpec, healthy_set: FakeSet) -> None:
    healthy_set.missing = frozenset({2, 6})
    v = _run(spec, healthy_set).verdict
    assert not v.passed and v.lost_ids == [2, 6]
    assert "2 acknowledged write(s) lost (first ids: 2, 6)" in v.reasons
    assert "w: majority lost 2 acknowledged write(s) (first ids: 2, 6)" in v.notes
    assert v.sentence.startswith("crash: FAILED (")


def test_the_evidence_is_saved_and_no_file_holds_a_password(spec: ClusterSpec, healthy_set: FakeSet) -> None:
    result = _run(spec, healthy_set)
    report = Path(result.report_dir)
    assert report.parent == Path(os.environ["DBTIER_WORK_DIR"]) / "mongo" / "drills"
    assert report.name.endswith("-crash") and stat.S_IMODE(report.stat().st_mode) == 0o700
    assert sorted(p.name for p in report.iterdir()) == ["verdict.json", "writes.jsonl"]
    saved = json.loads((report / "verdict.json").read_text())
    assert (saved["scenario"], saved["passed"], saved["lost_writes"]) == ("crash", True, 0)
    assert len((report / "writes.jsonl").read_text().splitlines()) == 7
    for path in report.rglob("*"):
        text = path.read_bytes()
        assert APP_PASSWORD.encode() not in text and ROOT_PASSWORD.encode() not in text, path
    assert "**********" in (report / "verdict.json").read_text(), "the verdict names the URI, redacted"


def test_an_unknown_scenario_is_refused_before_the_set_is_touched(spec: ClusterSpec, healthy_set: FakeSet) -> None:
    with pytest.raises(Refused, match="engine mongodb has no switchover drill; choose one of crash, freeze, "
                                      "stepdown, secondary-loss, w1-loss or drill-all"):
        _run(spec, healthy_set, "switchover")
    assert healthy_set.calls == []


# -- the engines' drills and the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "names"),
    [("postgres", pg_drills.SCENARIOS), ("mongodb", ("crash", "freeze", "stepdown", "secondary-loss", "w1-loss"))],
)
def test_each_engine_names_its_drills(engine: str, names: tuple[str, ...]) -> None:
    spec = ClusterSpec(engine=engine)
    assert get_engine(spec).drill_scenarios(spec) == names


@pytest.mark.parametrize(
    ("spec_file", "scenario", "line"),
    [("mongodb.yaml", "etcd-quorum-loss", "dbtier: error: scenario: engine mongodb has no etcd-quorum-loss drill; "
      "choose one of crash, freeze, stepdown, secondary-loss, w1-loss or drill-all"),
     ("default.yaml", "stepdown", "dbtier: error: scenario: engine postgres has no stepdown drill; choose one of "
      f"{', '.join(pg_drills.SCENARIOS)} or drill-all")],
)
def test_a_scenario_the_engine_lacks_is_one_line_before_any_prefect_api(
        spec_file: str, scenario: str, line: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import flows._cli
    from flows.failover_drill import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing answers: a call would fail

    def no_api() -> None:
        raise AssertionError("the Prefect API was asked")

    monkeypatch.setattr(flows._cli, "check_api", no_api)
    assert main(["--scenario", scenario, "--spec", str(SPECS / spec_file)]) == 2
    assert capsys.readouterr().err.strip() == line


# -- the real fault layer's glue, against a recording runner (no process is signalled) -----------------


@dataclass
class FakeSupervisor:
    """Starts nothing: records which service it was asked to keep down or start."""

    kind: str = "detached"
    asked: list[str] = field(default_factory=list)

    def keep_down(self, runner: Any, service: Any) -> str:
        self.asked.append(f"keep_down {service.name}")
        return f"{service.name} is kept down."

    def start(self, runner: Any, service: Any) -> int:
        self.asked.append(f"start {service.name} {service.kind} {service.pidfile}")
        return 4343


@dataclass
class FakeProvider:
    runner_of: Any
    supervisor_of: FakeSupervisor

    def runner(self, spec: ClusterSpec, host: str) -> Any:
        return self.runner_of

    def supervisor(self, spec: ClusterSpec, host: str) -> FakeSupervisor:
        return self.supervisor_of


@pytest.mark.parametrize(
    ("scenario", "index", "signal", "undo_said"),
    [("crash", 0, "-KILL", "mongo0 started (pid 4343)"),
     ("secondary-loss", 1, "-KILL", "mongo1 started (pid 4343)"),
     ("freeze", 0, "-STOP", "SIGCONT sent to mongo0's mongod (pid 4242)")],
)
def test_set_ops_signals_the_members_own_mongod_and_starts_it_through_its_service(
        spec: ClusterSpec, scenario: str, index: int, signal: str, undo_said: str) -> None:
    from tests.unit.test_mongodb_faults import RecordingRunner, _running

    target = members(spec)[index]
    runner, supervisor = RecordingRunner(_running(target, 4242)), FakeSupervisor()
    ops = drill.SetOps(FakeProvider(runner, supervisor), spec, PASSWORDS)  # type: ignore[arg-type]
    injected = ops.inject(scenario, target)
    assert runner.ran == [["kill", signal, "4242"]]
    assert injected.undo() == undo_said
    if signal == "-KILL":
        assert injected.said.endswith(f"gone. {target.name} is kept down.")
        assert supervisor.asked == [f"keep_down {target.name}", f"start {target.name} mongod {target.pidfile}"]
    else:
        assert supervisor.asked == [] and runner.ran[-1] == ["kill", "-CONT", "4242"]
