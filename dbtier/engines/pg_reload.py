"""Reload every PostgreSQL member's configuration in place (no restart, no failover).

The superuser's SQL runs on each member's own host over its socket (:func:`dbtier.engines.pg_admin.run_sql`),
as provision's role work does.
"""

from __future__ import annotations

import time

from dbtier.engines.pg_admin import run_sql
from dbtier.errors import ProvisionError
from dbtier.providers.base import Provider
from dbtier.spec import ClusterSpec
from dbtier.topology import PgMember, pg_members

LOAD_TIME = "SELECT extract(epoch FROM pg_conf_load_time())"


def reload_member(provider: Provider, spec: ClusterSpec, member: PgMember, timeout: float = 10.0) -> str:
    """``SELECT pg_reload_conf()`` on ``member``, then wait until a new session's ``pg_conf_load_time()`` moves:
    the postmaster has read its files again (and the backends it starts after)."""
    runner = provider.runner(spec, member.host)
    rows = run_sql(runner, spec, member, "postgres", [LOAD_TIME, "SELECT pg_reload_conf()"], "reloading")
    before = float(rows[0][0])
    deadline = time.monotonic() + timeout
    while float(run_sql(runner, spec, member, "postgres", [LOAD_TIME], "reading pg_conf_load_time()")[0][0]) <= before:
        if time.monotonic() > deadline:
            raise ProvisionError(f"{member.name}: PostgreSQL did not reload within {timeout:.0f} s of "
                                 f"pg_reload_conf(); see {member.dir}/patroni.log and the server log")
        time.sleep(0.2)
    return f"{member.name}: PostgreSQL reloaded its configuration and certificates (no restart)"


def reload_all(provider: Provider, spec: ClusterSpec) -> list[str]:
    """One sentence per member; the first member that cannot be reloaded stops the step, naming it (its new files
    are in place: it reads them when it next starts or reloads)."""
    return [reload_member(provider, spec, member) for member in pg_members(spec)]
