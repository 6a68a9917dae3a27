"""dbtier's MongoDB exporter (dbtier.engines.mongodb.exporter): its metrics from real reply shapes (tables), its
conversation with a member (mockupdb: the commands it sends, NotYetInitialized, no answer), and what it serves."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from mockupdb import MockupDB
from pymongo import MongoClient

from dbtier.engines.mongodb import exporter
from dbtier.engines.mongodb.steps import MONITOR_USER
from dbtier.monitoring.exposition import exposition, multi_target_handler

NOW = datetime(2026, 12, 5, 1, 2, 3)


def _status(my_state: int, lag_s: float) -> dict[str, Any]:
    return {"set": "rs0", "myState": my_state, "term": 7, "members": [
        {"name": "h:27017", "stateStr": "PRIMARY", "health": 1, "optimeDate": NOW},
        {"name": "h:27018", "stateStr": "SECONDARY", "health": 1, "optimeDate": NOW - timedelta(seconds=lag_s),
         "self": my_state == 2},
        {"name": "h:27019", "stateStr": "(not reachable/healthy)", "health": 0}]}


def _values(metrics: list[exporter.Metric]) -> dict[str, float]:
    return {m.name: m.samples[0][1] for m in metrics}


@pytest.mark.parametrize(("hello", "status", "expected"), [
    ({"isWritablePrimary": False, "secondary": True}, _status(2, 4.5),
     {"mongodb_up": 1, "mongodb_member_primary": 0, "mongodb_member_state": 2, "mongodb_replset_term": 7,
      "mongodb_replset_healthy_members": 2, "mongodb_replication_lag_seconds": 4.5}),
    ({"isWritablePrimary": True}, {**_status(1, 0), "members": [{**_status(1, 0)["members"][0], "self": True}]},
     {"mongodb_up": 1, "mongodb_member_primary": 1, "mongodb_member_state": 1, "mongodb_replset_term": 7,
      "mongodb_replset_healthy_members": 1, "mongodb_replication_lag_seconds": 0}),
    ({"isWritablePrimary": False}, None, {"mongodb_up": 1, "mongodb_member_primary": 0}),  # not initiated yet
    ({"isWritablePrimary": False, "secondary": True},
     {"myState": 2, "term": 7, "members": [{"name": "h:27018", "stateStr": "SECONDARY", "health": 1, "self": True,
                                            "optimeDate": NOW}]},
     {"mongodb_up": 1, "mongodb_member_primary": 0, "mongodb_member_state": 2, "mongodb_replset_term": 7,
      "mongodb_replset_healthy_members": 1}),  # no primary in its view: no lag, rather than a made-up one
])
def test_metrics_from_a_members_replies(hello: dict[str, Any], status: dict[str, Any] | None,
                                        expected: dict[str, float]) -> None:
    found = exporter.families("mongo1", hello, status)
    assert _values(found) == expected
    assert all(m.samples[0][0] == {"member": "mongo1"} and m.kind == "gauge" for m in found)


def test_a_member_that_does_not_answer_is_down_within_the_scrape() -> None:
    config = exporter.Config(MONITOR_USER, "/nonexistent", "", {"127.0.0.1:9": "mongo0"})  # discard port: refused

    def connecting(config: exporter.Config, target: str, timeout_ms: int) -> MongoClient[Any]:
        assert timeout_ms == 500
        host, _, port = target.rpartition(":")
        return MongoClient(host, int(port), directConnection=True, serverSelectionTimeoutMS=timeout_ms)

    found = exporter.scrape(config, "127.0.0.1:9", 1.0, connecting)  # the budget is half the scrape's timeout
    assert [(m.name, m.samples) for m in found] == [("mongodb_up", [({"member": "mongo0"}, 0.0)])]


def test_a_missing_password_file_is_down_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    config = exporter.Config(MONITOR_USER, "/nonexistent/password", "", {"127.0.0.1:27017": "mongo0"})
    assert _values(exporter.scrape(config, "127.0.0.1:27017", 2.0)) == {"mongodb_up": 0}
    assert "mongodb-exporter: mongo0 (127.0.0.1:27017): FileNotFoundError" in capsys.readouterr().err


def _direct(config: exporter.Config, target: str, timeout_ms: int) -> MongoClient[Any]:
    """The mock member without credentials (mockupdb cannot answer SCRAM)."""
    host, _, port = target.rpartition(":")
    return MongoClient(host, int(port), directConnection=True, serverSelectionTimeoutMS=timeout_ms)


def test_a_scrape_asks_hello_then_replsetgetstatus(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    target = f"{member_server.host}:{member_server.port}"
    config = exporter.Config(MONITOR_USER, "/p", "", {target: "mongo1"})
    future = pool.submit(exporter.scrape, config, target, 5.0, _direct)
    hello = member_server.receives(timeout=5)
    assert hello.command_name == "hello" and hello.doc["$db"] == "admin"
    hello.ok(isWritablePrimary=False, secondary=True, setName="rs0")
    status = member_server.receives(timeout=5)
    assert status.command_name == "replSetGetStatus" and status.doc["$db"] == "admin"
    status.ok(**_status(2, 1.5))
    assert _values(future.result(timeout=5))["mongodb_replication_lag_seconds"] == 1.5


def test_a_set_not_yet_initiated_is_up_without_a_state(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    target = f"{member_server.host}:{member_server.port}"
    config = exporter.Config(MONITOR_USER, "/p", "", {target: "mongo0"})
    future = pool.submit(exporter.scrape, config, target, 5.0, _direct)
    member_server.receives(timeout=5).ok(isWritablePrimary=False)
    member_server.receives(timeout=5).command_err(code=94, errmsg="no replset config has been received",
                                                  codeName="NotYetInitialized")
    assert _values(future.result(timeout=5)) == {"mongodb_up": 1, "mongodb_member_primary": 0}


def test_the_config_it_reads_is_the_one_dbtier_writes(tmp_path: Path) -> None:
    from dbtier.engines.mongodb.engine import members
    from dbtier.engines.mongodb.monitoring import exporter_files
    from dbtier.spec import ClusterSpec

    spec = ClusterSpec(engine="mongodb")
    for path, data in exporter_files(spec, members(spec), str(tmp_path), "/ca.crt", "s3cr3t").items():
        Path(path).write_bytes(data)
    config = exporter.Config.load(str(tmp_path / "mongodb-exporter.json"))
    assert (config.user, config.tls_ca_file) == ("monitoring", "/ca.crt")
    assert config.targets == {"127.0.0.1:27017": "mongo0", "127.0.0.1:27018": "mongo1", "127.0.0.1:27019": "mongo2"}
    assert Path(config.password_file).read_text() == "s3cr3t\n"
    assert "s3cr3t" not in (tmp_path / "mongodb-exporter.json").read_text()


def test_it_serves_only_its_members_and_passes_the_scrape_timeout_on() -> None:
    seen: list[tuple[str, float]] = []

    def scrape(target: str, seconds: float) -> list[exporter.Metric]:
        seen.append((target, seconds))
        return exporter.down("mongo0")

    server = ThreadingHTTPServer(("127.0.0.1", 0), multi_target_handler("mongodb exporter", {"h:1": "mongo0"}, scrape))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        answer = requests.get(url, params={"target": "h:1"}, headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"},
                              timeout=5)
        assert answer.status_code == 200 and answer.content == exposition(exporter.down("mongo0"))
        assert seen == [("h:1", 2.0)]
        assert requests.get(url, params={"target": "h:2"}, timeout=5).status_code == 400
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_member_hosts_of_their_own_get_a_node_exporter_that_prometheus_scrapes() -> None:
    from dbtier.engines.base import get_engine
    from dbtier.monitoring.stack import targets
    from dbtier.spec import build_spec

    hosts = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    spec = build_spec({"name": "orders", "engine": "mongodb", "provider": "ssh",
                       "ssh": {"hosts": [{"address": h} for h in hosts], "key_file": "/k"},
                       "backup": {"repositories": [{"type": "fs", "shared": True}]}}, {})
    engine = get_engine(spec)
    services = engine.exporter_services(spec)
    assert [(s.name, s.host, s.ports) for s in services] == [
        (f"node-{h}", h, [("monitoring.exporters.node", 9100)]) for h in hosts]
    assert all(s.argv[0] == spec.binaries.node_exporter and "--collector.textfile" not in s.argv for s in services)
    jobs = {j.job: j.targets for j in engine.scrape_jobs(spec)}
    assert jobs == {"mongodb": [f"{h}:{27017 + i}" for i, h in enumerate(hosts)], "node": [f"{h}:9100" for h in hosts]}
    assert targets(spec)["node"] == ["127.0.0.1:9100", *(f"{h}:9100" for h in hosts)], "and this machine's own"
    clash = build_spec({"name": "orders", "engine": "mongodb", "provider": "ssh",
                        "ssh": {"hosts": [{"address": h} for h in hosts], "key_file": "/k"},
                        "backup": {"repositories": [{"type": "fs", "shared": True}]},
                        "monitoring": {"exporters": {"node": 27018}}}, {})
    assert engine.exporter_problems(clash) == [
        "monitoring.exporters.node: node exporter would listen on 27018 on the member hosts, which is mongodb.port "
        "(member 1); choose another port"]
