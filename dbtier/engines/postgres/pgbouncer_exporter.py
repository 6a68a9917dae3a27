"""dbtier's PgBouncer exporter: one process beside the monitoring stack that reads each PgBouncer's console for
Prometheus, which scrapes ``/metrics?target=host:port`` once per PgBouncer (the multi-target pattern).

    python -m dbtier.engines.postgres.pgbouncer_exporter --config FILE --listen HOST:PORT

It replaces Debian 12's ``prometheus-pgbouncer-exporter``, which stops on PgBouncer 1.18 (``KeyError:
'total_requests'`` in SHOW STATS, measured): columns are read by name and a column a PgBouncer version does not
have is left out, never an error. For each scrape it runs ``psql`` once (``SHOW STATS`` and ``SHOW POOLS``, the
simple query protocol the console speaks) as the ``monitoring`` role, a console stats user, over TLS verifying the
cluster CA when TLS is on; the password is in a 0600 pgpass file the config names. A PgBouncer that does not answer
gives ``pgbouncer_up 0`` (and one line on stderr), never a failed scrape. Only the targets of its config are
scraped (anything else is refused with 400). The metric names are those of the Prometheus community's
pgbouncer_exporter, so its dashboards fit.

The config (JSON, written by dbtier): ``{"psql": PATH, "user": ROLE, "passfile": PATH, "sslmode": MODE,
"sslrootcert": PATH, "targets": ["host:port", ...]}``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from dbtier.monitoring.exposition import Metric, multi_target_handler, serve


#: Between the two results in psql's output (a line no CSV row of theirs can be: each row has many columns).
SEPARATOR = "-- dbtier: pools --"
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Family:
    """One metric from one column of a SHOW command; ``scale`` turns PgBouncer's unit into Prometheus's."""

    column: str
    name: str
    kind: str  #: "counter" or "gauge"
    help: str
    scale: float = 1.0


STATS = (
    Family("total_xact_count", "pgbouncer_stats_sql_transactions_pooled_total", "counter", "SQL transactions pooled"),
    Family("total_query_count", "pgbouncer_stats_queries_pooled_total", "counter", "SQL queries pooled"),
    Family("total_received", "pgbouncer_stats_received_bytes_total", "counter", "bytes received from clients"),
    Family("total_sent", "pgbouncer_stats_sent_bytes_total", "counter", "bytes sent to clients"),
    Family("total_xact_time", "pgbouncer_stats_server_in_transaction_seconds_total", "counter",
           "seconds server connections spent in a transaction", 1e-6),
    Family("total_query_time", "pgbouncer_stats_queries_duration_seconds_total", "counter",
           "seconds server connections spent running queries", 1e-6),
    Family("total_wait_time", "pgbouncer_stats_client_wait_seconds_total", "counter",
           "seconds clients waited for a server connection", 1e-6),
    Family("total_server_assignment_count", "pgbouncer_stats_server_assignments_total", "counter",
           "times a server connection was assigned to a client (PgBouncer 1.23 and later)"),
)
POOLS = (
    Family("cl_active", "pgbouncer_pools_client_active_connections", "gauge", "clients linked to a server connection"),
    Family("cl_waiting", "pgbouncer_pools_client_waiting_connections", "gauge", "clients waiting for a server connection"),
    Family("sv_active", "pgbouncer_pools_server_active_connections", "gauge", "server connections linked to a client"),
    Family("sv_idle", "pgbouncer_pools_server_idle_connections", "gauge", "server connections idle and ready"),
    Family("sv_used", "pgbouncer_pools_server_used_connections", "gauge", "server connections idle, to be checked"),
    Family("sv_login", "pgbouncer_pools_server_login_connections", "gauge", "server connections logging in"),
)
MAXWAIT = "pgbouncer_pools_client_maxwait_seconds"
UP_HELP = "1 when the PgBouncer's console answered this scrape"


def parse_output(text: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """psql's CSV output of SHOW STATS, the separator, SHOW POOLS: the rows of each, by column name.

    >>> stats, pools = parse_output("database,total_query_count\\napp,7\\n" + SEPARATOR + "\\ndatabase,user,cl_active\\napp,app,2\\n")
    >>> stats, pools
    ([{'database': 'app', 'total_query_count': '7'}], [{'database': 'app', 'user': 'app', 'cl_active': '2'}])
    >>> parse_output("no separator")
    Traceback (most recent call last):
    ValueError: psql printed no SHOW POOLS result
    """
    head, sep, tail = text.partition(f"\n{SEPARATOR}\n")
    if not sep:
        raise ValueError("psql printed no SHOW POOLS result")
    return list(csv.DictReader(io.StringIO(head))), list(csv.DictReader(io.StringIO(tail)))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def families(stats: Sequence[Mapping[str, str]], pools: Sequence[Mapping[str, str]]) -> list[Metric]:
    """The metrics of one PgBouncer's SHOW STATS and SHOW POOLS rows, ``pgbouncer_up 1`` first. A column a row lacks
    (another PgBouncer version) or a value that is no number is left out.

    >>> from dbtier.monitoring.exposition import exposition
    >>> print(exposition(families([{"database": 'a"b', "total_query_time": "2500000"}], [])).decode(), end="")
    # HELP pgbouncer_up 1 when the PgBouncer's console answered this scrape
    # TYPE pgbouncer_up gauge
    pgbouncer_up 1.0
    # HELP pgbouncer_stats_queries_duration_seconds_total seconds server connections spent running queries
    # TYPE pgbouncer_stats_queries_duration_seconds_total counter
    pgbouncer_stats_queries_duration_seconds_total{database="a\\"b"} 2.5
    """
    found = [Metric("pgbouncer_up", "gauge", UP_HELP, [({}, 1.0)])]
    for table, rows, labels in ((STATS, stats, ("database",)), (POOLS, pools, ("database", "user"))):
        for family in table:
            metric = Metric(family.name, family.kind, family.help)
            for row in rows:
                value = _number(row.get(family.column))
                if value is not None:
                    metric.samples.append(({label: row.get(label, "") for label in labels}, value * family.scale))
            if metric.samples:
                found.append(metric)
    waits = Metric(MAXWAIT, "gauge", "how long the oldest waiting client has waited")
    for row in pools:
        seconds, micros = _number(row.get("maxwait")), _number(row.get("maxwait_us")) or 0.0
        if seconds is not None:
            waits.samples.append(({"database": row.get("database", ""), "user": row.get("user", "")}, seconds + micros / 1e6))
    if waits.samples:
        found.append(waits)
    return found


def down() -> list[Metric]:
    return [Metric("pgbouncer_up", "gauge", UP_HELP, [({}, 0.0)])]


@dataclass(frozen=True)
class Config:
    psql: str
    user: str
    passfile: str
    sslmode: str
    sslrootcert: str
    targets: tuple[str, ...]

    @classmethod
    def load(cls, path: str) -> Config:
        data: dict[str, Any] = json.loads(open(path, encoding="utf-8").read())
        return cls(psql=data["psql"], user=data["user"], passfile=data["passfile"], sslmode=data["sslmode"],
                   sslrootcert=data.get("sslrootcert", ""), targets=tuple(data["targets"]))


def psql_argv(config: Config, target: str) -> list[str]:
    """psql reading one PgBouncer's console: no psqlrc, never a password prompt, CSV.

    >>> psql_argv(Config("/usr/bin/psql", "monitoring", "/p", "disable", "", ("127.0.0.1:6432",)), "127.0.0.1:6432")[-1]
    'host=127.0.0.1 port=6432 dbname=pgbouncer user=monitoring connect_timeout=3'
    """
    host, _, port = target.rpartition(":")
    return [config.psql, "-X", "-w", "-q", "--csv", "-c", "SHOW STATS", "-c", f"\\echo {SEPARATOR}", "-c", "SHOW POOLS",
            f"host={host} port={port} dbname=pgbouncer user={config.user} connect_timeout=3"]


def scrape(config: Config, target: str) -> list[Metric]:
    """One PgBouncer's metrics now; ``pgbouncer_up 0`` and a line on stderr when its console does not answer."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSFILE": config.passfile, "PGSSLMODE": config.sslmode,
           "PGAPPNAME": "dbtier-pgbouncer-exporter"}
    if config.sslrootcert:
        env["PGSSLROOTCERT"] = config.sslrootcert
    try:
        done = subprocess.run(psql_argv(config, target), env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                              check=False)
        if done.returncode != 0:
            raise ValueError((done.stderr.strip().splitlines() or [f"psql exited {done.returncode}"])[-1][:300])
        return families(*parse_output(done.stdout))
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        print(f"pgbouncer-exporter: {target}: {err}", file=sys.stderr, flush=True)
        return down()


def make_handler(config: Config) -> type[BaseHTTPRequestHandler]:
    """The HTTP handler serving ``config``'s PgBouncers (:func:`dbtier.monitoring.exposition.multi_target_handler`)."""
    return multi_target_handler("pgbouncer exporter", config.targets, lambda target, _seconds: scrape(config, target))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbtier.engines.postgres.pgbouncer_exporter",
                                     description="Serve each PgBouncer's console statistics to Prometheus.")
    parser.add_argument("--config", required=True, help="the JSON config dbtier writes (targets, pgpass file, TLS)")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where Prometheus scrapes it")
    args = parser.parse_args(argv)
    try:
        config = Config.load(args.config)
        serve(args.listen, make_handler(config))
    except (OSError, ValueError, KeyError) as err:
        print(f"pgbouncer-exporter: cannot start ({args.config}, {args.listen}): {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
