"""PgBouncer beside each member: its pgbouncer.ini, its auth_file and the SQL its auth query needs (pure: no I/O).

PgBouncer knows one user by itself, :data:`AUTH_USER`, whose password is the first line of its auth_file; every
other user (but the console's stats user, below) is looked up through ``auth_query`` as that user, in the database the client asks for, by calling
``pgbouncer.get_auth`` (a ``SECURITY DEFINER`` function over ``pg_shadow``). The client then proves its password
to PgBouncer with SCRAM against the verifier that returned, and PgBouncer logs in to PostgreSQL with the keys that
proof gave it: no app password is stored beside the pooler.

The function answers nothing for superusers, replication roles, roles that cannot log in, expired passwords and
dbtier's member-only roles (``postgres``, ``replicator``, ``rewind_user``), so PgBouncer refuses them: nobody
reaches them through the pooler. It lives in each database clients reach through PgBouncer (the query runs in
the target database): :func:`auth_setup_sql` is run in the app's database; a database without it refuses every
login through the pooler.

The auth user's own line must hold the plain password (write the file mode 0600, owned by the database OS user):
PgBouncer logs in to PostgreSQL as that user with no client behind it, and a SCRAM verifier cannot derive a login.
Measured with PgBouncer 1.18: with a verifier there every auth query fails ("cannot do SCRAM authentication:
password is SCRAM secret but client authentication did not provide SCRAM keys") and clients hang until their
connect timeout.

Nobody is a console admin (``admin_users`` is empty): the OS user running PgBouncer gets in as ``pgbouncer`` over
its Unix socket, and a reload is a SIGHUP. The monitoring role may run the console's SHOW commands, but PgBouncer
1.18 runs no auth query for the console (it has no database behind it: the login waits until the client gives
up), so that role's SCRAM verifier goes in the auth_file too (``stats_verifier``); the monitoring password itself
never does.
"""

from __future__ import annotations

from dbtier.engines.postgres.patroni_config import MEMBER_ONLY_ROLES, SUPERUSER
from dbtier.engines.postgres.pg_roles import MONITORING_USER, QUIET_SESSION, RolePlan, ident, literal, upsert_role
from dbtier.engines.postgres.routing import Bouncer
from dbtier.spec import AppDatabase, ClusterSpec
from dbtier.tls import tls_paths

AUTH_USER = "dbtier_pgbouncer"
AUTH_SCHEMA = "pgbouncer"
AUTH_FUNCTION = f"{AUTH_SCHEMA}.get_auth"
AUTH_QUERY = f"SELECT usename, passwd FROM {AUTH_FUNCTION}($1)"
AUTH_FILE_NAME = "auth_user.txt"
#: Mode of the auth_file: it holds the auth user's password.
AUTH_FILE_MODE = 0o600
#: Startup parameters PgBouncer would otherwise refuse (JDBC sends extra_float_digits; PGOPTIONS sends options).
IGNORED_STARTUP_PARAMETERS = ("extra_float_digits", "options")
#: Roles the auth query never answers for, besides superusers and replication roles.
UNREACHABLE_ROLES: tuple[str, ...] = (*MEMBER_ONLY_ROLES, AUTH_USER)


#: Server connections the auth user may hold on its member, and how many of them one PgBouncer opens (below the
#: limit, so a burst of logins waits in PgBouncer instead of failing with "too many connections for role").
AUTH_CONNECTION_LIMIT = 10
AUTH_POOL_CONNECTIONS = 5


def auth_role_options() -> str:
    """The auth user's role options (its password is set by the role plan): it logs in and does nothing else.

    >>> auth_role_options()
    'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT CONNECTION LIMIT 10'
    """
    return f"LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT CONNECTION LIMIT {AUTH_CONNECTION_LIMIT}"


def get_auth_body() -> str:
    """The query of ``pgbouncer.get_auth``: a login role's name and verifier, unless it is one nobody may reach.

    >>> "NOT s.usesuper" in get_auth_body(), "'rewind_user'" in get_auth_body()
    (True, True)
    """
    unreachable = ", ".join(literal(role) for role in UNREACHABLE_ROLES)
    # pg_shadow holds only roles that can log in (rolcanlogin).
    return ("SELECT s.usename, s.passwd FROM pg_catalog.pg_shadow s "
            "WHERE s.usename = p_usename AND NOT s.usesuper AND NOT s.userepl "
            f"AND (s.valuntil IS NULL OR s.valuntil > pg_catalog.now()) AND s.usename <> ALL (ARRAY[{unreachable}])")


def auth_setup_sql(app: AppDatabase) -> list[str]:
    """Statements the superuser runs in ``app.database`` (safe to repeat) so that :data:`AUTH_USER` can look up
    login roles there and nothing else: schema ``pgbouncer`` owned by the superuser, usable by the auth user only;
    ``pgbouncer.get_auth(text)`` owned by the superuser, executable by the auth user only.

    Ownership is set again on every run: the app role owns its database and could have made the schema first.

    >>> [s.split("(p_usename")[0] for s in auth_setup_sql(AppDatabase(database="shop"))]  # doctest: +NORMALIZE_WHITESPACE
    ['GRANT CONNECT ON DATABASE "shop" TO "dbtier_pgbouncer"',
     'CREATE SCHEMA IF NOT EXISTS "pgbouncer" AUTHORIZATION "postgres"',
     'ALTER SCHEMA "pgbouncer" OWNER TO "postgres"',
     'REVOKE ALL ON SCHEMA "pgbouncer" FROM PUBLIC',
     'GRANT USAGE ON SCHEMA "pgbouncer" TO "dbtier_pgbouncer"',
     'CREATE OR REPLACE FUNCTION "pgbouncer"."get_auth"',
     'ALTER FUNCTION "pgbouncer"."get_auth"',
     'REVOKE ALL ON FUNCTION "pgbouncer"."get_auth"',
     'GRANT EXECUTE ON FUNCTION "pgbouncer"."get_auth"']
    """
    schema, auth, owner = ident(AUTH_SCHEMA), ident(AUTH_USER), ident(SUPERUSER)
    function = f"{schema}.{ident('get_auth')}(p_usename text)"
    return [
        f"GRANT CONNECT ON DATABASE {ident(app.database)} TO {auth}",
        f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}",
        f"ALTER SCHEMA {schema} OWNER TO {owner}",
        f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {schema} TO {auth}",
        f"CREATE OR REPLACE FUNCTION {function} RETURNS TABLE (usename name, passwd text) "
        "LANGUAGE sql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
        f"AS $dbtier$ {get_auth_body()} $dbtier$",
        f"ALTER FUNCTION {function} OWNER TO {owner}",
        f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION {function} TO {auth}",
    ]


def pooler_role_plan(app: AppDatabase, verifier: str, exists: bool) -> RolePlan:
    """What provision adds to :func:`dbtier.engines.postgres.pg_roles.role_plan` when the pooler is on: the auth user
    (its SCRAM ``verifier``, set with nothing logging it) and, in the app's database, the auth query's schema
    and function (:func:`auth_setup_sql`).

    >>> plan = pooler_role_plan(AppDatabase(), "SCRAM-SHA-256$4096:x$y:z", exists=False)
    >>> [s for s in plan.in_postgres if "ROLE" in s][0].split(" PASSWORD ")[0]
    'CREATE ROLE "dbtier_pgbouncer" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT CONNECTION LIMIT 10'
    >>> plan.in_postgres[-1], len(plan.in_app_database)
    ('RESET pgaudit.log', 9)
    """
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise ValueError(f"{AUTH_USER} verifier: expected a SCRAM-SHA-256 verifier, never a password")
    role = upsert_role(AUTH_USER, f"{auth_role_options()} PASSWORD {literal(verifier)}", exists)
    resets = ["RESET log_min_duration_statement", "RESET log_min_error_statement", "RESET log_statement",
              "RESET pgaudit.log"]
    return RolePlan(in_postgres=[*QUIET_SESSION, role, *resets], in_app_database=auth_setup_sql(app))


def auth_file_path(bouncer: Bouncer) -> str:
    return f"{bouncer.dir}/{AUTH_FILE_NAME}"


def hba_file_path(bouncer: Bouncer) -> str:
    return f"{bouncer.dir}/pgbouncer_hba.conf"


def hba_file(spec: ClusterSpec) -> str:
    """PgBouncer's own pg_hba (``auth_type = hba``): the auth user may not log in through the pooler (it exists to
    run the auth query; a client holding its password would otherwise read every login role's verifier), every
    other user by SCRAM, over TLS only when TLS is on. Measured with PgBouncer 1.18: without this line a client
    logs in as the auth user with its password from the auth_file.

    >>> print(hba_file(ClusterSpec()), end="")
    hostssl all dbtier_pgbouncer 0.0.0.0/0 reject
    hostssl all dbtier_pgbouncer ::/0 reject
    hostssl all all 0.0.0.0/0 scram-sha-256
    hostssl all all ::/0 scram-sha-256
    """
    tcp = "hostssl" if spec.tls.enabled else "host"
    lines = [f"{tcp} all {AUTH_USER} {net} reject" for net in ("0.0.0.0/0", "::/0")]
    lines += [f"{tcp} all all {net} scram-sha-256" for net in ("0.0.0.0/0", "::/0")]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def stats_verifier(spec: ClusterSpec, password: str) -> str:
    """The monitoring role's SCRAM verifier for the auth_file, salted per cluster so that rewriting the file with
    the same password leaves it as it was (no reload), and never the password itself.

    >>> stats_verifier(ClusterSpec(), "pw") == stats_verifier(ClusterSpec(), "pw") != stats_verifier(ClusterSpec(name="other"), "pw")
    True
    """
    import hashlib

    from dbtier.engines.postgres.pg_admin import scram_verifier

    return scram_verifier(password, hashlib.sha256(f"dbtier pgbouncer stats user of {spec.name}".encode()).digest()[:16])


def auth_file(password: str, stats_verifier: str | None = None) -> str:
    """The auth_file: the auth user's plain password and, when given, the monitoring role's SCRAM verifier (the
    console's stats user; see the module's docstring). Write it mode :data:`AUTH_FILE_MODE`.

    >>> auth_file('s3"cret')
    '"dbtier_pgbouncer" "s3""cret"\\n'
    >>> auth_file("pw", "SCRAM-SHA-256$4096:c2FsdA==$a:b").splitlines()[1]
    '"monitoring" "SCRAM-SHA-256$4096:c2FsdA==$a:b"'
    """
    if "\n" in password or "\r" in password:
        raise ValueError("pgbouncer password: a line break cannot be written to PgBouncer's auth_file")
    lines = [f"{_quoted(AUTH_USER)} {_quoted(password)}"]
    if stats_verifier is not None:
        if not stats_verifier.startswith("SCRAM-SHA-256$") or any(c in stats_verifier for c in "\r\n\""):
            raise ValueError(f"{MONITORING_USER} verifier: expected a SCRAM-SHA-256 verifier, never a password")
        lines.append(f"{_quoted(MONITORING_USER)} {_quoted(stats_verifier)}")
    return "\n".join(lines) + "\n"


def database_lines(spec: ClusterSpec, bouncer: Bouncer) -> list[str]:
    """``[databases]``: the app's database and, as a fallback, every other one, on the member's own PostgreSQL.

    >>> from dbtier.engines.postgres.routing import bouncers
    >>> database_lines(ClusterSpec(), bouncers(ClusterSpec(routing={"enabled": True}))[1])
    ['app = host=127.0.0.1 port=5433 dbname=app', '* = host=127.0.0.1 port=5433']
    """
    server = f"host={bouncer.member.host} port={bouncer.member.pg_port}"
    return [f"{spec.app.database} = {server} dbname={spec.app.database}", f"* = {server}"]


def tls_lines(spec: ClusterSpec, bouncer: Bouncer) -> list[str]:
    """TLS to clients (required: plain TCP is refused) and to PostgreSQL (verify-full against the cluster CA);
    none with TLS off.

    >>> from dbtier.engines.postgres.routing import bouncers
    >>> tls_lines(ClusterSpec(tls={"enabled": False}), bouncers(ClusterSpec(routing={"enabled": True}))[0])
    []
    """
    if not spec.tls.enabled:
        return []
    own = tls_paths(bouncer.member.dir, "pgbouncer")
    return [
        "client_tls_sslmode = require",
        f"client_tls_cert_file = {own.cert}",
        f"client_tls_key_file = {own.key}",
        f"client_tls_ca_file = {own.ca}",
        "client_tls_protocols = secure",
        "server_tls_sslmode = verify-full",
        f"server_tls_ca_file = {own.ca}",
        "server_tls_protocols = secure",
    ]


def render_pgbouncer_ini(spec: ClusterSpec, bouncer: Bouncer) -> str:
    """pgbouncer.ini of ``bouncer``: run in the foreground (``pgbouncer <ini>``), logging to stderr only.

    In transaction mode PgBouncer 1.18 keeps no prepared statements across transactions: clients turn them off
    (psycopg ``prepare_threshold=None``, JDBC ``prepareThreshold=0``), or they fail with "prepared statement
    ... does not exist" as soon as two clients share a server connection (measured).

    >>> from dbtier.engines.postgres.routing import bouncers
    >>> ini = render_pgbouncer_ini(ClusterSpec(), bouncers(ClusterSpec(routing={"enabled": True}))[0])
    >>> [line for line in ini.splitlines() if line.startswith(("listen", "auth_type", "pool_mode"))]
    ['listen_addr = 127.0.0.1', 'listen_port = 6432', 'auth_type = hba', 'pool_mode = transaction']
    """
    pooler = spec.pg.routing.pooler
    lines = [
        f"; PgBouncer {bouncer.name} beside {bouncer.member.name} of cluster {spec.name} (rendered by dbtier)",
        "[databases]",
        *database_lines(spec, bouncer),
        "",
        "[pgbouncer]",
        f"listen_addr = {bouncer.host}",
        f"listen_port = {bouncer.port}",
        f"unix_socket_dir = {bouncer.dir}",
        "unix_socket_mode = 0700",
        "auth_type = hba",
        f"auth_hba_file = {hba_file_path(bouncer)}",
        f"auth_file = {auth_file_path(bouncer)}",
        f"auth_user = {AUTH_USER}",
        f"auth_query = {AUTH_QUERY}",
        f"pool_mode = {pooler.pool_mode}",
        f"default_pool_size = {pooler.default_pool_size}",
        f"max_client_conn = {pooler.max_client_conn}",
        "admin_users =",
        f"stats_users = {MONITORING_USER}",
        f"ignore_startup_parameters = {','.join(IGNORED_STARTUP_PARAMETERS)}",
        "server_check_query = SELECT 1",
        "server_check_delay = 10",
        "server_connect_timeout = 5",
        "server_login_retry = 2",
        "server_lifetime = 3600",
        "server_idle_timeout = 600",
        "syslog = 0",
        "logfile =",
        "pidfile =",
        *tls_lines(spec, bouncer),
        "",
        "[users]",
        f"{AUTH_USER} = max_user_connections={AUTH_POOL_CONNECTIONS}",
    ]
    return "\n".join(lines) + "\n"
