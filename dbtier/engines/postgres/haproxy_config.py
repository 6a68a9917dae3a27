"""HAProxy in front of a PostgreSQL cluster: its haproxy.cfg, and the reading of its stats CSV (pure: no I/O).

Every route is a TCP listener (HAProxy passes the client's TLS through to PostgreSQL or PgBouncer, which check
the client's password; the member's certificate names every router host, see :func:`dbtier.tls.cert_plan`). A
server is in a route while its member's Patroni answers 200 to that route's health check:

    rw           /primary                        the leader's PostgreSQL
    ro           /replica?lag=<max lag bytes>    every replica close enough; the leader (as a backup server,
                                                 checked with /primary) when none is
    sync         /sync                           the synchronous standby (none: the route refuses connections)
    rw-pooled    /primary                        the leader's PgBouncer
    ro-pooled    /replica?lag=<max lag bytes>    the replicas' PgBouncers; the leader's as a backup

Checks go to Patroni's REST port over HTTPS, verifying its certificate against the cluster CA (a chain check:
HAProxy 2.6 matches a host name only against DNS names, and members are named by address). A server marked
down has its sessions shut (``on-marked-down shutdown-sessions``), so after a failover no client keeps writing
to an old primary through the router; it reconnects and lands on the new one.

The stats frontend (``ports.router_stats``, HTTPS with the router's ``haproxy`` certificate) serves the
read-only stats page at ``/``, its CSV at ``/;csv`` (:func:`server_states` reads it) and the Prometheus
endpoint at ``/metrics``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from dbtier.engines.postgres.routing import Router, bind_addresses, bouncer_of
from dbtier.spec import ROUTER_LISTENERS, ClusterSpec
from dbtier.tls import tls_paths
from dbtier.engines.postgres.topology import PgMember, pg_members

#: Route -> Patroni health-check path (``{lag}``: ``routing.replica_max_lag_bytes``).
CHECKS: dict[str, str] = {"rw": "/primary", "ro": "/replica?lag={lag}", "sync": "/sync"}
#: How long an idle client or server side of a routed session lives (a pool or an idle psql keeps it).
SESSION_TIMEOUT = "30m"
CONNECT_TIMEOUT = "3s"
MAXCONN = 2000


def check_path(spec: ClusterSpec, route: str) -> str:
    """
    >>> check_path(ClusterSpec(), "ro")
    '/replica?lag=16777216'
    """
    return CHECKS[route].format(lag=spec.pg.routing.replica_max_lag_bytes)


def _check_options(spec: ClusterSpec, router: Router, member: PgMember) -> str:
    options = f"check port {member.rest_port}"
    if spec.tls.enabled:
        options += f" check-ssl verify required ca-file {tls_paths(router.dir, 'haproxy').ca}"
    return options


def _servers(spec: ClusterSpec, router: Router, route: str, pooled: bool) -> list[str]:
    """The ``server`` lines of one route; on ``ro`` the leader's are backups with their own ``/primary`` check."""
    lines = []
    for member in pg_members(spec):
        bouncer = bouncer_of(spec, member) if pooled else None
        address = f"{member.host}:{bouncer.port if bouncer else member.pg_port}"
        lines.append(f"    server {member.name} {address} {_check_options(spec, router, member)}")
    if route == "ro":
        # A backup server takes traffic only when no regular one is up. Its own health check (/primary) lives
        # on a separate tracked server, as one backend has one httpchk path.
        for member in pg_members(spec):
            bouncer = bouncer_of(spec, member) if pooled else None
            address = f"{member.host}:{bouncer.port if bouncer else member.pg_port}"
            lines.append(f"    server {member.name}-primary {address} backup track "
                         f"{_backend('rw', pooled)}/{member.name}")
    return lines


def _backend(route: str, pooled: bool) -> str:
    return f"{route}-pooled" if pooled else route


def listen_block(spec: ClusterSpec, router: Router, route: str, pooled: bool) -> list[str]:
    """One ``listen`` section: a route's port on the router host and its servers.

    >>> from dbtier.engines.postgres.routing import routers
    >>> spec = ClusterSpec(tls={"enabled": False}, routing={"enabled": True})
    >>> print("\\n".join(listen_block(spec, routers(spec)[0], "ro", pooled=False)))
    listen ro
        bind 127.0.0.1:5001
        balance leastconn
        option httpchk
        http-check send meth GET uri /replica?lag=16777216
        http-check expect status 200
        server pg0 127.0.0.1:5432 check port 8008
        server pg1 127.0.0.1:5433 check port 8009
        server pg2 127.0.0.1:5434 check port 8010
        server pg0-primary 127.0.0.1:5432 backup track rw/pg0
        server pg1-primary 127.0.0.1:5433 backup track rw/pg1
        server pg2-primary 127.0.0.1:5434 backup track rw/pg2
    """
    name = _backend(route, pooled)
    port = spec.pg.ports.router + ROUTER_LISTENERS.index(name)
    return [
        f"listen {name}",
        *(f"    bind {address}:{port}" for address in bind_addresses(spec, router)),
        "    balance leastconn" if route == "ro" else "    balance first",
        "    option httpchk",
        f"    http-check send meth GET uri {check_path(spec, route)}",
        "    http-check expect status 200",
        *_servers(spec, router, route, pooled),
    ]


def stats_block(spec: ClusterSpec, router: Router) -> list[str]:
    """The stats frontend: HTTPS with the router's certificate when TLS is on; read-only (no ``stats admin``).

    >>> from dbtier.engines.postgres.routing import routers
    >>> spec = ClusterSpec(routing={"enabled": True})
    >>> stats_block(spec, routers(spec)[0])[1]
    '    bind 127.0.0.1:7000 ssl crt /var/lib/dbtier/dbtier/router0/tls/haproxy.crt ssl-min-ver TLSv1.2'
    """
    bind = f"    bind {router.host}:{spec.pg.ports.router_stats}"
    if spec.tls.enabled:
        bind += f" ssl crt {tls_paths(router.dir, 'haproxy').cert} ssl-min-ver TLSv1.2"
    return [
        "frontend stats",
        bind,
        "    mode http",
        "    option httplog",
        "    timeout client 30s",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 5s",
        "    stats show-legends",
    ]


def render_haproxy_config(spec: ClusterSpec, router: Router) -> str:
    """haproxy.cfg of ``router``: foreground (``haproxy -db -f``), logging to stderr (the service's log file).

    The ``rw`` listener comes first: ``ro``'s backup servers track its servers' checks.

    >>> from dbtier.engines.postgres.routing import routers
    >>> spec = ClusterSpec(routing={"enabled": True})
    >>> cfg = render_haproxy_config(spec, routers(spec)[0])
    >>> [line for line in cfg.splitlines() if line.startswith(("listen", "frontend"))]
    ['listen rw', 'listen ro', 'listen sync', 'listen rw-pooled', 'listen ro-pooled', 'frontend stats']
    >>> "check-ssl verify required ca-file /var/lib/dbtier/dbtier/router0/tls/ca.crt" in cfg
    True
    """
    check = spec.pg.routing.check
    lines = [
        f"# HAProxy {router.name} of cluster {spec.name} on {router.host} (rendered by dbtier)",
        "global",
        f"    maxconn {MAXCONN}",
        "    log stderr format raw local0 info",
        "    ssl-server-verify required",
        "    ssl-load-extra-del-ext",
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    option dontlognull",
        "    retries 2",
        f"    timeout connect {CONNECT_TIMEOUT}",
        f"    timeout client {SESSION_TIMEOUT}",
        f"    timeout server {SESSION_TIMEOUT}",
        "    timeout check 2s",
        # A server that is down is checked at the fast pace too: a new primary is found within fastinter.
        f"    default-server inter {check.inter_ms}ms fastinter {check.fastinter_ms}ms downinter {check.fastinter_ms}ms "
        f"fall {check.fall} rise {check.rise} on-marked-down shutdown-sessions",
        "",
    ]
    pooled_too = bouncer_of(spec, pg_members(spec)[0]) is not None
    for name in ROUTER_LISTENERS:
        route, _, pooled = name.partition("-")
        if pooled and not pooled_too:
            continue
        lines += [*listen_block(spec, router, route, bool(pooled)), ""]
    lines += stats_block(spec, router)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ServerState:
    """One server of one route, as HAProxy's stats CSV reports it."""

    route: str
    server: str
    status: str
    sessions: int
    backup: bool

    @property
    def up(self) -> bool:
        return self.status.startswith("UP")


def server_states(stats_csv: str) -> list[ServerState]:
    """The servers of every route in HAProxy's ``/;csv`` (frontends, backends and the stats page left out).

    >>> sample = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
    ...           "status,weight,act,bck,\\n"
    ...           "rw,FRONTEND,,,0,1,2000,3,,,,,,,,,,OPEN,,,,\\n"
    ...           "rw,pg0,0,0,2,2,,3,,,,,,,,,,UP,1,1,0,\\n"
    ...           "rw,pg1,0,0,0,0,,0,,,,,,,,,,DOWN,1,1,0,\\n"
    ...           "ro,pg1-primary,0,0,0,0,,0,,,,,,,,,,DOWN,1,0,1,\\n"
    ...           "rw,BACKEND,0,0,2,2,200,3,,,,,,,,,,UP,1,1,0,\\n"
    ...           "stats,FRONTEND,,,1,1,2000,1,,,,,,,,,,OPEN,,,,\\n")
    >>> [(s.route, s.server, s.up, s.sessions, s.backup) for s in server_states(sample)]
    [('rw', 'pg0', True, 2, False), ('rw', 'pg1', False, 0, False), ('ro', 'pg1-primary', False, 0, True)]
    """
    text = stats_csv.lstrip("# ")
    states = []
    for row in csv.DictReader(io.StringIO(text)):
        route, server = row.get("pxname", ""), row.get("svname", "")
        if route == "stats" or server in ("FRONTEND", "BACKEND", ""):
            continue
        states.append(ServerState(route=route, server=server, status=row.get("status", ""),
                                  sessions=int(row.get("scur") or 0), backup=(row.get("bck") or "0") == "1"))
    return states
