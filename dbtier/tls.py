"""Which certificates a cluster needs and where they live on its members (pure: spec in, plan out).

Each engine says which services serve TLS (:meth:`dbtier.engines.base.Engine.cert_holders`): for PostgreSQL a
``postgres`` certificate per member (the server's) and a ``patroni`` one (its REST API), an ``etcd`` one per etcd
member (client and peer); for MongoDB a ``mongod`` one per member. Each names what its service is reached by: the
member's address, the host names the provider knows for it, and ``127.0.0.1`` / ``localhost`` when the member
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
    #: where the key and the certificate go together in one PEM file, for a program that wants that
    bundle: str | None = None

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


@dataclass(frozen=True)
class CertHolder:
    """One service of one member that serves TLS, as its engine declares it (:meth:`Engine.cert_holders`):
    ``also_named``, other names its certificate must carry (router hosts a client reaches it through);
    ``bundle``, the program wants the key and the certificate in one PEM file (mongod's ``certificateKeyFile``),
    written beside them as ``<service>.pem``."""

    member: str
    service: str
    host: str
    dir: str
    also_named: tuple[str, ...] = ()
    bundle: bool = False


def cert_plan(spec: ClusterSpec, host_names: Callable[[str], Sequence[str]] = lambda host: ()) -> list[CertNeed]:
    """Every certificate of the cluster, in the order its engine lists them (:meth:`Engine.cert_holders`).
    ``host_names(address)``: the names the provider knows for a host (a Proxmox container's hostname; none for the
    local provider).

    >>> spec = ClusterSpec(provider="ssh", ssh={"key_file": "/k", "hosts": [
    ...     {"address": "10.0.0.11"}, {"address": "10.0.0.12"}, {"address": "10.0.0.13"}]},
    ...     backup={"repositories": [{"type": "fs", "shared": True}]}, routing={"enabled": True})
    >>> [(n.label, str(n.sans)) for n in cert_plan(spec) if n.member in ("pg0", "router2")]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('pg0 postgres', 'IP:10.0.0.11, IP:10.0.0.12, IP:10.0.0.13'), ('pg0 patroni', 'IP:10.0.0.11'),
     ('pg0 pgbouncer', 'IP:10.0.0.11, IP:10.0.0.12, IP:10.0.0.13'), ('router2 haproxy', 'IP:10.0.0.13')]
    >>> [(n.label, n.paths.cert, n.bundle) for n in cert_plan(ClusterSpec(engine="mongodb", members=1, data_root="/d"))]
    [('mongo0 mongod', '/d/dbtier/mongo0/tls/mongod.crt', '/d/dbtier/mongo0/tls/mongod.pem')]
    """
    from dbtier.engines.base import get_engine  # the engines import this module

    return [
        CertNeed(member=h.member, service=h.service, host=h.host, paths=tls_paths(h.dir, h.service),
                 common_name=f"{spec.name}-{h.member}-{h.service}",
                 sans=reached_by(h.host, [*host_names(h.host), *h.also_named]),
                 bundle=f"{h.dir}/tls/{h.service}.pem" if h.bundle else None)
        for h in get_engine(spec).cert_holders(spec, host_names)
    ]


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
