"""Where each PostgreSQL and etcd member lives: names, hosts, ports and paths, and the DSNs that reach them,
derived from the spec (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from dbtier.spec import ClusterSpec
from dbtier.topology import member_host


@dataclass(frozen=True)
class PgMember:
    """One PostgreSQL member, run by its own Patroni."""

    index: int
    name: str
    host: str
    pg_port: int
    rest_port: int
    dir: str
    #: ``https`` when the cluster runs TLS (:attr:`dbtier.spec.TlsSettings.enabled`).
    scheme: str = "http"

    @property
    def data_dir(self) -> str:
        return f"{self.dir}/pgdata"

    @property
    def config(self) -> str:
        return f"{self.dir}/patroni.yml"

    @property
    def socket_dir(self) -> str:
        return f"{self.dir}/run"

    @property
    def rest_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.rest_port}"


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member of the consensus store."""

    index: int
    name: str
    host: str
    client_port: int
    peer_port: int
    dir: str
    scheme: str = "http"

    @property
    def data_dir(self) -> str:
        return f"{self.dir}/data"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.peer_port}"


def scheme(spec: ClusterSpec) -> str:
    """The URL scheme of the cluster's Patroni REST API and etcd.

    >>> scheme(ClusterSpec()), scheme(ClusterSpec(tls={"enabled": False}))
    ('https', 'http')
    """
    return "https" if spec.tls.enabled else "http"


def pg_members(spec: ClusterSpec) -> list[PgMember]:
    """
    >>> [(m.name, m.pg_port, m.rest_port) for m in pg_members(ClusterSpec(members=2, etcd_members=1))]
    [('pg0', 5432, 8008), ('pg1', 5433, 8009)]
    """
    return [
        PgMember(
            index=i,
            name=f"pg{i}",
            host=member_host(spec, i),
            pg_port=spec.pg.ports.postgres + i,
            rest_port=spec.pg.ports.patroni + i,
            dir=f"{spec.cluster_dir}/pg{i}",
            scheme=scheme(spec),
        )
        for i in range(spec.members)
    ]


def pg_member(spec: ClusterSpec, name: str) -> PgMember:
    """The member called ``name`` (``pg0``, ``pg1``...).

    >>> pg_member(ClusterSpec(), "pg1").pg_port
    5433
    """
    return next(m for m in pg_members(spec) if m.name == name)


def etcd_members(spec: ClusterSpec) -> list[EtcdMember]:
    """
    >>> [(m.name, m.client_port, m.peer_port) for m in etcd_members(ClusterSpec())]
    [('etcd0', 2379, 2380), ('etcd1', 2381, 2382), ('etcd2', 2383, 2384)]
    """
    return [
        EtcdMember(
            index=i,
            name=f"etcd{i}",
            host=member_host(spec, i % spec.members),
            client_port=spec.pg.ports.etcd + 2 * i,
            peer_port=spec.pg.ports.etcd + 2 * i + 1,
            dir=f"{spec.cluster_dir}/etcd{i}",
            scheme=scheme(spec),
        )
        for i in range(spec.pg.etcd_size(spec.members))
    ]


def libpq_tls(spec: ClusterSpec, ca_file: str | None = None) -> dict[str, str]:
    """The libpq settings every client of the cluster uses: the server's certificate verified against the
    cluster CA (``ca_file``: where this machine keeps its certificate, :func:`dbtier.workdir.ca_cert_file`
    by default); none when the cluster runs without TLS.

    >>> libpq_tls(ClusterSpec(), "/w/pg/ca.crt")
    {'sslmode': 'verify-full', 'sslrootcert': '/w/pg/ca.crt'}
    >>> libpq_tls(ClusterSpec(tls={"enabled": False}))
    {}
    """
    if not spec.tls.enabled:
        return {}
    from dbtier.workdir import ca_cert_file

    return {"sslmode": "verify-full", "sslrootcert": ca_file or ca_cert_file(spec.name)}


def pgpass_entry(host: str, port: str, database: str, user: str, password: str) -> str:
    """One line of a libpq password file, ``:`` and ``\\`` escaped in every field (a bare ``*`` matches anything).

    >>> pgpass_entry("127.0.0.1", "6432", "pgbouncer", "monitoring", "a:b")
    '127.0.0.1:6432:pgbouncer:monitoring:a\\\\:b'
    """
    return ":".join(v.replace("\\", "\\\\").replace(":", "\\:") for v in (host, port, database, user, password))


def conninfo(spec: ClusterSpec, host: str, port: int, user: str, database: str, connect_timeout: int = 3) -> str:
    """A single-server libpq conninfo without a password, with the cluster's TLS settings.

    >>> conninfo(ClusterSpec(tls={"enabled": False}), "127.0.0.1", 5433, "app", "app")
    'host=127.0.0.1 port=5433 user=app dbname=app connect_timeout=3'
    """
    words = {"host": host, "port": str(port), "user": user, "dbname": database,
             "connect_timeout": str(connect_timeout), **libpq_tls(spec)}
    return " ".join(f"{key}={value}" for key, value in words.items())


def client_dsn(spec: ClusterSpec, user: str | None = None, database: str | None = None,
               ca_file: str | None = None, members: list[PgMember] | None = None) -> str:
    """A libpq multi-host URI that always reaches the writable primary, verifying its certificate against
    the cluster CA when TLS is on (``members``: only these, e.g. one old primary). It never holds a password.

    >>> client_dsn(ClusterSpec(members=2, etcd_members=1), ca_file="/w/pg/ca.crt")  # doctest: +NORMALIZE_WHITESPACE
    'postgresql://app@127.0.0.1:5432,127.0.0.1:5433/app?target_session_attrs=read-write&connect_timeout=3&sslmode=verify-full&sslrootcert=/w/pg/ca.crt'
    """
    from urllib.parse import quote

    hosts = ",".join(f"{m.host}:{m.pg_port}" for m in (members or pg_members(spec)))
    options = "".join(f"&{key}={quote(value, safe='/')}" for key, value in libpq_tls(spec, ca_file).items())
    return (
        f"postgresql://{user or spec.app.user}@{hosts}/{database or spec.app.database}"
        f"?target_session_attrs=read-write&connect_timeout=3{options}"
    )
