"""PgBouncer beside each member: pgbouncer.ini, auth_file and the auth query's SQL (pure tables)."""

from __future__ import annotations

from typing import Any

import pytest

from dbtier.engines.postgres import pgbouncer_config as pc
from dbtier.engines.postgres.patroni_config import MEMBER_ONLY_ROLES
from dbtier.engines.postgres.routing import Bouncer, bouncers
from dbtier.spec import AppDatabase, ClusterSpec, build_spec

VERIFIER = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"


def settings(ini: str, section: str) -> dict[str, str]:
    """The ``key = value`` lines of one section of a rendered ini."""
    found: dict[str, str] = {}
    current = None
    for line in ini.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and "=" in line and not line.startswith(";"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def rendered(data: dict[str, Any], member: int = 0) -> tuple[ClusterSpec, Bouncer, str]:
    spec = build_spec({**data, "routing": {"enabled": True, **data.get("routing", {})}}, environ={})
    bouncer = bouncers(spec)[member]
    return spec, bouncer, pc.render_pgbouncer_ini(spec, bouncer)


@pytest.mark.parametrize(
    ("data", "member", "expected"),
    [
        ({}, 0, {"listen_addr": "127.0.0.1", "listen_port": "6432", "pool_mode": "transaction",
                 "default_pool_size": "20", "max_client_conn": "1000",
                 "unix_socket_dir": "/var/lib/dbtier/dbtier/pg0/pgbouncer",
                 "auth_file": "/var/lib/dbtier/dbtier/pg0/pgbouncer/auth_user.txt"}),
        ({"members": 2, "etcd_members": 1, "ports": {"pgbouncer": 24610}}, 1,
         {"listen_port": "24611", "unix_socket_dir": "/var/lib/dbtier/dbtier/pg1/pgbouncer"}),
        ({"routing": {"pooler": {"pool_mode": "session", "default_pool_size": 7, "max_client_conn": 50}}}, 0,
         {"pool_mode": "session", "default_pool_size": "7", "max_client_conn": "50"}),
        ({"name": "orders", "data_root": "/srv/db"}, 2,
         {"unix_socket_dir": "/srv/db/orders/pg2/pgbouncer", "auth_file": "/srv/db/orders/pg2/pgbouncer/auth_user.txt"}),
    ],
)
def test_listener_and_pool_follow_the_spec(data: dict[str, Any], member: int, expected: dict[str, str]) -> None:
    _, _, ini = rendered(data, member)
    got = settings(ini, "pgbouncer")
    assert {key: got[key] for key in expected} == expected


@pytest.mark.parametrize("tls", [True, False])
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_authentication_lines_hold_in_every_spec(tls: bool, mode: str) -> None:
    _, _, ini = rendered({"tls": {"enabled": tls}, "routing": {"pooler": {"pool_mode": mode}}})
    got = settings(ini, "pgbouncer")
    assert got["auth_type"] == "hba"
    assert got["auth_hba_file"] == pc.hba_file_path(bouncers(build_spec({"routing": {"enabled": True}}, environ={}))[0])
    hba = [line.split() for line in pc.hba_file(build_spec({"tls": {"enabled": tls}}, environ={})).splitlines()]
    assert [line[0] for line in hba] == ["hostssl" if tls else "host"] * 4
    assert [(line[2], line[4]) for line in hba] == [(pc.AUTH_USER, "reject")] * 2 + [("all", "scram-sha-256")] * 2
    assert got["auth_user"] == pc.AUTH_USER == "dbtier_pgbouncer"
    assert got["auth_query"] == "SELECT usename, passwd FROM pgbouncer.get_auth($1)"
    assert got["admin_users"] == ""
    assert got["stats_users"] == "monitoring"
    assert got["ignore_startup_parameters"] == "extra_float_digits,options"
    assert got["server_check_query"] == "SELECT 1"
    assert 0 < int(got["server_check_delay"]) <= 30
    # It runs in the foreground and logs to stderr only.
    assert (got["logfile"], got["pidfile"], got["syslog"]) == ("", "", "0")
    assert "daemon" not in ini
    assert settings(ini, "users") == {pc.AUTH_USER: f"max_user_connections={pc.AUTH_POOL_CONNECTIONS}"}
    assert pc.AUTH_POOL_CONNECTIONS < pc.AUTH_CONNECTION_LIMIT


@pytest.mark.parametrize(
    ("data", "member", "lines"),
    [
        ({}, 0, {"app": "host=127.0.0.1 port=5432 dbname=app", "*": "host=127.0.0.1 port=5432"}),
        ({"app": {"user": "shop", "database": "orders"}, "ports": {"postgres": 24600}}, 1,
         {"orders": "host=127.0.0.1 port=24601 dbname=orders", "*": "host=127.0.0.1 port=24601"}),
        ({"provider": "ssh", "ssh": {"key_file": "/k", "hosts": [{"address": "10.0.0.11"}, {"address": "10.0.0.12"},
                                                                 {"address": "10.0.0.13"}]},
          "backup": {"repositories": [{"type": "fs", "shared": True}]}}, 2,
         {"app": "host=10.0.0.13 port=5434 dbname=app", "*": "host=10.0.0.13 port=5434"}),
    ],
)
def test_every_database_goes_to_the_members_own_postgres(data: dict[str, Any], member: int,
                                                         lines: dict[str, str]) -> None:
    spec, bouncer, ini = rendered(data, member)
    assert settings(ini, "databases") == lines
    assert settings(ini, "pgbouncer")["listen_addr"] == bouncer.member.host


def test_tls_on_requires_tls_from_clients_and_verifies_postgres() -> None:
    _, _, ini = rendered({})
    got = settings(ini, "pgbouncer")
    tls = "/var/lib/dbtier/dbtier/pg0/tls"
    assert {key: value for key, value in got.items() if "tls" in key} == {
        "client_tls_sslmode": "require",
        "client_tls_cert_file": f"{tls}/pgbouncer.crt",
        "client_tls_key_file": f"{tls}/pgbouncer.key",
        "client_tls_ca_file": f"{tls}/ca.crt",
        "client_tls_protocols": "secure",
        "server_tls_sslmode": "verify-full",
        "server_tls_ca_file": f"{tls}/ca.crt",
        "server_tls_protocols": "secure",
    }


def test_tls_off_leaves_no_tls_setting() -> None:
    _, _, ini = rendered({"tls": {"enabled": False}})
    assert "tls" not in ini


@pytest.mark.parametrize(
    ("password", "verifier", "expected"),
    [
        ("pw", None, '"dbtier_pgbouncer" "pw"\n'),
        ('a"b c', None, '"dbtier_pgbouncer" "a""b c"\n'),
        ("pw", VERIFIER, f'"dbtier_pgbouncer" "pw"\n"monitoring" "{VERIFIER}"\n'),
    ],
)
def test_auth_file_lines(password: str, verifier: str | None, expected: str) -> None:
    assert pc.auth_file(password, verifier) == expected


@pytest.mark.parametrize(
    ("password", "verifier"),
    [("two\nlines", None), ("pw", "monpw"), ("pw", "md5abcdef"), ("pw", VERIFIER + '"')],
)
def test_auth_file_refuses_what_it_cannot_hold(password: str, verifier: str | None) -> None:
    with pytest.raises(ValueError):
        pc.auth_file(password, verifier)


@pytest.mark.parametrize("app", [AppDatabase(), AppDatabase(user="shop", database="orders")])
def test_auth_setup_sql_shape(app: AppDatabase) -> None:
    sql = pc.auth_setup_sql(app)
    function = '"pgbouncer"."get_auth"(p_usename text)'
    assert sql[0] == f'GRANT CONNECT ON DATABASE "{app.database}" TO "dbtier_pgbouncer"'
    assert 'CREATE SCHEMA IF NOT EXISTS "pgbouncer" AUTHORIZATION "postgres"' in sql
    assert 'ALTER SCHEMA "pgbouncer" OWNER TO "postgres"' in sql
    assert 'GRANT USAGE ON SCHEMA "pgbouncer" TO "dbtier_pgbouncer"' in sql
    # PUBLIC loses access before the auth user gets it, and the function's owner is fixed on every run.
    order = ['REVOKE ALL ON SCHEMA "pgbouncer" FROM PUBLIC', 'GRANT USAGE ON SCHEMA "pgbouncer" TO "dbtier_pgbouncer"',
             f"ALTER FUNCTION {function} OWNER TO \"postgres\"", f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC",
             f'GRANT EXECUTE ON FUNCTION {function} TO "dbtier_pgbouncer"']
    assert [sql.index(s) for s in order] == sorted(sql.index(s) for s in order)
    create = next(s for s in sql if s.startswith("CREATE OR REPLACE FUNCTION"))
    for part in ("SECURITY DEFINER", "SET search_path = pg_catalog, pg_temp", "pg_catalog.pg_shadow",
                 "RETURNS TABLE (usename name, passwd text)", "NOT s.usesuper", "NOT s.userepl", "s.valuntil"):
        assert part in create
    for role in (*MEMBER_ONLY_ROLES, pc.AUTH_USER):
        assert f"'{role}'" in create


def test_auth_query_calls_the_function_the_sql_makes() -> None:
    assert pc.AUTH_QUERY.split(" FROM ")[1].split("(")[0] == pc.AUTH_FUNCTION
    assert pc.AUTH_FUNCTION == "pgbouncer.get_auth" and pc.AUTH_SCHEMA == "pgbouncer"
