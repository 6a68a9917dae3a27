"""Drill settings: budgets and hold times, with defaults a cluster spec may override.

They live in the spec's ``drills:`` section (the model is in :mod:`dbtier.spec`); the
spec's ``production:`` flag turns drills off unless ``drills.allow_in_production``.
"""

from __future__ import annotations

from dbtier.spec import ClusterSpec, DrillSettings

__all__ = ["SCENARIOS", "DrillSettings", "drill_settings", "quorum_loss_hold", "refusal"]

#: Every scenario ``drill-all`` runs, in this order (each leaves the cluster healthy). The network and host
#: drills (:mod:`dbtier.drills.network`) come last; ``drill-all`` skips those the cluster cannot run, in one line.
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
