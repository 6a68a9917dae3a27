"""Cluster health from Patroni's ``/cluster`` document (pure), and PostgreSQL's member table.

Healthy means: every expected member is listed, exactly one is the leader and
running, and every other member is streaming from it.
"""

from __future__ import annotations

from typing import Any

from dbtier.health import Health
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import etcd_members, pg_members

REPLICA_ROLES = frozenset({"replica", "sync_standby", "quorum_standby"})


def role_holder(doc: dict[str, Any] | None, role: str) -> str | None:
    """The name of the member with ``role`` (``leader``, ``sync_standby``) in a ``/cluster`` document.

    >>> role_holder({"members": [{"name": "pg1", "role": "leader"}]}, "leader")
    'pg1'
    """
    return next((str(m["name"]) for m in (doc or {}).get("members", []) if m.get("role") == role), None)


def assess(cluster: dict[str, Any] | None, expected: list[str]) -> Health:
    """Judge a Patroni ``/cluster`` document against the member names we expect.

    >>> doc = {"members": [{"name": "pg0", "role": "leader", "state": "running"},
    ...                    {"name": "pg1", "role": "replica", "state": "streaming"}]}
    >>> assess(doc, ["pg0", "pg1"]).healthy
    True
    >>> assess(doc, ["pg0", "pg1", "pg2"]).problems
    ['pg2 is not in the cluster']
    """
    if cluster is None:
        return Health(False, None, ["no Patroni member answers its REST API"])
    members = {m.get("name"): m for m in cluster.get("members", [])}
    problems = [f"{name} is not in the cluster" for name in expected if name not in members]
    leaders = [m for m in members.values() if m.get("role") in ("leader", "standby_leader")]
    if not leaders:
        problems.append("no leader")
    elif len(leaders) > 1:
        problems.append("more than one leader: " + ", ".join(str(m.get("name")) for m in leaders))
    leader = leaders[0] if len(leaders) == 1 else None
    if leader is not None and leader.get("state") != "running":
        problems.append(f"leader {leader.get('name')} is {leader.get('state')}")
    for name, member in members.items():
        if member is leader or member.get("role") in ("leader", "standby_leader"):
            continue
        if member.get("role") not in REPLICA_ROLES:
            problems.append(f"{name} has role {member.get('role')}")
        elif member.get("state") != "streaming":
            problems.append(f"{name} is {member.get('state')}, not streaming")
    return Health(not problems, leader.get("name") if leader else None, problems)


def merge_live(cluster: dict[str, Any] | None, live: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """Lay each member's own ``GET /patroni`` answer over the DCS view of ``/cluster``.

    The DCS view lags by up to a ``loop_wait`` (a replica reports "streaming" on its next loop) and
    keeps a dead member listed until its key expires (``ttl``). A member's own answer is live.

    >>> doc = {"members": [{"name": "pg0", "role": "leader", "state": "running"},
    ...                    {"name": "pg1", "role": "replica", "state": "running"},
    ...                    {"name": "pg2", "role": "replica", "state": "streaming"}]}
    >>> live = {"pg0": {"role": "primary", "state": "running"},
    ...         "pg1": {"role": "replica", "state": "running", "replication_state": "streaming"}, "pg2": None}
    >>> [(m["name"], m["state"]) for m in merge_live(doc, live)["members"]]
    [('pg0', 'running'), ('pg1', 'streaming'), ('pg2', 'not answering')]
    """
    if cluster is None:
        return None
    members = []
    for member in cluster.get("members", []):
        merged = dict(member)
        own = live.get(str(member.get("name")), {})
        if own is None:
            merged["state"] = "not answering"
        elif own.get("role") == "replica" and member.get("role") in REPLICA_ROLES:
            merged["state"] = own.get("replication_state") or own.get("state", member.get("state"))
        members.append(merged)
    return {**cluster, "members": members}


def member_rows(
    spec: ClusterSpec, cluster: dict[str, Any] | None, etcd_states: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The member table: one row per PostgreSQL member, with its ports, then one per etcd member."""
    listed = {m.get("name"): m for m in (cluster or {}).get("members", [])}
    rows: list[dict[str, Any]] = []
    for member in pg_members(spec):
        info = listed.get(member.name, {})
        lag = info.get("lag", info.get("receive_lag", ""))
        rows.append(
            {
                "name": member.name,
                "role": info.get("role", "down"),
                "state": info.get("state", "not answering"),
                "timeline": info.get("timeline", ""),
                "lag": "" if info.get("role") == "leader" else lag,
                "ports": f"pg {member.pg_port} / rest {member.rest_port}",
            }
        )
    for etcd in etcd_members(spec):
        rows.append(
            {
                "name": etcd.name,
                "role": "etcd",
                "state": (etcd_states or {}).get(etcd.name, ""),
                "timeline": "",
                "lag": "",
                "ports": f"client {etcd.client_port} / peer {etcd.peer_port}",
            }
        )
    return rows


