"""Fault injection: break one thing, by pid through the Runner or through Patroni's REST API.

Every pid is checked before it gets a signal (pid file plus ``/proc/PID/cmdline``,
or parentage from our own postmaster), so a drill can only ever touch its own
cluster's processes. Each function returns a sentence saying what it did.
"""

from __future__ import annotations

import time
from typing import Any

from dbtier import bootstrap, procs
from dbtier.engines.base import get_engine
from dbtier.engines.postgres import patroni_rest
from dbtier.engines.postgres.control_plane import Login
from dbtier.engines.postgres.engine import fetch_cluster
from dbtier.errors import ControlPlaneError, DbtierError
from dbtier.procs import Service
from dbtier.providers.base import Provider, Runner
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import PgMember, pg_member, pg_members

# -- reading the cluster -----------------------------------------------------------------------


def cluster_doc(spec: ClusterSpec, avoid: str | None = None, timeout: float = 1.0) -> dict[str, Any] | None:
    """Patroni's ``/cluster`` from the first member that answers, skipping ``avoid`` (a frozen one)."""
    return fetch_cluster(spec, timeout=timeout, avoid=avoid)


def member_status(spec: ClusterSpec, name: str, timeout: float = 1.0) -> dict[str, Any]:
    """Member ``name``'s own ``/patroni`` document (empty when it does not answer)."""
    return patroni_rest.get_json(spec, pg_member(spec, name), "/patroni", timeout) or {}


def streaming_replica(status: dict[str, Any]) -> bool:
    """True when a member's own ``/patroni`` says it runs as a replica and streams.

    >>> streaming_replica({"state": "running", "role": "replica", "replication_state": "streaming"})
    True
    >>> streaming_replica({"state": "starting", "role": "replica"})
    False
    """
    return (status.get("state") == "running" and status.get("role") in ("replica", "sync_standby", "quorum_standby")
            and status.get("replication_state") == "streaming")


def replica_lag(leader_status: dict[str, Any], replica_status: dict[str, Any]) -> int | None:
    """Bytes the replica has yet to receive, from both members' ``/patroni`` documents.

    >>> replica_lag({"xlog": {"location": 500}}, {"xlog": {"received_location": 420}})
    80
    """
    leader_at = leader_status.get("xlog", {}).get("location")
    replica_at = replica_status.get("xlog", {}).get("received_location")
    if not isinstance(leader_at, int) or not isinstance(replica_at, int):
        return None
    return max(0, leader_at - replica_at)


def member_entry(doc: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """The ``/cluster`` entry of member ``name`` (empty when it is not listed)."""
    return next((m for m in (doc or {}).get("members", []) if m.get("name") == name), {})


def service_named(spec: ClusterSpec, name: str) -> Service:
    return next(s for s in bootstrap.all_services(get_engine(spec), spec) if s.name == name)


# -- finding our processes ---------------------------------------------------------------------


def parse_ps(out: str) -> list[tuple[int, str]]:
    """``ps -o pid=,stat=,args=`` lines as (pid, rest), zombies left out.

    >>> parse_ps(" 12 S postgres: walsender\\n 13 Z [postgres] <defunct>\\n")
    [(12, 'S postgres: walsender')]
    """
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].isdigit() and not parts[1].startswith("Z"):
            rows.append((int(parts[0]), parts[1]))
    return rows


def _children(runner: Runner, parent: int) -> list[tuple[int, str]]:
    """The live children of ``parent`` with their state and command line, in one command (cheap over SSH)."""
    done = runner.run(["ps", "-o", "pid=,stat=,args=", "--ppid", str(parent)], check=False)
    return parse_ps(done.out)


def child_pids(runner: Runner, parent: int) -> list[int]:
    """The live children of ``parent``."""
    return [pid for pid, _ in _children(runner, parent)]


def _alive(runner: Runner, pids: list[int]) -> list[int]:
    done = runner.run(["ps", "-o", "pid=,stat=,args=", "-p", ",".join(map(str, pids))], check=False)
    return [pid for pid, _ in parse_ps(done.out)]


def postmaster_pid(runner: Runner, member: PgMember) -> int | None:
    """The member's postmaster, when its ``postmaster.pid`` points at a live postgres of that data dir."""
    pid = procs.read_pid(runner, f"{member.data_dir}/postmaster.pid")
    if pid is not None and procs.pid_matches(runner, pid, member.data_dir):
        return pid
    return None


def member_pids(provider: Provider, spec: ClusterSpec, name: str) -> list[int]:
    """Patroni, the postmaster and the postmaster's children of member ``name``."""
    member, service = pg_member(spec, name), service_named(spec, name)
    runner = provider.runner(spec, member.host)
    pids = [p for p in (procs.running_pid(runner, service),) if p is not None]
    postmaster = postmaster_pid(runner, member)
    if postmaster is not None:
        pids += [postmaster, *child_pids(runner, postmaster)]
    return pids


def wal_sender_pids(provider: Provider, spec: ClusterSpec, name: str) -> list[int]:
    """The WAL sender processes of member ``name``'s postmaster."""
    member = pg_member(spec, name)
    runner = provider.runner(spec, member.host)
    postmaster = postmaster_pid(runner, member)
    if postmaster is None:
        return []
    return [pid for pid, rest in _children(runner, postmaster) if "walsender" in rest]


def signal_pids(runner: Runner, pids: list[int], signame: str) -> None:
    if pids:
        runner.run(["kill", f"-{signame}", *map(str, pids)], check=False)


def _gone(runner: Runner, pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(runner, pids):
            return True
        time.sleep(0.05)
    return False


# -- the faults --------------------------------------------------------------------------------


def crash_member(provider: Provider, spec: ClusterSpec, name: str) -> str:
    """SIGKILL member ``name``'s Patroni, postmaster and backends, as a host crash would."""
    member = pg_member(spec, name)
    runner = provider.runner(spec, member.host)
    pids = member_pids(provider, spec, name)
    if not pids:
        raise DbtierError(f"crash: {name} has no running process to kill")
    signal_pids(runner, pids, "KILL")
    state = "all gone" if _gone(runner, pids, 10.0) else "some still exiting"
    held = provider.supervisor(spec, member.host).keep_down(runner, service_named(spec, name))
    return " ".join(filter(None, [
        f"SIGKILL sent to {len(pids)} processes of {name} (Patroni, postmaster, its children): {state}.", held]))


def freeze_member(provider: Provider, spec: ClusterSpec, name: str) -> list[int]:
    """SIGSTOP member ``name``'s Patroni, postmaster and backends; return the pids to thaw."""
    member = pg_member(spec, name)
    pids = member_pids(provider, spec, name)
    signal_pids(provider.runner(spec, member.host), pids, "STOP")
    return pids


def thaw(provider: Provider, spec: ClusterSpec, name: str, pids: list[int]) -> str:
    """SIGCONT the processes :func:`freeze_member` (or :func:`pause_wal_senders`) stopped."""
    signal_pids(provider.runner(spec, pg_member(spec, name).host), pids, "CONT")
    return f"SIGCONT sent to {len(pids)} process(es) of {name}"


def pause_wal_senders(provider: Provider, spec: ClusterSpec, name: str) -> list[int]:
    """SIGSTOP the WAL senders of ``name`` so replicas stop receiving; return their pids."""
    pids = wal_sender_pids(provider, spec, name)
    signal_pids(provider.runner(spec, pg_member(spec, name).host), pids, "STOP")
    return pids


def kill_service(provider: Provider, spec: ClusterSpec, name: str) -> str:
    """SIGKILL one service (an etcd member, a replica's Patroni) by its pid file."""
    service = service_named(spec, name)
    runner = provider.runner(spec, service.host)
    pid = procs.running_pid(runner, service)
    if pid is None:
        return f"{name} was not running"
    signal_pids(runner, [pid], "KILL")
    _gone(runner, [pid], 10.0)
    held = provider.supervisor(spec, service.host).keep_down(runner, service)
    return " ".join(filter(None, [f"SIGKILL sent to {name} (pid {pid}).", held]))


def restart_service(provider: Provider, spec: ClusterSpec, name: str) -> str:
    """Start a stopped service again, exactly as provision would."""
    return bootstrap.ensure_running(provider, spec, service_named(spec, name))


def switchover(spec: ClusterSpec, leader: str, candidate: str, login: Login | None) -> str:
    """Ask Patroni for a planned switchover from ``leader`` to ``candidate``."""
    response = patroni_rest.call(spec, pg_member(spec, leader), "POST", "/switchover", login,
                                 {"leader": leader, "candidate": candidate}, timeout=60)
    if response.status_code != 200:
        raise DbtierError(f"switchover {leader} -> {candidate}: {patroni_rest.refusal(spec, response)}")
    return f"switchover {leader} -> {candidate} accepted: {' '.join(response.text.split())[:120]}"


def set_synchronous_mode(spec: ClusterSpec, enabled: bool, login: Login | None) -> str:
    """Turn Patroni's ``synchronous_mode`` on or off in the DCS (a dynamic setting)."""
    said = "no Patroni member answered"
    for member in pg_members(spec):
        try:
            response = patroni_rest.call(spec, member, "PATCH", "/config", login, {"synchronous_mode": enabled}, 10)
        except ControlPlaneError:
            continue
        if response.ok:
            return f"synchronous_mode set to {str(enabled).lower()} through {member.name}"
        said = f"{member.name}: {patroni_rest.refusal(spec, response)}"
    raise DbtierError(f"could not set synchronous_mode to {enabled} through PATCH /config: {said}")


def synchronous_mode(spec: ClusterSpec) -> bool:
    """Patroni's current ``synchronous_mode`` (from the DCS through any member)."""
    for member in pg_members(spec):
        doc = patroni_rest.get_json(spec, member, "/config", timeout=2)
        if doc is not None:
            return bool(doc.get("synchronous_mode", False))
    return spec.pg.synchronous_mode
