"""Drill settings: budgets and hold times, with defaults a cluster spec may override.

They live in the spec's ``drills:`` section (the model is in :mod:`dbtier.spec`); the
spec's ``production:`` flag turns drills off unless ``drills.allow_in_production``.
"""

from __future__ import annotations

from dbtier.errors import SpecError
from dbtier.engines.postgres.routing import routed_dsn, routers
from dbtier.spec import ClusterSpec, DrillSettings
from dbtier.topology import client_dsn

__all__ = ["SCENARIOS", "DrillSettings", "drill_settings", "quorum_loss_hold", "refusal", "writer_route"]

#: Every scenario ``drill-all`` runs, in this order (each leaves the cluster healthy). The network and host
#: drills (:mod:`dbtier.engines.postgres.network`) come last; ``drill-all`` skips those the cluster cannot run, in one line.
SCENARIOS = ("switchover", "replica-loss", "etcd-member-loss", "etcd-quorum-loss", "crash", "freeze",
             "partition-replica", "etcd-minority", "lossy-network", "partition-primary", "host-freeze", "host-crash")


def drill_settings(spec: ClusterSpec, override: DrillSettings | None = None) -> DrillSettings:
    """The settings for ``spec``: ``override``, else the spec's ``drills`` section, else defaults.

    >>> drill_settings(ClusterSpec()).rto_budget_s
    60.0
    """
    chosen = override or spec.drills
    production = spec.production or chosen.production
    return chosen.model_copy(update={"production": production})


def quorum_loss_hold(spec: ClusterSpec, settings: DrillSettings) -> float:
    """Long enough for the leader lock to expire: ``ttl + 2 * loop_wait`` unless set.

    >>> quorum_loss_hold(ClusterSpec(), DrillSettings())
    50.0
    """
    if settings.quorum_loss_hold_s is not None:
        return settings.quorum_loss_hold_s
    return float(spec.patroni.ttl + 2 * spec.patroni.loop_wait)


def refusal(settings: DrillSettings) -> str | None:
    """Why drills must not run here, or None.

    >>> refusal(DrillSettings(production=True))
    'drills.allow_in_production: the cluster is marked production: true and does not opt in to drills; set drills.allow_in_production: true to drill it anyway'
    >>> refusal(DrillSettings(production=True, allow_in_production=True)) is None
    True
    """
    if settings.production and not settings.allow_in_production:
        return ("drills.allow_in_production: the cluster is marked production: true and does not opt in to drills; "
                "set drills.allow_in_production: true to drill it anyway")
    return None


def writer_route(spec: ClusterSpec, settings: DrillSettings) -> tuple[str, str]:
    """(DSN, what the verdict says) of the drill writer's path to the primary (``drills.via``).

    >>> writer_route(ClusterSpec(routing={"enabled": True}), DrillSettings())[1]
    "through router0's rw route (127.0.0.1:5000)"
    >>> writer_route(ClusterSpec(routing={"enabled": True}), DrillSettings(via="direct"))[1]
    'through the multi-host DSN (direct to the members)'
    >>> writer_route(ClusterSpec(), DrillSettings(via="router"))
    Traceback (most recent call last):
    ...
    dbtier.errors.SpecError: drills.via: router asks for the rw route, but routing is off on cluster dbtier; set routing.enabled: true and provision again, or drills.via: direct
    """
    first = next(iter(routers(spec)), None)
    if settings.via == "router" and first is None:
        raise SpecError(f"drills.via: router asks for the rw route, but routing is off on cluster {spec.name}; "
                        "set routing.enabled: true and provision again, or drills.via: direct")
    if settings.via == "direct" or first is None:
        return client_dsn(spec), "through the multi-host DSN (direct to the members)"
    return routed_dsn(spec, "rw", router=first), f"through {first.name}'s rw route ({first.host}:{spec.ports.router})"
