"""PostgreSQL's drills: their names, the quorum-loss hold, and the writer's path to the primary (pure)."""

from __future__ import annotations

from dbtier.engines.postgres.routing import routed_dsn, routers
from dbtier.errors import SpecError
from dbtier.spec import ClusterSpec, DrillSettings
from dbtier.engines.postgres.topology import client_dsn

#: Every scenario ``drill-all`` runs, in this order (each leaves the cluster healthy). The network and host
#: drills (:mod:`dbtier.engines.postgres.network`) come last; ``drill-all`` skips those the cluster cannot run, in one line.
SCENARIOS = ("switchover", "replica-loss", "etcd-member-loss", "etcd-quorum-loss", "crash", "freeze",
             "partition-replica", "etcd-minority", "lossy-network", "partition-primary", "host-freeze", "host-crash")


def quorum_loss_hold(spec: ClusterSpec, settings: DrillSettings) -> float:
    """Long enough for the leader lock to expire: ``ttl + 2 * loop_wait`` unless set.

    >>> quorum_loss_hold(ClusterSpec(), DrillSettings())
    50.0
    """
    if settings.quorum_loss_hold_s is not None:
        return settings.quorum_loss_hold_s
    return float(spec.pg.patroni.ttl + 2 * spec.pg.patroni.loop_wait)


def writer_route(spec: ClusterSpec, settings: DrillSettings) -> tuple[str, str]:
    """(DSN, what the verdict says) of the drill writer's path to the primary (``drills.via``).

    >>> writer_route(ClusterSpec(routing={"enabled": True}), DrillSettings())[1]
    "through router0's rw route (127.0.0.1:5000)"
    >>> writer_route(ClusterSpec(routing={"enabled": True}), DrillSettings(via="direct"))[1]
    'through the multi-host DSN (direct to the members)'
    >>> writer_route(ClusterSpec(), DrillSettings(via="router"))
    Traceback (most recent call last):
    ...
    dbtier.errors.SpecError: drills.via: router asks for the rw route, but routing is off on cluster dbtier; set postgres.routing.enabled: true and provision again, or drills.via: direct
    """
    first = next(iter(routers(spec)), None)
    if settings.via == "router" and first is None:
        raise SpecError(f"drills.via: router asks for the rw route, but routing is off on cluster {spec.name}; "
                        "set postgres.routing.enabled: true and provision again, or drills.via: direct")
    if settings.via == "direct" or first is None:
        return client_dsn(spec), "through the multi-host DSN (direct to the members)"
    return (routed_dsn(spec, "rw", router=first),
            f"through {first.name}'s rw route ({first.host}:{spec.pg.ports.router})")
