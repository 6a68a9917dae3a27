"""Drill settings: budgets and hold times, with defaults a cluster spec may override.

They live in the spec's ``drills:`` section (the model is in :mod:`dbtier.spec`); the
spec's ``production:`` flag turns drills off unless ``drills.allow_in_production``. Each engine's scenarios
and the settings only they read are the engine's (PostgreSQL's: :mod:`dbtier.engines.postgres.drill_settings`).
"""

from __future__ import annotations

from dbtier.spec import ClusterSpec, DrillSettings

__all__ = ["DrillSettings", "drill_settings", "refusal"]


def drill_settings(spec: ClusterSpec, override: DrillSettings | None = None) -> DrillSettings:
    """The settings for ``spec``: ``override``, else the spec's ``drills`` section, else defaults.

    >>> drill_settings(ClusterSpec()).rto_budget_s
    60.0
    """
    chosen = override or spec.drills
    production = spec.production or chosen.production
    return chosen.model_copy(update={"production": production})


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
