"""MongoDB's point-in-time restore into a new replica set: the archive choice and the restore argv in tables; the
runbook against a host whose files are real (tmp_path) holding a dump written by backup.py and slices written by
the archiver's DirStore; the engine seam; and derive_target moving each engine's ports."""

from __future__ import annotations

import gzip
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Timestamp
from bson.raw_bson import RawBSONDocument

from dbtier.backup.repos import BackupSecrets
from dbtier.backup.restore import derive_target
from dbtier.engines.mongodb import backup, dump
from dbtier.engines.mongodb.archiver import DirStore
from dbtier.engines.mongodb.archiving import archive_location
from dbtier.engines.mongodb.engine import MongoEngine, members, mongo_settings
from dbtier.engines.mongodb.oplog import SliceRecord, encode_slice, index_json, slice_name
from dbtier.engines.mongodb.restore import choose_archive, restore_to_target
from dbtier.engines.postgres.engine import PostgresEngine
from dbtier.errors import CommandFailed, RestoreError
from dbtier.providers.base import Completed
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from tests import file_hosts

ROOT_PASSWORD = "n3w-r00t/p@ss:word"
NO_USERS = ["--nsExclude=admin.system.users", "--nsExclude=admin.system.roles", "--nsExclude=admin.system.version"]
PASSWORDS = Passwords(superuser=ROOT_PASSWORD, app="app-pw", keyfile="k3yfile")
T0 = 1764118923
AT = datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone.utc)
LABEL = "20261126-010203F"


def ts(seconds: int, inc: int = 1) -> Timestamp:
    return Timestamp(T0 + seconds, inc)


def rec(start: int, end: int, after: int | None) -> SliceRecord:
    return SliceRecord(ts(start), ts(end), slice_name(ts(start), ts(end)), 1, ts(after) if after is not None else None)


# -- pure: which member's archive ------------------------------------------------------------------


@pytest.mark.parametrize(("archives", "chosen"), [
    ({"mongo0": [], "mongo1": []}, None),
    ({"mongo0": [rec(0, 10, None)], "mongo1": []}, "mongo0"),
    # the longest clean one
    ({"mongo0": [rec(0, 10, None)], "mongo1": [rec(0, 10, None), rec(11, 30, 10)]}, "mongo1"),
    # a longer archive with a gap loses to a clean one
    ({"mongo0": [rec(5, 20, None)], "mongo1": [rec(0, 10, None), rec(15, 90, None)]}, "mongo0"),
    # an overlap is a problem too
    ({"mongo0": [rec(5, 20, None)], "mongo1": [rec(0, 10, None), rec(10, 90, 10)]}, "mongo0"),
    # every archive has a problem: the longest (the plan refuses a target the gap spoils)
    ({"mongo0": [rec(0, 10, None), rec(15, 20, None)], "mongo1": [rec(0, 10, None), rec(15, 90, None)]}, "mongo1"),
    # equal length: the newest end, then the first name
    ({"mongo0": [rec(0, 10, None)], "mongo1": [rec(5, 15, None)]}, "mongo1"),
    ({"mongo1": [rec(0, 10, None)], "mongo0": [rec(0, 10, None)]}, "mongo0"),
])
def test_the_archive_restored_from_is_a_clean_one_and_the_longest(archives: dict[str, list[SliceRecord]],
                                                                  chosen: str | None) -> None:
    assert choose_archive(archives) == chosen


@pytest.mark.parametrize(("own_oplog", "limit", "tail"), [
    (True, None, ["--gzip", "--archive=/w/dump.archive.gz", "--drop", *NO_USERS, "--oplogReplay"]),
    (False, None, ["--gzip", "--archive=/w/dump.archive.gz", "--drop", *NO_USERS]),
    (None, Timestamp(T0 + 41, 0), ["--oplogReplay", f"--oplogLimit={T0 + 41}:0", "--dir=/w/oplog"]),
    (None, None, ["--oplogReplay", "--dir=/w/oplog"]),
])
@pytest.mark.parametrize("tls", [False, True])
def test_the_restore_argv_names_root_and_its_config_file_never_the_password(
        own_oplog: bool | None, limit: Timestamp | None, tail: list[str], tls: bool, tmp_path: Path) -> None:
    spec = target_of(source_spec(tmp_path, tls={"enabled": tls}))
    primary = members(spec)[0]
    uri = dump.tool_uri(members(spec), mongo_settings(spec), "root", primary.tls_ca if tls else None)
    argv = (dump.restore_dump_argv("/usr/bin/mongorestore", uri, "/w/tool.yaml", "/w/dump.archive.gz",
                                   replay_own_oplog=own_oplog) if own_oplog is not None else
            dump.replay_argv("/usr/bin/mongorestore", uri, "/w/tool.yaml", "/w/oplog", limit))
    text = " ".join(argv)
    assert ROOT_PASSWORD not in text and "p%40ss" not in text
    assert argv[:3] == ["/usr/bin/mongorestore", f"--uri={uri}", "--config=/w/tool.yaml"] and argv[3:] == tail
    assert uri.startswith("mongodb://root@127.0.0.1:27117,127.0.0.1:27118,127.0.0.1:27119/?replicaSet=rs0")
    assert ("tlsCAFile" in text) is tls


# -- a fake host whose files are real --------------------------------------------------------------


class FileRunner(file_hosts.FileRunner):
    """Runs nothing: mongodump writes a small gzip; mongorestore records its argv, the tool config it found (and
    its mode), and the replay file it would read."""

    def __init__(self, host: str, fail: str | None = None) -> None:
        super().__init__(host, fail)
        self.configs: list[tuple[bytes, int]] = []
        self.replayed: list[bytes] = []

    def answer(self, argv: list[str]) -> Completed:
        option = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv[1:] if "=" in a}
        if argv[0].endswith("mongodump"):
            Path(option["--archive"]).write_bytes(gzip.compress(b"dump of the set"))
            return Completed(argv, 0, "", "")
        if argv[0] == "stat":
            return Completed(argv, 0, str(os.path.getsize(argv[-1])), "")
        if argv[0].endswith("mongorestore"):
            self.configs.append((Path(option["--config"]).read_bytes(), self.modes[option["--config"]]))
            if "--dir" in option:
                self.replayed.append(Path(option["--dir"], "oplog.bson").read_bytes())
            else:
                assert gzip.decompress(Path(option["--archive"]).read_bytes()) == b"dump of the set"
            if self.fail:
                raise CommandFailed(argv, 1, "", f"2026-11-26T01:02:03 preparing\n{self.fail}\n")
            return Completed(argv, 0, "", "")
        return super().answer(argv)


class FileProvider(file_hosts.FileProvider):
    runner_class = FileRunner


def source_spec(tmp_path: Path, **extra: Any) -> ClusterSpec:
    extra.setdefault("tls", {"enabled": False})
    return ClusterSpec(engine="mongodb", name="orders", data_root=str(tmp_path), members=3,
                       backup={"repositories": [{"type": "fs"}]}, **extra)


def target_of(source: ClusterSpec) -> ClusterSpec:
    return derive_target(source, "orders-restored", 100)


def entry(seconds: int, inc: int) -> RawBSONDocument:
    doc = {"ts": ts(seconds, inc), "op": "i", "ns": "app.orders", "o": {"_id": seconds * 10 + inc}}
    return RawBSONDocument(bson.encode(doc))


def write_archive(source: ClusterSpec, member: str, spans: list[tuple[int, int, bool]]) -> list[SliceRecord]:
    """Slices of two entries a second (inc 1 and 2) from ``start`` to ``end`` seconds, chained or not."""
    from dbtier.backup.repos import fs_repo_path
    from dbtier.backup.settings import FsRepository

    repo = source.backup.repositories[0]
    assert isinstance(repo, FsRepository)
    store = DirStore(archive_location(fs_repo_path(source, repo), False, source.name, member))
    records: list[SliceRecord] = []
    for start, end, chained in spans:
        entries = [entry(s, i) for s in range(start, end + 1) for i in (1, 2)]
        first, last = entries[0]["ts"], entries[-1]["ts"]
        after = records[-1].end if chained and records else None
        records.append(SliceRecord(first, last, slice_name(first, last), len(entries), after))
        store.write_slice(records[-1].name, encode_slice(entries))
    store.write_index(index_json(records))
    return records


@pytest.fixture
def source_with_dump_and_archives(tmp_path: Path) -> tuple[ClusterSpec, FileProvider]:
    """Source ``orders``: one dump (oplog T0+10 .. T0+20) written by backup.take; mongo0's archive has a gap,
    mongo1's chains T0+0 .. T0+90 in three slices, mongo2's is empty."""
    source, provider = source_spec(tmp_path), FileProvider()
    clock = iter([ts(10), ts(20)])
    backup.take(provider, source, 1, BackupSecrets(), "source-root-pw", members(source)[0], lambda: next(clock),
                now=AT)
    write_archive(source, "mongo0", [(0, 30, False), (40, 90, False)])
    write_archive(source, "mongo1", [(0, 30, False), (31, 60, True), (61, 90, True)])
    provider.runners.clear()
    return source, provider


def run_restore(source: ClusterSpec, provider: FileProvider, target: str) -> tuple[list[str], FileRunner]:
    spec = target_of(source)
    said = restore_to_target(provider, spec, source, target, BackupSecrets(), PASSWORDS, primary=members(spec)[0])
    runner = provider.runner(spec, "127.0.0.1")
    assert isinstance(runner, FileRunner)
    return said, runner


def restore_argv(spec: ClusterSpec) -> tuple[str, str, str]:
    work = f"{spec.cluster_dir}/restore-{LABEL}"
    return (f"--uri={dump.tool_uri(members(spec), mongo_settings(spec), 'root')}", f"--config={work}/tool.yaml", work)


def replayed_ts(data: bytes) -> list[Timestamp]:
    return [doc["ts"] for doc in bson.decode_all(data)]


# -- the runbook -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "limit", "last", "slices"), [
    (f"ts:{T0 + 40}:1", f"{T0 + 40}:2", ts(40, 1), 2),  # that entry is in, the next one is not
    (datetime.fromtimestamp(T0 + 40, timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00"), f"{T0 + 41}:0", ts(40, 2), 2),
    (f"ts:{T0 + 61}:2", f"{T0 + 61}:3", ts(61, 2), 3),
    ("latest", None, ts(90, 2), 3),
])
def test_a_target_restores_the_dump_then_replays_the_slices_up_to_it(
        source_with_dump_and_archives: tuple[ClusterSpec, FileProvider], target: str, limit: str | None,
        last: Timestamp, slices: int) -> None:
    source, provider = source_with_dump_and_archives
    said, runner = run_restore(source, provider, target)
    uri, config, work = restore_argv(target_of(source))
    archive = f"{source.data_root}/backups/mongodump/orders/{LABEL}/dump.archive.gz"
    replay = ["/usr/bin/mongorestore", uri, config, "--oplogReplay"] + ([f"--oplogLimit={limit}"] if limit else [])
    assert runner.commands == [
        ["/usr/bin/mongorestore", uri, config, "--gzip", f"--archive={archive}", "--drop", *NO_USERS],
        [*replay, f"--dir={work}/oplog"],
    ]
    # every entry after the dump's start, up to and including the target, in order
    assert replayed_ts(runner.replayed[0]) == [ts(s, i) for s in range(10, 91) for i in (1, 2)
                                              if ts(10, 1) < ts(s, i) <= last]
    assert runner.configs == [(f'password: "{ROOT_PASSWORD}"\n'.encode(), 0o600)] * 2
    assert all(ROOT_PASSWORD not in " ".join(argv) for argv in runner.commands)
    assert not os.path.exists(work)
    assert f"{slices} oplog slice(s) of mongo1's archive replayed to {target}" in said[1]
    assert said[-1].endswith("temporary files removed")


def test_a_dump_target_restores_the_dump_alone_with_its_own_oplog(
        source_with_dump_and_archives: tuple[ClusterSpec, FileProvider]) -> None:
    source, provider = source_with_dump_and_archives
    said, runner = run_restore(source, provider, f"dump:{LABEL}")
    uri, config, work = restore_argv(target_of(source))
    archive = f"{source.data_root}/backups/mongodump/orders/{LABEL}/dump.archive.gz"
    assert runner.commands == [["/usr/bin/mongorestore", uri, config, "--gzip", f"--archive={archive}", "--drop",
                                *NO_USERS, "--oplogReplay"]]
    assert runner.replayed == [] and not os.path.exists(work)
    assert "0 oplog slices replayed" in said[1]


@pytest.mark.parametrize(("target", "why"), [
    (f"ts:{T0 + 15}:1", "is before the oldest dump ends"),
    (f"ts:{T0 + 200}:0", "is after the newest archived slice"),
    ("dump:20200101-000000F", "no dump labelled"),
    ("yesterday", "is not latest, a time"),
])
def test_a_target_outside_the_window_is_refused_in_one_line_naming_target(
        source_with_dump_and_archives: tuple[ClusterSpec, FileProvider], target: str, why: str) -> None:
    source, provider = source_with_dump_and_archives
    with pytest.raises(RestoreError) as caught:
        run_restore(source, provider, target)
    message = str(caught.value)
    assert message.startswith("target: ") and why in message and "\n" not in message
    assert f"restorable from {datetime.fromtimestamp(T0 + 20, timezone.utc).isoformat(sep=' ')}" in message
    assert all(not r.commands for r in provider.runners.values())


def test_a_failed_mongorestore_is_one_line_naming_the_member_and_leaves_no_file(
        source_with_dump_and_archives: tuple[ClusterSpec, FileProvider]) -> None:
    source, _ = source_with_dump_and_archives
    provider = FileProvider(fail="Failed: restore error: app.orders: E11000 duplicate key")
    with pytest.raises(RestoreError, match=r"^mongo0 \(127\.0\.0\.1:27117\): mongorestore exited 1: Failed: restore "
                                           r"error: app\.orders: E11000 duplicate key; ") as caught:
        run_restore(source, provider, "latest")
    assert "\n" not in str(caught.value) and ROOT_PASSWORD not in str(caught.value)
    assert not os.path.exists(restore_argv(target_of(source))[2])


# -- the seam and the target's spec ----------------------------------------------------------------


def test_only_mongodb_restores_after_bring_up(tmp_path: Path) -> None:
    assert PostgresEngine.restores_after_bring_up is False and MongoEngine.restores_after_bring_up is True
    assert PostgresEngine().restore_after_bring_up(FileProvider(), ClusterSpec(), ClusterSpec(), "latest",
                                                   BackupSecrets(), PASSWORDS) == []


@pytest.mark.parametrize(("engine", "field", "before", "after"), [
    ("postgres", "postgres.ports.postgres", 5432, 5532),
    ("postgres", "postgres.ports.etcd", 2379, 2479),
    ("postgres", "postgres.ports.pgbouncer", 6432, 6532),
    ("postgres", "mongodb", None, None),  # not postgres's: no section in the copy either
    ("mongodb", "mongodb.port", 27017, 27117),
    ("mongodb", "postgres", None, None),
])
def test_derive_target_moves_the_engines_ports_by_the_offset(engine: str, field: str, before: int | None,
                                                             after: int | None) -> None:
    source = ClusterSpec(engine=engine, name="orders")  # type: ignore[arg-type]
    target = derive_target(source, "orders-restored", 100)

    def read(spec: ClusterSpec) -> Any:
        value: Any = spec
        for part in field.split("."):
            value = getattr(value, part)
        return value

    assert (read(source), read(target)) == (before, after)


def test_bring_up_of_a_restore_configures_the_new_sets_own_archivers_and_waits_for_nothing(tmp_path: Path) -> None:
    source = source_spec(tmp_path)
    spec, provider, engine = target_of(source), FileProvider(), MongoEngine()
    said = engine.configure_archiving(provider, spec, BackupSecrets(), PASSWORDS, source=source,
                                      source_secrets=BackupSecrets())
    assert [s.split(":")[0] for s in said] == ["127.0.0.1", "mongo0", "mongo1", "mongo2"]
    assert said[0].startswith(f"127.0.0.1: dbtier's code shipped to {spec.cluster_dir}/runtime (")
    assert os.path.isfile(f"{spec.cluster_dir}/runtime/dbtier/engines/mongodb/archiver.py"), "the archiver's code"
    assert os.listdir(f"{spec.cluster_dir}/runtime") == ["dbtier"], "the tarball is removed once unpacked"
    assert os.path.isfile(f"{spec.cluster_dir}/mongo0/oplog-archiver/member.uri")
    assert os.path.isdir(f"{tmp_path}/backups/oplog/orders-restored/mongo2/")
    assert "starts empty" in engine.wait_for_restore(provider, spec, 1.0)


# -- the restore flow's checks, the source's flush, and dropping an archive -------------------------


@pytest.mark.parametrize(("target", "described", "served"), [
    ("latest", "latest (the newest archived oplog entry)",
     f"dump {LABEL} + 3 oplog slice(s) replayed to the end, from repo1 and mongo1's oplog archive"),
    (f"ts:{T0 + 40}:1", f"oplog timestamp {T0 + 40}:1 (that entry included)",
     f"dump {LABEL} + 2 oplog slice(s) replayed before {datetime.fromtimestamp(T0 + 40, timezone.utc)}"),
    (f"dump:{LABEL}", f"dump {LABEL} alone", f"dump {LABEL} alone, consistent at its end, from repo1"),
])
def test_the_flow_checks_a_target_by_the_plan_it_would_follow(
        source_with_dump_and_archives: tuple[ClusterSpec, FileProvider], target: str, described: str,
        served: str) -> None:
    source, provider = source_with_dump_and_archives
    got = MongoEngine().check_restore_target(provider, target_of(source), source, target, BackupSecrets(), None)
    assert got[0] == described and got[1].startswith(served), got
    assert all(not r.commands and not r.modes for r in provider.runners.values()), "a check runs and writes nothing"


@pytest.mark.parametrize(("target", "repo", "message"), [
    ("yesterday", None, "target: 'yesterday' is not latest, a time (2026-11-26 01:02:03+00), ts:T:I or dump:LABEL"),
    (f"ts:{T0 + 15}:1", None, f"target: ts:{T0 + 15}:1 is before the oldest dump ends ({LABEL}"),
    (f"ts:{T0 + 35}:1", None, None),  # in mongo0's gap, but mongo1's archive is whole: served
    ("latest", 1, "repo: a MongoDB restore reads the dumps of every repository and the oplog archive of repository "
                  "1; drop --repo"),
])
def test_a_bad_target_is_one_line_before_anything_is_written(
        source_with_dump_and_archives: tuple[ClusterSpec, FileProvider], target: str, repo: int | None,
        message: str | None) -> None:
    source, provider = source_with_dump_and_archives
    check = MongoEngine().check_restore_target
    if message is None:
        assert "from repo1" in check(provider, target_of(source), source, target, BackupSecrets(), repo)[1]
        return
    with pytest.raises(RestoreError) as caught:
        check(provider, target_of(source), source, target, BackupSecrets(), repo)
    assert caught.value.one_line().startswith(message) and "\n" not in str(caught.value)
    assert all(not r.commands and not r.modes for r in provider.runners.values())


def test_a_gap_in_every_archive_refuses_a_target_after_it(tmp_path: Path) -> None:
    source, provider = source_spec(tmp_path), FileProvider()
    clock = iter([ts(10), ts(20)])
    backup.take(provider, source, 1, BackupSecrets(), "pw", members(source)[0], lambda: next(clock), now=AT)
    for member in ("mongo0", "mongo1", "mongo2"):
        write_archive(source, member, [(0, 30, False), (40, 90, False)])
    with pytest.raises(RestoreError, match=r"^target: ts:\d+:1 falls in or after a gap of the oplog archive"):
        MongoEngine().check_restore_target(provider, target_of(source), source, f"ts:{T0 + 50}:1",
                                           BackupSecrets(), None)


def test_the_flush_waits_for_an_archive_to_reach_the_primarys_newest_entry(
        source_with_dump_and_archives: tuple[ClusterSpec, FileProvider]) -> None:
    from dbtier.engines.mongodb.restore import wait_archived
    from dbtier.errors import BackupError

    source, provider = source_with_dump_and_archives
    now = [0.0]
    said = wait_archived(provider, source, BackupSecrets(), ts(90, 2), 5.0, clock=lambda: now[0],
                         sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert said.startswith("oplog of orders archived up to ") and "'s archive)" in said and now[0] == 0.0
    waited = []
    with pytest.raises(BackupError) as late:
        wait_archived(provider, source, BackupSecrets(), ts(95, 1), 3.0, clock=lambda: now[0],
                      sleep=lambda s: (waited.append(s), now.__setitem__(0, now[0] + s)))
    assert waited == [1.0, 1.0, 1.0], "it polls once a second until the deadline"
    assert "not the primary's newest entry" in late.value.one_line() and "python -m flows.archive_health" in (
        late.value.one_line())


def test_dropping_the_archive_removes_this_clusters_dumps_and_oplog_only(
        source_with_dump_and_archives: tuple[ClusterSpec, FileProvider]) -> None:
    source, provider = source_with_dump_and_archives
    other = ClusterSpec(engine="mongodb", name="billing", data_root=source.data_root, members=1,
                        backup={"repositories": [{"type": "fs"}]})
    write_archive(other, "mongo0", [(0, 5, False)])
    engine = MongoEngine()
    assert engine.archived_clusters(provider, source, BackupSecrets()) == ["billing", "orders"]  # teardown reads it
    assert engine.last_archived_time(provider, source, BackupSecrets(), PASSWORDS) == \
        datetime.fromtimestamp(T0 + 90, tz=timezone.utc)  # the newest slice's end, of mongo0 and mongo1
    said = engine.drop_archive(provider, source, BackupSecrets())
    assert said == "dumps and oplog archive of orders deleted from repo1: its backups are gone"
    root = f"{source.data_root}/backups"
    assert not os.path.exists(f"{root}/mongodump/orders") and not os.path.exists(f"{root}/oplog/orders")
    assert os.listdir(f"{root}/oplog/billing/mongo0"), "another cluster's archive stays"
    assert engine.archived_clusters(provider, source, BackupSecrets()) == ["billing"]
    assert engine.last_archived_time(provider, source, BackupSecrets(), PASSWORDS) is None
    with pytest.raises(RestoreError, match="no dump to restore from"):
        MongoEngine().check_restore_target(provider, target_of(source), source, "latest", BackupSecrets(), None)


def test_the_restore_flow_refuses_in_place_and_checks_the_landing_first(tmp_path: Path) -> None:
    from dbtier.errors import PreflightError
    from tasks.restore import plan_restore

    source = source_spec(tmp_path, binaries={"mongod": str(tmp_path / "no-mongod")})
    with pytest.raises(RestoreError) as in_place:
        plan_restore(source, "latest", None, 100, None, None, True)
    assert in_place.value.one_line() == ("in_place: engine mongodb restores into a new cluster only; restore with "
                                         "--into NAME, then point the clients at it")
    with pytest.raises(PreflightError) as landing:  # the new set's hosts first: here its mongod is missing
        plan_restore(source, "latest", None, 100, None, None, False)
    assert landing.value.one_line().startswith(f"mongodb.binaries.mongod: {tmp_path}/no-mongod is missing on 127.0.0.1")
    assert not os.path.exists(f"{tmp_path}/orders-restored"), "nothing of the new set was written"
