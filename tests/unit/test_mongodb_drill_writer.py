"""The MongoDB drill writer against mockupdb: the exact insert, what is logged as an ack and what as an error,
the deadline, the writer as its own process, and its log judged by the drills' shared verdict.

No mongod runs: each test answers what the writer sends, the way tests/unit/test_mongodb_wire.py does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId, Timestamp
from mockupdb import MockupDB
from pymongo import MongoClient

from dbtier.drills.verdict import Attempt, Observed, judge
from dbtier.drills.writer import read_attempts
from dbtier.engines.mongodb import drill_writer as dw
from dbtier.engines.mongodb import faults
from dbtier.engines.mongodb.config import MongoUri
from tests.mockwire import command_sent


def _client(server: MockupDB, deadline_s: float = 2.0) -> tuple[MongoClient[Any], dw.LastReply]:
    listener = dw.LastReply()
    return dw.writer_client(f"mongodb://{server.host}:{server.port}/app?directConnection=true", deadline_s,
                            listener), listener


@pytest.mark.parametrize(("w", "sent"), [("majority", {"w": "majority"}), ("1", {"w": 1})])
def test_insert_is_one_document_with_the_write_concern_and_its_ack_logs_port_and_term(
        member_server: MockupDB, pool: ThreadPoolExecutor, w: str, sent: dict[str, Any]) -> None:
    client, listener = _client(member_server)
    future = pool.submit(dw.write_once, client, listener, "app", "d1", 7, dw.write_concern(w))
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"insert": "dbtier_drill_writes.d1", "ordered": True,
                                 "documents": [{"_id": 7, "drill": "d1"}], "writeConcern": sent}
    assert request.doc["$db"] == "app"
    request.ok(n=1, opTime={"ts": Timestamp(1733352000, 1), "t": 3}, electionId=ObjectId("7fffffff0000000000000003"))
    record = future.result(timeout=5)
    assert record["ok"] is True and record["id"] == 7 and record["sent"] <= record["done"]
    assert record["port"] == member_server.port and record["timeline"] == 3 and "error" not in record
    client.close()


def test_ack_without_optime_takes_the_term_from_election_id(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    client, listener = _client(member_server)
    future = pool.submit(dw.write_once, client, listener, "app", "d1", 1, dw.write_concern("majority"))
    member_server.receives(timeout=5).ok(n=1, electionId=ObjectId("7fffffff0000000000000009"))
    assert future.result(timeout=5)["timeline"] == 9
    client.close()


def test_not_writable_primary_is_an_error_attempt_not_an_ack(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    client, listener = _client(member_server)
    future = pool.submit(dw.write_once, client, listener, "app", "d1", 8, dw.write_concern("majority"))
    member_server.receives(timeout=5).command_err(code=10107, errmsg="not primary", codeName="NotWritablePrimary")
    record = future.result(timeout=5)
    assert record["ok"] is False and "port" not in record and "timeline" not in record
    assert record["error"].startswith("NotPrimaryError (10107): ") and "\n" not in record["error"]
    assert Attempt.from_json(record).ok is False
    client.close()


def test_write_concern_error_is_not_an_ack(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    client, listener = _client(member_server)
    future = pool.submit(dw.write_once, client, listener, "app", "d1", 9, dw.write_concern("majority"))
    member_server.receives(timeout=5).ok(n=1, writeConcernError={"code": 64, "errmsg": "waiting for replication timed out"})
    record = future.result(timeout=5)
    assert record["ok"] is False and "WriteConcernError" in record["error"]
    client.close()


def test_a_server_that_never_answers_is_an_error_within_the_deadline(member_server: MockupDB,
                                                                     pool: ThreadPoolExecutor) -> None:
    client, listener = _client(member_server, deadline_s=0.5)
    future = pool.submit(dw.write_once, client, listener, "app", "d1", 10, dw.write_concern("majority"))
    member_server.receives(timeout=5)  # taken, never answered: a frozen primary
    record = future.result(timeout=5)
    assert record["ok"] is False and "NetworkTimeout" in record["error"]  # the deadline, not the 5 s wait, ended it
    client.close()


def test_present_ids_reads_with_majority_read_concern(member_server: MockupDB, pool: ThreadPoolExecutor) -> None:
    client, _ = _client(member_server)
    future = pool.submit(dw.present_ids, client, "d1")
    request = member_server.receives(timeout=5)
    assert command_sent(request.doc) == {"find": "dbtier_drill_writes.d1", "filter": {"drill": "d1"}, "projection": {"_id": 1},
                                 "readConcern": {"level": "majority"}}
    request.ok(cursor={"id": 0, "ns": "app.dbtier_drill_writes.d1", "firstBatch": [{"_id": 1}, {"_id": 2}]})
    assert future.result(timeout=5) == frozenset({1, 2})
    client.close()


# -- the writer as its own process -------------------------------------------------------------------


def _uri_file(tmp_path: Path, server: MockupDB, mode: int = 0o600, auth: str = "app:pw-secret@") -> str:
    """The URI file the drill writes (mockupdb answers no SCRAM handshake: the process test goes without ``auth``)."""
    path = tmp_path / "uri"
    path.write_text(f"mongodb://{auth}{server.host}:{server.port}/app?directConnection=true\n")
    path.chmod(mode)
    return str(path)


def test_uri_file_others_can_read_is_refused_in_one_line(tmp_path: Path, member_server: MockupDB,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    uri_file = _uri_file(tmp_path, member_server, 0o644)
    code = dw.main(["--uri-file", uri_file, "--drill", "d1", "--log", str(tmp_path / "w.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"drill writer: --uri-file {uri_file}: mode 0644 lets other users read the password; " \
                                f"chmod 600 {uri_file}\n"
    assert "pw-secret" not in err and not (tmp_path / "w.jsonl").exists()
    assert dw.main(["--uri-file", str(tmp_path / "none"), "--drill", "d1", "--log", "x"]) == 2


def test_write_uri_file_is_private(tmp_path: Path) -> None:
    dw.write_uri_file(str(tmp_path / "d" / "uri"), MongoUri("mongodb://app:pw@h:1/app", "mongodb://app:***@h:1/app"))
    assert (tmp_path / "d" / "uri").stat().st_mode & 0o777 == 0o600
    assert dw.read_uri_file(str(tmp_path / "d" / "uri")) == "mongodb://app:pw@h:1/app"


def test_the_writer_process_logs_lines_verdict_reads_back(tmp_path: Path, member_server: MockupDB) -> None:
    term = {"t": 2}

    def answer(request: Any) -> bool:
        if request.command_name != "insert":
            return False
        return bool(request.ok(n=1, opTime={"ts": Timestamp(1, 1), "t": term["t"]}))

    member_server.autoresponds(answer)
    log = str(tmp_path / "writes.jsonl")
    uri_file = _uri_file(tmp_path, member_server, auth="")
    argv = dw.writer_argv(uri_file, "d1", log, "majority", 1.0)
    assert argv[argv.index("--uri-file") + 1] == uri_file and "mongodb://" not in " ".join(argv)
    proc = dw.start_writer(argv, str(tmp_path / "writer.err"))
    deadline = time.monotonic() + 20
    while len(read_attempts(log)) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    said = dw.stop_writer(proc, str(tmp_path / "writer.err"))
    attempts = read_attempts(log)
    assert said.startswith(f"MongoDB drill writer (pid {proc.pid}) stopped with exit code "), said
    assert len(attempts) >= 5 and all(a.ok and a.port == member_server.port and a.timeline == 2 for a in attempts)
    ids = [a.id for a in attempts]
    assert ids == list(range(1, len(ids) + 1))
    assert all(json.loads(line).keys() == {"id", "sent", "done", "ok", "port", "timeline"}
               for line in Path(log).read_text().splitlines())


def test_the_writer_module_runs_without_a_password_in_its_environment() -> None:
    done = subprocess.run([sys.executable, "-m", "dbtier.engines.mongodb.drill_writer", "--help"],
                          cwd=Path(dw.__file__).resolve().parents[3], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if "PASS" not in k}, check=False)
    assert done.returncode == 0 and "--uri-file" in done.stdout and "--w" in done.stdout


# -- the drills' verdict on this log -------------------------------------------------------------------


def _synthetic_log(tmp_path: Path) -> str:
    """mongo0 (27017, term 1) acks 1-5, is killed at t=10, errors while the set elects, mongo1 (27018, term 2)
    acks 8-10."""
    lines: list[dict[str, Any]] = [{"id": i, "sent": float(i), "done": i + 0.01, "ok": True, "port": 27017, "timeline": 1} for i in range(1, 6)]
    lines += [{"id": i, "sent": 10.0 + i - 6, "done": 12.0 + i - 6, "ok": False, "error": "NetworkTimeout: timed out"}
              for i in (6, 7)]
    lines += [{"id": i, "sent": 14.0 + i - 8, "done": 14.05 + i - 8, "ok": True, "port": 27018, "timeline": 2}
              for i in (8, 9, 10)]
    path = tmp_path / "writes.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"id": 11, "sent"')  # a line being written
    return str(path)


def _judge(attempts: list[Attempt], present: frozenset[int], w: str) -> Any:
    seen = Observed(fault_at=9.5, leader_before="mongo0", leader_after="mongo1", primary_ids=present, rejoin_s=20.0)
    return judge("crash", attempts, seen, faults.expectation("crash", w, "mongo0", 30, 60))


def test_judge_on_the_log_majority_loses_nothing(tmp_path: Path) -> None:
    attempts = read_attempts(_synthetic_log(tmp_path))
    assert [a.id for a in attempts] == list(range(1, 11))
    verdict = _judge(attempts, frozenset({1, 2, 3, 4, 5, 8, 9, 10}), "majority")
    assert verdict.passed, verdict.reasons
    assert verdict.lost_writes == 0 and verdict.split_brain == [] and verdict.leader_changed
    assert verdict.rto_s == pytest.approx(14.05 - 9.5) and verdict.failed_attempts == 2
    assert faults.loss_check(faults.expected_loss("crash", "majority"), verdict.lost_ids) == (
        True, "no acknowledged write lost (w: majority)")


def test_judge_on_the_log_shows_the_lost_ids(tmp_path: Path) -> None:
    attempts = read_attempts(_synthetic_log(tmp_path))
    present = frozenset({1, 2, 8, 9, 10})  # 3-5 were acknowledged with w:1 by mongo0 and rolled back
    majority = _judge(attempts, present, "majority")
    assert not majority.passed and majority.lost_ids == [3, 4, 5]
    assert "3 acknowledged write(s) lost (first ids: 3, 4, 5)" in majority.reasons
    shown = _judge(attempts, present, "1")
    assert shown.passed and shown.lost_writes == 3 and shown.lost_ids == [3, 4, 5]
    assert faults.loss_check(faults.expected_loss("crash", "1", pause_s=3), shown.lost_ids) == (
        True, "w: 1 lost 3 acknowledged write(s) (first ids: 3, 4, 5); w: majority keeps them")


def test_an_ack_in_an_older_term_after_a_newer_one_is_split_brain() -> None:
    attempts = [Attempt(1, 0, 1, True, 27017, 1), Attempt(2, 1, 2, True, 27018, 2), Attempt(3, 2, 3, True, 27017, 1)]
    verdict = _judge(attempts, frozenset({1, 2, 3}), "1")
    assert verdict.split_brain == ["port 27017 acknowledged id 3 on timeline 1 after port 27018 had acknowledged id "
                                   "2 on newer timeline 2"]
