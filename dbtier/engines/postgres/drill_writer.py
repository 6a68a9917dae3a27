"""PostgreSQL's drill writer: its process, its table, and the ids a server holds.

The writer is its own process, so a frozen or dying member can never stall the
flow. It inserts one row per transaction with a strictly increasing id every
20-50 ms through the read-write DSN and logs every attempt as one JSON line::

    PGPASSWORD=... python -m dbtier.engines.postgres.drill_writer --dsn DSN --drill ID --log FILE

The password comes from ``PGPASSWORD`` (never argv). Each statement has a
client-side deadline: a watchdog shuts the socket down, so a frozen server
turns into an error, never into an acknowledgement. The rest of this module
starts the writer and reads back the ids a server holds; its log is read, and the writer stopped, by
:mod:`dbtier.drills.writer` (every engine's writer logs the same lines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


TABLE = "dbtier_drill_writes"
CREATE_SQL = f"CREATE TABLE IF NOT EXISTS {TABLE} (drill text NOT NULL, id bigint NOT NULL, " \
             "written_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (drill, id))"
INSERT_SQL = f"INSERT INTO {TABLE} (drill, id) VALUES (%s, %s) " \
             "RETURNING inet_server_port(), pg_walfile_name(pg_current_wal_lsn())"
SELECT_SQL = f"SELECT id FROM {TABLE} WHERE drill = %s"
#: The writer stops by itself after this long, should its parent forget it.
MAX_LIFETIME_S = 900.0


@contextmanager
def deadline(conn: Any, seconds: float) -> Iterator[None]:
    """Shut the connection's socket down if the statement takes longer than ``seconds``."""
    fd = conn.pgconn.socket

    def cut() -> None:
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]


def write_once(conn: Any, dsn: str, drill: str, wid: int, timeout: float) -> tuple[dict[str, Any], Any]:
    """Try one insert; return its log record and the connection to reuse (None after an error)."""
    import psycopg

    sent = time.time()
    try:
        if conn is None:
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(2, int(timeout)))
        with deadline(conn, timeout):
            port, walfile = conn.execute(INSERT_SQL, (drill, wid)).fetchone()
        record = {"id": wid, "sent": sent, "done": time.time(), "ok": True, "port": int(port),
                  "timeline": int(str(walfile)[:8], 16)}
        return record, conn
    except (psycopg.Error, OSError) as err:
        _close(conn)
        return {"id": wid, "sent": sent, "done": time.time(), "ok": False, "error": _one_line(err)}, None


def _close(conn: Any) -> None:
    if conn is None:
        return
    with contextlib.suppress(Exception):  # a broken connection may fail to close; it is dropped either way
        conn.close()


def run(dsn: str, drill: str, log: str, interval_ms: tuple[int, int], timeout: float) -> int:
    """Write until SIGTERM (or the parent goes away); return how many attempts were made."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    parent, started, wid, conn = os.getppid(), time.monotonic(), 0, None
    with open(log, "a", buffering=1) as out:
        while not stopping.is_set() and os.getppid() == parent and time.monotonic() - started < MAX_LIFETIME_S:
            wid += 1
            record, conn = write_once(conn, dsn, drill, wid, timeout)
            out.write(json.dumps(record) + "\n")
            stopping.wait(random.uniform(*interval_ms) / 1000.0)
    _close(conn)
    return wid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Insert one row per transaction and log every attempt.")
    parser.add_argument("--dsn", required=True, help="read-write DSN without a password (PGPASSWORD holds it)")
    parser.add_argument("--drill", required=True, help="drill id: the rows' key next to the write id")
    parser.add_argument("--log", required=True, help="JSON-lines file to append the attempts to")
    parser.add_argument("--interval-ms", type=int, nargs=2, default=[20, 50], metavar=("MIN", "MAX"))
    parser.add_argument("--timeout", type=float, default=2.0, help="client-side deadline per statement, seconds")
    args = parser.parse_args(argv)
    run(args.dsn, args.drill, args.log, (args.interval_ms[0], args.interval_ms[1]), args.timeout)
    return 0


# -- the drill's side: start, stop, read back ---------------------------------------------------


def writer_argv(dsn: str, drill: str, log: str, interval_ms: tuple[int, int], timeout: float) -> list[str]:
    """The writer's command line; it never holds a password.

    >>> writer_argv("postgresql://app@h:1/app", "d1", "/tmp/w.jsonl", (20, 50), 2.0)[1:3]
    ['-m', 'dbtier.engines.postgres.drill_writer']
    """
    return [sys.executable, "-m", "dbtier.engines.postgres.drill_writer", "--dsn", dsn, "--drill", drill, "--log", log,
            "--interval-ms", str(interval_ms[0]), str(interval_ms[1]), "--timeout", str(timeout)]


def start_writer(argv: list[str], password: str, stderr_path: str) -> subprocess.Popen[bytes]:
    """Start the writer with the password in its environment only; its stderr goes to ``stderr_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    cwd = Path(__file__).resolve().parents[2]
    with open(stderr_path, "ab") as err:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,  # noqa: S603 - argv built above
                                stdout=subprocess.DEVNULL, stderr=err)


def create_table(dsn: str, password: str) -> None:
    import psycopg

    with psycopg.connect(dsn, password=password, autocommit=True) as conn:
        conn.execute(CREATE_SQL)


def read_ids(conninfo: str, password: str, drill: str) -> frozenset[int]:
    """Every id of ``drill`` that the server at ``conninfo`` holds."""
    import psycopg

    with psycopg.connect(conninfo, password=password, autocommit=True) as conn:
        return frozenset(int(row[0]) for row in conn.execute(SELECT_SQL, (drill,)))


if __name__ == "__main__":
    sys.exit(main())
