"""The Grafana dashboard dbtier ships: every query filters by the cluster and names a metric some target of the
cluster really exports, and the checks that say so catch each kind of mistake."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbtier.engines.postgres.pgbouncer_exporter import MAXWAIT, POOLS, STATS
from dbtier.monitoring.alerts import alert_rules
from dbtier.monitoring.dashboard import DASHBOARD, dashboard_queries, load_dashboard, query_problems
from dbtier.monitoring.metrics import METRICS
from dbtier.spec import ClusterSpec

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
BOARD = load_dashboard()
#: Node exporter's and PostgreSQL exporter's names the dashboard uses and no alert rule does (HAProxy's are all in
#: the rules; PgBouncer's are dbtier's own exporter's).
ALLOWED = {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
           "pg_stat_activity_count", "pg_settings_max_connections", "pg_stat_database_xact_commit"}
#: PromQL's operators and modifiers that look like names; a name followed by ``(`` is a function and is skipped.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
            "inf", "nan", "sum", "max", "min", "avg", "count", "rate", "increase", "time", "predict_linear"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expr: identifiers before ``{`` or bare, not functions, keywords or labels."""
    text = expr.replace("${cluster}", "$cluster")
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    return {name for name in _NAME.findall(text) if name not in KEYWORDS}


def known_names() -> set[str]:
    rules = [r["expr"] for g in alert_rules(ClusterSpec(name="orders"))["groups"] for r in g["rules"]]
    bouncer = {f.name for f in (*STATS, *POOLS)} | {MAXWAIT}
    return set(METRICS) | bouncer | {name for expr in rules for name in metric_names(expr)} | ALLOWED


USED = sorted({name for _, expr in dashboard_queries(BOARD, "orders") for name in metric_names(expr)})


@pytest.mark.parametrize(("expr", "names"), [
    ('up{cluster="$cluster"}', {"up"}),
    ("node_load1", {"node_load1"}),
    ('sum by (job) (up{cluster="$cluster"}) / count without (instance) (up)', {"up"}),
    ('1 - avg by (instance) (rate(node_cpu_seconds_total{cluster="$cluster",mode="idle"}[$__rate_interval]))',
     {"node_cpu_seconds_total"}),
    ('max by (cluster) (a{cluster="${cluster}"} and on (cluster, name) b == 1) - on (cluster) group_right () c',
     {"a", "b", "c"}),
    ('time() - dbtier_x{kind=~"full|diff"} > 1e3 offset 5m', {"dbtier_x"}),
])
def test_metric_names_are_read_from_an_expr(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_shipped_dashboard_has_no_problems() -> None:
    assert query_problems(BOARD) == []


def test_the_file_is_tidy_json_grafana_imports() -> None:
    text = (REPO / DASHBOARD).read_text(encoding="utf-8")
    assert text == json.dumps(BOARD, indent=2, ensure_ascii=False) + "\n"
    assert BOARD["schemaVersion"] == 39
    assert [(i["name"], i["type"], i["pluginId"]) for i in BOARD["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    cluster = next(v for v in BOARD["templating"]["list"] if v["name"] == "cluster")
    assert (cluster["type"], cluster["definition"]) == ("query", "label_values(up, cluster)")
    sources = [p["datasource"] for p in BOARD["panels"] if p["type"] != "row"]
    sources += [t["datasource"] for p in BOARD["panels"] for t in p.get("targets", [])]
    assert {s["uid"] for s in sources} == {"${DS_PROMETHEUS}"}
    assert {p["type"] for p in BOARD["panels"]} == {"row", "timeseries", "stat"}


@pytest.mark.parametrize("name", USED)
def test_every_metric_on_the_dashboard_is_one_the_project_knows(name: str) -> None:
    assert name in known_names(), f"{name}: not written by dbtier, not in an alert rule, not in ALLOWED"


def test_every_dbtier_metric_is_on_the_dashboard() -> None:
    assert set(METRICS) - set(USED) == {"dbtier_metrics_written_timestamp_seconds"}


def test_the_allow_list_holds_only_names_the_dashboard_uses() -> None:
    assert ALLOWED - set(USED) == set()


@pytest.mark.parametrize(("expr", "query"), [
    ('up{cluster="$cluster"}', 'up{cluster="orders"}'),
    ('up{cluster="${cluster}"}', 'up{cluster="orders"}'),
    ('a{cluster="$cluster"} / b{cluster="${cluster}"}', 'a{cluster="orders"} / b{cluster="orders"}'),
    ('up{cluster="$clusters"}', 'up{cluster="$clusters"}'),
])
def test_dashboard_queries_substitute_the_cluster(expr: str, query: str) -> None:
    board = {"panels": [{"type": "row", "id": 1, "title": "row", "collapsed": True,
                         "panels": [{"id": 2, "title": "nested", "targets": [{"refId": "A", "expr": expr}]}]}]}
    assert dashboard_queries(board, "orders") == [("nested", query)]


def test_the_shipped_queries_name_the_cluster() -> None:
    queries = dashboard_queries(BOARD, "orders")
    assert len(queries) == sum(len(p.get("targets", [])) for p in BOARD["panels"])
    assert all("$" not in q.replace("$__rate_interval", "") and 'cluster="orders"' in q for _, q in queries)


def _panel(pid: int, expr: str | None = 'up{cluster="$cluster"}', description: str | None = "1 is up",
           title: str = "up") -> dict[str, Any]:
    target: dict[str, Any] = {"refId": "A"} if expr is None else {"refId": "A", "expr": expr}
    panel: dict[str, Any] = {"id": pid, "type": "stat", "title": title, "targets": [target]}
    if description is not None:
        panel["description"] = description
    return panel


@pytest.mark.parametrize(("panels", "problem"), [
    ([_panel(1, description=None)], "panel 1 'up': no description"),
    ([_panel(1, description="  ")], "panel 1 'up': no description"),
    ([_panel(1, expr=None)], "panel 1 'up' target A: no expr"),
    ([_panel(1, expr="")], "panel 1 'up' target A: no expr"),
    ([_panel(1, expr="up")], 'panel 1 \'up\' target A: its expr does not filter by cluster="$cluster": up'),
    ([_panel(1, expr='up{cluster="orders"}')], "does not filter by"),
    ([_panel(1, expr='up{cluster=~"$cluster"}')], "does not filter by"),
    ([_panel(1, expr='up{cluster!="$cluster"}')], "does not filter by"),
    ([_panel(1, expr='a{cluster="$cluster"} / b{job="node"}')], "does not filter by"),
    ([_panel(1), _panel(1, title="cpu")], "panel id 1 is used by 2 panels: 'up', 'cpu'"),
    ([{"id": 9, "type": "row", "title": "r", "panels": [_panel(1, description=None)]}], "panel 1 'up': no description"),
    ([{"id": 1, "type": "row", "title": "r", "panels": [_panel(2)]}, _panel(2)], "panel id 2 is used by 2 panels"),
])
def test_query_problems_catch_each_mistake(panels: list[dict[str, Any]], problem: str) -> None:
    problems = query_problems({"panels": panels})
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("expr", ['up{cluster="$cluster"}', 'up{job="etcd", cluster="${cluster}"}',
                                  'a{cluster="$cluster"} - on (cluster) b{cluster = "$cluster"}'])
def test_query_problems_accept_a_filtered_expr(expr: str) -> None:
    assert query_problems({"panels": [{"id": 1, "type": "row", "title": "r"}, _panel(2, expr=expr)]}) == []


@pytest.mark.skipif(not os.path.exists(PROMTOOL), reason="promtool is not installed (make setup installs it)")
def test_every_query_parses(tmp_path: Path) -> None:
    """``promtool check rules`` parses each expr (recording rules of the queries, Grafana's interval made 5m)."""
    rules = [{"record": f"dbtier:dashboard:{i}", "expr": expr.replace("$__rate_interval", "5m")}
             for i, (_, expr) in enumerate(dashboard_queries(BOARD, "orders"))]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
