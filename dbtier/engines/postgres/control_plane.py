"""Who may use the control planes, Patroni's REST API and etcd (pure: data in, data out).

Patroni's unsafe endpoints (``POST /restart``, ``/switchover``, ``PATCH /config`` ...) take a login; its health
endpoints (``GET /health``, ``/cluster``, ``/patroni``) stay readable for routers and monitoring. etcd runs with
RBAC on: ``root``, and one user per cluster whose role reaches only that cluster's Patroni prefix.

Every client setting (scheme, CA, client certificate) comes from :func:`client_settings`; the members' own
settings (Patroni's certificate, its CA for etcd and for patronictl) from the sections below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from dbtier.tls import tls_paths
from dbtier.engines.postgres.topology import EtcdMember, PgMember, etcd_members

#: Patroni's ``namespace``: its keys are ``<namespace><scope>/...`` (``/dbtier/orders/leader``).
NAMESPACE = "/dbtier/"
#: The user of Patroni's unsafe REST endpoints (dbtier, patronictl and the members themselves).
REST_USER = "dbtier"
ETCD_ROOT = "root"


@dataclass(frozen=True, repr=False)
class Login:
    """A user name and its password; the repr never shows the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Login({self.username!r}, '**********')"

    __str__ = __repr__

    def as_basic_auth(self) -> tuple[str, str]:
        return (self.username, self.password)

    def as_patroni(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def rest_login(passwords: Passwords) -> Login:
    return Login(REST_USER, passwords.restapi)


def etcd_root_login(passwords: Passwords) -> Login:
    return Login(ETCD_ROOT, passwords.etcd_root)


def etcd_user(spec: ClusterSpec) -> str:
    """The cluster's etcd user, and the name of its role.

    >>> etcd_user(ClusterSpec(name="orders"))
    'dbtier-orders'
    """
    return f"dbtier-{spec.name}"


def etcd_login(spec: ClusterSpec, passwords: Passwords) -> Login:
    return Login(etcd_user(spec), passwords.etcd)


# -- which keys a cluster's role reaches ---------------------------------------------------------


def key_prefix(spec: ClusterSpec) -> str:
    """Every key Patroni keeps for the cluster starts with this (the trailing slash keeps ``orders`` out of
    ``orders-restored``).

    >>> key_prefix(ClusterSpec(name="orders"))
    '/dbtier/orders/'
    """
    return f"{NAMESPACE}{spec.name}/"


def prefix_range_end(prefix: str) -> str:
    """etcd's range end for "every key that starts with ``prefix``": its last byte plus one.

    >>> prefix_range_end("/dbtier/orders/")
    '/dbtier/orders0'
    """
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


@dataclass(frozen=True)
class Permission:
    """A key range ``[key, range_end)`` and what a role may do there."""

    key: str
    range_end: str
    perm: Literal["READ", "WRITE", "READWRITE"] = "READWRITE"

    def reaches(self, key: str) -> bool:
        return self.key.encode() <= key.encode() < self.range_end.encode()


@dataclass(frozen=True)
class RbacPlan:
    """The etcd users and roles a cluster needs: ``root`` (etcd's own admin role) and the cluster's user."""

    root_user: str
    user: str
    role: str
    permissions: tuple[Permission, ...]

    def reaches(self, key: str) -> bool:
        """True when the cluster's role may read and write ``key``."""
        return any(p.reaches(key) for p in self.permissions)


def rbac_plan(spec: ClusterSpec) -> RbacPlan:
    """What etcd's RBAC must hold for ``spec``: its Patroni prefix, read and written by the cluster's user.
    dbtier reads nothing else from etcd (its member states come from the unauthenticated status call)."""
    prefix = key_prefix(spec)
    return RbacPlan(root_user=ETCD_ROOT, user=etcd_user(spec), role=etcd_user(spec),
                    permissions=(Permission(prefix, prefix_range_end(prefix)),))


# -- how clients reach a member ------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """How a client reaches a control plane: the URL scheme, what verifies the server (the cluster CA's
    certificate file, or True for the system's), a client certificate."""

    scheme: Literal["http", "https"] = "http"
    verify: bool | str = True
    cert: tuple[str, str] | None = None


def client_settings(spec: ClusterSpec, ca_file: str | None = None) -> ClientSettings:
    """The settings every dbtier client of Patroni's REST API and of etcd uses: HTTPS verifying the member's
    certificate against the cluster CA (``ca_file``, this machine's copy by default) when TLS is on.

    >>> client_settings(ClusterSpec(), "/w/pg/ca.crt")
    ClientSettings(scheme='https', verify='/w/pg/ca.crt', cert=None)
    >>> client_settings(ClusterSpec(tls={"enabled": False}))
    ClientSettings(scheme='http', verify=True, cert=None)
    """
    if not spec.tls.enabled:
        return ClientSettings()
    from dbtier.workdir import ca_cert_file

    return ClientSettings(scheme="https", verify=ca_file or ca_cert_file(spec.name))


def http_session(spec: ClusterSpec) -> Any:
    """A ``requests.Session`` for the cluster's control planes with :func:`client_settings`; it ignores the
    environment (``REQUESTS_CA_BUNDLE`` would replace the cluster CA on a session, a proxy variable would send
    member traffic through a proxy)."""
    import requests

    settings = client_settings(spec)
    session = requests.Session()
    session.trust_env = False
    session.verify = settings.verify
    session.cert = settings.cert
    return session


def rest_base(spec: ClusterSpec, member: PgMember) -> str:
    """
    >>> from dbtier.engines.postgres.topology import pg_members
    >>> rest_base(ClusterSpec(), pg_members(ClusterSpec())[1])
    'https://127.0.0.1:8009'
    """
    return member.rest_url


def etcd_base(spec: ClusterSpec, member: EtcdMember) -> str:
    return member.client_url


# -- the sections of patroni.yml -----------------------------------------------------------------


def restapi_section(spec: ClusterSpec, member: PgMember, passwords: Passwords) -> dict[str, Any]:
    """Patroni's ``restapi``: HTTPS with the member's ``patroni`` certificate when TLS is on (no client
    certificate asked for: routers and monitoring read the health endpoints); its unsafe endpoints take the
    REST login; GET endpoints need none."""
    section: dict[str, Any] = {
        "listen": f"{member.host}:{member.rest_port}",
        "connect_address": f"{member.host}:{member.rest_port}",
        "authentication": rest_login(passwords).as_patroni(),
    }
    if spec.tls.enabled:
        files = tls_paths(member.dir, "patroni")
        section.update({"certfile": files.cert, "keyfile": files.key, "cafile": files.ca, "verify_client": "none"})
    return section


def etcd3_section(spec: ClusterSpec, member: PgMember, passwords: Passwords) -> dict[str, Any]:
    """Patroni's ``etcd3``: every member, as the cluster's own etcd user, over TLS verifying etcd's
    certificates against the cluster CA (the copy in the member's ``tls`` directory)."""
    section: dict[str, Any] = {
        "hosts": [f"{m.host}:{m.client_port}" for m in etcd_members(spec)],
        "protocol": member.scheme,
        **etcd_login(spec, passwords).as_patroni(),
    }
    if spec.tls.enabled:
        section["cacert"] = tls_paths(member.dir, "patroni").ca
    return section


def ctl_section(spec: ClusterSpec, member: PgMember, passwords: Passwords) -> dict[str, Any]:
    """``ctl``: what ``patronictl -c patroni.yml`` on a member uses to call the REST API (verifying the
    members' certificates against the cluster CA)."""
    section: dict[str, Any] = {"authentication": rest_login(passwords).as_patroni()}
    if spec.tls.enabled:
        section.update({"cacert": tls_paths(member.dir, "patroni").ca, "insecure": False})
    return section
