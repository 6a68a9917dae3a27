"""Least privilege, audit and pg_hba order (pure tables)."""

from __future__ import annotations

import pytest

from dbtier.audit import AuditSettings, audit_parameters, merge_preload, preloads_pgaudit
from dbtier.engines.postgres import pg_admin, pg_roles
from dbtier.engines.postgres.patroni_config import pg_hba, postgresql_parameters, render_patroni_config
from dbtier.errors import SpecError
from dbtier.engines.postgres.engine import POSTGRES_SECRETS
from dbtier.secrets import Passwords
from dbtier.spec import AppDatabase, build_spec
from dbtier.engines.postgres.topology import pg_members


def first_match(lines: list[str], tls: bool, database: str, user: str, address: str) -> str:
    """The pg_hba line PostgreSQL would pick for a TCP connection with or without TLS (enough of its rules for
    dbtier's lines: ``host`` matches both, ``hostssl`` TLS only, ``hostnossl`` clear only; ``all`` as a
    database never matches a replication connection)."""
    import ipaddress

    kinds = {"host", "hostssl" if tls else "hostnossl"}
    for line in lines:
        fields = line.split()
        if fields[0] not in kinds:
            continue
        dbs, users, net = fields[1].split(","), fields[2].split(","), fields[3]
        db_ok = database in dbs if database == "replication" else ("all" in dbs or database in dbs)
        in_net = net == "all" or ipaddress.ip_address(address) in ipaddress.ip_network(net)
        if db_ok and ("all" in users or user in users) and in_net:
            return fields[-1]
    return "no line"


CLIENTS = {"allowed_client_networks": ["127.0.0.0/24", "10.0.0.0/8"]}


@pytest.mark.parametrize(
    ("database", "user", "address", "verdict"),
    [
        ("postgres", "postgres", "127.0.0.1", "scram-sha-256"),  # a member's own address
        ("postgres", "postgres", "127.0.0.77", "reject"),  # a client network
        ("postgres", "postgres", "10.1.2.3", "reject"),
        ("app", "replicator", "127.0.0.77", "reject"),
        ("app", "rewind_user", "10.1.2.3", "reject"),
        ("replication", "replicator", "127.0.0.1", "scram-sha-256"),
        ("replication", "replicator", "127.0.0.77", "reject"),
        ("replication", "app", "10.1.2.3", "reject"),
        ("app", "app", "127.0.0.77", "scram-sha-256"),
        ("app", "monitoring", "10.1.2.3", "scram-sha-256"),
        ("app", "app", "192.168.1.1", "no line"),
    ],
)
def test_pg_hba_rejects_member_roles_from_client_networks(database: str, user: str, address: str, verdict: str) -> None:
    assert first_match(pg_hba(build_spec(CLIENTS, environ={})), True, database, user, address) == verdict
    plain = build_spec({**CLIENTS, "tls": {"enabled": False}}, environ={})
    assert first_match(pg_hba(plain), False, database, user, address) == verdict, "the same roles without TLS"


@pytest.mark.parametrize(("database", "user", "address"), [
    ("app", "app", "127.0.0.77"), ("postgres", "postgres", "127.0.0.1"), ("replication", "replicator", "127.0.0.1"),
    ("app", "app", "192.168.1.1"),
])
def test_with_tls_a_connection_in_clear_is_rejected_first(database: str, user: str, address: str) -> None:
    assert first_match(pg_hba(build_spec(CLIENTS, environ={})), False, database, user, address) == "reject"


def test_pg_hba_reject_lines_come_before_every_client_line() -> None:
    lines = pg_hba(build_spec(CLIENTS, environ={}))
    rejects = [i for i, line in enumerate(lines) if line.endswith(" reject")]
    clients = [i for i, line in enumerate(lines) if " all all 127.0.0.0/24 " in line or " all all 10.0.0.0/8 " in line]
    assert len(rejects) == 6 and len(clients) == 2 and max(rejects) < min(clients)
    assert all(line.startswith(("hostssl ", "local ", "hostnossl ")) for line in lines)
    assert [line for line in lines if line.startswith("hostnossl")] == [
        "hostnossl all all all reject", "hostnossl replication all all reject"]
    assert "local replication replicator scram-sha-256" in lines
    assert not any("trust" in line for line in lines)


def test_patroni_replicates_over_the_socket_so_a_restore_opens_no_tcp_trust() -> None:
    spec = build_spec({}, environ={})
    member = pg_members(spec)[0]
    config = render_patroni_config(spec, member, Passwords.generate(POSTGRES_SECRETS))["postgresql"]
    assert config["use_unix_socket"] is True and config["use_unix_socket_repl"] is True
    assert config["parameters"]["unix_socket_directories"].startswith("/")  # Patroni's trust lines are then local


@pytest.mark.parametrize(
    ("audit", "parameters", "expected"),
    [
        ({}, {}, {"shared_preload_libraries": "pgaudit", "pgaudit.log": "ddl, role", "log_connections": "on",
                  "log_disconnections": "on"}),
        ({"log": "ddl, write"}, {}, {"pgaudit.log": "ddl, write"}),
        ({}, {"shared_preload_libraries": "pg_stat_statements"}, {"shared_preload_libraries": "pg_stat_statements,pgaudit"}),
        ({}, {"shared_preload_libraries": "pgaudit,auto_explain"}, {"shared_preload_libraries": "pgaudit,auto_explain"}),
        ({}, {"pgaudit.log": "all", "log_connections": "off"}, {"pgaudit.log": "all", "log_connections": "off"}),
        ({"enabled": False}, {}, {"shared_preload_libraries": None, "pgaudit.log": None, "log_connections": "on"}),
        ({"enabled": False, "log_connections": False, "log_disconnections": False}, {},
         {"log_connections": "off", "log_disconnections": "off"}),
        ({"enabled": False}, {"shared_preload_libraries": "pg_stat_statements"},
         {"shared_preload_libraries": "pg_stat_statements"}),
    ],
)
def test_audit_parameters(audit: dict[str, object], parameters: dict[str, object], expected: dict[str, object]) -> None:
    rendered = postgresql_parameters(build_spec({"audit": audit, "postgresql_parameters": parameters}, environ={}))
    for name, value in expected.items():
        assert rendered.get(name) == value, name
    assert rendered["wal_level"] == "replica"  # dbtier's own settings stay


@pytest.mark.parametrize(
    ("current", "merged"),
    [(None, "pgaudit"), ("", "pgaudit"), ("a", "a,pgaudit"), ("a, pgaudit", "a,pgaudit"), ('"pgaudit"', "pgaudit")],
)
def test_merge_preload(current: str | None, merged: str) -> None:
    assert merge_preload(current, "pgaudit") == merged
    assert preloads_pgaudit({"shared_preload_libraries": merged})


def test_audit_parameters_leave_the_spec_the_last_word() -> None:
    assert "pgaudit.log" not in audit_parameters(AuditSettings(), {"pgaudit.log": "all"})


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ({"log": "dll, role"}, r"audit\.log: 'dll' is not a pgaudit class \(got 'dll, role'\); write a comma-separated"),
        ({"log": " , "}, r"audit\.log: names no pgaudit class"),
        ({"log": "ddl;role"}, r"audit\.log: 'ddl;role' is not a pgaudit class.*audit\.enabled: false"),
        ({"enable": False}, r"audit\.enable: is not a known field"),
    ],
)
def test_bad_audit_settings_are_one_line_naming_the_field(audit: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        build_spec({"audit": audit}, environ={})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["ddl, role", "DDL", "all, -misc_set", "none", "read,write,function"])
def test_good_pgaudit_classes(value: str) -> None:
    assert build_spec({"audit": {"log": value}}, environ={}).pg.audit.log == value


VERIFIERS = {"shop": "SCRAM-SHA-256$4096:abc", "monitoring": "SCRAM-SHA-256$4096:def"}


@pytest.mark.parametrize(
    ("existing", "have_db", "audit", "present", "absent"),
    [
        (set(), False, True, ['CREATE ROLE "shop" WITH LOGIN NOSUPERUSER NOCREATEDB', 'CREATE ROLE "shop_readonly" WITH NOLOGIN',
                              'CREATE DATABASE "shopdb" OWNER "shop"', "CREATE EXTENSION IF NOT EXISTS pgaudit"],
         ["DROP EXTENSION"]),
        ({"shop", "shop_readonly", "monitoring"}, True, False,
         ['ALTER ROLE "shop" WITH LOGIN', 'ALTER ROLE "monitoring" WITH LOGIN', "DROP EXTENSION IF EXISTS pgaudit"],
         ["CREATE DATABASE", "CREATE ROLE", "CREATE EXTENSION"]),
    ],
)
def test_role_plan(existing: set[str], have_db: bool, audit: bool, present: list[str], absent: list[str]) -> None:
    plan = pg_roles.role_plan(AppDatabase(user="shop", database="shopdb"), VERIFIERS, existing, have_db, audit)
    text = "\n".join(plan.in_postgres)
    for piece in present:
        assert piece in text
    for piece in absent:
        assert piece not in text
    assert 'GRANT pg_monitor TO "monitoring"' in plan.in_postgres
    assert "REVOKE CREATE, TEMPORARY ON DATABASE postgres FROM PUBLIC" in plan.in_postgres
    assert 'GRANT CONNECT ON DATABASE "shopdb" TO "shop_readonly", "monitoring"' in plan.in_postgres
    assert any("DEFAULT PRIVILEGES FOR ROLE \"shop\"" in s and "SELECT ON TABLES" in s for s in plan.in_app_database)


def test_verifiers_are_set_only_while_nothing_logs() -> None:
    plan = pg_roles.role_plan(AppDatabase(), {"app": "V1", "monitoring": "V2"}, set(), False, True).in_postgres
    quiet_from, quiet_to = plan.index("SET pgaudit.log TO 'none'"), plan.index("RESET pgaudit.log")
    carrying = [i for i, statement in enumerate(plan) if "'V1'" in statement or "'V2'" in statement]
    assert len(carrying) == 2 and all(quiet_from < i < quiet_to for i in carrying)
    assert plan.index("SET log_statement TO 'none'") < min(carrying)


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        ('psql:/m/x.sql:5: ERROR:  syntax error at or near "PASSWORD"\nLINE 1: ALTER ROLE "app" WITH PASSWORD \'SCRAM-SHA-256$4096:s$k:k\'',
         'syntax error at or near "PASSWORD"'),
        ('psql: error: connection to server on socket "/m/run/.s.PGSQL.5432" failed: FATAL:  password authentication failed '
         'for user "postgres"', 'password authentication failed for user "postgres"'),
        ("psql: error: could not connect\n", "psql: error: could not connect"),
        ("", "no message"),
    ],
)
def test_psql_errors_keep_the_message_and_drop_the_statement(stderr: str, line: str) -> None:
    assert pg_admin.error_line(stderr) == line
    assert "SCRAM" not in pg_admin.error_line(stderr)


def test_psql_runs_on_the_socket_with_the_password_out_of_argv() -> None:
    spec = build_spec({}, environ={})
    member = pg_members(spec)[2]
    argv = pg_admin.psql_argv(spec, member, "app", "/x.sql")
    assert argv[argv.index("-h") + 1] == member.socket_dir and argv[argv.index("-p") + 1] == str(member.pg_port)
    assert "ON_ERROR_STOP=1" in argv and not any("password" in a.lower() for a in argv)


@pytest.mark.parametrize("password", ["pencil", "Zm9v-bar_baz" * 3])
def test_scram_verifier_shape(password: str) -> None:
    verifier = pg_admin.scram_verifier(password)
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    assert method == "SCRAM-SHA-256" and iterations_salt.startswith("4096:") and len(keys.split(":")) == 2
    assert password not in verifier and verifier != pg_admin.scram_verifier(password), "a fresh salt each time"
    salt = b"0123456789abcdef"
    assert pg_admin.scram_verifier(password, salt) == pg_admin.scram_verifier(password, salt)
