"""A replica set's monitoring, for real, where no mongod can run: the monitoring flow starts Prometheus, Alertmanager,
node exporter and dbtier's MongoDB exporter (real processes); Prometheus scrapes each member through the exporter,
which answers ``mongodb_up 0`` for members that do not answer (none runs here); the members-down and no-primary
alerts fire with the member named; teardown of the stack leaves no process. Test block 40 (24000-24089)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from blocks.passwords import ensure_passwords
from dbtier.engines.base import get_engine
from dbtier.monitoring import run
from dbtier.monitoring.dashboard import dashboard_queries, engine_dashboard
from dbtier.monitoring.stack import stack_services
from dbtier.spec import ClusterSpec, build_spec
from tests.clusters import eventually, listening, shared_tmpdir, write_spec

pytestmark = pytest.mark.cluster
BASE = 24000


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return build_spec({
        "name": "mongo-mon", "engine": "mongodb", "members": 3, "data_root": shared_tmpdir("dbtier-mongo-mon-"),
        "tls": {"enabled": False}, "mongodb": {"port": BASE},
        "monitoring": {"ports": {"prometheus": BASE + 70, "alertmanager": BASE + 71, "node_exporter": BASE + 72},
                       "exporters": {"mongodb": BASE + 75},
                       "scrape_interval_s": 2, "evaluation_interval_s": 2, "alerts": {"down_for_s": 2}},
    }, environ={})


@pytest.fixture(scope="module")
def monitored(prefect_harness: None, spec: ClusterSpec) -> Iterator[dict[str, Any]]:
    from flows.monitoring import monitoring

    taken = [p for p in (BASE, BASE + 1, BASE + 2, BASE + 70, BASE + 71, BASE + 72, BASE + 75) if listening(p)]
    assert not taken, f"ports {taken} are in use"
    ensure_passwords(spec, initialised=False)  # the set's Secret blocks, as provision makes them
    spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
    try:
        yield {"spec_file": spec_file, "result": monitoring(spec_path=spec_file)}
    finally:
        run.stop_stack(spec)  # by pid, whatever the tests did


def test_each_member_is_scraped_through_the_exporter_and_says_it_is_down(monitored: dict[str, Any],
                                                                         spec: ClusterSpec) -> None:
    states = run.target_states(spec)
    assert sorted((job, instance, health) for job, instance, health, _ in states) == sorted(
        [("mongodb", f"127.0.0.1:{BASE + i}", "up") for i in range(3)]
        + [("node", f"127.0.0.1:{BASE + 72}", "up")])
    assert monitored["result"]["targets"].startswith("Prometheus scrapes 4 targets, all up")
    up = run.prometheus_api(spec, "query", query=f'mongodb_up{{cluster="{spec.name}"}}')["result"]
    assert sorted((r["metric"]["member"], r["metric"]["instance"], float(r["value"][1])) for r in up) == [
        (f"mongo{i}", f"127.0.0.1:{BASE + i}", 0.0) for i in range(3)]
    loaded = {r["name"] for g in run.prometheus_api(spec, "rules")["groups"] for r in g["rules"]}
    assert {"DbtierMongoMemberDown", "DbtierMongoNoPrimary", "DbtierMongoReplicationLag"} <= loaded
    assert not [name for name in loaded if "Postgres" in name or "Patroni" in name or "PgBouncer" in name]


def test_the_members_down_alert_fires_naming_each_member(monitored: dict[str, Any], spec: ClusterSpec) -> None:
    def firing() -> list[dict[str, Any]]:
        alerts = run.prometheus_api(spec, "alerts")["alerts"]
        return [a for a in alerts if a["state"] == "firing" and a["labels"]["alertname"] == "DbtierMongoMemberDown"]

    fired = eventually("DbtierMongoMemberDown fires for the three members", lambda: len(firing()) == 3 and firing(),
                       timeout=60, every=1)
    assert sorted(a["labels"]["member"] for a in fired) == ["mongo0", "mongo1", "mongo2"]
    assert fired[0]["annotations"]["summary"] == f"mongod of {fired[0]['labels']['member']} does not answer"
    assert all(a["labels"]["severity"] == "critical" and a["labels"]["cluster"] == spec.name for a in fired)


def test_the_dashboards_member_panels_show_each_member_down(monitored: dict[str, Any], spec: ClusterSpec) -> None:
    """The replica set's Grafana dashboard, its queries against the live Prometheus (Grafana is in no registry): with
    no mongod answering, Member up reads 0 and Member state DOWN (8) for each member, and the host panels have data."""
    queries = dashboard_queries(engine_dashboard("mongodb"), spec.name)

    def values(title: str, needle: str = "") -> dict[str, float]:
        expr = next(e for t, e in queries if t == title and needle in e).replace("$__rate_interval", "1m")
        result = run.prometheus_api(spec, "query", query=expr)["result"]
        return {r["metric"].get("member") or r["metric"].get("instance", ""): float(r["value"][1]) for r in result}

    members = [f"mongo{i}" for i in range(3)]
    # A scrape the loaded machine made late drops a member's series until the next one (2 s here): ask again.
    eventually("Member up reads 0 for each member", lambda: values("Member up") == dict.fromkeys(members, 0.0),
               timeout=20, every=1)
    eventually("Member state reads DOWN (8) for each member",
               lambda: values("Member state") == dict.fromkeys(members, 8.0), timeout=20, every=1)
    assert values("Primary per member") == {}, "no member answers, so none says it is primary"
    assert eventually("node exporter's CPU over a minute", lambda: values("Node CPU busy"), timeout=60, every=2)
    assert list(values("Node memory available").values())[0] > 0


def test_the_exporter_serves_only_its_members(monitored: dict[str, Any], spec: ClusterSpec) -> None:
    url = f"http://127.0.0.1:{BASE + 75}/metrics"
    answer = requests.get(url, params={"target": f"127.0.0.1:{BASE}"}, timeout=10)
    assert answer.status_code == 200 and 'mongodb_up{member="mongo0"} 0.0' in answer.text
    refused = requests.get(url, params={"target": "127.0.0.1:22"}, timeout=10)
    assert refused.status_code == 400 and "unknown target" in refused.text


def test_stopping_the_stack_stops_the_exporter_by_pid(monitored: dict[str, Any], spec: ClusterSpec) -> None:
    """Runs last: the fixture's stop finds nothing left."""
    names = [s.name for s in stack_services(spec, run.stack_paths(spec))]
    assert "mongodb-exporter" in names and get_engine(spec).exporter_services(spec) == []
    said = run.stop_stack(spec)
    assert any(s.startswith("mongodb-exporter") for s in said), said
    assert [p for p in (BASE + 70, BASE + 71, BASE + 72, BASE + 75) if listening(p)] == [], "a stop frees its port"
