"""Which certificates a cluster needs and where they live on its members (pure: spec in, plan out).

Per PostgreSQL member a ``postgres`` certificate (the server's) and a ``patroni`` one (its REST API); per
etcd member an ``etcd`` one (client and peer). Each names what its service is reached by: the member's
address, the host names the provider knows for it, and ``127.0.0.1`` / ``localhost`` when the member
listens on loopback. On a member, beside its other files::

    <member dir>/tls/ca.crt           the cluster CA's certificate (public; never its key)
    <member dir>/tls/<service>.crt    the service's certificate
    <member dir>/tls/<service>.key    its private key: mode 0600, owned by the database OS user

Engine configuration points at :func:`tls_paths`; :func:`cert_plan` is what provision issues and
``dbtier certs`` checks.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dbtier.certs import Sans, problem
from dbtier.spec import ClusterSpec
from dbtier.topology import etcd_members, pg_members

#: Services that get a certificate, by the kind of member that runs them.
PG_SERVICES: tuple[str, ...] = ("postgres", "patroni")
ETCD_SERVICES: tuple[str, ...] = ("etcd",)
ROUTER_SERVICES: tuple[str, ...] = ("haproxy",)
#: Services clients may reach through a router: their certificates also name the router hosts.
ROUTED_SERVICES: frozenset[str] = frozenset({"postgres", "pgbouncer"})
KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700


@dataclass(frozen=True)
class TlsPaths:
    """The TLS files of one service of one member."""

    dir: str
    ca: str
    cert: str
    key: str


def tls_paths(member_dir: str, service: str) -> TlsPaths:
    """
    >>> tls_paths("/var/lib/dbtier/dbtier/pg0", "patroni")
    TlsPaths(dir='/var/lib/dbtier/dbtier/pg0/tls', ca='/var/lib/dbtier/dbtier/pg0/tls/ca.crt', cert='/var/lib/dbtier/dbtier/pg0/tls/patroni.crt', key='/var/lib/dbtier/dbtier/pg0/tls/patroni.key')
    """
    tls = f"{member_dir}/tls"
    return TlsPaths(dir=tls, ca=f"{tls}/ca.crt", cert=f"{tls}/{service}.crt", key=f"{tls}/{service}.key")


@dataclass(frozen=True)
class CertNeed:
    """One certificate the cluster needs: whose, for which service, on which host, named how."""

    member: str
    service: str
    host: str
    paths: TlsPaths
    common_name: str
    sans: Sans

    @property
    def label(self) -> str:
        return f"{self.member} {self.service}"


def reached_by(address: str, host_names: Sequence[str] = ()) -> Sans:
    """The names a service on ``address`` is reached by: the address, the host names, and loopback's two
    names when the address is a loopback one.

    >>> str(reached_by("127.0.0.1"))
    'IP:127.0.0.1, DNS:localhost'
    >>> str(reached_by("127.0.0.21"))
    'IP:127.0.0.1, IP:127.0.0.21, DNS:localhost'
    >>> str(reached_by("10.0.0.11", ["orders-1"]))
    'IP:10.0.0.11, DNS:orders-1'
    >>> str(reached_by("db1.example.com"))
    'DNS:db1.example.com'
    """
    names = [address, *host_names]
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = address == "localhost"
    if loopback:
        names += ["127.0.0.1", "localhost"]
    return Sans.of(names)


def cert_plan(spec: ClusterSpec, host_names: Callable[[str], Sequence[str]] = lambda host: ()) -> list[CertNeed]:
    """Every certificate of the cluster, members first, then etcd, then the routers. ``host_names(address)``:
    the names the provider knows for a host (a Proxmox container's hostname; none for the local provider).

    With routing on a member also has a ``pgbouncer`` certificate, and its ``postgres`` and ``pgbouncer`` ones
    also name every router host: HAProxy passes TLS through, so a client that reached the member through a
    router checks the router's address against the member's certificate.

    >>> spec = ClusterSpec(provider="ssh", ssh={"key_file": "/k", "hosts": [
    ...     {"address": "10.0.0.11"}, {"address": "10.0.0.12"}, {"address": "10.0.0.13"}]},
    ...     backup={"repositories": [{"type": "fs", "shared": True}]}, routing={"enabled": True})
    >>> [(n.label, str(n.sans)) for n in cert_plan(spec) if n.member in ("pg0", "router2")]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('pg0 postgres', 'IP:10.0.0.11, IP:10.0.0.12, IP:10.0.0.13'), ('pg0 patroni', 'IP:10.0.0.11'),
     ('pg0 pgbouncer', 'IP:10.0.0.11, IP:10.0.0.12, IP:10.0.0.13'), ('router2 haproxy', 'IP:10.0.0.13')]
    """
    from dbtier.routing import bouncers, router_addresses, routers

    pooled = {b.member.name for b in bouncers(spec)}
    via = [name for address in router_addresses(spec) for name in (address, *host_names(address))]
    needs = []
    members = [(m.name, m.host, m.dir, PG_SERVICES + (("pgbouncer",) if m.name in pooled else ()))
               for m in pg_members(spec)]
    members += [(m.name, m.host, m.dir, ETCD_SERVICES) for m in etcd_members(spec)]
    members += [(r.name, r.host, r.dir, ROUTER_SERVICES) for r in routers(spec)]
    for name, host, directory, services in members:
        for service in services:
            names = [*host_names(host), *(via if service in ROUTED_SERVICES else ())]
            needs.append(CertNeed(member=name, service=service, host=host, paths=tls_paths(directory, service),
                                  common_name=f"{spec.name}-{name}-{service}", sans=reached_by(host, names)))
    return needs


def renewal_reason(need: CertNeed, cert_pem: bytes | None, key_ok: bool, ca_pem: bytes, now: datetime.datetime,
                   renew_before_days: int) -> str | None:
    """Why provision must issue ``need`` again (missing, foreign, expired, wrong SANs, soon expiring, its key
    missing or not its own), or None to keep it.

    >>> renewal_reason(cert_plan(ClusterSpec())[0], None, False, b"", datetime.datetime.now(), 30)
    'missing'
    """
    reason = problem(cert_pem, ca_pem, now, need.sans, renew_before_days)
    if reason is None and not key_ok:
        return f"its key {need.paths.key} is missing or is not the certificate's"
    return reason


def fix_hint(spec_flag: str = "") -> str:
    """What to run when a certificate is bad.

    >>> fix_hint(" --spec s.yaml")
    "run 'dbtier provision --spec s.yaml' (issues what is missing or bad) or 'python -m flows.rotate_certs --spec s.yaml' (all new)"
    """
    return (f"run 'dbtier provision{spec_flag}' (issues what is missing or bad) or "
            f"'python -m flows.rotate_certs{spec_flag}' (all new)")
