"""The cluster lock in the Prefect API: a variable ``dbtier-<cluster>-lock`` created atomically.

    with cluster_lock("orders", "backup"):      # ClusterBusy (exit 2, one line) when another run holds it
        ...

The API refuses to create a second variable of a name (409), so of two runs exactly one creates
it; the other reads who holds it. A holder that is dead (its pid gone on this host, or its flow
run finished or unknown to the API) is taken over: its variable is deleted by id, so of two runs
taking over the same stale lock only one can. The command line takes the lock before the flow
run starts (a refusal is then one line, no flow run); the flow, run in the same process, finds
it held for itself and adds its run's name and id to the record. A run a worker or ``make serve``
starts takes the lock itself.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import VariableCreate, VariableUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from blocks.api import unreachable
from dbtier.errors import ClusterBusy
from dbtier.lock import RUN_GONE, Holder, lock_name, refusal, stale_reason, takeover_sentence

F = TypeVar("F", bound=Callable[..., Any])

#: The locks this process holds, by cluster: the command line's, which its in-process flow run reuses.
_HELD: dict[str, Holder] = {}

HOST = socket.gethostname()


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` of this machine started (clock ticks since boot); None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            after_name = fh.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    if after_name[:1] == [b"Z"] or len(after_name) < 20:
        return None
    return int(after_name[19])  # field 22 of stat(5); after the name, field 3 is index 0


def _run_state(client: SyncPrefectClient, holder: Holder) -> str | None:
    if not holder.run_id:
        return None
    try:
        run = client.read_flow_run(uuid.UUID(holder.run_id))
    except ObjectNotFound:
        return RUN_GONE
    except ValueError:
        return None
    return run.state.type.value if run.state else None


def _run_identity() -> tuple[str | None, str | None]:
    """The current flow run's id and name, when there is one."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None, None
    return str(context.flow_run.id), context.flow_run.name


def _new_holder(cluster: str, flow: str) -> Holder:
    run_id, run_name = _run_identity()
    return Holder(cluster=cluster, flow=flow, host=HOST, pid=os.getpid(),
                  since=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), token=uuid.uuid4().hex,
                  pid_start=start_ticks(os.getpid()), run_id=run_id, run_name=run_name)


def _delete_by_id(client: SyncPrefectClient, variable_id: uuid.UUID) -> bool:
    """Delete exactly this variable (not a newer one of the same name); False when it is gone already."""
    try:
        client.request("DELETE", "/variables/{id}", path_params={"id": str(variable_id)})
    except httpx.HTTPStatusError as err:
        if err.response.status_code == 404:
            return False
        raise
    return True


def acquire(cluster: str, flow: str) -> tuple[Holder, list[str]]:
    """Create the lock for this process, taking over a stale one; ClusterBusy when someone else holds it.

    Returns the holder record and the sentences to log (takeovers).
    """
    name = lock_name(cluster)
    said: list[str] = []
    holder: Holder | None = None
    try:
        with get_client(sync_client=True) as client:
            for _attempt in range(5):
                mine = _new_holder(cluster, flow)
                try:
                    client.create_variable(VariableCreate(name=name, value=mine.as_value(), tags=["dbtier", "lock"]))
                    return mine, said
                except ObjectAlreadyExists:
                    pass
                current = client.read_variable_by_name(name)
                if current is None:
                    continue  # released in between: try again
                holder = Holder.from_value(current.value)
                if holder is None:
                    raise ClusterBusy(refusal(cluster, None))
                here = start_ticks(holder.pid) if holder.host == HOST else None
                reason = stale_reason(holder, HOST, here, _run_state(client, holder))
                if reason is None:
                    raise ClusterBusy(refusal(cluster, holder))
                if _delete_by_id(client, current.id):
                    said.append(takeover_sentence(cluster, holder, reason))
    except (httpx.HTTPError, OSError) as err:
        raise unreachable(err) from None  # which API, and how to point at the right one
    raise ClusterBusy(refusal(cluster, holder))  # five rounds lost to other runs: someone holds it now


def _annotate(holder: Holder) -> Holder:
    """Add the current flow run's id and name to a lock this process holds (the command line took it)."""
    run_id, run_name = _run_identity()
    if run_id is None or run_id == holder.run_id:
        return holder
    annotated = dataclasses.replace(holder, run_id=run_id, run_name=run_name)
    name = lock_name(holder.cluster)
    with get_client(sync_client=True) as client:
        current = client.read_variable_by_name(name)
        if current is not None and (Holder.from_value(current.value) or annotated).token == holder.token:
            client.update_variable(VariableUpdate(name=name, value=annotated.as_value()))
    _HELD[holder.cluster] = annotated
    return annotated


def release(holder: Holder) -> str:
    """Delete the lock if it is still ``holder``'s (a takeover may have replaced it); return what happened."""
    name = lock_name(holder.cluster)
    try:
        with get_client(sync_client=True) as client:
            current = client.read_variable_by_name(name)
            theirs = Holder.from_value(current.value) if current is not None else None
            if current is None or theirs is None or theirs.token != holder.token:
                return f"cluster {holder.cluster}: lock {name} was no longer ours; left as it is"
            _delete_by_id(client, current.id)
    except (httpx.HTTPError, OSError) as err:
        return f"cluster {holder.cluster}: could not release lock {name} ({type(err).__name__}); the next run takes it over"
    return f"cluster {holder.cluster}: lock released"


def _say(sentence: str) -> None:
    """A flow run's log line; on the command line, a line on stderr."""
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is not None:
        from prefect import get_run_logger

        get_run_logger().warning("%s", sentence)
    else:
        print(f"dbtier: {sentence}", file=sys.stderr)


@contextmanager
def cluster_lock(cluster: str, flow: str) -> Iterator[Holder]:
    """Hold ``cluster``'s lock for the block (reentrant within a process); ClusterBusy when another run has it."""
    held = _HELD.get(cluster)
    if held is not None:  # the command line took it for this flow run
        yield _annotate(held)
        return
    holder, said = acquire(cluster, flow)
    _HELD[cluster] = holder
    for sentence in said:
        _say(sentence)
    try:
        yield _annotate(holder)
    finally:
        mine = _HELD.pop(cluster, holder)
        outcome = release(mine)
        if "released" not in outcome:
            _say(outcome)


def changes_cluster(flow: str) -> Callable[[F], F]:
    """Make a flow function hold its cluster's lock (put it under ``@flow``): the cluster is named by the
    flow's ``spec_path`` / ``spec_block`` parameters, as :func:`flows._spec.resolve_spec` reads them."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            name = spec_name(bound.arguments.get("spec_path"), bound.arguments.get("spec_block"))
            with cluster_lock(name, flow):
                return fn(*args, **kwargs)

        # Prefect reads the parameters' types from the wrapper's signature: give it the types resolved where
        # ``fn`` lives (as strings they would be looked up in this module, which knows no DrillSettings).
        locked.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
        return locked  # type: ignore[return-value]

    return wrap


def spec_name(spec_path: str | None, spec_block: str | None) -> str:
    """The cluster a flow's spec parameters name (without asking any host for addresses)."""
    if spec_block:
        from typing import cast

        from blocks.cluster_spec import ClusterSpecBlock

        return cast(ClusterSpecBlock, ClusterSpecBlock.load(spec_block)).get_spec().name
    from dbtier.spec import load_spec

    return load_spec(spec_path).name
