"""What the host firewall (:mod:`dbtier.firewall`) guards of a PostgreSQL cluster: its hosts and each host's ports
(pure: the spec in, addresses and ports out).

PostgreSQL, the routers' routes and PgBouncer are what clients reach; Patroni's REST API, etcd (client and peer),
the router's stats page and the exporters are the control plane's.
"""

from __future__ import annotations

from dbtier.engines.base import HostPorts
from dbtier.engines.postgres.pg_exporters import exporters
from dbtier.engines.postgres.routing import bouncers, listener_port, routers, served_routes
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import etcd_members, pg_members


def host_ports(spec: ClusterSpec, host: str) -> HostPorts:
    """
    >>> host_ports(ClusterSpec(), "127.0.0.1")
    HostPorts(clients=(5432, 5433, 5434), control=(2379, 2380, 2381, 2382, 2383, 2384, 8008, 8009, 8010, 9187, 9188, 9189))
    >>> host_ports(ClusterSpec(routing={"enabled": True}), "127.0.0.1").clients
    (5000, 5001, 5002, 5003, 5004, 5432, 5433, 5434, 6432, 6433, 6434)
    >>> host_ports(ClusterSpec(), "10.0.0.9").every
    ()
    """
    members = [m for m in pg_members(spec) if m.host == host]
    etcd = [e for e in etcd_members(spec) if e.host == host]
    control = {m.rest_port for m in members} | {p for e in etcd for p in (e.client_port, e.peer_port)}
    control |= {e.port for e in exporters(spec) if e.host == host}  # what Prometheus scrapes there
    clients = {m.pg_port for m in members} | {b.port for b in bouncers(spec) if b.host == host}
    if any(r.host == host for r in routers(spec)):
        clients |= {listener_port(spec, route, pooled) for route, pooled in served_routes(spec)}
        control.add(spec.pg.ports.router_stats)
    return HostPorts(tuple(sorted(clients)), tuple(sorted(control)))


def cluster_hosts(spec: ClusterSpec) -> list[str]:
    """Every host of a member or an etcd member, as the spec names it (an address or a DNS name).

    >>> cluster_hosts(ClusterSpec())
    ['127.0.0.1']
    """
    return sorted({m.host for m in pg_members(spec)} | {e.host for e in etcd_members(spec)})
