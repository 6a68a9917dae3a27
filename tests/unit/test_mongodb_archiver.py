"""The oplog archiver: its pure decisions in tables, DirStore on a temporary directory, and whole runs against
mockupdb playing a member whose oplog the test holds (no mongod runs).

The fake member answers every request from a handler: the window queries (``$natural`` sorts), the tailable
``find`` (entries after the filter's ``$gt``, two per batch) and its ``getMore``s, ``killCursors``. Each test
reads the slices back and checks the ``ts`` values they hold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bson import Timestamp
from mockupdb import MockupDB

from dbtier.engines.mongodb import rs
from dbtier.engines.mongodb.archiver import (
    INDEX, DirStore, OplogArchiver, archive_health, gap_sentence, main, member_of_uri, orphans, read_records,
    read_uri_file, resume_gap,
)
from dbtier.engines.mongodb.config import MongoMember
from dbtier.engines.mongodb.oplog import Gap, SliceRecord, chain_problems, decode_slice, index_json, slice_name
from dbtier.errors import BackupError, SecretError

T = 1795654900  # 2026-11-26 01:01:40 UTC
FAST = rs.ClientTimeouts(server_selection_ms=1500, connect_ms=1000, socket_ms=3000)
ROOT = Path(__file__).resolve().parents[2]


def ts(seconds: int, inc: int = 1) -> Timestamp:
    return Timestamp(T + seconds, inc)


def rec(start: Timestamp, end: Timestamp, after: Timestamp | None) -> SliceRecord:
    return SliceRecord(start, end, slice_name(start, end), 2, after)


class Ticks:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float = 0.25) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# -- pure decisions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resume", "window", "gap"),
    [
        (None, (ts(50), ts(90)), None),  # a fresh archive starts at the oldest entry: nothing was promised
        (ts(60), (ts(50), ts(90)), None),  # the oplog still holds the resume point
        (ts(60), (ts(60), ts(90)), None),  # ... exactly
        (ts(60), (ts(60, 2), ts(90)), Gap(ts(60), ts(60, 2))),  # rolled past by one entry
        (ts(60), (ts(75), ts(90)), Gap(ts(60), ts(75))),
        (ts(60), None, None),  # an empty oplog: nothing to compare
    ],
)
def test_resume_gap(resume: Timestamp | None, window: tuple[Timestamp, Timestamp] | None, gap: Gap | None) -> None:
    assert resume_gap(resume, window) == gap


def test_gap_sentence_names_both_ends() -> None:
    said = gap_sentence(Gap(ts(60), ts(75)))
    assert said.startswith("gap: archived up to 2026-11-26 01:02:40+00:00 (1795654960:1), the oplog now starts at "
                           "2026-11-26 01:02:55+00:00 (1795654975:1)")


CHAIN = [rec(ts(0), ts(60), None), rec(ts(61), ts(120), ts(60))]
GAPPED = [*CHAIN, rec(ts(200), ts(260), None)]  # the archiver found the oplog rolled past 120 and restarted at 200


@pytest.mark.parametrize(
    ("records", "window", "dump_end", "now", "healthy", "words"),
    [
        ([], (ts(0), ts(130)), ts(10), T + 130, False, ["no oplog slice archived yet"]),
        (CHAIN, (ts(0), ts(130)), ts(10), T + 130, True, []),
        (CHAIN, (ts(0), ts(130)), ts(10), T + 500, False, ["the last slice ended 380 s ago (limit 300 s)"]),
        (CHAIN, (ts(150), ts(300)), ts(10), T + 300, False, ["gap: archived up to", "now starts at 2026-11-26 01:04:10"]),
        (GAPPED, (ts(150), ts(270)), ts(10), T + 270, False, ["gap in the oplog archive after", "until 2026-11-26 01:05:00"]),
        (GAPPED, (ts(150), ts(270)), ts(210), T + 270, True, []),  # the newest dump bridges the recorded gap
        ([*CHAIN, rec(ts(100), ts(130), ts(120))], (ts(0), ts(130)), ts(10), T + 130, False, ["overlaps"]),
    ],
)
def test_archive_health(records: list[SliceRecord], window: tuple[Timestamp, Timestamp], dump_end: Timestamp,
                        now: float, healthy: bool, words: list[str]) -> None:
    health = archive_health(records, window, dump_end, now)
    assert health.healthy is healthy, health.problems
    assert all(any(w in p for p in health.problems) for w in words), health.problems
    assert health.sentence.startswith("oplog archive healthy" if healthy else "oplog archive unhealthy: ")


def test_archive_health_fields() -> None:
    live = archive_health(CHAIN, (ts(150), ts(300)), None, T + 130)
    assert live.lag_s == 10 and live.gap == gap_sentence(Gap(ts(120), ts(150))) and live.gaps == []
    assert live.warning == "no dump yet: run the backup flow"
    recorded = archive_health(GAPPED, (ts(150), ts(270)), ts(210), T + 270)
    assert recorded.gap is None and recorded.gaps == [Gap(ts(120), ts(200)).sentence]
    short = archive_health(CHAIN, (ts(100), ts(130)), ts(10), T + 130)
    assert short.healthy and short.warning and short.warning.startswith("the oplog window (30 s) is shorter")


@pytest.mark.parametrize(
    ("uri", "address", "user", "password", "ca"),
    [
        ("mongodb://127.0.0.1:27018/", "127.0.0.1:27018", None, None, None),
        ("mongodb://root:p%40ss%2Fw%3Ard@db1/?authSource=admin", "db1:27017", "root", "p@ss/w:rd", None),
        ("mongodb://root:pw@db1:1/?tls=true&tlsCAFile=/etc/ca.crt", "db1:1", "root", "pw", "/etc/ca.crt"),
    ],
)
def test_member_of_uri(uri: str, address: str, user: str | None, password: str | None, ca: str | None) -> None:
    member, got_user, got_password, got_ca = member_of_uri(uri, "mongo1")
    assert (member.address, member.label, got_user, got_password, got_ca) == (
        address, f"mongo1 ({address})", user, password, ca)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("mongodb://root:hunter2@a:1,b:2/?replicaSet=rs0", "give one member"),
        ("postgres://root:hunter2@a:1/", "give one member"),
        ("mongodb://root:hunter2@a:1/?tls=true", "tls=true needs tlsCAFile"),
        ("mongodb://root:hunter2@a:x/", "the port is not a number"),
    ],
)
def test_bad_uris_are_refused_without_the_password(uri: str, words: str) -> None:
    with pytest.raises(SecretError, match=words) as info:
        member_of_uri(uri, "mongo0")
    assert "hunter2" not in str(info.value)


def test_uri_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "uri"
    path.write_text("mongodb://root:pw@h:1/\n")
    path.chmod(0o644)
    with pytest.raises(SecretError, match="mode 644 lets others read it; chmod 600 it"):
        read_uri_file(str(path))
    path.chmod(0o600)
    assert read_uri_file(str(path)) == "mongodb://root:pw@h:1/"
    with pytest.raises(SecretError, match="cannot read it"):
        read_uri_file(str(tmp_path / "missing"))


# -- DirStore ------------------------------------------------------------------------------------------------


def test_dir_store_writes_atomically_and_lists_no_temporaries(tmp_path: Path) -> None:
    store = DirStore(str(tmp_path / "oplog" / "orders"))
    assert store.names() == [] and store.read_index() is None and read_records(store) == []
    name = slice_name(ts(0), ts(60))
    store.write_slice(name, b"first")
    store.write_slice(name, b"second")  # the same slice written again replaces it whole
    store.write_index(index_json([rec(ts(0), ts(60), None)]))
    (tmp_path / "oplog" / "orders" / f".{name}.tmp").write_bytes(b"a crash mid-write")
    assert store.names() == [INDEX, name]
    assert store.read_slice(name) == b"second" and read_records(store) == [rec(ts(0), ts(60), None)]
    with pytest.raises(BackupError, match="is not a slice name"):
        store.write_slice("../escape", b"")


def test_dir_store_errors_are_backup_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = DirStore(str(tmp_path / "file"))
    with pytest.raises(BackupError, match=r"oplog archive .*file: cannot write index.json"):
        store.write_index("{}")
    with pytest.raises(BackupError, match="cannot read"):
        DirStore(str(tmp_path)).read_slice(slice_name(ts(0), ts(1)))


def test_orphans_are_the_names_the_index_lacks() -> None:
    names = [INDEX, CHAIN[0].name, CHAIN[1].name, slice_name(ts(121), ts(130)), "notes.txt"]
    assert orphans(names, CHAIN) == [slice_name(ts(121), ts(130))]


# -- runs against a fake member ------------------------------------------------------------------------------


def entry(t: Timestamp) -> dict[str, Any]:
    return {"ts": t, "t": 1, "op": "i", "ns": "orders.items", "o": {"_id": t.time * 10 + t.inc}}


class FakeMember:
    """A member's oplog served by mockupdb: window queries, a tailable find and its getMores (``batch`` per reply)."""

    def __init__(self, server: MockupDB, entries: list[Timestamp], batch: int = 2) -> None:
        self.entries, self.batch, self.lock = list(entries), batch, threading.Lock()
        self.tails: list[dict[str, Any]] = []  # the tailable finds as sent
        self.fail: dict[str, tuple[int, str]] = {}  # "tail" or "window" -> (code, codeName)
        self._last: dict[int, Timestamp | None] = {}
        server.autoresponds(self.handle)

    def append(self, *more: Timestamp) -> None:
        with self.lock:
            self.entries.extend(more)

    def roll(self, oldest: Timestamp) -> None:
        """The capped collection drops its oldest entries."""
        with self.lock:
            self.entries = [t for t in self.entries if t >= oldest]

    def _after(self, last: Timestamp | None) -> list[dict[str, Any]]:
        return [entry(t) for t in self.entries if last is None or t > last][: self.batch]

    def _err(self, request: Any, kind: str) -> bool:
        code, name = self.fail[kind]
        return bool(request.command_err(code=code, errmsg=f"refused: {name}", codeName=name))

    def handle(self, request: Any) -> bool | None:
        name = request.command_name
        with self.lock:
            if name == "find" and "sort" in request.doc:
                if "window" in self.fail:
                    return self._err(request, "window")
                ordered = self.entries if request.doc["sort"]["$natural"] == 1 else self.entries[::-1]
                return bool(request.ok(cursor={"id": 0, "ns": "local.oplog.rs",
                                               "firstBatch": [{"ts": t} for t in ordered[:1]]}))
            if name == "find":
                if "tail" in self.fail:
                    return self._err(request, "tail")
                self.tails.append({k: v for k, v in request.doc.items() if not k.startswith("$") and k != "lsid"})
                after = request.doc["filter"].get("ts", {}).get("$gt")
                cursor_id = 40 + len(self.tails)
                first = self._after(after)
                self._last[cursor_id] = first[-1]["ts"] if first else after
                return bool(request.ok(cursor={"id": cursor_id, "ns": "local.oplog.rs", "firstBatch": first}))
            if name == "getMore":
                cursor_id = request.doc["getMore"]
                more = self._after(self._last[cursor_id])
                self._last[cursor_id] = more[-1]["ts"] if more else self._last[cursor_id]
                return bool(request.ok(cursor={"id": cursor_id, "ns": "local.oplog.rs", "nextBatch": more}))
            if name in ("killCursors", "endSessions"):
                return bool(request.ok())
        return None


def _member(server: MockupDB) -> MongoMember:
    return MongoMember("mongo0", server.host, server.port, 2, "/d/mongo0")


def _archiver(server: MockupDB, store: DirStore, max_entries: int = 3, **auth: str) -> OplogArchiver:
    client = rs.member_client(server.host, server.port, timeouts=FAST, **auth)
    return OplogArchiver(client, _member(server), store, slice_s=60, max_entries=max_entries, poll_s=1.0,
                         await_ms=50, clock=Ticks(), sleep=lambda _: None)


def _steps(archiver: OplogArchiver, n: int) -> list[str]:
    return [said for said in (archiver.step() for _ in range(n)) if said]


def _archived(store: DirStore) -> list[Timestamp]:
    """Every ts the indexed slices hold, slice by slice (each file read back and decompressed)."""
    return [e["ts"] for r in read_records(store) for e in decode_slice(store.read_slice(r.name))]


def test_a_fresh_archive_tails_everything_in_slices(member_server: MockupDB, tmp_path: Path) -> None:
    oplog = FakeMember(member_server, [ts(0), ts(1), ts(1, 2), ts(2), ts(3)])
    store = DirStore(str(tmp_path))
    archiver = _archiver(member_server, store)
    assert archiver.start() == f"mongo0 (localhost:{member_server.port}): empty archive: tailing from the oldest entry"
    said = _steps(archiver, 3)
    assert oplog.tails == [{"find": "oplog.rs", "filter": {}, "tailable": True, "awaitData": True}]  # one query
    assert said == [f"slice {slice_name(ts(0), ts(1, 2))}: 3 entries"]  # max_entries closes it
    assert archiver.flush() == f"slice {slice_name(ts(2), ts(3))}: 2 entries"
    records = read_records(store)
    assert [(r.start, r.end, r.count, r.after) for r in records] == [(ts(0), ts(1, 2), 3, None), (ts(2), ts(3), 2, ts(1, 2))]
    assert _archived(store) == [ts(0), ts(1), ts(1, 2), ts(2), ts(3)]
    assert chain_problems(records) == ([], [])


def test_a_slice_closes_after_slice_s(member_server: MockupDB, tmp_path: Path) -> None:
    FakeMember(member_server, [ts(0)])
    archiver = _archiver(member_server, DirStore(str(tmp_path)), max_entries=1000)
    archiver.slice_s = 2.0  # the clock moves 0.25 s a read: one entry, then empty waits until the slice is 2 s old
    archiver.start()
    said = _steps(archiver, 4)
    assert said == [f"slice {slice_name(ts(0), ts(0))}: 1 entries"]
    assert archiver.clock() - archiver._opened >= 2.0


def test_a_restart_resumes_after_the_last_archived_end(member_server: MockupDB, tmp_path: Path) -> None:
    oplog = FakeMember(member_server, [ts(0), ts(1), ts(2), ts(3), ts(4)])
    store = DirStore(str(tmp_path))
    first = _archiver(member_server, store, max_entries=2)
    first.start()
    assert len(_steps(first, 4)) == 2  # then the process dies holding ts(4), unwritten
    assert [r.end for r in read_records(store)] == [ts(1), ts(3)]
    oplog.append(ts(5), ts(6, 1), ts(6, 2))
    second = _archiver(member_server, store, max_entries=2)
    assert second.start().endswith("resuming after 2026-11-26 01:01:43+00:00 (1795654903:1) (2 slices archived)")
    _steps(second, 4)
    assert oplog.tails[1:] == [{"find": "oplog.rs", "filter": {"ts": {"$gt": ts(3)}}, "tailable": True, "awaitData": True}]
    second.flush()
    records = read_records(store)
    assert chain_problems(records) == ([], [])
    assert [r.after for r in records] == [None, ts(1), ts(3), ts(5)]
    assert _archived(store) == [ts(0), ts(1), ts(2), ts(3), ts(4), ts(5), ts(6, 1), ts(6, 2)]  # once each, in order


def test_an_orphan_slice_is_ignored_and_rewritten(member_server: MockupDB, tmp_path: Path) -> None:
    FakeMember(member_server, [ts(0), ts(1), ts(2), ts(3)])
    store = DirStore(str(tmp_path))
    store.write_slice(slice_name(ts(0), ts(1)), b"crashed before the index named it")
    store.write_slice(slice_name(ts(0), ts(3)), b"another one, never named")
    archiver = _archiver(member_server, store, max_entries=2)
    assert archiver.start().endswith("tailing from the oldest entry; ignoring 2 orphan slice(s) the index does not name")
    _steps(archiver, 3)
    assert [r.name for r in read_records(store)] == [slice_name(ts(0), ts(1)), slice_name(ts(2), ts(3))]
    assert _archived(store) == [ts(0), ts(1), ts(2), ts(3)]  # the orphan's bytes were replaced whole
    assert orphans(store.names(), read_records(store)) == [slice_name(ts(0), ts(3))]


def test_a_rolled_past_oplog_is_a_recorded_gap(member_server: MockupDB, tmp_path: Path) -> None:
    oplog = FakeMember(member_server, [ts(0), ts(1), ts(2), ts(3)])
    store = DirStore(str(tmp_path))
    first = _archiver(member_server, store, max_entries=2)
    first.start()
    _steps(first, 2)
    oplog.append(ts(50), ts(51), ts(52))
    oplog.roll(ts(50))  # the archiver was down while the oplog rolled past ts(1)
    second = _archiver(member_server, store, max_entries=2)
    said = second.start()
    assert gap_sentence(Gap(ts(3), ts(50))) in said and said.endswith("tailing from the oldest entry")
    assert archive_health(read_records(store), (ts(50), ts(52)), None, T + 52).gap == gap_sentence(Gap(ts(3), ts(50)))
    assert _steps(second, 1) == [f"slice {slice_name(ts(50), ts(51))}: 2 entries (after a gap)"]
    assert oplog.tails[-1]["filter"] == {"ts": {"$gt": ts(3)}}
    records = read_records(store)
    assert [(r.start, r.after) for r in records] == [(ts(0), None), (ts(2), ts(1)), (ts(50), None)]
    assert chain_problems(records) == ([Gap(ts(3), ts(50))], [])  # recorded in the index, not only said
    health = archive_health(records, (ts(50), ts(52)), None, T + 52)
    assert not health.healthy and health.gap is None and health.gaps == [Gap(ts(3), ts(50)).sentence]
    assert _archived(store) == [ts(0), ts(1), ts(2), ts(3), ts(50), ts(51)]


def test_a_roll_between_the_window_check_and_the_query_is_caught(member_server: MockupDB, tmp_path: Path) -> None:
    oplog = FakeMember(member_server, [ts(0), ts(1), ts(2)])
    store = DirStore(str(tmp_path))
    store.write_index(index_json([rec(ts(0), ts(1), None)]))
    archiver = _archiver(member_server, store, max_entries=2)
    assert "resuming after" in archiver.start()  # the oplog still held ts(1) when start() looked
    oplog.roll(ts(2))  # ... and dropped it before the first entries were read (the check after them sees it)
    said = _steps(archiver, 1)
    assert said == [gap_sentence(Gap(ts(1), ts(2)))]
    archiver.flush()
    assert chain_problems(read_records(store)) == ([Gap(ts(1), ts(2))], [])


def test_not_writable_primary_on_the_window_names_the_member(member_server: MockupDB, tmp_path: Path) -> None:
    oplog = FakeMember(member_server, [ts(0)])
    oplog.fail["window"] = (10107, "NotWritablePrimary")
    with pytest.raises(rs.MongoCommandError) as info:
        _archiver(member_server, DirStore(str(tmp_path))).start()
    assert info.value.one_line().startswith(f"mongo0 (localhost:{member_server.port}): reading the oplog's bounds: "
                                            "refused with NotWritablePrimary (10107)")
    assert info.value.transient and not os.listdir(tmp_path)


def _refused_tail(server: MockupDB, tmp_path: Path) -> rs.MongoCommandError:
    oplog = FakeMember(server, [ts(0)])
    oplog.fail["tail"] = (10107, "NotWritablePrimary")
    archiver = _archiver(server, DirStore(str(tmp_path)))
    archiver.start()
    with pytest.raises(rs.MongoCommandError) as info:
        archiver.step()
    return info.value


def test_not_writable_primary_while_tailing_is_one_line_naming_the_member(member_server: MockupDB,
                                                                          tmp_path: Path) -> None:
    err = _refused_tail(member_server, tmp_path)
    assert err.one_line().startswith(f"mongo0 (localhost:{member_server.port}): tailing the oplog: ")
    assert "\n" not in str(err) and not os.listdir(tmp_path)


def test_not_writable_primary_while_tailing_keeps_its_code(member_server: MockupDB, tmp_path: Path) -> None:
    err = _refused_tail(member_server, tmp_path)
    assert err.code == 10107 and err.transient and "refused with NotWritablePrimary (10107)" in str(err)


def _uri_file(tmp_path: Path, uri: str) -> str:
    path = tmp_path / "archiver.uri"
    path.write_text(uri + "\n")
    path.chmod(0o600)
    return str(path)


def test_main_says_an_auth_failure_in_one_line(member_server: MockupDB, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(request: Any) -> bool:
        return bool(request.command_err(code=18, errmsg="Authentication failed.", codeName="AuthenticationFailed"))

    member_server.autoresponds("saslStart", refuse)
    uri = _uri_file(tmp_path, f"mongodb://root:s3cret-pw@{member_server.host}:{member_server.port}/")
    assert main(["--uri-file", uri, "--repo-path", str(tmp_path), "--cluster", "orders", "--member", "mongo2"]) == 1
    out, err = capsys.readouterr()
    assert err == (f"dbtier-archiver: error: mongo2 (localhost:{member_server.port}): reading the oplog's bounds: "
                   "authentication failed (AuthenticationFailed): the password dbtier holds does not match the "
                   "member's user; check the cluster's password blocks\n")
    assert "s3cret-pw" not in out + err


def test_main_runs_until_sigterm_and_writes_what_it_holds(member_server: MockupDB, tmp_path: Path) -> None:
    FakeMember(member_server, [ts(0), ts(1), ts(2)], batch=5)
    uri = _uri_file(tmp_path, f"mongodb://{member_server.host}:{member_server.port}/")
    archive = tmp_path / "oplog" / "orders" / "mongo1"
    proc = subprocess.Popen([sys.executable, "-m", "dbtier.engines.mongodb.archiver", "--uri-file", uri, "--repo-path",
                             str(tmp_path), "--cluster", "orders", "--slice-s", "30", "--member", "mongo1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        assert first == f"mongo1 (localhost:{member_server.port}): empty archive: tailing from the oldest entry\n"
        time.sleep(0.5)  # it holds the three entries: the 30 s slice is still open
        assert not (archive / INDEX).exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert (proc.returncode, err) == (0, "")
    assert out.splitlines() == [f"slice {slice_name(ts(0), ts(2))}: 3 entries",
                                f"mongo1 (localhost:{member_server.port}): stopped after 1 slices archived"]
    assert _archived(DirStore(str(archive))) == [ts(0), ts(1), ts(2)]
