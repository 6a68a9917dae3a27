"""Network and whole-host drills: cut a host off, lose packets, freeze or crash a whole host, under write load.

Network faults are nftables rules (:mod:`dbtier.drills.nft`) in the network namespace of the member's own host,
installed as root there (:meth:`~dbtier.providers.base.Provider.root_runner`), each with a guard on the host that
deletes them after a bound even if the flow dies; the drill deletes them itself on its way out. Host faults go
through :meth:`~dbtier.providers.base.Provider.power`. Clients (the machine that runs the drill and its writer)
always reach every host. A drill that ends with a new primary is also judged on the old primary's window (a
probe writer pinned to it) and on every member's timeline history (:mod:`dbtier.drills.history`).

Scenarios that the cluster's placement or provider cannot run say why in one line (:func:`cannot_run`):
``drill-all`` skips them, a drill named on its own is refused.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dbtier.drills import history, nft, writer
from dbtier.engines.postgres import drill_writer
from dbtier.engines.postgres import faults
from dbtier.drills.history import MemberHistory
from dbtier.drills.verdict import Attempt, Evidence, Expectation
from dbtier.engines.postgres import etcd
from dbtier.errors import CommandFailed, DbtierError, Refused
from dbtier.power import HostPower
from dbtier.providers.base import Provider, RootRunner, get_provider
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import client_dsn, etcd_members, pg_member, pg_members

if TYPE_CHECKING:  # scenarios.py registers these scenarios, so it imports this module
    from dbtier.drills.verdict import DrillResult
    from dbtier.engines.postgres.scenarios import Drill

NETWORK_SCENARIOS = ("partition-replica", "etcd-minority", "lossy-network", "partition-primary")
HOST_SCENARIOS = ("host-freeze", "host-crash")
#: Share of packets ``lossy-network`` drops on the primary's host, in %.
LOSS_PERCENT = 10
#: The longest write stall ``lossy-network`` allows: a statement the writer gives up on (2 s) and a reconnect.
LOSSY_MAX_GAP_S = 5.0
#: How long a partitioned old primary stays cut off after the new primary's first acknowledged write.
AFTER_NEW_PRIMARY_S = 5.0
#: What a fault's guard on the host adds to the longest time the drill means to hold the fault.
GUARD_MARGIN_S = 120.0
LAB_HINT = "try `dbtier lab up`"


# -- what a scenario needs (one line when it cannot run) -------------------------------------------------------


def placement_refusal(spec: ClusterSpec, scenario: str) -> str | None:
    """Why the members' placement cannot carry ``scenario``, or None (pure).

    >>> placement_refusal(ClusterSpec(), "partition-primary")
    'scenario: partition-primary needs members on separate hosts (pg0, pg1, pg2 all on 127.0.0.1): try `dbtier lab up`'
    >>> placement_refusal(ClusterSpec(), "crash") is None
    True
    """
    if scenario not in NETWORK_SCENARIOS + HOST_SCENARIOS:
        return None
    members = pg_members(spec)
    hosts = {m.host for m in members}
    if len(members) < 2 or spec.pg.etcd_size(spec.members) < 3:
        return (f"scenario: {scenario} needs at least 2 members and 3 etcd members (the cluster has {len(members)} "
                f"and {spec.pg.etcd_size(spec.members)}): set members and etcd_members")
    if len(hosts) < len(members):
        shared = ", ".join(m.name for m in members)
        where = f"all on {members[0].host}" if len(hosts) == 1 else f"on {len(hosts)} hosts"
        return f"scenario: {scenario} needs members on separate hosts ({shared} {where}): {LAB_HINT}"
    return None


def cannot_run(spec: ClusterSpec, scenario: str, provider: Provider | None = None) -> str | None:
    """Why ``scenario`` cannot run on this cluster with its provider, in one line, or None (any other scenario)."""
    why = placement_refusal(spec, scenario)
    if why or scenario not in NETWORK_SCENARIOS + HOST_SCENARIOS:
        return why
    provider = provider or get_provider(spec)
    if scenario in NETWORK_SCENARIOS:
        if provider.root_runner(spec, pg_members(spec)[0].host) is None:
            return f"scenario: {scenario} needs root on each member's own host, which provider {provider.name} " \
                   f"does not give: {LAB_HINT}"
        return None
    if provider.power(spec) is None:
        return (f"scenario: {scenario} needs power over whole hosts (freeze, power loss, boot), which provider "
                f"{provider.name} does not have: run it on a `dbtier lab` or a proxmox cluster")
    if scenario == "host-crash":
        for member in pg_members(spec):
            if provider.supervisor(spec, member.host).kind != "systemd":
                return (f"scenario: host-crash needs members run by enabled systemd units, so that they start when "
                        f"the host boots; {member.host} runs them as detached processes: set ssh.services: auto "
                        "on hosts whose init is systemd")
    return None


def _refuse(drill: Drill) -> None:
    why = cannot_run(drill.spec, drill.scenario, drill.provider)
    if why:
        raise Refused(why)


def other_hosts(spec: ClusterSpec, host: str) -> list[str]:
    """Every address of the cluster's members (PostgreSQL and etcd) but ``host``: the peers a partition cuts.

    >>> other_hosts(ClusterSpec(), "127.0.0.1"), other_hosts(ClusterSpec(), "198.18.11.9")
    ([], ['127.0.0.1'])
    """
    return sorted(({m.host for m in pg_members(spec)} | {e.host for e in etcd_members(spec)}) - {host})


def etcd_ports(spec: ClusterSpec) -> list[int]:
    """
    >>> etcd_ports(ClusterSpec())
    [2379, 2380, 2381, 2382, 2383, 2384]
    """
    return sorted(p for e in etcd_members(spec) for p in (e.client_port, e.peer_port))


# -- the faults ----------------------------------------------------------------------------------------------


def install(root: RootRunner, rules: str, guard_s: float) -> str:
    """Load ``rules`` into the drill's table on the host, after starting the guard that deletes it."""
    try:
        done = root.run_as_root(nft.install_argv(rules, guard_s), timeout=60)
    except CommandFailed as err:
        said = [line.strip() for line in (err.err or err.out).splitlines() if line.strip()]
        why = next((line for line in said if "Error:" in line), said[0] if said else f"exit code {err.rc}")
        raise DbtierError(f"{root.host}: loading the drill's nft rules failed ({why}); the host needs "
                          "nftables (scripts/host-setup.sh installs it) and root in its own network namespace") from None
    return f"{root.host}: nft table {nft.FAMILY} {nft.TABLE} loaded; {done.out.strip()} deletes it after " \
           f"{guard_s:.0f} s should the drill not"


def remove(root: RootRunner) -> str:
    """Stop the guard and delete the drill's table on the host; say how many packets it dropped."""
    dropped = _dropped(root)
    done = root.run_as_root(nft.remove_argv(), timeout=60)
    if done.out.strip().endswith("removed"):
        counted = "" if dropped is None else f" after dropping {dropped} packets"
        return f"{root.host}: nft table {nft.FAMILY} {nft.TABLE} deleted{counted}"
    return f"{root.host}: no drill table left to delete (its guard had deleted it)"


def _dropped(root: RootRunner) -> int | None:
    try:
        return nft.dropped_packets(json.loads(root.run_as_root(nft.list_argv(), timeout=30).out))
    except (CommandFailed, ValueError):
        return None


def _root(drill: Drill, host: str) -> RootRunner:
    root = drill.provider.root_runner(drill.spec, host)
    if root is None:
        raise Refused(f"scenario: {drill.scenario} needs root on {host}, which provider {drill.provider.name} "
                      f"does not give: {LAB_HINT}")
    return root


def cut(drill: Drill, host: str, rules: str, hold_s: float, what: str) -> float:
    """Apply ``rules`` on ``host`` as the drill's fault (its removal registered first); return the fault's moment."""
    root = _root(drill, host)
    drill.on_restore(f"delete the drill's nft table on {host}", lambda: remove(root))
    return drill.fault(what, lambda: install(root, rules, hold_s + GUARD_MARGIN_S))


def _power(drill: Drill) -> HostPower:
    power = drill.provider.power(drill.spec)
    if power is None:  # cannot_run said so already; kept for mypy and for direct calls
        raise Refused(f"scenario: {drill.scenario} needs power over whole hosts, which provider "
                      f"{drill.provider.name} does not have")
    return power


@contextmanager
def old_primary_probe(drill: Drill, name: str) -> Iterator[str]:
    """A second writer pinned to member ``name`` (read-write sessions only) for the block; yields its log.

    It counts what the old primary acknowledges after the new primary's first write (the window).
    """
    spec, member = drill.spec, pg_member(drill.spec, name)
    dsn = client_dsn(spec, members=[member])
    log, err = f"{drill.dir}/old-primary-probe.jsonl", f"{drill.dir}/old-primary-probe.err"
    argv = drill_writer.writer_argv(dsn, f"{drill.id}-probe", log, drill.settings.write_interval_ms,
                              drill.settings.write_timeout_s)
    proc = drill_writer.start_writer(argv, drill._password, err)  # the app password the drill was handed
    try:
        yield log
    finally:
        drill.notes.append(f"old-primary probe on {name}: {writer.stop_writer(proc, err)}")


# -- reading what happened ------------------------------------------------------------------------------------


def read_histories(drill: Drill) -> dict[str, MemberHistory]:
    """Every member's timeline (Patroni's ``/patroni``) and history files (its data directory, through its runner)."""
    found: dict[str, MemberHistory] = {}
    for member in pg_members(drill.spec):
        try:
            runner = drill.provider.runner(drill.spec, member.host)
            dump = runner.run(["sh", "-c", history.DUMP_SCRIPT, "sh", member.data_dir], check=False, timeout=30)
        except DbtierError as err:
            drill.notes.append(f"could not read {member.name}'s timeline history: {err.one_line()}")
            continue
        timeline = faults.member_status(drill.spec, member.name, timeout=3).get("timeline")
        found[member.name] = MemberHistory(member.name, timeline if isinstance(timeline, int) else None,
                                           history.parse_dump(dump.out))
    return found


def rewind_story(name: str, lines: list[str]) -> str:
    """What the old primary's Patroni log (since the fault) says about pg_rewind.

    >>> rewind_story("pg0", ["2026 INFO: running pg_rewind from host=x", "2026 INFO: pg_rewind exit code=0"])
    'pg0 rejoined through pg_rewind (exit code 0)'
    >>> rewind_story("pg0", ["2026 INFO: Local timeline=1 lsn=0/5000028", "2026 INFO: primary_timeline=2"])
    "pg0 compared its timeline with the new primary's and needed no pg_rewind (its WAL had not passed the switch)"
    >>> rewind_story("pg0", [])
    "pg0's Patroni log since the fault says nothing about pg_rewind"
    """
    codes = [line.rsplit("=", 1)[-1].strip() for line in lines if "pg_rewind exit code=" in line]
    if codes:
        return f"{name} rejoined through pg_rewind (exit code {codes[-1]})" if codes[-1] == "0" else \
            f"pg_rewind on {name} exited {codes[-1]}"
    if any("Failed to rewind" in line for line in lines):
        return f"{name} failed to rewind: {next(line for line in lines if 'Failed to rewind' in line).split(': ', 1)[-1]}"
    if any("Local timeline=" in line for line in lines):
        return f"{name} compared its timeline with the new primary's and needed no pg_rewind (its WAL had not " \
               "passed the switch)"
    return f"{name}'s Patroni log since the fault says nothing about pg_rewind"


def _log_mark(drill: Drill, name: str) -> int:
    """How many lines member ``name``'s Patroni log has now (0 when it cannot be read)."""
    service = faults.service_named(drill.spec, name)
    runner = drill.provider.runner(drill.spec, service.host)
    done = runner.run(["sh", "-c", 'wc -l < "$1" 2>/dev/null || echo 0', "sh", service.logfile], check=False)
    return int(done.out.strip() or 0) if done.out.strip().isdigit() else 0


def _log_since(drill: Drill, name: str, mark: int) -> list[str]:
    service = faults.service_named(drill.spec, name)
    runner = drill.provider.runner(drill.spec, service.host)
    done = runner.run(["sh", "-c", 'tail -n "+$2" "$1" | grep -i -e rewind -e "Local timeline=" | tail -n 20',
                       "sh", service.logfile, str(mark + 1)], check=False)
    return done.out.splitlines()


def _failover_evidence(drill: Drill, probe_log: str) -> Evidence:
    return Evidence(histories=read_histories(drill), old_primary_probe=writer.read_attempts(probe_log))


def _with_window(drill: Drill, expect: Expectation) -> Expectation:
    """In synchronous mode the old primary may acknowledge nothing after the new primary's first write."""
    return dataclasses.replace(expect, max_old_primary_window=0 if drill.zero_loss else None)


def _acked_during(attempts: list[Attempt], since: float, until: float) -> str:
    during = [a for a in attempts if since <= a.sent < until]
    ok = sum(1 for a in during if a.ok)
    return f"{ok} of {len(during)} writes acknowledged while the fault held"


# -- the scenarios ----------------------------------------------------------------------------------------------


def partition_primary(drill: Drill) -> DrillResult:
    """Cut the primary's host off from etcd and the other members (clients still reach it): it must stop
    acknowledging writes before a replica takes over, and rejoin (pg_rewind) once the partition heals."""
    _refuse(drill)
    spec, leader = drill.spec, drill.leader()
    host, peers = pg_member(spec, leader).host, other_hosts(spec, pg_member(spec, leader).host)
    mark = _log_mark(drill, leader)
    hold = drill.settings.rto_budget_s + 10 + AFTER_NEW_PRIMARY_S
    with drill.writing(), old_primary_probe(drill, leader) as probe_log:
        fault_at = cut(drill, host, nft.partition(peers, f"partition-primary {leader}"), hold,
                       f"partition {leader}'s host {host} from {', '.join(peers)} (clients still reach it)")
        drill.wait_ack(fault_at, avoid_port=drill.port(leader), avoid=leader)
        drill.hold(AFTER_NEW_PRIMARY_S, avoid=leader)
        rejoin = drill.wait_rejoin(leader, drill.restore())
        drill.notes.append(rewind_story(leader, _log_since(drill, leader, mark)))
        drill.healthy_then_tail()
    expect = _with_window(drill, drill.expect(True, leader))
    return drill.finish(fault_at, leader, expect, rejoin, _failover_evidence(drill, probe_log))


def partition_replica(drill: Drill) -> DrillResult:
    """Cut a replica's host (the sync standby in synchronous mode) off from the others: writes go on, the
    leader stays, the replica streams again once the partition heals."""
    _refuse(drill)
    spec, leader = drill.spec, drill.leader()
    victim = drill.sync_standby() or next(m.name for m in pg_members(spec) if m.name != leader)
    host = pg_member(spec, victim).host
    hold = float(spec.pg.patroni.ttl + spec.pg.patroni.loop_wait)
    with drill.writing():
        fault_at = cut(drill, host, nft.partition(other_hosts(spec, host), f"partition-replica {victim}"), hold,
                       f"partition replica {victim}'s host {host} from the other members and etcd")
        drill.hold(hold)
        rejoin = drill.wait_rejoin(victim, drill.restore())
        drill.healthy_then_tail()
    expect = drill.expect(False, victim, max_gap_s=drill.settings.rto_budget_s)
    return drill.finish(fault_at, leader, expect, rejoin, Evidence(histories=read_histories(drill)))


def etcd_minority(drill: Drill) -> DrillResult:
    """Cut one etcd member (the etcd leader unless it shares the primary's host) off from the others on the
    etcd ports: the majority keeps quorum, the primary stays, writes do not stall."""
    _refuse(drill)
    spec, leader = drill.spec, drill.leader()
    primary_host = pg_member(spec, leader).host
    states = etcd.member_states(spec)
    away = [e for e in etcd_members(spec) if e.host != primary_host]
    victim = next((e for e in away if states.get(e.name) == "leader"), away[0])
    role = " (the etcd leader)" if states.get(victim.name) == "leader" else ""
    hold = float(max(spec.pg.patroni.ttl, drill.settings.etcd_member_loss_hold_s))
    rules = nft.cut_ports(other_hosts(spec, victim.host), etcd_ports(spec), f"etcd-minority {victim.name}")
    with drill.writing():
        fault_at = cut(drill, victim.host, rules, hold,
                       f"cut etcd member {victim.name}{role} on {victim.host} off from the other etcd members")
        drill.hold(hold)
        drill.restore()
        drill.notes.append(drill.engine.wait_consensus(spec))
        drill.healthy_then_tail()
    expect = drill.expect(False, max_gap_s=drill.settings.etcd_member_loss_max_gap_s)
    return drill.finish(fault_at, leader, expect)


def lossy_network(drill: Drill) -> DrillResult:
    """Drop a share of the packets on the primary's host (both ways, SSH spared): the cluster stays writable
    with the same primary."""
    _refuse(drill)
    spec, leader = drill.spec, drill.leader()
    host = pg_member(spec, leader).host
    hold = float(spec.pg.patroni.ttl + 2 * spec.pg.patroni.loop_wait)
    with drill.writing():
        fault_at = cut(drill, host, nft.packet_loss(LOSS_PERCENT, f"lossy-network {leader}"), hold,
                       f"drop {LOSS_PERCENT} % of the packets on {leader}'s host {host}")
        drill.hold(hold)
        drill.notes.append(_acked_during(writer.read_attempts(drill.log), fault_at, fault_at + hold))
        drill.restore()
        drill.healthy_then_tail()
    return drill.finish(fault_at, leader, drill.expect(False, max_gap_s=LOSSY_MAX_GAP_S))


def _host_fault(drill: Drill, what: str, act: Callable[[HostPower, str], str], undo: str,
                back: Callable[[HostPower, str], str], hold_ttl: bool) -> DrillResult:
    """The primary's whole host stops (``act``) until a replica has taken over, then comes back (``back``)."""
    _refuse(drill)
    spec, leader, power = drill.spec, drill.leader(), _power(drill)
    host = pg_member(spec, leader).host
    with drill.writing(), old_primary_probe(drill, leader) as probe_log:
        drill.on_restore(f"{undo} {host}", lambda: back(power, host))
        fault_at = drill.fault(f"{what} {leader}'s host {host}", lambda: act(power, host))
        drill.wait_ack(fault_at, avoid_port=drill.port(leader), avoid=leader)
        if hold_ttl:  # a frozen host's Patroni must find its leader key gone when it wakes
            drill.hold(max(0.0, fault_at + spec.pg.patroni.ttl + spec.pg.patroni.loop_wait - time.time()), avoid=leader)
        rejoin = drill.wait_rejoin(leader, drill.restore())
        drill.healthy_then_tail()
    expect = _with_window(drill, drill.expect(True, leader))
    return drill.finish(fault_at, leader, expect, rejoin, _failover_evidence(drill, probe_log))


def host_freeze(drill: Drill) -> DrillResult:
    """Pause every process of the primary's host (a paused VM) past the ttl, then resume it: a replica takes
    over, the old primary must not acknowledge writes when it wakes, and rejoins."""
    return _host_fault(drill, "freeze", lambda p, h: p.freeze(h), "thaw", lambda p, h: p.thaw(h), hold_ttl=True)


def host_crash(drill: Drill) -> DrillResult:
    """Power loss on the primary's host, then boot it from its disk: its members come back through their
    enabled systemd units and rejoin."""
    return _host_fault(drill, "power loss on", lambda p, h: p.kill(h), "boot", lambda p, h: p.boot(h),
                       hold_ttl=False)


SCENARIOS: dict[str, Callable[[Drill], DrillResult]] = {
    "partition-primary": partition_primary,
    "partition-replica": partition_replica,
    "etcd-minority": etcd_minority,
    "lossy-network": lossy_network,
    "host-freeze": host_freeze,
    "host-crash": host_crash,
}
