"""What each route of each router really reaches, seen two ways, both checked against Patroni.

A client's view: a connection through the route, asked which member it landed on (``rw`` must land on the
leader, ``ro`` on a replica when one streams, ``sync`` on the synchronous standby; the pooled routes the same
through PgBouncer). HAProxy's view: the servers its stats CSV says are up in each route, which must be exactly
those (HAProxy starts with every server up until its checks fail ``fall`` times: one lucky landing proves
nothing then). :func:`wait_routes` is provision's last step; :func:`route_view` and :func:`router_servers` are
what ``status`` shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dbtier.engines.postgres.haproxy_config import ServerState, server_states
from dbtier.errors import ClusterUnhealthy
from dbtier.engines.postgres.patroni_health import REPLICA_ROLES
from dbtier.engines.postgres.routing import Router, routed_dsn, routers, served_routes
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import pg_members

#: Which member answered: its address and port as the server saw the connection, and whether it is a standby.
WHO = "SELECT host(inet_server_addr()), inet_server_port(), pg_is_in_recovery()"


@dataclass(frozen=True)
class Landing:
    """Where one connection through a route landed (``member`` None: it failed, ``error`` says why)."""

    router: str
    route: str
    pooled: bool
    member: str | None
    standby: bool | None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.route}{' pooled' if self.pooled else ''}"

    @property
    def cell(self) -> str:
        """
        >>> Landing("router0", "rw", False, "pg1", False).cell
        'rw -> pg1'
        >>> Landing("router0", "ro", True, None, None, "connection refused").cell
        'ro pooled -> (connection refused)'
        """
        return f"{self.label} -> {self.member if self.member else f'({self.error})'}"


def member_at(spec: ClusterSpec, address: str | None, port: int) -> str | None:
    """The member whose PostgreSQL listens on ``address:port`` (a socket connection has no address).

    >>> member_at(ClusterSpec(), "127.0.0.1", 5433), member_at(ClusterSpec(), None, 5432), member_at(ClusterSpec(), "127.0.0.1", 9)
    ('pg1', 'pg0', None)
    """
    members = pg_members(spec)
    shared = len({m.host for m in members}) == 1
    for member in members:
        if member.pg_port == port and (address is None or shared or address == member.host):
            return member.name
    return None


def land(spec: ClusterSpec, passwords: Passwords, router: Router, route: str, pooled: bool,
         timeout: int = 3) -> Landing:
    """One connection through ``route`` on ``router`` as the app user: which member answered."""
    import psycopg

    dsn = routed_dsn(spec, route, pooled, router=router).replace("connect_timeout=3", f"connect_timeout={timeout}")
    try:
        with psycopg.connect(dsn, password=passwords.app, autocommit=True) as conn:
            row = conn.execute(WHO).fetchone()
    except psycopg.Error as err:
        return Landing(router.name, route, pooled, None, None, _first_line(err))
    if row is None:
        return Landing(router.name, route, pooled, None, None, "no answer")
    return Landing(router.name, route, pooled, member_at(spec, row[0], int(row[1])), bool(row[2]))


def _first_line(err: Exception) -> str:
    """
    >>> _first_line(ValueError("connection refused\\n\\tIs the server running?"))
    'connection refused'
    """
    text = str(err).strip().splitlines()
    return text[0].strip() if text else type(err).__name__


def route_problems(landings: list[Landing], leader: str | None, replicas: list[str], sync: list[str]) -> list[str]:
    """Each landing that disagrees with Patroni, as a sentence; a sync route with no synchronous standby and an
    ro route that fell back to the primary while a replica streams are problems too.

    >>> ok = [Landing("router0", "rw", False, "pg0", False), Landing("router0", "ro", False, "pg1", True)]
    >>> route_problems(ok, "pg0", ["pg1"], [])
    []
    >>> route_problems([Landing("router0", "rw", False, "pg1", True)], "pg0", ["pg1"], [])
    ['router0: the rw route reaches pg1, but Patroni says the leader is pg0']
    """
    problems = []
    for landing in landings:
        where = f"{landing.router}: the {landing.label} route"
        if landing.member is None:
            if landing.route == "sync" and not sync:
                continue  # no synchronous standby: HAProxy has no server for it, rightly
            problems.append(f"{where} reaches no member ({landing.error})")
        elif landing.route == "rw" and landing.member != leader:
            problems.append(f"{where} reaches {landing.member}, but Patroni says the leader is {leader}")
        elif landing.route == "ro" and replicas and landing.member not in replicas:
            problems.append(f"{where} reaches {landing.member}, not a streaming replica ({', '.join(replicas)})")
        elif landing.route == "sync" and landing.member not in sync:
            problems.append(f"{where} reaches {landing.member}, not the synchronous standby ({', '.join(sync) or 'none'})")
    return problems


def router_servers(spec: ClusterSpec, router: Router) -> list[ServerState] | str:
    """HAProxy's view from ``router``'s stats page (``/;csv``, HTTPS verifying the cluster CA), or why it
    could not be read."""
    import requests

    from dbtier.engines.postgres.control_plane import http_session

    scheme = "https" if spec.tls.enabled else "http"
    try:
        with http_session(spec) as session:
            answer = session.get(f"{scheme}://{router.host}:{spec.pg.ports.router_stats}/;csv", timeout=3)
    except requests.RequestException as err:
        return f"stats page {router.host}:{spec.pg.ports.router_stats} does not answer ({_first_line(err)})"
    if answer.status_code != 200:
        return f"stats page {router.host}:{spec.pg.ports.router_stats} answered HTTP {answer.status_code}"
    return server_states(answer.text)


def up_servers(states: list[ServerState]) -> dict[str, list[str]]:
    """Route -> the members HAProxy sends it to now (its regular servers that are up; ``ro``'s backups count
    only when no regular one is up, as HAProxy does).

    >>> up_servers([ServerState("rw", "pg0", "UP", 0, False), ServerState("rw", "pg1", "DOWN", 0, False),
    ...             ServerState("ro", "pg1", "DOWN", 0, False), ServerState("ro", "pg0-primary", "UP", 0, True)])
    {'rw': ['pg0'], 'ro': ['pg0']}
    """
    routes: dict[str, list[str]] = {}
    for state in states:
        routes.setdefault(state.route, [])
    for route in routes:
        regular = [s.server for s in states if s.route == route and not s.backup and s.up]
        backups = [s.server.removesuffix("-primary") for s in states if s.route == route and s.backup and s.up]
        routes[route] = regular or backups
    return routes


def view_problems(router: str, states: list[ServerState], leader: str | None, replicas: list[str],
                  sync: list[str]) -> list[str]:
    """Where HAProxy's servers disagree with Patroni: ``rw`` (pooled or not) must send to the leader only,
    ``sync`` to the synchronous standbys only, ``ro`` to streaming replicas only (some may lag past the limit)
    and to the leader only when no replica streams.

    >>> view_problems("router0", [ServerState("rw", "pg0", "UP", 0, False), ServerState("rw", "pg1", "UP", 0, False)],
    ...               "pg0", ["pg1"], [])
    ['router0: HAProxy sends rw to pg0, pg1, but Patroni says the leader is pg0']
    >>> view_problems("router0", [ServerState("ro-pooled", "pg0", "DOWN", 0, False),
    ...                           ServerState("ro-pooled", "pg0-primary", "UP", 0, True)], "pg0", [], [])
    []
    """
    problems = []
    for route, members in up_servers(states).items():
        kind = route.removesuffix("-pooled")
        shown = ", ".join(members) or "no server"
        where = f"{router}: HAProxy sends {route} to {shown}"
        if kind == "rw" and members != ([leader] if leader else []):
            problems.append(f"{where}, but Patroni says the leader is {leader or 'nobody'}")
        elif kind == "sync" and sorted(members) != sorted(sync):
            problems.append(f"{where}, but Patroni's synchronous standby is {', '.join(sync) or 'none'}")
        elif kind == "ro" and replicas and not (members and set(members) <= set(replicas)):
            problems.append(f"{where}, but the streaming replicas are {', '.join(replicas)}")
        elif kind == "ro" and not replicas and members != ([leader] if leader else []):
            problems.append(f"{where}, but no replica streams and the leader is {leader or 'nobody'}")
    return problems


def route_view(spec: ClusterSpec, passwords: Passwords) -> list[Landing]:
    """Where every route of every router lands now."""
    return [land(spec, passwords, router, route, pooled) for router in routers(spec) for route, pooled in served_routes(spec)]


def roles(cluster: dict[str, Any] | None) -> tuple[str | None, list[str], list[str]]:
    """(leader, streaming replicas, synchronous standbys) of Patroni's ``/cluster`` document.

    >>> roles({"members": [{"name": "pg0", "role": "leader", "state": "running"},
    ...                    {"name": "pg1", "role": "sync_standby", "state": "streaming"},
    ...                    {"name": "pg2", "role": "replica", "state": "starting"}]})
    ('pg0', ['pg1'], ['pg1'])
    """
    members = (cluster or {}).get("members", [])
    leader = next((m["name"] for m in members if m.get("role") in ("leader", "standby_leader")), None)
    streaming = [m["name"] for m in members if m.get("role") in REPLICA_ROLES and m.get("state") == "streaming"]
    sync = [m["name"] for m in members if m.get("role") == "sync_standby" and m.get("state") == "streaming"]
    return leader, streaming, sync


def wait_routes(spec: ClusterSpec, passwords: Passwords, cluster: Callable[[], dict[str, Any] | None],
                timeout: float) -> str:
    """Block until every route of every router lands where Patroni (``cluster()``: its ``/cluster`` document)
    says it should; raise ClusterUnhealthy with the first disagreement after ``timeout``."""
    started = time.monotonic()
    while True:
        landings = route_view(spec, passwords)
        patroni = roles(cluster())
        problems = route_problems(landings, *patroni)
        for router in routers(spec):
            states = router_servers(spec, router)
            problems += [f"{router.name}: {states}"] if isinstance(states, str) else view_problems(router.name, states, *patroni)
        if not problems:
            cells = {x: "sync -> (no synchronous standby)" if x.route == "sync" and not patroni[2] else x.cell
                     for x in landings}
            views = "; ".join(f"{r.name}: " + ", ".join(cells[x] for x in landings if x.router == r.name)
                              for r in routers(spec))
            return f"routes agree with Patroni after {time.monotonic() - started:.1f} s ({views})"
        if time.monotonic() - started > timeout:
            raise ClusterUnhealthy(f"{problems[0]} after {timeout:.0f} s; see the router's log "
                                   f"{spec.cluster_dir}/router0/haproxy.log")
        time.sleep(0.5)
