"""The superuser's SQL, run on a member's own host over its Unix socket: never over TCP.

Client networks cannot reach the superuser (``pg_hba`` rejects it there), and the machine that runs
dbtier may sit in one. So provision's role and slot work runs ``psql`` through the member's
:class:`~dbtier.providers.base.Runner`, as the database OS user, against the socket in the member's
0700 directory, with the password from the cluster's pgpass file (never an argument). The script goes
in a 0600 file that is removed after. Argv and parsing are pure; :func:`run_sql` is the one place that runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

from dbtier.engines.postgres import pgbackrest
from dbtier.engines.postgres.patroni_config import SUPERUSER
from dbtier.errors import ProvisionError
from dbtier.providers.base import Runner
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import PgMember

SEPARATOR = "|"


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802/7677), what ``PASSWORD`` should be sent as.

    >>> scram_verifier("pencil", b"0123456789abcdef").split("$")[:2]
    ['SCRAM-SHA-256', '4096:MDEyMzQ1Njc4OWFiY2RlZg==']
    """
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def psql_argv(spec: ClusterSpec, member: PgMember, database: str, script: str) -> list[str]:
    """``psql`` on ``member``'s socket as the superuser, running ``script``; unaligned rows, stop at the first error.

    >>> from dbtier.engines.postgres.topology import pg_members
    >>> psql_argv(ClusterSpec(), pg_members(ClusterSpec())[0], "app", "/x.sql")[-8:]
    ['-h', '/var/lib/dbtier/dbtier/pg0/run', '-p', '5432', '-U', 'postgres', '-d', 'app']
    """
    # -w: never prompt. Without the pgpass, psql would wait for a password on its SSH channel for ever.
    return [f"{spec.pg.binaries.pg_bin_dir}/psql", "-X", "-w", "-q", "-At", "-F", SEPARATOR, "-v", "ON_ERROR_STOP=1",
            "-f", script, "-h", member.socket_dir, "-p", str(member.pg_port), "-U", SUPERUSER, "-d", database]


def script_text(statements: list[str]) -> str:
    """
    >>> script_text(["SELECT 1", "SELECT 2;"])
    'SELECT 1;\\nSELECT 2;\\n'
    """
    return "".join(s.rstrip().rstrip(";") + ";\n" for s in statements)


def error_line(stderr: str) -> str:
    """The server's message from psql's stderr, without the statement it may quote (``LINE 1: ...``).

    >>> error_line('psql:/x.sql:3: ERROR:  role "a" does not exist\\nLINE 1: ALTER ROLE a PASSWORD ...')
    'role "a" does not exist'
    """
    for line in stderr.splitlines():
        for tag in ("FATAL:", "ERROR:"):
            if tag in line:
                return line.split(tag, 1)[1].strip()
    lines = [line for line in stderr.splitlines() if line.strip() and not line.lstrip().startswith("LINE ")]
    return lines[0].strip()[:200] if lines else "no message"


def parse_rows(out: str) -> list[list[str]]:
    """
    >>> parse_rows("a|1\\n\\nb|2\\n")
    [['a', '1'], ['b', '2']]
    """
    return [line.split(SEPARATOR) for line in out.splitlines() if line]


def run_sql(runner: Runner, spec: ClusterSpec, member: PgMember, database: str, statements: list[str],
            what: str) -> list[list[str]]:
    """Run ``statements`` on ``member`` in ``database``; the rows they print. A failure is a ProvisionError naming
    the member and ``what`` (never the statements: they may hold a verifier)."""
    script = f"{member.dir}/dbtier-sql-{uuid.uuid4().hex}.sql"
    runner.write_file(script, script_text(statements).encode(), 0o600)
    try:
        done = runner.run(psql_argv(spec, member, database, script), check=False, timeout=120,
                          env={"PGPASSFILE": pgbackrest.pgpass_path(spec), "PGCONNECT_TIMEOUT": "5"})
    finally:
        runner.run(["rm", "-f", script], check=False)
    if done.rc != 0:
        raise ProvisionError(f"{member.name}: {what} failed in database {database}: {error_line(done.err)}")
    return parse_rows(done.out)
