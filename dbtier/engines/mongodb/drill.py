"""The MongoDB failover drill: break one member of the replica set under a real write load, and judge it.

The runbook (:func:`run`) reads like the PostgreSQL one (:mod:`dbtier.engines.postgres.scenarios`), one function a step:

1. write the write URI (the application user's password, ``w=majority``) into a 0600 file of the drill's
   directory (:func:`dbtier.workdir.drill_dir`, on this machine), and start the writer (:mod:`.drill_writer`,
   ``w: majority``); wait for its first acknowledgements (the URI file goes once the writer is stopped);
2. read the set's status (as root) and pick the member the scenario hits (:func:`.faults.pick_target`);
3. inject the fault, its undo registered at once, so it runs even when a wait fails (w1-loss: first pause the
   secondaries for :func:`.faults.pause_for` seconds, then crash the primary, then resume the secondaries);
4. wait for a new primary (not for secondary-loss, which keeps the lost member down a while instead), undo,
   wait until the member is SECONDARY again, then for a healthy set; let the writer run a little more, stop it;
5. read back every id the set holds (``readConcern: majority``), judge (:func:`dbtier.drills.verdict.judge`
   against :func:`.faults.expectation`), save verdict.json beside the writer's log ``writes.jsonl``.

Who took over is what :func:`.faults.wait_new_primary` found: once the old primary's mongod is back, mongo0
(priority 2) takes the primary back, so the set's status after the drill no longer shows it.

Whatever touches the set goes through a :class:`DrillOps` (the real one is :class:`SetOps`), so the runbook
runs in tests against fakes; only :class:`SetOps` and :func:`read_status` need a real mongod.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dbtier import workdir
from dbtier.drills.verdict import DrillResult
from dbtier.drills.undo import Pending, undo_all
from dbtier.drills.verdict import Observed, judge, lost_ids
from dbtier.drills.writer import read_attempts
from dbtier.engines.mongodb import drill_writer, faults, rs
from dbtier.engines.mongodb.config import MongoMember, MongoUri, write_uri
from dbtier.engines.mongodb.steps import ROOT_USER, ClientFactory
from dbtier.errors import ClusterUnhealthy, DbtierError, Refused
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec, DrillSettings

if TYPE_CHECKING:
    from dbtier.procs import Service
    from dbtier.providers.base import Provider

#: The write concern of the drill's writer: no acknowledged write may be lost, whatever the fault; only the w1-loss
#: demonstration writes with ``w: 1`` (:attr:`.faults.MongoScenario.w`).
WRITE_CONCERN = "majority"
#: How long the writer gets to have its first write acknowledged, before any fault.
FIRST_ACK_TIMEOUT_S = 30.0


class DrillOps(Protocol):
    """What the runbook does to the replica set and the writer (:class:`SetOps`, or a test's fakes)."""

    def wait_healthy(self, timeout: float) -> str:
        """Block until the set is healthy; a sentence, or :class:`ClusterUnhealthy` naming why not."""

    def status(self) -> Mapping[str, Any] | None:
        """The set's ``replSetGetStatus`` document (read as root)."""

    def start_writer(self, argv: list[str], stderr_path: str) -> Any:
        """Start the writer process; return its handle for :meth:`stop_writer`."""

    def stop_writer(self, writer: Any, stderr_path: str) -> str:
        """Stop the writer that :meth:`start_writer` started; say how it ended."""

    def inject(self, scenario: str, target: MongoMember) -> faults.Injected:
        """Break ``target`` as ``scenario`` says; return the fault with its undo."""

    def pause(self, members: list[MongoMember]) -> faults.Injected:
        """SIGSTOP ``members`` (the w: 1 demonstration's secondaries); the undo SIGCONTs them."""

    def wait_new_primary(self, old: MongoMember, timeout: float) -> tuple[MongoMember, float]:
        """The member other than ``old`` that became the writable primary, and the seconds waited."""

    def wait_rejoined(self, member: MongoMember, timeout: float) -> float:
        """Seconds until ``member`` is SECONDARY again; :class:`ClusterUnhealthy` after ``timeout``."""

    def present_ids(self, drill: str) -> frozenset[int]:
        """Every id of ``drill`` the set holds (``readConcern: majority``)."""


@dataclass
class MongoDrill:
    """One drill in progress: its directory, its events, and the undo of the fault still in place."""

    spec: ClusterSpec
    settings: DrillSettings
    scenario: str
    ops: DrillOps
    members: list[MongoMember]
    id: str
    dir: str
    events: list[tuple[float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pending: Pending = field(default_factory=list)

    @property
    def log(self) -> str:
        return f"{self.dir}/writes.jsonl"

    @property
    def w(self) -> str:
        """The writer's write concern (``majority``, or ``1`` for the loss demonstration)."""
        return faults.SCENARIOS[self.scenario].w

    @property
    def pause_s(self) -> float:
        """How long the secondaries are paused before the fault (0: they are not)."""
        if not faults.SCENARIOS[self.scenario].pause_secondaries:
            return 0.0
        return faults.pause_for(self.spec.mongo.election_timeout_ms)

    @property
    def uri_file(self) -> str:
        return f"{self.dir}/write.uri"

    @property
    def writer_err(self) -> str:
        return f"{self.dir}/writer.err"

    def note(self, what: str) -> float:
        moment = time.time()
        self.events.append((moment, what))
        return moment


def new_drill(spec: ClusterSpec, settings: DrillSettings, scenario: str, ops: DrillOps,
              members: list[MongoMember]) -> MongoDrill:
    """A drill named ``<UTC time>-<scenario>``, its evidence under :func:`dbtier.workdir.drill_dir`."""
    drill_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{scenario}"
    return MongoDrill(spec, settings, scenario, ops, members, drill_id, workdir.drill_dir(spec.name, drill_id))


def check_scenario(scenario: str) -> faults.MongoScenario:
    """The scenario's record, or one line naming the ones there are.

    >>> check_scenario("stepdown").leader_change
    True
    >>> check_scenario("etcd-quorum-loss")
    Traceback (most recent call last):
    ...
    dbtier.errors.Refused: scenario: engine mongodb has no etcd-quorum-loss drill; choose one of crash, freeze, stepdown, secondary-loss, w1-loss or drill-all
    """
    if scenario not in faults.SCENARIOS:
        raise Refused(f"scenario: engine mongodb has no {scenario} drill; choose one of "
                      f"{', '.join(faults.SCENARIOS)} or drill-all")
    return faults.SCENARIOS[scenario]


def primary_name(status: Mapping[str, Any] | None, members: list[MongoMember]) -> str | None:
    """The one member a status document calls PRIMARY, else None.

    >>> ms = [MongoMember("mongo0", "h", 1, 2, "/d"), MongoMember("mongo1", "h", 2, 1, "/d")]
    >>> primary_name({"members": [{"name": "h:2", "stateStr": "PRIMARY"}]}, ms), primary_name(None, ms)
    ('mongo1', None)
    """
    primaries = [name for name, state in faults.member_states(status, members).items() if state == "PRIMARY"]
    return primaries[0] if len(primaries) == 1 else None


# -- the steps ---------------------------------------------------------------------------------------


def write_uri_file(drill: MongoDrill, uri: MongoUri) -> None:
    """The writer's URI, password included, in a 0600 file of the drill's 0700 directory (never argv or env)."""
    workdir.make_private_dir(drill.dir)
    drill_writer.write_uri_file(drill.uri_file, uri)
    drill.notes.append(f"the writer wrote through the replica set's URI {uri} (w: {drill.w})")


@contextmanager
def writing(drill: MongoDrill) -> Iterator[None]:
    """Run the writer for the block (after its first acknowledgements); undo what is still broken, stop the
    writer and remove its URI file (the one file holding a password) on the way out, whatever happened inside."""
    argv = drill_writer.writer_argv(drill.uri_file, drill.id, drill.log, drill.w, drill.settings.write_timeout_s,
                                    drill.settings.write_interval_ms)
    writer = drill.ops.start_writer(argv, drill.writer_err)
    try:
        wait_first_ack(drill)
        time.sleep(drill.settings.settle_s)
        yield
    finally:
        undo(drill)
        drill.notes.append(drill.ops.stop_writer(writer, drill.writer_err))
        Path(drill.uri_file).unlink(missing_ok=True)


def wait_first_ack(drill: MongoDrill, timeout: float = FIRST_ACK_TIMEOUT_S, poll_s: float = 0.1) -> None:
    """Until the writer's log holds an acknowledged write; else one line naming its stderr file."""
    deadline = time.monotonic() + timeout
    while not any(a.ok for a in read_attempts(drill.log)):
        if time.monotonic() >= deadline:
            raise ClusterUnhealthy(f"drill {drill.scenario}: no write of the writer was acknowledged within "
                                   f"{timeout:g} s, before any fault; read {drill.writer_err}")
        time.sleep(poll_s)
    drill.note("the writer's writes are acknowledged")


def aim(drill: MongoDrill) -> tuple[MongoMember, str | None]:
    """(the member the scenario hits, the primary now), from the set's status."""
    status = drill.ops.status()
    target = faults.pick_target(drill.scenario, status, drill.members)
    leader = primary_name(status, drill.members)
    drill.note(f"primary {leader}; the drill hits {target.name}")
    return target, leader


def inject(drill: MongoDrill, target: MongoMember) -> float:
    """Break ``target`` and register the undo; the moment taken just before acting is the drill's time zero."""
    moment = drill.note(f"fault: {drill.scenario} on {target.name} ({faults.SCENARIOS[drill.scenario].what})")
    injected = drill.ops.inject(drill.scenario, target)
    drill.pending.append((injected.undo_what, injected.undo))
    drill.notes.append(injected.said)
    return moment


def pause_secondaries(drill: MongoDrill, primary: MongoMember, paused: Pending) -> None:
    """SIGSTOP every member but ``primary`` (their undo into ``paused`` at once, for :func:`resume`, which must run
    before the primary starts again) and hold them paused for :attr:`MongoDrill.pause_s` while the writer writes
    with ``w: 1``."""
    others = [m for m in drill.members if m.name != primary.name]
    drill.note(f"pausing {', '.join(m.name for m in others)} for {drill.pause_s:g} s (w: 1 writes reach only "
               f"{primary.name})")
    injected = drill.ops.pause(others)
    paused.append((injected.undo_what, injected.undo))
    drill.notes.append(injected.said)
    time.sleep(drill.pause_s)


def resume(drill: MongoDrill, paused: Pending) -> None:
    """SIGCONT the paused secondaries (now, before the crashed primary comes back, so one of them is elected)."""
    undo_all(paused, drill.note, drill.notes, drill.problems)


def wait_new_primary(drill: MongoDrill, old: MongoMember) -> str | None:
    """The member that took over (None, and a problem, when none did within the RTO budget and 10 s)."""
    try:
        new, waited = drill.ops.wait_new_primary(old, drill.settings.rto_budget_s + 10)
    except ClusterUnhealthy as err:
        drill.problems.append(err.one_line())
        drill.note("no new primary")
        return None
    drill.note(f"{new.name} is the writable primary ({waited:g} s of waiting)")
    return new.name


def hold(drill: MongoDrill, seconds: float) -> None:
    """Keep the fault in place (the writer keeps writing)."""
    drill.note(f"holding the fault for {seconds:g} s")
    time.sleep(seconds)


def undo(drill: MongoDrill) -> float:
    """Undo every fault still in place, last first; return when the undo started."""
    return undo_all(drill.pending, drill.note, drill.notes, drill.problems)


def wait_rejoined(drill: MongoDrill, member: MongoMember, since: float) -> float | None:
    """Seconds from ``since`` (the undo) until ``member`` is SECONDARY again (None, and a problem, if never)."""
    try:
        drill.ops.wait_rejoined(member, drill.settings.rejoin_budget_s)
    except ClusterUnhealthy as err:
        drill.problems.append(err.one_line())
        return None
    drill.note(f"{member.name} is SECONDARY again")
    return round(time.time() - since, 2)


def current_primary(drill: MongoDrill) -> str | None:
    """The primary the set's status names now (None, and a problem, when it cannot be read)."""
    try:
        return primary_name(drill.ops.status(), drill.members)
    except ClusterUnhealthy as err:
        drill.problems.append(err.one_line())
        return None


def healthy_then_tail(drill: MongoDrill) -> None:
    """Wait until the whole set is healthy, then keep writing a little longer."""
    try:
        drill.ops.wait_healthy(drill.settings.healthy_timeout_s)
        drill.note("replica set healthy again")
    except ClusterUnhealthy as err:
        drill.problems.append(err.one_line())
    time.sleep(drill.settings.tail_s)


def read_back(drill: MongoDrill, timeout: float = 15.0, poll_s: float = 0.5) -> frozenset[int]:
    """The ids the set holds, asked again for ``timeout`` (the priority takeover may be electing right then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return drill.ops.present_ids(drill.id)
        except DbtierError as err:
            if time.monotonic() >= deadline:
                drill.problems.append(f"could not read the written ids back: {err.one_line()}")
                return frozenset()
        time.sleep(poll_s)


def finish(drill: MongoDrill, fault_at: float, leader: tuple[str | None, str | None], target: MongoMember,
           rejoin_s: float | None) -> DrillResult:
    """Judge the writer's log against the ids the set holds, and save verdict.json beside the log."""
    attempts = read_attempts(drill.log)
    present = read_back(drill)
    expected = faults.expected_loss(drill.scenario, drill.w, drill.pause_s)
    as_expected, said = faults.loss_check(expected, lost_ids(attempts, present))
    drill.notes.append(said)
    if expected == "shown" and not as_expected:  # the demonstration must show the loss it exists to show
        drill.problems.append(said)
    seen = Observed(fault_at=fault_at, leader_before=leader[0], leader_after=leader[1], primary_ids=present,
                    rejoin_s=rejoin_s, events=drill.events, notes=drill.notes, problems=drill.problems)
    expect = faults.expectation(drill.scenario, drill.w, target.name, drill.settings.rto_budget_s,
                                drill.settings.rejoin_budget_s)
    verdict = judge(drill.scenario, attempts, seen, expect)
    workdir.write_private(f"{drill.dir}/verdict.json", json.dumps(verdict.to_dict(), indent=2).encode())
    return DrillResult(verdict, drill.dir)


# -- the runbook -------------------------------------------------------------------------------------


def drill_set(drill: MongoDrill, uri: MongoUri) -> DrillResult:
    """One scenario on a healthy set, step by step (see the module's docstring)."""
    scenario = check_scenario(drill.scenario)
    write_uri_file(drill, uri)
    with writing(drill):
        target, leader_before = aim(drill)
        if scenario.pause_secondaries:  # the w: 1 demonstration
            paused: Pending = []
            try:
                pause_secondaries(drill, target, paused)
                fault_at = inject(drill, target)
            finally:
                resume(drill, paused)
        else:
            fault_at = inject(drill, target)
        if scenario.leader_change:
            leader_after = wait_new_primary(drill, target)
            rejoin_s = wait_rejoined(drill, target, undo(drill))
        else:
            hold(drill, drill.settings.replica_loss_hold_s)
            rejoin_s = wait_rejoined(drill, target, undo(drill))
            leader_after = current_primary(drill)
        healthy_then_tail(drill)
    return finish(drill, fault_at, (leader_before, leader_after), target, rejoin_s)


def run(provider: Provider, spec: ClusterSpec, scenario: str, settings: DrillSettings, passwords: Passwords,
        ops: DrillOps | None = None) -> DrillResult:
    """Run ``scenario`` on the healthy replica set (healthy again after); ``ops``: a test's fakes."""
    from dbtier.engines.mongodb.engine import members

    check_scenario(scenario)
    ops = ops or SetOps(provider, spec, passwords)
    ops.wait_healthy(settings.healthy_timeout_s)
    drill = new_drill(spec, settings, scenario, ops, members(spec))
    return drill_set(drill, drill_uri(spec, passwords.app))


def drill_uri(spec: ClusterSpec, app_password: str) -> MongoUri:
    """The writer's URI: the replica set's write URI as the application user (TLS against this machine's CA)."""
    from dbtier.engines.mongodb.engine import members, mongo_settings

    ca = workdir.ca_cert_file(spec.name) if spec.tls.enabled else None
    return write_uri(members(spec), mongo_settings(spec), spec.app.user, app_password, spec.app.database, ca)


# -- the real set ------------------------------------------------------------------------------------


def read_status(members: list[MongoMember], factory: ClientFactory, root_password: str) -> dict[str, Any]:
    """``replSetGetStatus`` as root from the first member that answers; else one line naming each member's error."""
    errors = []
    for member in members:
        try:
            with factory(member, ROOT_USER, root_password) as client:
                return rs.replset_status(client, member)
        except rs.MongoCommandError as err:
            errors.append(err.one_line())
    raise ClusterUnhealthy(f"no member answers replSetGetStatus as root ({'; '.join(errors)}); run dbtier status")


class SetOps:
    """The real :class:`DrillOps`: members over the wire (root for the status and the step-down), their mongod
    through the provider (signals by checked pid; started again through its supervisor)."""

    def __init__(self, provider: Provider, spec: ClusterSpec, passwords: Passwords) -> None:
        from dbtier.engines.mongodb.engine import MongoEngine, client_factory, members

        self.provider, self.spec, self.engine = provider, spec, MongoEngine()
        self.members, self._root, self._app = members(spec), passwords.superuser, passwords.app
        self.factory = client_factory(spec)
        # a dead or frozen member is asked at every poll: give up on it quickly
        self.fast = client_factory(spec, rs.ClientTimeouts(server_selection_ms=1000, connect_ms=1000, socket_ms=2000))

    def wait_healthy(self, timeout: float) -> str:
        return self.engine.wait_healthy(self.spec, timeout).health.sentence

    def status(self) -> dict[str, Any]:
        return read_status(self.members, self.fast, self._root)

    def start_writer(self, argv: list[str], stderr_path: str) -> Any:
        return drill_writer.start_writer(argv, stderr_path)

    def stop_writer(self, writer: Any, stderr_path: str) -> str:
        return drill_writer.stop_writer(writer, stderr_path)

    def service(self, member: MongoMember) -> Service:
        services = {s.name: s for s in self.engine.member_services(self.spec)}
        if member.name not in services:
            raise DbtierError(f"drill: {member.name} is no member of cluster {self.spec.name}; check members")
        return services[member.name]

    def start(self, member: MongoMember) -> str:
        from dbtier.bootstrap import ensure_running

        return ensure_running(self.provider, self.spec, self.service(member))

    def pause(self, members: list[MongoMember]) -> faults.Injected:
        return faults.pause_secondaries(lambda m: self.provider.runner(self.spec, m.host), members)

    def inject(self, scenario: str, target: MongoMember) -> faults.Injected:
        if scenario == "stepdown":
            return faults.stepdown(self.factory, target, self._root)
        runner = self.provider.runner(self.spec, target.host)
        if scenario == "freeze":
            return faults.freeze(runner, target)
        service, supervisor = self.service(target), self.provider.supervisor(self.spec, target.host)
        kill = faults.lose_secondary if scenario == "secondary-loss" else faults.crash
        return kill(runner, target, self.start, lambda: supervisor.keep_down(runner, service))

    def wait_new_primary(self, old: MongoMember, timeout: float) -> tuple[MongoMember, float]:
        return faults.wait_new_primary(self.members, self.fast, old, timeout)

    def wait_rejoined(self, member: MongoMember, timeout: float) -> float:
        return faults.wait_rejoined(member, self.fast, timeout)

    def present_ids(self, drill: str) -> frozenset[int]:
        from dbtier.engines.mongodb.engine import set_client

        with set_client(drill_uri(self.spec, self._app)) as client:
            return drill_writer.present_ids(client, drill)
