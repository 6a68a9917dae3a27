"""Reload every member's configuration and certificates in place (no restart, no failover), then prove it.

PostgreSQL: ``pg_reload_conf()`` by the superuser's SQL on each member's own host over its socket
(:func:`dbtier.engines.postgres.pg_admin.run_sql`), as provision's role work does. Patroni's REST API: ``POST /reload``
with the REST login (it swaps its certificate when the serial changed). etcd: nothing (it reads its files at
every handshake). Then every service must serve the certificate its member holds
(:mod:`dbtier.engines.postgres.served_certs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dbtier.engines.postgres import patroni_rest
from dbtier.engines.postgres.control_plane import Login
from dbtier.engines.postgres.pg_admin import run_sql
from dbtier.engines.postgres.served_certs import Endpoint, serial_of, served_certificate, wait_until_served
from dbtier.errors import CertificateError, ControlPlaneError, ProvisionError
from dbtier.providers.base import Provider
from dbtier.engines.postgres.routing import bouncers, routers
from dbtier.spec import ClusterSpec
from dbtier.tls_files import plan_for
from dbtier.engines.postgres.topology import PgMember, etcd_members, pg_members

#: Services that speak PostgreSQL's protocol (TLS after an SSLRequest).
PG_PROTOCOL = ("postgres", "pgbouncer")
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


def reload_patroni(spec: ClusterSpec, member: PgMember, login: Login) -> str:
    answer = patroni_rest.call(spec, member, "POST", "/reload", login, {}, timeout=10)
    if answer.status_code not in (200, 202):
        raise ControlPlaneError(f"{member.name}: reload refused; {patroni_rest.refusal(spec, answer)}")
    return f"{member.name}: Patroni reloaded (its REST API reads its certificate again)"


def endpoints(provider: Provider, spec: ClusterSpec) -> list[Endpoint]:
    """Every TLS service of the cluster with the certificate its member holds for it."""
    ports = {(m.name, "postgres"): m.pg_port for m in pg_members(spec)}
    ports |= {(m.name, "patroni"): m.rest_port for m in pg_members(spec)}
    ports |= {(m.name, "etcd"): m.client_port for m in etcd_members(spec)}
    ports |= {(b.member.name, "pgbouncer"): b.port for b in bouncers(spec)}
    ports |= {(r.name, "haproxy"): spec.pg.ports.router_stats for r in routers(spec)}
    found = []
    for need in plan_for(provider, spec):
        installed = provider.runner(spec, need.host).read_file(need.paths.cert)
        if installed is None:
            raise CertificateError(f"{need.label}: {need.paths.cert} is missing on {need.host}; run provision")
        found.append(Endpoint(label=f"{need.label} ({need.host}:{ports[need.member, need.service]})", host=need.host,
                              port=ports[need.member, need.service], postgres=need.service in PG_PROTOCOL,
                              installed=installed))
    return found


def stale(provider: Provider, spec: ClusterSpec) -> list[str]:
    """The services that serve another certificate than the one their member holds (a certificate provision just
    renewed under a running service), or that do not answer TLS; none without TLS."""
    if not spec.tls.enabled:
        return []
    found = []
    for endpoint in endpoints(provider, spec):
        try:
            if serial_of(served_certificate(endpoint.host, endpoint.port, endpoint.postgres)) != serial_of(endpoint.installed):
                found.append(endpoint.label)
        except CertificateError:
            found.append(endpoint.label)
    return found


def reload_all(provider: Provider, spec: ClusterSpec, login: Login, timeout: float = 20.0,
               reload_routing: Callable[[], list[str]] = list) -> list[str]:
    """One sentence per member and service; the first member that cannot be reloaded stops the step, naming it
    (its new files are in place: it reads them when it next starts or reloads). Without TLS, PostgreSQL only.
    ``reload_routing``: the routers' and poolers' own reload (PgBouncer's SIGHUP; HAProxy restarts)."""
    said = [reload_member(provider, spec, member) for member in pg_members(spec)]
    if not spec.tls.enabled:
        return said
    said += [reload_patroni(spec, member, login) for member in pg_members(spec)]
    said += reload_routing()
    served = wait_until_served(endpoints(provider, spec), timeout)
    return [*said, f"every service serves the certificate its member holds ({len(served)} checked): "
            + ", ".join(served)]
