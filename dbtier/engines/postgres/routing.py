"""Where a PostgreSQL cluster's routers and poolers run and how clients reach them (pure: spec in, plan out).

One HAProxy per host of the cluster (one for the local provider: every member shares its host), routing by
each member's Patroni health check; one PgBouncer beside each member. Routes, on every router host:

    rw          ports.router       the primary (Patroni ``/primary``)
    ro          ports.router + 1   replicas within ``routing.replica_max_lag_bytes``, the primary when none is
    sync        ports.router + 2   the synchronous standby (``/sync``)
    rw pooled   ports.router + 3   the primary's PgBouncer
    ro pooled   ports.router + 4   the replicas' PgBouncers
    stats       ports.router_stats HAProxy's stats page, and its Prometheus endpoint at ``/metrics``

``direct`` is the libpq multi-host DSN (:func:`dbtier.engines.postgres.topology.client_dsn`), which needs no router.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from dbtier.errors import SpecError
from dbtier.spec import ROUTER_LISTENERS, ClusterSpec, routing_plan
from dbtier.engines.postgres.topology import PgMember, client_dsn, libpq_tls, pg_members

ROUTES: tuple[str, ...] = ("rw", "ro", "sync", "direct")
#: The routes PgBouncer sits behind.
POOLED_ROUTES: tuple[str, ...] = ("rw", "ro")


@dataclass(frozen=True)
class Router:
    """One HAProxy, on one host of the cluster, in front of every member."""

    index: int
    name: str
    host: str
    dir: str

    @property
    def config(self) -> str:
        return f"{self.dir}/haproxy.cfg"


@dataclass(frozen=True)
class Bouncer:
    """One PgBouncer, beside its member, in front of that member's PostgreSQL only."""

    name: str
    member: PgMember
    port: int

    @property
    def host(self) -> str:
        return self.member.host

    @property
    def dir(self) -> str:
        return f"{self.member.dir}/pgbouncer"

    @property
    def config(self) -> str:
        return f"{self.dir}/pgbouncer.ini"


def routers(spec: ClusterSpec) -> list[Router]:
    """One router per distinct member host, in member order; none with routing off.

    >>> [(r.name, r.host) for r in routers(ClusterSpec(routing={"enabled": True}))]
    [('router0', '127.0.0.1')]
    >>> routers(ClusterSpec())
    []
    """
    if not routing_plan(spec.pg.routing)[0]:
        return []
    hosts: list[str] = []
    for member in pg_members(spec):
        if member.host not in hosts:
            hosts.append(member.host)
    return [Router(index=i, name=f"router{i}", host=host, dir=f"{spec.cluster_dir}/router{i}")
            for i, host in enumerate(hosts)]


def bouncers(spec: ClusterSpec) -> list[Bouncer]:
    """One PgBouncer per member on ``ports.pgbouncer + index``; none with routing or the pooler off.

    >>> [(b.name, b.port, b.dir) for b in bouncers(ClusterSpec(members=2, etcd_members=1, routing={"enabled": True}))]
    [('bouncer0', 6432, '/var/lib/dbtier/dbtier/pg0/pgbouncer'), ('bouncer1', 6433, '/var/lib/dbtier/dbtier/pg1/pgbouncer')]
    """
    if not routing_plan(spec.pg.routing)[1]:
        return []
    return [Bouncer(name=f"bouncer{m.index}", member=m, port=spec.pg.ports.pgbouncer + m.index)
            for m in pg_members(spec)]


def bouncer_of(spec: ClusterSpec, member: PgMember) -> Bouncer | None:
    return next((b for b in bouncers(spec) if b.member.name == member.name), None)


def listener_port(spec: ClusterSpec, route: str, pooled: bool = False) -> int:
    """The router port of ``route`` (``rw``, ``ro``, ``sync``), through PgBouncer when ``pooled``.

    >>> listener_port(ClusterSpec(routing={"enabled": True}), "ro"), listener_port(ClusterSpec(routing={"enabled": True}), "rw", pooled=True)
    (5001, 5003)
    """
    name = f"{route}-pooled" if pooled else route
    return spec.pg.ports.router + ROUTER_LISTENERS.index(name)


def served_routes(spec: ClusterSpec) -> list[tuple[str, bool]]:
    """Every (route, pooled) a router of ``spec`` serves.

    >>> served_routes(ClusterSpec(routing={"enabled": True}))
    [('rw', False), ('ro', False), ('sync', False), ('rw', True), ('ro', True)]
    >>> served_routes(ClusterSpec(routing={"enabled": True, "pooler": {"enabled": False}}))
    [('rw', False), ('ro', False), ('sync', False)]
    """
    plain = [(route, False) for route in ("rw", "ro", "sync")]
    return plain + ([(route, True) for route in POOLED_ROUTES] if bouncers(spec) else [])


def route_problem(spec: ClusterSpec, route: str, pooled: bool) -> str | None:
    """Why ``route`` (pooled or not) does not exist on this cluster, or None.

    >>> route_problem(ClusterSpec(routing={"enabled": True}), "sync", pooled=True)
    '--pooled: the sync route has no pooled variant; pooled routes are rw and ro'
    >>> route_problem(ClusterSpec(), "ro", pooled=False)
    'postgres.routing.enabled: routing is off on cluster dbtier, so only --route direct exists; set postgres.routing.enabled: true and provision again'
    >>> route_problem(ClusterSpec(routing={"enabled": True, "pooler": {"enabled": False}}), "rw", pooled=True)
    'postgres.routing.pooler.enabled: the pooler is off on cluster dbtier; drop --pooled, or set postgres.routing.pooler.enabled: true and provision again'
    """
    if route not in ROUTES:
        return f"--route: {route!r} is not a route; choose one of {', '.join(ROUTES)}"
    if pooled and route not in POOLED_ROUTES:
        return f"--pooled: the {route} route has no pooled variant; pooled routes are {' and '.join(POOLED_ROUTES)}"
    routers_on, poolers_on = routing_plan(spec.pg.routing)
    if route != "direct" and not routers_on:
        return (f"postgres.routing.enabled: routing is off on cluster {spec.name}, so only --route direct exists; "
                "set postgres.routing.enabled: true and provision again")
    if pooled and not poolers_on:
        return (f"postgres.routing.pooler.enabled: the pooler is off on cluster {spec.name}; drop --pooled, or set "
                "postgres.routing.pooler.enabled: true and provision again")
    return None


def default_route(spec: ClusterSpec) -> str:
    """
    >>> default_route(ClusterSpec(routing={"enabled": True})), default_route(ClusterSpec())
    ('rw', 'direct')
    """
    return "rw" if routers(spec) else "direct"


def routed_dsn(spec: ClusterSpec, route: str = "rw", pooled: bool = False, ca_file: str | None = None,
               router: Router | None = None, user: str | None = None, database: str | None = None) -> str:
    """A single-host libpq URI to ``route`` on ``router`` (default: the virtual IP when the spec has one, else the
    first router), with the cluster's TLS settings;
    ``direct``: the multi-host DSN. It never holds a password; a route the cluster lacks raises :class:`SpecError`.

    >>> routed_dsn(ClusterSpec(routing={"enabled": True}), "ro", ca_file="/w/ca.crt")
    'postgresql://app@127.0.0.1:5001/app?connect_timeout=3&sslmode=verify-full&sslrootcert=/w/ca.crt'
    >>> routed_dsn(ClusterSpec(tls={"enabled": False}, routing={"enabled": True}), "rw", pooled=True)
    'postgresql://app@127.0.0.1:5003/app?connect_timeout=3'
    """
    problem = route_problem(spec, route, pooled)
    if problem:
        raise SpecError(problem)
    if route == "direct":
        return client_dsn(spec, user=user, database=database, ca_file=ca_file)
    host = router.host if router else (spec.pg.routing.vip.address if spec.pg.routing.vip else routers(spec)[0].host)
    options = "".join(f"&{key}={quote(value, safe='/')}" for key, value in libpq_tls(spec, ca_file).items())
    return (f"postgresql://{user or spec.app.user}@{host}:{listener_port(spec, route, pooled)}/"
            f"{database or spec.app.database}?connect_timeout=3{options}")


def router_addresses(spec: ClusterSpec) -> list[str]:
    """Every address a client may reach a member's PostgreSQL or PgBouncer through: the router hosts and the
    virtual IP (HAProxy passes TLS through, so the member's certificate must name them too).

    >>> router_addresses(ClusterSpec(routing={"enabled": True}))
    ['127.0.0.1']
    """
    vip = [spec.pg.routing.vip.address] if spec.pg.routing.vip else []
    return [r.host for r in routers(spec)] + vip


def bind_addresses(spec: ClusterSpec, router: Router) -> list[str]:
    """Where ``router``'s listeners bind: its host's address, and the virtual IP (bound before the host holds
    it: keepalived's unit sets ``net.ipv4.ip_nonlocal_bind``).

    >>> bind_addresses(ClusterSpec(routing={"enabled": True}), routers(ClusterSpec(routing={"enabled": True}))[0])
    ['127.0.0.1']
    """
    return [router.host] + ([spec.pg.routing.vip.address] if spec.pg.routing.vip else [])
