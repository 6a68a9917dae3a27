"""One changer per cluster: the lock's holder record, when a held lock is stale, the refusal (pure).

Runs that change a cluster (provision, teardown, backup, restore, the drills) hold the lock
``dbtier-<cluster>-lock``, a Prefect variable whose value is the :class:`Holder`. It is created
atomically (the API refuses a second variable of the same name), so exactly one run gets it.
The Prefect side lives in ``blocks/lock.py``; here only data and decisions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: Flow run states after which a run holds nothing any more.
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})

#: ``run_state`` for a holder whose flow run the API no longer knows.
RUN_GONE = "GONE"


def lock_name(cluster: str) -> str:
    """
    >>> lock_name("orders")
    'dbtier-orders-lock'
    """
    return f"dbtier-{cluster}-lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a cluster's lock: enough for a person to find the run, and for dbtier to tell it is dead.

    ``pid_start`` is the process's start time (clock ticks since boot, ``/proc/PID/stat`` field 22):
    a pid the kernel gave to another process since then does not pass for the holder.
    """

    cluster: str
    flow: str
    host: str
    pid: int
    since: str
    token: str
    pid_start: int | None = None
    run_id: str | None = None
    run_name: str | None = None

    def as_value(self) -> dict[str, Any]:
        """The variable's value (JSON)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_value(cls, value: Any) -> Holder | None:
        """The holder in a variable's value; None when it is not one (hand-made or damaged).

        >>> h = Holder("pg", "backup", "db1", 42, "2026-12-02T01:00:00Z", "t0", pid_start=7)
        >>> Holder.from_value(h.as_value()) == h
        True
        >>> Holder.from_value("busy") is None, Holder.from_value({"cluster": "pg"}) is None
        (True, True)
        """
        if not isinstance(value, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            holder = cls(**{k: v for k, v in value.items() if k in known})
        except TypeError:
            return None
        return holder if isinstance(holder.pid, int) and isinstance(holder.host, str) else None

    def describe(self) -> str:
        """
        >>> Holder("pg", "backup", "db1", 42, "2026-12-02T01:00:00Z", "t", run_id="9f1c", run_name="calm-fox").describe()
        'flow backup (run calm-fox, id 9f1c) on host db1, pid 42, since 2026-12-02T01:00:00Z'
        >>> Holder("pg", "provision", "db1", 42, "2026-12-02T01:00:00Z", "t").describe()
        'flow provision (command line, no flow run yet) on host db1, pid 42, since 2026-12-02T01:00:00Z'
        """
        run = f"run {self.run_name}, id {self.run_id}" if self.run_id else "command line, no flow run yet"
        return f"flow {self.flow} ({run}) on host {self.host}, pid {self.pid}, since {self.since}"


def stale_reason(holder: Holder, here: str, live_start: int | None, run_state: str | None) -> str | None:
    """Why ``holder`` holds nothing any more, or None while it may still be at work.

    ``here`` is this machine's host name; ``live_start`` the start time of the process that now has
    the holder's pid here (None: no such process; only read when the holder is on this host);
    ``run_state`` the state of the holder's flow run (None: no run id or unknown; ``GONE``: not found).
    A live process on this host holds its lock; a holder on another host holds it until its flow run
    ends (its pid means nothing here).

    >>> h = Holder("pg", "backup", "db1", 42, "t", "x", pid_start=100, run_id="r1", run_name="calm-fox")
    >>> [stale_reason(h, *case) for case in [
    ...     ("db1", 100, "RUNNING"),      # alive, running
    ...     ("db1", 100, "COMPLETED"),    # its run ended but its process lives: it is releasing the lock
    ...     ("db1", None, "RUNNING"),     # the process is gone
    ...     ("db1", 555, None),           # the pid now belongs to another process
    ...     ("db2", None, "RUNNING"),     # another host: its pid cannot be checked from here
    ...     ("db2", None, "CRASHED"),     # its flow run ended
    ...     ("db2", None, "GONE")]]
    [None, None, 'pid 42 on db1 is gone', 'pid 42 on db1 is now another process', None, 'its flow run calm-fox is crashed', 'its flow run r1 is gone from the Prefect API']
    """
    if holder.host == here:
        if live_start is None:
            return f"pid {holder.pid} on {here} is gone"
        if holder.pid_start is not None and live_start != holder.pid_start:
            return f"pid {holder.pid} on {here} is now another process"
        return None  # its process lives: it may still be at work (its finally releases the lock)
    if run_state == RUN_GONE:
        return f"its flow run {holder.run_id} is gone from the Prefect API"
    if run_state in TERMINAL_STATES:
        return f"its flow run {holder.run_name or holder.run_id} is {run_state.lower()}"
    return None


def refusal(cluster: str, holder: Holder | None) -> str:
    """The one line a refused run prints (``dbtier: error: `` goes before it).

    >>> refusal("pg", Holder("pg", "backup", "db1", 42, "2026-12-02T01:00:00Z", "t"))[:94]
    'cluster: pg is busy: flow backup (command line, no flow run yet) on host db1, pid 42, since 20'
    >>> refusal("pg", None)[:73]
    'cluster: pg is busy: its lock dbtier-pg-lock holds no dbtier holder recor'
    """
    name = lock_name(cluster)
    if holder is None:
        return (f"cluster: {cluster} is busy: its lock {name} holds no dbtier holder record; if no dbtier run is "
                f"changing {cluster}, delete it (prefect variable unset {name}) and run again")
    return (f"cluster: {cluster} is busy: {holder.describe()} is changing it; wait for that run to end and run "
            f"again (if it is dead and dbtier cannot tell from here: prefect variable unset {name})")


def takeover_sentence(cluster: str, holder: Holder, reason: str) -> str:
    """
    >>> takeover_sentence("pg", Holder("pg", "backup", "db1", 42, "2026-12-02T01:00:00Z", "t"), "pid 42 on db1 is gone")
    'cluster pg: took over a stale lock from flow backup (command line, no flow run yet) on host db1, pid 42, since 2026-12-02T01:00:00Z: pid 42 on db1 is gone'
    """
    return f"cluster {cluster}: took over a stale lock from {holder.describe()}: {reason}"
