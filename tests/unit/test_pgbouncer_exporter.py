"""dbtier's PgBouncer exporter: the metrics of SHOW STATS / SHOW POOLS rows of several PgBouncer versions (tables),
and its HTTP face (a real server on a free port, a psql that is missing or fails)."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from dbtier.engines.postgres import pgbouncer_exporter as exp
from dbtier.monitoring.exposition import exposition

STATS_118 = {"database": "app", "total_xact_count": "12", "total_query_count": "30", "total_received": "4096",
             "total_sent": "8192", "total_xact_time": "1500000", "total_query_time": "900000", "total_wait_time": "250",
             "avg_xact_count": "1", "avg_query_count": "2"}
STATS_123 = {**STATS_118, "total_server_assignment_count": "9", "total_client_parse_count": "0"}
POOLS_118 = {"database": "app", "user": "app", "cl_active": "3", "cl_waiting": "1", "cl_cancel_req": "0", "sv_active": "2",
             "sv_idle": "1", "sv_used": "0", "sv_tested": "0", "sv_login": "0", "maxwait": "2", "maxwait_us": "500000",
             "pool_mode": "transaction"}


def samples(stats: list[dict[str, str]], pools: list[dict[str, str]]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(family.name, tuple(sorted(labels.items()))): value
            for family in exp.families(stats, pools) for labels, value in family.samples}


@pytest.mark.parametrize(("stats", "pools", "name", "labels", "value"), [
    ([STATS_118], [], "pgbouncer_up", {}, 1.0),
    ([STATS_118], [], "pgbouncer_stats_queries_pooled_total", {"database": "app"}, 30.0),
    ([STATS_118], [], "pgbouncer_stats_queries_duration_seconds_total", {"database": "app"}, 0.9),
    ([STATS_118], [], "pgbouncer_stats_client_wait_seconds_total", {"database": "app"}, 0.00025),
    ([STATS_123], [], "pgbouncer_stats_server_assignments_total", {"database": "app"}, 9.0),
    ([], [POOLS_118], "pgbouncer_pools_client_waiting_connections", {"database": "app", "user": "app"}, 1.0),
    ([], [POOLS_118], "pgbouncer_pools_server_active_connections", {"database": "app", "user": "app"}, 2.0),
    ([], [POOLS_118], "pgbouncer_pools_client_maxwait_seconds", {"database": "app", "user": "app"}, 2.5),
])
def test_a_column_becomes_its_metric(stats: list[dict[str, str]], pools: list[dict[str, str]], name: str,
                                     labels: dict[str, str], value: float) -> None:
    assert samples(stats, pools)[(name, tuple(sorted(labels.items())))] == pytest.approx(value)


@pytest.mark.parametrize(("row", "absent"), [
    (STATS_118, "pgbouncer_stats_server_assignments_total"),  # 1.18 has no such column: left out, no KeyError
    ({"database": "app", "total_query_count": "n/a"}, "pgbouncer_stats_queries_pooled_total"),  # no number
    ({"database": "app", "total_query_count": ""}, "pgbouncer_stats_queries_pooled_total"),
])
def test_a_missing_column_or_a_value_that_is_no_number_is_left_out(row: dict[str, str], absent: str) -> None:
    names = {name for name, _ in samples([row], [])}
    assert absent not in names
    assert "pgbouncer_up" in names


def test_psql_output_with_both_results_parses_into_metrics_per_database() -> None:
    text = ("database,total_query_count\napp,7\npgbouncer,1\n" + exp.SEPARATOR +
            "\ndatabase,user,cl_active,maxwait,maxwait_us\napp,app,2,0,0\n")
    found = samples(*exp.parse_output(text))
    assert found[("pgbouncer_stats_queries_pooled_total", (("database", "pgbouncer"),))] == 1.0
    assert found[("pgbouncer_pools_client_active_connections", (("database", "app"), ("user", "app")))] == 2.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The exporter's HTTP server on a free port, in this process, with a psql that prints what a file says."""
    fake_psql = tmp_path / "psql"
    fake_psql.write_text("#!/bin/sh\nif [ -f \"$0.fail\" ]; then echo 'psql: error: connection refused' >&2; exit 2; fi\n"
                         "cat \"$0.out\"\n")
    fake_psql.chmod(fake_psql.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "psql.out").write_text("database,total_query_count\napp,7\n" + exp.SEPARATOR + "\ndatabase,user,cl_waiting\napp,app,4\n")
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"psql": str(fake_psql), "user": "monitoring", "passfile": str(tmp_path / "pgpass"),
                                       "sslmode": "disable", "targets": ["127.0.0.1:6432"]}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), exp.make_handler(exp.Config.load(str(config_file))))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_scrape_of_a_known_target_serves_its_console_numbers(served: tuple[str, Path]) -> None:
    url, _ = served
    answer = requests.get(f"{url}/metrics", params={"target": "127.0.0.1:6432"}, timeout=10)
    assert answer.status_code == 200
    assert "pgbouncer_up 1.0" in answer.text
    assert 'pgbouncer_pools_client_waiting_connections{database="app",user="app"} 4.0' in answer.text


def test_a_console_that_does_not_answer_is_up_0_not_a_failed_scrape(served: tuple[str, Path],
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    url, tmp_path = served
    (tmp_path / "psql.fail").write_text("")
    answer = requests.get(f"{url}/metrics", params={"target": "127.0.0.1:6432"}, timeout=10)
    assert answer.status_code == 200
    assert "pgbouncer_up 0.0" in answer.text
    assert "pgbouncer_stats" not in answer.text
    assert "127.0.0.1:6432: psql: error: connection refused" in capfd.readouterr().err


@pytest.mark.parametrize("target", ["10.0.0.9:6432", ""])
def test_a_target_outside_its_config_is_refused(served: tuple[str, Path], target: str) -> None:
    url, _ = served
    answer = requests.get(f"{url}/metrics", params={"target": target}, timeout=10)
    assert answer.status_code == 400
    assert "unknown target" in answer.text and "127.0.0.1:6432" in answer.text


def test_the_psql_environment_names_the_password_file_never_a_password(tmp_path: Path) -> None:
    config = exp.Config("/bin/true", "monitoring", "/w/pgpass", "verify-full", "/w/ca.crt", ("127.0.0.1:6432",))
    argv = exp.psql_argv(config, "127.0.0.1:6432")
    assert "password" not in " ".join(argv)
    assert argv[-1].startswith("host=127.0.0.1 port=6432 dbname=pgbouncer user=monitoring")


def test_a_config_it_cannot_read_stops_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert exp.main(["--config", str(tmp_path / "missing.json"), "--listen", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgbouncer-exporter: cannot start") and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "missing.json")


def test_what_it_serves_passes_promtools_lint() -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    text = exposition(exp.families([STATS_123], [POOLS_118, {**POOLS_118, "user": 'we"ird\\name'}]))
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
