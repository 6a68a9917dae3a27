"""The Grafana dashboard dbtier ships for a MongoDB replica set: every query filters by the cluster and names a metric
a target of the replica set really exports, member states read as names, and each engine finds its own board."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbtier.engines.mongodb.exporter import down, families
from dbtier.errors import SpecError
from dbtier.monitoring.dashboard import (
    DASHBOARD,
    DASHBOARDS,
    REPLICA_SET_DASHBOARD,
    dashboard_for,
    dashboard_queries,
    engine_dashboard,
    load_dashboard,
    query_problems,
)
from dbtier.monitoring.metrics import METRICS
from dbtier.monitoring.stack import scrape_jobs
from dbtier.spec import ClusterSpec
from tests.unit.test_dashboard import metric_names
from tests.unit.test_prometheus_config import kept

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
BOARD = engine_dashboard("mongodb")
SET = ClusterSpec(name="orders", engine="mongodb", members=3)
#: mongod's replica-set states (replSetGetStatus' ``myState``) and the names a state panel must show for them.
STATES = {0: "STARTUP", 1: "PRIMARY", 2: "SECONDARY", 3: "RECOVERING", 5: "STARTUP2", 6: "UNKNOWN", 7: "ARBITER",
          8: "DOWN", 9: "ROLLBACK", 10: "REMOVED"}


def exporter_names() -> set[str]:
    """Every name dbtier's MongoDB exporter serves: a secondary's full reply (all families) and a member down."""
    t = datetime(2026, 12, 5, 1, 2, 3)
    status = {"myState": 2, "term": 4, "members": [
        {"name": "h:1", "stateStr": "PRIMARY", "health": 1, "optimeDate": t},
        {"name": "h:2", "stateStr": "SECONDARY", "health": 1, "optimeDate": t, "self": True}]}
    return {m.name for m in (*families("mongo1", {"isWritablePrimary": False}, status), *down("mongo2"))}


def node_names() -> set[str]:
    """Node exporter's names PostgreSQL's board reads (the same host panels, the same queries)."""
    return {name for _, expr in dashboard_queries(load_dashboard(), "orders") for name in metric_names(expr)
            if name.startswith("node_")}


KNOWN = exporter_names() | node_names() | set(METRICS) | {"up"}
USED = sorted({name for _, expr in dashboard_queries(BOARD, "orders") for name in metric_names(expr)})


def _state_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"]
            if any("mongodb_member_state" in metric_names(t.get("expr", "")) for t in p.get("targets", []))]


def _mapped(panel: dict[str, Any]) -> dict[int, str]:
    """value -> text of a panel's value mappings."""
    return {int(value): option["text"] for mapping in panel["fieldConfig"]["defaults"].get("mappings", [])
            if mapping["type"] == "value" for value, option in mapping["options"].items()}


def test_the_shipped_board_has_no_problems() -> None:
    assert query_problems(BOARD) == []


def test_the_file_is_tidy_json_built_like_the_cluster_board() -> None:
    text = (REPO / REPLICA_SET_DASHBOARD).read_text(encoding="utf-8")
    assert text == json.dumps(BOARD, indent=2, ensure_ascii=False) + "\n"
    pg = load_dashboard()
    assert list(BOARD) == list(pg)
    for key in ("schemaVersion", "__inputs", "__requires", "templating", "annotations"):
        assert BOARD[key] == pg[key], key
    assert (BOARD["uid"], BOARD["title"]) == ("dbtier-replica-set", "dbtier replica set") != (pg["uid"], pg["title"])
    sources = [p["datasource"] for p in BOARD["panels"] if p["type"] != "row"]
    sources += [t["datasource"] for p in BOARD["panels"] for t in p.get("targets", [])]
    assert {s["uid"] for s in sources} == {"${DS_PROMETHEUS}"}
    assert {p["type"] for p in BOARD["panels"]} == {"row", "timeseries", "stat"}


@pytest.mark.parametrize("name", USED)
def test_every_metric_on_the_board_is_one_a_replica_set_target_exports(name: str) -> None:
    assert name in KNOWN, f"{name}: not served by dbtier's MongoDB exporter, node exporter (as the cluster board " \
                          "reads it) or dbtier's textfile, and not up"


@pytest.mark.parametrize(("what", "names"), [
    ("the MongoDB exporter's", exporter_names()),
    ("dbtier's own", set(METRICS) - {"dbtier_metrics_written_timestamp_seconds"}),
    ("node exporter's", node_names()),
])
def test_every_name_of_each_source_is_on_the_board(what: str, names: set[str]) -> None:
    assert names - set(USED) == set(), f"{what} names the board does not show"


def test_every_panel_showing_member_state_maps_the_states() -> None:
    panels = _state_panels(BOARD)
    assert panels, "no panel shows mongodb_member_state"
    for panel in panels:
        assert _mapped(panel) == STATES, panel["title"]


def test_a_member_that_does_not_answer_still_has_a_state() -> None:
    """The exporter serves only ``mongodb_up 0`` for it, so a state panel must read that too (and show it DOWN)."""
    for panel in _state_panels(BOARD):
        exprs = [t["expr"] for t in panel["targets"]]
        shown_down = f"+ {next(v for v, text in STATES.items() if text == 'DOWN')}"
        assert any({m.name for m in down("mongo0")} <= metric_names(e) and shown_down in e for e in exprs), \
            panel["title"]


@pytest.mark.parametrize(("mappings", "missing"), [
    ([{"type": "value", "options": {str(v): {"text": t} for v, t in STATES.items() if v != 8}}], {8: "DOWN"}),
    ([], dict(STATES)),
])
def test_the_mapping_check_catches_a_state_left_out(mappings: list[dict[str, Any]], missing: dict[int, str]) -> None:
    panel = {"fieldConfig": {"defaults": {"mappings": mappings}}}
    assert {v: STATES[v] for v in set(STATES) - set(_mapped(panel))} == missing


def test_no_panel_reads_a_name_the_replica_set_jobs_drop() -> None:
    jobs = scrape_jobs(SET)
    assert {j.job for j in jobs} == {"mongodb", "node"}
    assert sorted((job.job, name) for job in jobs for name in USED if not kept(job, name)) == []


@pytest.mark.parametrize(("engine", "path", "title"), [
    ("postgres", DASHBOARD, "dbtier cluster"),
    ("mongodb", "deployments/grafana/dbtier-replica-set.json", "dbtier replica set"),
])
def test_each_engine_finds_its_own_board(engine: str, path: str, title: str) -> None:
    assert dashboard_for(engine) == path
    assert (REPO / path).is_file()
    assert engine_dashboard(engine)["title"] == title


def test_every_engine_a_spec_may_name_has_a_board() -> None:
    assert set(DASHBOARDS) == set(typing.get_args(ClusterSpec.model_fields["engine"].annotation))


def test_an_engine_without_a_board_is_refused_in_one_line() -> None:
    with pytest.raises(SpecError, match=r"^engine: dbtier ships no dashboard for 'mysql'; choose one of postgres, "
                                         r"mongodb$"):
        dashboard_for("mysql")


@pytest.mark.skipif(not os.path.exists(PROMTOOL), reason="promtool is not installed (make setup installs it)")
def test_every_query_parses(tmp_path: Path) -> None:
    """``promtool check rules`` parses each expr (recording rules of the queries, Grafana's interval made 5m)."""
    queries = dashboard_queries(BOARD, "orders")
    assert all("$" not in q.replace("$__rate_interval", "") and 'cluster="orders"' in q for _, q in queries)
    rules = [{"record": f"dbtier:dashboard:{i}", "expr": expr.replace("$__rate_interval", "5m")}
             for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
