"""Least privilege: the roles provision makes and what each may do, as SQL statements (pure: no I/O).

- the app role (``app.user``) logs in and owns its database (``app.database``) and nothing else: no
  superuser, no CREATEDB, no CREATEROLE; it cannot create objects (tables, schemas, temporary tables)
  in the ``postgres`` database;
- ``<app>_readonly`` (no login: grant it to the people and services that read) may connect to the app's
  database and SELECT its tables and sequences, those the app makes later included;
- ``monitoring`` logs in with ``pg_monitor`` (the exporters use it); it writes nothing.

Statements that carry a password verifier run with pgaudit and statement logging off in their session,
so no log line shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbtier.audit import PGAUDIT
from dbtier.spec import AppDatabase

MONITORING_USER = "monitoring"
#: Session settings before a statement with a password verifier: nothing logs it (superuser-only settings).
QUIET_SESSION = (
    "SET pgaudit.log TO 'none'",
    "SET log_statement TO 'none'",
    "SET log_min_error_statement TO 'panic'",
    "SET log_min_duration_statement TO -1",
)
#: What a login role made by dbtier may never do.
LIMITS = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


@dataclass(frozen=True)
class RolePlan:
    """The statements to run, by database, in order: ``postgres`` first, then the app's."""

    in_postgres: list[str]
    in_app_database: list[str]


def ident(name: str) -> str:
    """
    >>> ident('app'), ident('we"ird')
    ('"app"', '"we""ird"')
    """
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """
    >>> literal("it's")
    "'it''s'"
    """
    return "'" + value.replace("'", "''") + "'"


def readonly_role(app: AppDatabase) -> str:
    """
    >>> readonly_role(AppDatabase(user="shop"))
    'shop_readonly'
    """
    return f"{app.user}_readonly"


def upsert_role(name: str, options: str, exists: bool) -> str:
    """
    >>> upsert_role("r", "NOLOGIN", False)
    'CREATE ROLE "r" WITH NOLOGIN'
    """
    return f"{'ALTER' if exists else 'CREATE'} ROLE {ident(name)} WITH {options}"


def role_plan(app: AppDatabase, verifiers: dict[str, str], existing: set[str], have_db: bool, audit: bool) -> RolePlan:
    """Everything provision does for least privilege and audit, safe to repeat.

    ``verifiers``: SCRAM verifiers of the app and monitoring roles (never the passwords); ``existing``:
    the role names already there; ``audit``: whether pgaudit is preloaded (its extension is then created,
    else dropped: its event triggers fail without the library).
    """
    user, database, readonly = app.user, app.database, readonly_role(app)
    db = ident(database)
    in_postgres = [
        *QUIET_SESSION,
        upsert_role(user, f"LOGIN {LIMITS} PASSWORD {literal(verifiers[user])}", user in existing),
        upsert_role(MONITORING_USER, f"LOGIN {LIMITS} PASSWORD {literal(verifiers[MONITORING_USER])}",
                    MONITORING_USER in existing),
        "RESET log_min_duration_statement",
        "RESET log_min_error_statement",
        "RESET log_statement",
        "RESET pgaudit.log",
        upsert_role(readonly, f"NOLOGIN {LIMITS}", readonly in existing),
        f"GRANT pg_monitor TO {ident(MONITORING_USER)}",
        # The postgres database is the members' and the tools': nobody else creates anything there.
        "REVOKE CREATE, TEMPORARY ON DATABASE postgres FROM PUBLIC",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    ]
    if not have_db:
        in_postgres.append(f"CREATE DATABASE {db} OWNER {ident(user)}")
    in_postgres += [
        f"ALTER DATABASE {db} OWNER TO {ident(user)}",
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {db} TO {ident(readonly)}, {ident(MONITORING_USER)}",
        pgaudit_statement(audit),
    ]
    in_app = [
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {ident(readonly)}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ident(readonly)}",
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident(readonly)}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {ident(user)} IN SCHEMA public GRANT SELECT ON TABLES TO {ident(readonly)}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {ident(user)} IN SCHEMA public GRANT SELECT ON SEQUENCES TO {ident(readonly)}",
        pgaudit_statement(audit),
    ]
    return RolePlan(in_postgres, in_app)


def pgaudit_statement(audit: bool) -> str:
    """
    >>> pgaudit_statement(True), pgaudit_statement(False)
    ('CREATE EXTENSION IF NOT EXISTS pgaudit', 'DROP EXTENSION IF EXISTS pgaudit')
    """
    return f"CREATE EXTENSION IF NOT EXISTS {PGAUDIT}" if audit else f"DROP EXTENSION IF EXISTS {PGAUDIT}"


def wanted_roles(app: AppDatabase) -> set[str]:
    """The roles a provisioned cluster has (besides Patroni's own)."""
    return {app.user, readonly_role(app), MONITORING_USER}
