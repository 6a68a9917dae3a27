"""patroni.yml and pg_hba rendering for one member (pure: data in, data out)."""

from __future__ import annotations

import ipaddress
from typing import Any

from dbtier.audit import audit_parameters
from dbtier.engines.postgres import pgbackrest
from dbtier.engines.postgres import control_plane
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from dbtier.tls import tls_paths
from dbtier.engines.postgres.topology import PgMember, pg_members

SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
REWIND_USER = "rewind_user"

#: Parameters dbtier sets so that replication, slots and pg_rewind work; the spec may add, not remove.
BASE_PARAMETERS: dict[str, Any] = {
    "wal_level": "replica",
    "hot_standby": "on",
    "wal_log_hints": "on",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "128MB",
    "password_encryption": "scram-sha-256",
    "max_connections": 100,
    # Member slots keep WAL for a replica that is away; this caps how much (the replica re-clones past it).
    "max_slot_wal_keep_size": "2GB",
}


def _cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{32 if ip.version == 4 else 128}"


#: Roles only members use: never reachable from ``allowed_client_networks``.
MEMBER_ONLY_ROLES = (SUPERUSER, REPLICATION_USER, REWIND_USER)


def pg_hba(spec: ClusterSpec) -> list[str]:
    """pg_hba lines: scram-sha-256 on every TCP line, never ``trust``; the first line that matches decides.

    With TLS on (the default) every TCP line is ``hostssl`` and a connection in clear is rejected before any
    of them; with TLS off they are ``host`` lines. The members' own addresses come first; then client
    networks reject the superuser, replication and rewind roles (and any replication connection) before
    their ``all all`` lines.

    >>> pg_hba(ClusterSpec())[:5]  # doctest: +NORMALIZE_WHITESPACE
    ['local all all scram-sha-256', 'local replication replicator scram-sha-256',
     'hostnossl all all all reject', 'hostnossl replication all all reject',
     'hostssl replication replicator 127.0.0.1/32 scram-sha-256']
    >>> pg_hba(ClusterSpec(allowed_client_networks=["10.0.0.0/24"], tls={"enabled": False}))[-4:-1]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['host all postgres,replicator,rewind_user 10.0.0.0/24 reject', 'host replication all 10.0.0.0/24 reject',
     'host all all 10.0.0.0/24 scram-sha-256']
    """
    tcp = "hostssl" if spec.tls.enabled else "host"
    member_nets = sorted({_cidr(m.host) for m in pg_members(spec)} | {"127.0.0.1/32"})
    # Patroni asks its own member for the timeline over the socket (use_unix_socket_repl): "all" does not
    # match a replication connection.
    lines = ["local all all scram-sha-256", f"local replication {REPLICATION_USER} scram-sha-256"]
    if spec.tls.enabled:  # "all" as a database does not match replication connections: both are rejected
        lines += ["hostnossl all all all reject", "hostnossl replication all all reject"]
    lines += [f"{tcp} replication {REPLICATION_USER} {net} scram-sha-256" for net in member_nets]
    lines += [f"{tcp} all all {net} scram-sha-256" for net in member_nets]
    for net in spec.allowed_client_networks:
        lines += [f"{tcp} all {','.join(MEMBER_ONLY_ROLES)} {net} reject", f"{tcp} replication all {net} reject"]
    lines += [f"{tcp} all all {net} scram-sha-256" for net in spec.allowed_client_networks]
    lines.append(f"{tcp} all all ::1/128 scram-sha-256")
    return lines


def ssl_parameters(spec: ClusterSpec, member: PgMember) -> dict[str, Any]:
    """The server side of TLS: the member's ``postgres`` certificate and key, the cluster CA, TLS 1.2 at
    least; a reload picks up new files (``rotate_certs``).

    >>> from dbtier.engines.postgres.topology import pg_members
    >>> ssl_parameters(ClusterSpec(), pg_members(ClusterSpec())[0])["ssl_cert_file"]
    '/var/lib/dbtier/dbtier/pg0/tls/postgres.crt'
    >>> ssl_parameters(ClusterSpec(tls={"enabled": False}), pg_members(ClusterSpec())[0])
    {'ssl': 'off'}
    """
    if not spec.tls.enabled:
        return {"ssl": "off"}
    files = tls_paths(member.dir, "postgres")
    return {"ssl": "on", "ssl_cert_file": files.cert, "ssl_key_file": files.key, "ssl_ca_file": files.ca,
            "ssl_min_protocol_version": "TLSv1.2"}


def member_connection_tls(spec: ClusterSpec, member: PgMember) -> dict[str, str]:
    """How a member's replication and pg_rewind connections to another member verify it: the full
    certificate check against the cluster CA's copy in the member's own ``tls`` directory (libpq ignores
    these on the Unix socket Patroni uses for its own member)."""
    if not spec.tls.enabled:
        return {}
    return {"sslmode": "verify-full", "sslrootcert": tls_paths(member.dir, "postgres").ca}


def postgresql_parameters(spec: ClusterSpec) -> dict[str, Any]:
    params = dict(BASE_PARAMETERS)
    params.update(pgbackrest.archive_parameters(spec))
    params.update(spec.pg.postgresql_parameters)
    params.update(audit_parameters(spec.pg.audit, params))
    return params


def render_patroni_config(spec: ClusterSpec, member: PgMember, passwords: Passwords) -> dict[str, Any]:
    """The whole patroni.yml of ``member`` as a dict, ready for ``yaml.safe_dump``."""
    timing = spec.pg.patroni
    tls = member_connection_tls(spec, member)
    return {
        "scope": spec.name,
        "namespace": "/dbtier/",
        "name": member.name,
        "log": {"level": "INFO"},
        "restapi": control_plane.restapi_section(spec, member, passwords),
        "etcd3": control_plane.etcd3_section(spec, member, passwords),
        "ctl": control_plane.ctl_section(spec, member, passwords),
        "bootstrap": {
            "dcs": {
                "ttl": timing.ttl,
                "loop_wait": timing.loop_wait,
                "retry_timeout": timing.retry_timeout,
                "maximum_lag_on_failover": timing.maximum_lag_on_failover,
                "failsafe_mode": True,
                "synchronous_mode": spec.pg.synchronous_mode,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": postgresql_parameters(spec),
                },
            },
            **bootstrap_method(spec, member),
        },
        "postgresql": {
            "listen": f"{member.host}:{member.pg_port}",
            "connect_address": f"{member.host}:{member.pg_port}",
            "data_dir": member.data_dir,
            "bin_dir": spec.pg.binaries.pg_bin_dir,
            "pgpass": f"{member.dir}/pgpass",
            # Patroni's own connections go through the member's socket: TCP from a host to its own address may
            # leave from another one (127.0.0.x loopback aliases leave from 127.0.0.1), which the trust lines
            # Patroni opens while a restore bootstraps do not match.
            "use_unix_socket": True,
            # ... and so do its replication connections: then the trust lines Patroni opens while a custom
            # bootstrap (a restore) runs are ``local`` ones only (the socket, in the member's 0700 directory),
            # never ``host`` lines on TCP.
            "use_unix_socket_repl": True,
            "authentication": {
                "superuser": {"username": SUPERUSER, "password": passwords.superuser, **tls},
                "replication": {"username": REPLICATION_USER, "password": passwords.replication, **tls},
                "rewind": {"username": REWIND_USER, "password": passwords.rewind, **tls},
            },
            "parameters": {
                "unix_socket_directories": member.socket_dir,
                "archive_command": pgbackrest.archive_command(spec, member),
                **ssl_parameters(spec, member),
            },
            "recovery_conf": {"restore_command": pgbackrest.restore_command(spec, member)},
            "pg_hba": pg_hba(spec),
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def bootstrap_method(spec: ClusterSpec, member: PgMember) -> dict[str, Any]:
    """How a new cluster's first member comes to life: ``initdb``, or a restore from a backup."""
    if spec.restore_from is None:
        return {"initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"]}
    return {
        "method": "dbtier_restore",
        "dbtier_restore": {
            "command": pgbackrest.restore_bootstrap_command(spec, member),
            "no_params": True,
            "keep_existing_recovery_conf": True,
        },
    }


def patroni_argv(spec: ClusterSpec, member: PgMember) -> list[str]:
    return [spec.pg.binaries.patroni, member.config]
