"""Before a failover drill breaks anything: may it run on this cluster, and is the cluster healthy now?

A drill judges how a healthy cluster recovers; on a cluster that is already unhealthy it would only
wait (``healthy_timeout_s``, 180 s) and then fail. Both checks refuse at once, in one line.
"""

from __future__ import annotations

import time

from dbtier import bootstrap
from dbtier.drills.settings import DrillSettings, refusal
from dbtier.engines.base import Engine
from dbtier.errors import Refused
from dbtier.health import Health
from dbtier.providers.base import Provider, get_provider
from dbtier.spec import ClusterSpec


def unhealthy_refusal(spec: ClusterSpec, health: Health, spec_flag: str = "") -> str | None:
    """The one-line refusal for a drill on a cluster in ``health``, or None when it may be drilled.

    >>> unhealthy_refusal(ClusterSpec(name="pg"), Health(True, "pg0")) is None
    True
    >>> unhealthy_refusal(ClusterSpec(name="pg"), Health(False, "pg0", ["pg2 is stopped, not streaming"]))
    "cluster: pg is already unhealthy (pg2 is stopped, not streaming); a drill needs a healthy cluster: fix it first (see 'dbtier status')"
    """
    if health.healthy:
        return None
    return (f"cluster: {spec.name} is already unhealthy ({'; '.join(health.problems)}); a drill needs a healthy "
            f"cluster: fix it first (see 'dbtier status{spec_flag}')")


def check_ready(engine: Engine, spec: ClusterSpec, settings: DrillSettings, spec_flag: str = "",
                provider: Provider | None = None) -> str:
    """Refuse a drill that must not run (production) or cannot be judged (unhealthy); else say it may run.

    A cluster gets the engine's settle time (PostgreSQL: one Patroni loop) to settle, never the drill's 180 s.
    ``provider`` reaches the members (default: the spec's, with the library's loaders).
    """
    why = refusal(settings)
    if why:
        raise Refused(why)
    if not bootstrap.running_services(engine, provider or get_provider(spec), spec):
        raise Refused(f"cluster: {spec.name} is not running (no process of it runs under {spec.cluster_dir}); "
                      "provision it first, or name the right cluster with --spec")
    deadline = time.monotonic() + engine.settle_s(spec)
    while True:
        health = engine.status(spec).health
        problem = unhealthy_refusal(spec, health, spec_flag)
        if problem is None:
            return f"cluster {spec.name} may be drilled (production: {settings.production}); {health.sentence}"
        if time.monotonic() >= deadline:
            raise Refused(problem)
        time.sleep(0.5)


def runnable_drills(engine: Engine, provider: Provider, spec: ClusterSpec,
                    names: list[str]) -> tuple[list[str], list[str]]:
    """The scenarios of ``names`` the cluster can run with ``provider``, and one line for each one skipped
    (:meth:`~dbtier.engines.base.Engine.cannot_run_drill`)."""
    runnable, skipped = [], []
    for name in names:
        why = engine.cannot_run_drill(provider, spec, name)
        if why is None:
            runnable.append(name)
        else:
            skipped.append(f"skipped {name}: {why.removeprefix(f'scenario: {name} ')}")
    return runnable, skipped
