"""Drill scenarios: each one breaks one thing under write load and leaves the cluster healthy.

A scenario reads like its runbook: start the writer, inject the fault, wait for the
first acknowledged write, restore what was stopped, wait for the member to stream
again, then judge. Restoring is registered the moment a fault is injected, so it
happens even when a wait fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dbtier import pictures, workdir
from dbtier.engines.postgres.patroni_health import role_holder
from dbtier.drills import writer
from dbtier.engines.postgres import drill_writer
from dbtier.engines.postgres import faults, network
from dbtier.drills.undo import Pending, undo_all
from dbtier.drills.settings import DrillSettings
from dbtier.engines.postgres.drill_settings import quorum_loss_hold, writer_route
from dbtier.drills.verdict import (Attempt, DrillResult, Evidence, Expectation, Observed, Verdict, judge,
                                   old_primary_port)
from dbtier.engines.postgres import etcd
from dbtier.engines.base import get_engine
from dbtier.engines.postgres.control_plane import Login
from dbtier.errors import ClusterUnhealthy, DbtierError
from dbtier.providers.base import Provider, get_provider
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import client_dsn, conninfo, pg_member, pg_members


class Drill:
    """One drill in progress: its writer, its events, and what it must restore.

    The writer runs here, where the drill runs; its log, stderr and the verdict live in a local work
    directory of this machine (``<work>/<cluster>/drills/<id>/``), never on a member. ``provider``
    reaches the members (default: the spec's, with the library's loaders).
    """

    def __init__(self, spec: ClusterSpec, settings: DrillSettings, password: str, scenario: str,
                 provider: Provider | None = None, rest_login: Login | None = None) -> None:
        self.spec, self.settings, self.scenario, self._password = spec, settings, scenario, password
        self.rest_login = rest_login  # Patroni REST's unsafe endpoints (a switchover)
        self.provider, self.engine = provider or get_provider(spec), get_engine(spec)
        self.id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{scenario}"
        self.dir = workdir.drill_dir(spec.name, self.id)
        self.events: list[tuple[float, str]] = []
        self.lags: list[tuple[float, dict[str, int]]] = []  # each replica's lag, as Patroni's /cluster says
        self.notes: list[str] = []
        self.problems: list[str] = []
        self._undo: Pending = []
        self._seen: tuple[str | None, object, str | None] | None = None
        self.writer_dsn, self.via = writer_route(spec, settings)  # drills.via: refused here, before any fault
        self.zero_loss = faults.synchronous_mode(spec)

    @property
    def log(self) -> str:
        return f"{self.dir}/writes.jsonl"

    def note(self, what: str) -> float:
        moment = time.time()
        self.events.append((moment, what))
        return moment

    def leader(self) -> str:
        name = role_holder(faults.cluster_doc(self.spec), "leader")
        if name is None:
            raise ClusterUnhealthy(f"drill {self.scenario}: cluster {self.spec.name} has no leader to drill against")
        return name

    def sync_standby(self) -> str | None:
        """In synchronous mode, the sync standby (waiting a few loops for Patroni to name one)."""
        if not self.zero_loss:
            return None
        deadline = time.monotonic() + 3 * self.spec.pg.patroni.loop_wait + 10
        while time.monotonic() < deadline:
            name = role_holder(faults.cluster_doc(self.spec), "sync_standby")
            if name is not None:
                return name
            time.sleep(0.3)
        self.notes.append("synchronous mode is on but Patroni names no sync standby")
        return None

    def port(self, name: str) -> int:
        return pg_member(self.spec, name).pg_port

    # -- writer and restore ---------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Run the writer for the block; restore every fault and stop the writer on the way out."""
        workdir.make_private_dir(self.dir)
        drill_writer.create_table(client_dsn(self.spec), self._password)
        self.notes.append(f"the writer wrote {self.via}")
        argv = drill_writer.writer_argv(self.writer_dsn, self.id, self.log, self.settings.write_interval_ms,
                                  self.settings.write_timeout_s)
        proc = drill_writer.start_writer(argv, self._password, f"{self.dir}/writer.err")
        try:
            self.watch()
            self.wait_ack(since=time.time(), timeout=30)
            time.sleep(self.settings.settle_s)
            yield
        finally:
            self.restore()
            self.notes.append(writer.stop_writer(proc, f"{self.dir}/writer.err"))

    def fault(self, what: str, action: Callable[[], object]) -> float:
        """Inject a fault; the returned moment (taken just before acting) is the drill's time zero."""
        moment = self.note(f"fault: {what}")
        result = action()
        if isinstance(result, str):
            self.notes.append(result)
        return moment

    def on_restore(self, what: str, action: Callable[[], str]) -> None:
        self._undo.append((what, action))

    def restore(self) -> float:
        """Undo every fault still pending, last first; return when the restore started."""
        return undo_all(self._undo, self.note, self.notes, self.problems, "restore")

    # -- waiting and watching -------------------------------------------------------------------

    def watch(self, avoid: str | None = None) -> None:
        """Note leader, timeline and synchronous standby changes as Patroni reports them."""
        doc = faults.cluster_doc(self.spec, avoid=avoid, timeout=0.5)
        if doc is not None:
            self.lags.append((time.time(), {m["name"]: m["lag"] for m in doc.get("members", [])
                                            if isinstance(m.get("lag"), int) and "name" in m}))
        leader = role_holder(doc, "leader")
        seen = (leader, faults.member_entry(doc, leader or "").get("timeline"), role_holder(doc, "sync_standby"))
        if doc is None or seen == self._seen:
            return
        self._seen = seen
        sync = f", sync standby {seen[2]}" if seen[2] else ""
        self.note(f"Patroni: leader {leader} (timeline {seen[1]}){sync}" if leader else "Patroni: no leader")

    def wait_ack(self, since: float, avoid_port: int | None = None, avoid: str | None = None,
                 timeout: float | None = None) -> Attempt | None:
        """Wait for a write sent after ``since`` and acknowledged by a server other than ``avoid_port``."""
        limit = timeout if timeout is not None else self.settings.rto_budget_s + 10
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.watch(avoid)
            found = next((a for a in writer.read_attempts(self.log)
                          if a.ok and a.sent >= since and a.port != avoid_port), None)
            if found is not None:
                return found
            time.sleep(0.2)
        self.note(f"no acknowledged write within {limit:.0f} s")
        return None

    def hold(self, seconds: float, avoid: str | None = None) -> None:
        """Keep the fault in place for ``seconds`` while watching Patroni."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.watch(avoid)
            time.sleep(0.3)

    def wait_rejoin(self, name: str, since: float) -> tuple[float | None, int | None]:
        """Seconds from ``since`` until ``name`` streams again as a replica, and its lag then."""
        deadline = time.monotonic() + self.settings.rejoin_budget_s
        while time.monotonic() < deadline:
            self.watch()
            status = faults.member_status(self.spec, name)
            if faults.streaming_replica(status):
                elapsed = round(time.time() - since, 2)
                leader = role_holder(faults.cluster_doc(self.spec), "leader") or ""
                lag = faults.replica_lag(faults.member_status(self.spec, leader), status)
                self.note(f"{name} streams again on timeline {status.get('timeline')} (lag {lag} bytes)")
                return elapsed, lag
            time.sleep(0.3)
        self.note(f"{name} did not stream again within {self.settings.rejoin_budget_s:.0f} s")
        return None, None

    def healthy_then_tail(self) -> None:
        """Wait until the whole cluster is healthy, then keep writing a little longer."""
        try:
            self.engine.wait_healthy(self.spec, self.settings.healthy_timeout_s)
            self.note("cluster healthy again")
        except ClusterUnhealthy as err:
            self.problems.append(err.one_line())
        time.sleep(self.settings.tail_s)

    # -- judging --------------------------------------------------------------------------------

    def finish(self, fault_at: float, leader_before: str, expect: Expectation,
               rejoin: tuple[float | None, int | None] = (None, None), evidence: Evidence | None = None) -> DrillResult:
        """Read back every id, judge (with ``evidence``: timeline histories, the old-primary probe), and save
        verdict.json, timeline.png and lag.png next to the writer's log."""
        attempts = writer.read_attempts(self.log)
        leader_after, primary_ids, replica_ids = self._read_back(attempts)
        seen = Observed(fault_at=fault_at, leader_before=leader_before, leader_after=leader_after,
                        primary_ids=primary_ids, replica_ids=replica_ids, rejoin_s=rejoin[0], rejoin_lag=rejoin[1],
                        events=self.events, notes=self.notes, problems=self.problems, evidence=evidence or Evidence())
        verdict = judge(self.scenario, attempts, seen, expect)
        workdir.write_private(f"{self.dir}/verdict.json", json.dumps(verdict.to_dict(), indent=2).encode())
        self._save_pictures(verdict, attempts, fault_at, old_primary_port(attempts, fault_at) if expect.leader_change else None)
        return DrillResult(verdict, self.dir)

    def _save_pictures(self, verdict: Verdict, attempts: list[Attempt], fault_at: float, old_port: int | None) -> None:
        """timeline.png and lag.png beside verdict.json (see :mod:`dbtier.pictures`)."""
        title = f"{self.spec.name}: {self.scenario} ({'passed' if verdict.passed else 'FAILED'})"
        series = pictures.timeline_series(attempts, fault_at, verdict.timeline, verdict.leader_before, old_port)
        workdir.write_private(f"{self.dir}/timeline.png", pictures.timeline_png(series, title, verdict.rto_s))
        lags = pictures.lag_series(self.lags, fault_at)
        workdir.write_private(f"{self.dir}/lag.png", pictures.lag_png(lags, f"{title}: replication lag"))

    def _read_back(self, attempts: list[Attempt]) -> tuple[str | None, frozenset[int], dict[str, frozenset[int]]]:
        leader = role_holder(faults.cluster_doc(self.spec), "leader")
        if leader is None:
            self.problems.append("no leader to read the written ids back from")
            return None, frozenset(), {}
        primary = self._ids(leader)
        wanted = {a.id for a in attempts if a.ok} & primary
        replicas = {m.name: self._ids(m.name, wanted) for m in pg_members(self.spec) if m.name != leader}
        return leader, primary, replicas

    def _ids(self, name: str, wanted: set[int] | None = None, timeout: float = 15.0) -> frozenset[int]:
        """The ids ``name`` holds; for a replica, wait (up to ``timeout``) until it holds ``wanted``."""
        import psycopg

        member = pg_member(self.spec, name)
        info = conninfo(self.spec, member.host, member.pg_port, self.spec.app.user, self.spec.app.database)
        deadline, error, ids = time.monotonic() + timeout, "", None
        while time.monotonic() < deadline:
            try:
                ids = drill_writer.read_ids(info, self._password, self.id)
            except psycopg.Error as err:
                error = type(err).__name__
            else:
                if wanted is None or wanted <= ids:
                    return ids
            time.sleep(0.3)
        if ids is None:
            self.problems.append(f"could not read the written ids on {name}: {error}")
        return ids or frozenset()

    def expect(self, leader_change: bool | None, rejoin: str | None = None, max_gap_s: float | None = None,
               zero_loss: bool | None = None) -> Expectation:
        return Expectation(
            leader_change=leader_change,
            zero_loss=self.zero_loss if zero_loss is None else zero_loss,
            rto_budget_s=self.settings.rto_budget_s,
            max_gap_s=max_gap_s,
            rejoin_member=rejoin,
            rejoin_budget_s=self.settings.rejoin_budget_s if rejoin else None,
        )


# -- the scenarios ------------------------------------------------------------------------------


def crash(drill: Drill, pause_wal_senders_s: float = 0.0, expect_zero_loss: bool | None = None) -> DrillResult:
    """SIGKILL the leader's Patroni and postmaster; a replica must take over and the leader rejoin.

    ``pause_wal_senders_s`` first stops the leader's WAL senders for that long, so that
    in asynchronous mode acknowledged writes never reach a replica (the checker must count them).
    """
    spec, leader = drill.spec, drill.leader()
    with drill.writing():
        if pause_wal_senders_s > 0:
            paused = faults.pause_wal_senders(drill.provider, spec, leader)
            drill.note(f"paused {len(paused)} WAL sender(s) of {leader} for {pause_wal_senders_s:g} s")
            time.sleep(pause_wal_senders_s)
        fault_at = drill.fault(f"SIGKILL {leader}'s Patroni and postmaster",
                               lambda: faults.crash_member(drill.provider, spec, leader))
        drill.on_restore(f"start {leader} again", lambda: faults.restart_service(drill.provider, spec, leader))
        drill.wait_ack(fault_at, avoid_port=drill.port(leader), avoid=leader)
        rejoin = drill.wait_rejoin(leader, drill.restore())
        drill.healthy_then_tail()
    return drill.finish(fault_at, leader, drill.expect(True, leader, zero_loss=expect_zero_loss), rejoin)


def freeze(drill: Drill) -> DrillResult:
    """SIGSTOP the leader for longer than the ttl, then SIGCONT: it must demote itself and rejoin."""
    spec, leader = drill.spec, drill.leader()
    with drill.writing():
        frozen: list[int] = []
        fault_at = drill.fault(f"SIGSTOP {leader}'s Patroni, postmaster and backends",
                               lambda: frozen.extend(faults.freeze_member(drill.provider, spec, leader)))
        drill.on_restore(f"SIGCONT {leader}", lambda: faults.thaw(drill.provider, spec, leader, frozen))
        drill.wait_ack(fault_at, avoid_port=drill.port(leader), avoid=leader)
        drill.hold(max(0.0, fault_at + spec.pg.patroni.ttl + spec.pg.patroni.loop_wait - time.time()), avoid=leader)
        rejoin = drill.wait_rejoin(leader, drill.restore())
        drill.healthy_then_tail()
    return drill.finish(fault_at, leader, drill.expect(True, leader), rejoin)


def switchover(drill: Drill) -> DrillResult:
    """A planned switchover through Patroni's REST API (to the sync standby in synchronous mode)."""
    spec, leader = drill.spec, drill.leader()
    candidate = drill.sync_standby() or next(m.name for m in pg_members(spec) if m.name != leader)
    with drill.writing():
        fault_at = drill.fault(f"switchover {leader} -> {candidate}",
                               lambda: faults.switchover(spec, leader, candidate, drill.rest_login))
        drill.wait_ack(fault_at, avoid_port=drill.port(leader))
        rejoin = drill.wait_rejoin(leader, fault_at)
        drill.healthy_then_tail()
    return drill.finish(fault_at, leader, drill.expect(True, leader), rejoin)


def replica_loss(drill: Drill) -> DrillResult:
    """Kill a replica (the sync standby in synchronous mode); writes must go on."""
    spec, leader = drill.spec, drill.leader()
    sync = drill.sync_standby()
    victim = sync or next(m.name for m in pg_members(spec) if m.name != leader)
    with drill.writing():
        fault_at = drill.fault(f"SIGKILL replica {victim}", lambda: faults.crash_member(drill.provider, spec, victim))
        drill.on_restore(f"start {victim} again", lambda: faults.restart_service(drill.provider, spec, victim))
        drill.hold(drill.settings.replica_loss_hold_s)
        after = role_holder(faults.cluster_doc(spec), "sync_standby")
        if sync:
            drill.notes.append(f"synchronous standby while {victim} was down: {after or 'none (degraded)'}")
        rejoin = drill.wait_rejoin(victim, drill.restore())
        drill.healthy_then_tail()
    return drill.finish(fault_at, leader, drill.expect(False, victim, max_gap_s=drill.settings.rto_budget_s), rejoin)


def etcd_member_loss(drill: Drill) -> DrillResult:
    """Kill one etcd member of three (the etcd leader): no write may stall for more than a second."""
    spec, leader = drill.spec, drill.leader()
    states = etcd.member_states(spec)
    victim = next((n for n, s in states.items() if s == "leader"), sorted(states)[0])
    with drill.writing():
        fault_at = drill.fault(f"SIGKILL etcd member {victim} (the etcd leader)",
                               lambda: faults.kill_service(drill.provider, spec, victim))
        drill.on_restore(f"start {victim} again", lambda: faults.restart_service(drill.provider, spec, victim))
        drill.hold(drill.settings.etcd_member_loss_hold_s)
        drill.restore()
        drill.notes.append(drill.engine.wait_consensus(spec))
        drill.healthy_then_tail()
    expect = drill.expect(False, max_gap_s=drill.settings.etcd_member_loss_max_gap_s)
    return drill.finish(fault_at, leader, expect)


def etcd_quorum_loss(drill: Drill) -> DrillResult:
    """Kill two etcd members of three; with failsafe_mode the primary must stay writable."""
    spec, leader = drill.spec, drill.leader()
    states = etcd.member_states(spec)
    victims = sorted(states, key=lambda n: states[n] != "leader")[:2]
    hold = quorum_loss_hold(spec, drill.settings)
    with drill.writing():
        fault_at = drill.fault(f"SIGKILL etcd members {' and '.join(victims)} (quorum lost)",
                               lambda: "; ".join(faults.kill_service(drill.provider, spec, v) for v in victims))
        drill.on_restore(f"start {' and '.join(victims)} again",
                         lambda: "; ".join(faults.restart_service(drill.provider, spec, v) for v in victims))
        drill.hold(hold)
        drill.notes.append(_quorum_loss_story(writer.read_attempts(drill.log), fault_at, hold))
        drill.restore()
        drill.notes.append(drill.engine.wait_consensus(spec))
        drill.healthy_then_tail()
    expect = drill.expect(False, max_gap_s=drill.settings.quorum_loss_max_gap_s)
    return drill.finish(fault_at, leader, expect)


def _quorum_loss_story(attempts: list[Attempt], fault_at: float, hold: float) -> str:
    during = [a for a in attempts if a.sent >= fault_at]
    ok = [a for a in during if a.ok]
    if ok and max(a.done for a in ok) >= fault_at + hold - 1.0:
        return f"the primary stayed writable for the whole {hold:.0f} s without etcd quorum ({len(ok)} writes acknowledged)"
    last = max((a.done for a in ok), default=fault_at)
    return f"writes stopped {last - fault_at:.1f} s after etcd lost quorum ({len(ok)} acknowledged, {len(during) - len(ok)} failed)"


SCENARIO_FUNCS: dict[str, Callable[[Drill], DrillResult]] = {
    "crash": crash,
    "freeze": freeze,
    "switchover": switchover,
    "replica-loss": replica_loss,
    "etcd-member-loss": etcd_member_loss,
    "etcd-quorum-loss": etcd_quorum_loss,
    **network.SCENARIOS,  # partition-primary, partition-replica, etcd-minority, lossy-network, host-freeze, host-crash
}


def run(spec: ClusterSpec, scenario: str, settings: DrillSettings, password: str,
        provider: Provider | None = None, rest_login: Login | None = None) -> DrillResult:
    """Run one scenario on a healthy cluster and return its verdict (the cluster is healthy again after).
    ``provider``: how to reach the members (the flows hand in theirs; default: the library's); ``rest_login``:
    Patroni REST's login (:func:`dbtier.engines.postgres.control_plane.rest_login`), which a switchover needs."""
    if scenario not in SCENARIO_FUNCS:
        raise DbtierError(f"scenario: unknown {scenario!r}; choose one of {', '.join(SCENARIO_FUNCS)} or drill-all")
    get_engine(spec).wait_healthy(spec, settings.healthy_timeout_s)
    drill = Drill(spec, settings, password, scenario, provider, rest_login)
    # In synchronous mode Patroni promotes only the named sync standby: drill only once it has one.
    drill.sync_standby()
    return SCENARIO_FUNCS[scenario](drill)
