"""The Grafana dashboards of one dbtier cluster, one per engine, and the queries they run (pure, but
:func:`load_dashboard`).

``deployments/grafana/dbtier-cluster.json`` shows, for the cluster picked in its ``cluster`` variable (the
``cluster`` label :mod:`dbtier.monitoring.stack` puts on every target): the targets up per job; Patroni's members
running, the leader and the replicas, and each replica's replication lag in bytes; whether every etcd member sees
a leader; HAProxy's servers up behind each route (when routing is on); each member's connections and commits per
second (PostgreSQL's exporter) and each PgBouncer's clients active and waiting and its average query time
(dbtier's PgBouncer exporter); each host's CPU, memory and filesystems;
and dbtier's own metrics (:mod:`dbtier.monitoring.metrics`): the age of the newest backup of each kind, archive
health and lag, the last restore and failover drills, and the days until the first certificate expires. Every
panel's description says what healthy looks like.

``deployments/grafana/dbtier-replica-set.json`` shows the same for a MongoDB replica set: the targets up per job;
each member up, the primary, each member's state (a member that does not answer shown DOWN), each secondary's
replication lag in seconds, the election term and the healthy members each member sees (dbtier's MongoDB exporter);
each host's CPU, memory and filesystems; and dbtier's own metrics as the replica set's flows write them (dumps,
oplog archiving, drills, certificates). :func:`dashboard_for` names the engine's file, :func:`engine_dashboard`
loads it.

To import either into Grafana: Dashboards > New > Import, upload the file, and pick as its Prometheus data source
the one whose URL is the Prometheus ``make monitor`` prints (``http://127.0.0.1:9090`` by default).
:func:`query_problems` is what a test runs on it; :func:`dashboard_queries` lists the PromQL it sends.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from dbtier.errors import SpecError

#: The dashboards' files, relative to the repository's root: a PostgreSQL (Patroni) cluster's, a replica set's.
DASHBOARD = "deployments/grafana/dbtier-cluster.json"
REPLICA_SET_DASHBOARD = "deployments/grafana/dbtier-replica-set.json"
#: A spec's ``engine`` -> its dashboard's file.
DASHBOARDS = {"postgres": DASHBOARD, "mongodb": REPLICA_SET_DASHBOARD}
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_VARIABLE = re.compile(r"\$(?:\{cluster\}|cluster\b)")
_FILTER = re.compile(r'(?<![\w])cluster\s*=\s*"\$cluster"')
_MATCHERS = re.compile(r"\{([^{}]*)\}")


def dashboard_for(engine: str) -> str:
    """The file of ``engine``'s dashboard (a spec's ``engine``), relative to the repository's root.

    >>> dashboard_for("postgres"), dashboard_for("mongodb")
    ('deployments/grafana/dbtier-cluster.json', 'deployments/grafana/dbtier-replica-set.json')
    >>> dashboard_for("mysql")
    Traceback (most recent call last):
    ...
    dbtier.errors.SpecError: engine: dbtier ships no dashboard for 'mysql'; choose one of postgres, mongodb
    """
    if engine not in DASHBOARDS:
        raise SpecError(f"engine: dbtier ships no dashboard for {engine!r}; choose one of {', '.join(DASHBOARDS)}")
    return DASHBOARDS[engine]


def load_dashboard(path: str = os.path.join(_REPO, DASHBOARD)) -> dict[str, Any]:
    """The dashboard's JSON model, from ``path`` (PostgreSQL's shipped file by default)."""
    with open(path, encoding="utf-8") as f:
        model: dict[str, Any] = json.load(f)
    return model


def engine_dashboard(engine: str) -> dict[str, Any]:
    """The JSON model of the dashboard dbtier ships for ``engine`` (:func:`dashboard_for`)."""
    return load_dashboard(os.path.join(_REPO, dashboard_for(engine)))


def _panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, rows and the panels a collapsed row holds included, in the file's order.

    >>> [p["id"] for p in _panels({"panels": [{"id": 1, "type": "row", "panels": [{"id": 2}]}, {"id": 3}]})]
    [1, 2, 3]
    """
    for panel in dashboard.get("panels", []):
        yield panel
        yield from _panels(panel)


def _filters_cluster(expr: str) -> bool:
    """Whether every label matcher of ``expr`` (each ``{...}``, and there is one at least) has ``cluster="$cluster"``.
    A bare selector (``up`` without braces) is not seen: write ``up{cluster="$cluster"}``.

    >>> _filters_cluster('up{cluster="$cluster"}'), _filters_cluster('up{job="etcd", cluster="${cluster}"}')
    (True, True)
    >>> _filters_cluster('up'), _filters_cluster('a{cluster="$cluster"} / b{}'), _filters_cluster('up{cluster=~"$cluster"}')
    (False, False, False)
    """
    groups = _MATCHERS.findall(expr.replace("${cluster}", "$cluster"))
    return bool(groups) and all(_FILTER.search(group) for group in groups)


def dashboard_queries(dashboard: Mapping[str, Any], cluster: str) -> list[tuple[str, str]]:
    """(panel title, expr for ``cluster``) of every target with an expr, ``$cluster`` and ``${cluster}`` replaced.

    >>> board = {"panels": [{"type": "row", "title": "r", "panels": [
    ...     {"title": "up", "targets": [{"expr": 'sum by (job) (up{cluster="$cluster"})'}, {"expr": 'x{cluster="${cluster}"}'}]}]}]}
    >>> dashboard_queries(board, "orders")
    [('up', 'sum by (job) (up{cluster="orders"})'), ('up', 'x{cluster="orders"}')]
    """
    return [(str(panel.get("title", "")), _VARIABLE.sub(lambda _: cluster, str(target["expr"])))
            for panel in _panels(dashboard) for target in panel.get("targets", []) if target.get("expr")]


def query_problems(dashboard: Mapping[str, Any]) -> list[str]:
    """One sentence per panel without a description (rows need none), target without an expr, expr that does not
    filter by ``cluster="$cluster"``, or panel id used twice; none for a sound dashboard.

    >>> query_problems({"panels": [
    ...     {"id": 1, "title": "up", "description": "1 is up", "targets": [{"refId": "A", "expr": 'up{cluster="$cluster"}'}]},
    ...     {"id": 1, "title": "cpu", "targets": [{"refId": "A", "expr": "node_load1"}, {"refId": "B"}]}]})
    ... # doctest: +NORMALIZE_WHITESPACE
    ["panel 1 'cpu': no description",
     'panel 1 \\'cpu\\' target A: its expr does not filter by cluster="$cluster": node_load1',
     "panel 1 'cpu' target B: no expr",
     "panel id 1 is used by 2 panels: 'up', 'cpu'"]
    """
    problems: list[str] = []
    titles: dict[Any, list[str]] = {}
    for panel in _panels(dashboard):
        name = f"panel {panel.get('id')} {panel.get('title', '')!r}"
        titles.setdefault(panel.get("id"), []).append(repr(panel.get("title", "")))
        if panel.get("type") != "row" and not str(panel.get("description") or "").strip():
            problems.append(f"{name}: no description")
        for target in panel.get("targets", []):
            where = f"{name} target {target.get('refId', '?')}"
            expr = str(target.get("expr") or "")
            if not expr.strip():
                problems.append(f"{where}: no expr")
            elif not _filters_cluster(expr):
                problems.append(f'{where}: its expr does not filter by cluster="$cluster": {expr}')
    problems += [f"panel id {pid} is used by {len(names)} panels: {', '.join(names)}"
                 for pid, names in titles.items() if len(names) > 1]
    return problems
