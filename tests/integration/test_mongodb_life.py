"""The life of a real MongoDB replica set, brought up and checked through dbtier's own code, as a user would.

Runbook (local provider, mongodb.port 47017-47019; the restored one-member set on 47117; data under a tmp dir):
given three mongod members initiated as rs0 with root and the app user, then mongo0 is primary (priority 2) and two
secondaries follow within lag; the key file is 0400; a second bootstrap changes nothing; the app user writes
(w: majority) and reads (secondaryPreferred) its database but not ``admin``; the oplog archiver writes contiguous
slices; a dump plus the slices replayed to a target restore exactly the documents before it into a new set; a
step-down and a kill -9 of the primary each elect another within 30 s, and the killed member rejoins.

Skipped, with the reason in one line of ``make test``'s summary, wherever mongod, mongodump or mongorestore is
missing (:mod:`tests.mongod`).
"""

from __future__ import annotations

import os
import pwd
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from bson import Timestamp
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from dbtier import bootstrap, procs
from dbtier.backup.repos import BackupSecrets
from dbtier.engines.base import Engine, get_engine
from dbtier.engines.mongodb import archiving, rs, steps
from dbtier.engines.mongodb.archiver import DirStore, read_records
from dbtier.engines.mongodb.config import MongoMember, read_uri, write_uri
from dbtier.engines.mongodb.dump import (
    DumpRecord, dump_argv, dump_label, replay_argv, restore_dump_argv, tool_uri, write_tool_config,
)
from dbtier.engines.mongodb.engine import client_factory, members, mongo_settings, set_client
from dbtier.engines.mongodb.oplog import SliceRecord, chain_problems, replay_bytes
from dbtier.engines.mongodb.pitr import oplog_limit, parse_target, plan_restore
from dbtier.procs import Service
from dbtier.providers.base import Provider, Runner, get_provider
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec, build_spec
from tests.clusters import eventually, listening, shared_tmpdir
from tests.mongod import db_version, mongo_binaries, skip_reason

pytestmark = pytest.mark.skipif(mongo_binaries() is None, reason=skip_reason())

PORT = 47017  # members on 47017-47019; the restored set on 47117 (restored copies: +100, the drill copy: +300)
RESTORED_PORT = 47117
SLICE_S = 2  # mongodb.oplog_slice_s: short, so a slice closes soon after the inserts
ELECTION_S = 30.0
COLLECTION = "life"


def _os_user() -> str:
    """The database OS user: ``dbtier`` (made by make setup) when the tests run as root, else the tests' own user."""
    return "dbtier" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def life_spec(name: str, port: int, member_count: int, data_root: str, mongod: str) -> ClusterSpec:
    return build_spec({
        "name": name, "engine": "mongodb", "provider": "local", "members": member_count, "host": "127.0.0.1",
        "data_root": data_root, "os_user": _os_user(), "tls": {"enabled": False},
        "mongodb": {"port": port, "oplog_slice_s": SLICE_S, "election_timeout_ms": 5000,
                    "binaries": {"mongod": mongod}},
        "backup": {"repositories": [{"type": "fs", "path": f"{data_root}/repo"}]},
    }, environ={})


@dataclass(frozen=True)
class ReplicaSet:
    """A running set: its spec, engine, provider, secrets and what each bootstrap step said."""

    spec: ClusterSpec
    engine: Engine
    provider: Provider
    passwords: Passwords
    said: list[str]

    @property
    def members(self) -> list[MongoMember]:
        return members(self.spec)

    def runner(self) -> Runner:
        return self.provider.runner(self.spec, self.spec.host)

    def service(self, member: MongoMember) -> Service:
        return next(s for s in self.engine.member_services(self.spec) if s.name == member.name)

    def root(self, member: MongoMember) -> MongoClient[Any]:
        return client_factory(self.spec)(member, steps.ROOT_USER, self.passwords.superuser)

    def primary(self) -> MongoMember:
        leader = steps.cluster_status(self.members, client_factory(self.spec), self.passwords.superuser).health.leader
        assert leader is not None, "no primary"
        return next(m for m in self.members if m.name == leader)

    def app_client(self, *, read: bool = False) -> MongoClient[Any]:
        build = read_uri if read else write_uri
        uri = build(self.members, mongo_settings(self.spec), self.spec.app.user, self.passwords.app,
                    self.spec.app.database)
        return set_client(uri)


def _checked_binaries() -> dict[str, str]:
    """The finder's programs, refused at once (not after a start that hangs) when mongod is not a mongod."""
    binaries = mongo_binaries()
    if binaries is None:
        pytest.skip(skip_reason())
    version, said = db_version(binaries["mongod"])
    if version is None:
        pytest.fail(f"{binaries['mongod']} is not a MongoDB server: '--version' printed no db version ({said}); "
                    "point DBTIER_TEST_MONGOD at MongoDB 7.0's mongod", pytrace=False)
    return binaries


def bring_up(spec: ClusterSpec, passwords: Passwords) -> ReplicaSet:
    """The runbook of provision, step by step through bootstrap and the engine (no flow: no Prefect needed)."""
    engine, provider = get_engine(spec), get_provider(spec)
    said = [*bootstrap.preflight(engine, provider, spec), bootstrap.prepare_dirs(engine, provider, spec)]
    for service in engine.member_services(spec):
        said.append(bootstrap.write_member_files(engine, provider, spec, service, passwords))
        said.append(bootstrap.ensure_running(provider, spec, service))
    said.append(engine.prepare_replicas(spec, passwords, timeout=60, provider=provider))
    said.append(engine.create_app_database(spec, passwords, provider=provider))
    said.append(engine.wait_healthy(spec, timeout=60).health.sentence)
    said.append(engine.verify_replication(spec, passwords, timeout=30))
    return ReplicaSet(spec, engine, provider, passwords, said)


def tear_down(spec: ClusterSpec) -> None:
    """Every mongod of the spec stopped by its pid file, then its directory wiped (it is ours: the marker says so)."""
    engine, provider = get_engine(spec), get_provider(spec)
    try:
        bootstrap.stop_services(engine, provider, spec)
    finally:
        bootstrap.wipe(engine, provider, spec)


@pytest.fixture(scope="module")
def binaries() -> dict[str, str]:
    return _checked_binaries()


@pytest.fixture(scope="module")
def three_member_replset(binaries: dict[str, str]) -> Iterator[ReplicaSet]:
    """rs0 of mongo0-mongo2 on 47017-47019, initiated with root and the app user; stopped by PID and wiped after."""
    root = shared_tmpdir("dbtier-mongo-life-")
    spec = life_spec("mongo-life", PORT, 3, root, binaries["mongod"])
    taken = [p for p in (PORT, PORT + 1, PORT + 2, RESTORED_PORT) if listening(p)]
    assert not taken, f"ports {taken} are in use: another test run or a mongod of your own holds them"
    engine = get_engine(spec)
    passwords = Passwords.generate(engine.secret_roles)
    try:
        yield bring_up(spec, passwords)
    finally:
        tear_down(spec)


@pytest.fixture(scope="module")
def archiving_mongo0(three_member_replset: ReplicaSet) -> Iterator[DirStore]:
    """Every member's oplog archiver, configured and started by the engine's own steps (as provision does after
    the replication check) into the fs repository; mongo0's archive is the one read. Stopped by PID after."""
    rset = three_member_replset
    secrets = BackupSecrets()  # an fs repository: no S3 target, no cipher
    services = rset.engine.archiver_services(rset.spec, secrets)
    repo = archiving.repository(rset.spec)
    assert repo.type == "fs" and repo.path
    try:
        rset.engine.configure_archiving(rset.provider, rset.spec, secrets, rset.passwords)
        said = rset.engine.start_archiving(rset.provider, rset.spec, secrets)
        assert len(said) == 3 and all("started" in line for line in said), said
        assert rset.engine.archiving_configured(rset.provider, rset.spec)
        yield DirStore(archiving.archive_location(repo.path, False, rset.spec.name, rset.members[0].name))
    finally:
        for service in services:
            rset.provider.supervisor(rset.spec, service.host).stop(rset.runner(), service, timeout=30)


def _insert(rset: ReplicaSet, batch: str, count: int) -> Timestamp:
    """``count`` documents of ``batch`` written with w: majority through the write URI; the last one's optime."""
    with rset.app_client() as client, client.start_session() as session:
        docs = [{"_id": f"{batch}-{i}", "batch": batch} for i in range(count)]
        client[rset.spec.app.database][COLLECTION].insert_many(docs, session=session)
        when = session.operation_time
    assert isinstance(when, Timestamp)
    return when


def _newest_oplog_ts(rset: ReplicaSet) -> Timestamp:
    primary = rset.primary()
    with rset.root(primary) as client:
        window = rs.oplog_window(client, primary)
    assert window is not None
    return window[1]


def _archived_through(store: DirStore, ts: Timestamp, timeout: float) -> list[SliceRecord]:
    def done() -> list[SliceRecord] | None:
        records = read_records(store)
        return records if records and records[-1].end >= ts else None

    found: list[SliceRecord] = eventually(f"a slice of {store.path} ending at or after {ts}", done, timeout, 0.5)
    return found


def _hello(rset: ReplicaSet, member: MongoMember) -> dict[str, Any] | None:
    try:
        with client_factory(rset.spec)(member, None, None) as client:
            return rs.command(client, member.label, "hello", {"hello": 1})
    except rs.MongoCommandError:
        return None


def _other_primary(rset: ReplicaSet, old: MongoMember) -> MongoMember | None:
    for member in rset.members:
        if member != old and (_hello(rset, member) or {}).get("isWritablePrimary"):
            return member
    return None


def _write_eventually(rset: ReplicaSet, batch: str) -> Timestamp:
    def attempt() -> Timestamp | None:
        try:
            return _insert(rset, batch, 1)
        except PyMongoError:
            return None

    written: Timestamp = eventually(f"a w: majority write of {batch}", attempt, ELECTION_S, 0.5)
    return written


# -- the set as provisioned ------------------------------------------------------------------------


def test_mongo0_is_primary_with_two_secondaries_within_lag(three_member_replset: ReplicaSet) -> None:
    rset = three_member_replset
    status = steps.cluster_status(rset.members, client_factory(rset.spec), rset.passwords.superuser)
    assert status.health.healthy, status.health.problems
    assert status.health.leader == "mongo0"
    assert len(status.rows) == 3
    assert sorted(row["role"] for row in status.rows) == ["primary", "secondary", "secondary"]
    with rset.root(rset.members[0]) as client:
        config = rs.command(client, "mongo0", "replSetGetConfig", {"replSetGetConfig": 1})["config"]
    assert {m["host"]: m["priority"] for m in config["members"]} == {
        "127.0.0.1:47017": 2.0, "127.0.0.1:47018": 1.0, "127.0.0.1:47019": 1.0}
    assert rset.engine.status(rset.spec).health.healthy  # what `dbtier status` reads, without credentials
    assert rset.said[-1].startswith("verified: a document written on mongo0 (w: majority) was read on 2 secondary")


def test_key_file_is_0400_and_holds_the_keyfile_secret(three_member_replset: ReplicaSet) -> None:
    rset = three_member_replset
    for member in rset.members:
        info = os.stat(member.keyfile)
        assert info.st_mode & 0o777 == 0o400, member.name
        assert pwd.getpwuid(info.st_uid).pw_name == rset.spec.os_user, member.name
        with open(member.keyfile, "rb") as fh:
            assert fh.read() == rset.passwords.keyfile.encode(), member.name


def test_second_bootstrap_changes_nothing(three_member_replset: ReplicaSet) -> None:
    rset = three_member_replset
    primary = rset.primary()

    def state() -> tuple[Any, ...]:
        with rset.root(primary) as client:
            config = rs.command(client, primary.name, "replSetGetConfig", {"replSetGetConfig": 1})["config"]
            status = rs.replset_status(client, primary)
            users = rs.command(client, primary.name, "usersInfo", {"usersInfo": 1})["users"]
        return config["version"], status["term"], sorted((u["user"], str(u["roles"])) for u in users)

    before = state()
    pids = {m.name: procs.running_pid(rset.runner(), rset.service(m)) for m in rset.members}
    initiated = rset.engine.prepare_replicas(rset.spec, rset.passwords, timeout=30, provider=rset.provider)
    users = rset.engine.create_app_database(rset.spec, rset.passwords, provider=rset.provider)
    assert "already initiated" in initiated
    # ensure_users says "user root updated; user app updated": same passwords and roles sent again (updateUser).
    assert "root" in users and rset.spec.app.user in users
    assert state() == before
    assert {m.name: procs.running_pid(rset.runner(), rset.service(m)) for m in rset.members} == pids
    assert rset.engine.app_database_present(rset.spec, rset.passwords, rset.provider)
    for service in rset.engine.member_services(rset.spec):
        said = bootstrap.write_member_files(rset.engine, rset.provider, rset.spec, service, rset.passwords)
        assert said == f"{service.name}: configuration unchanged"
        assert bootstrap.ensure_running(rset.provider, rset.spec, service).startswith(f"{service.name} already running")


# -- what the application sees ---------------------------------------------------------------------


def test_app_writes_majority_through_write_uri_and_reads_through_read_uri(three_member_replset: ReplicaSet) -> None:
    rset = three_member_replset
    _insert(rset, "app-io", 3)
    with rset.app_client(read=True) as reader:
        assert reader.read_preference.mongos_mode == "secondaryPreferred"
        collection = reader[rset.spec.app.database][COLLECTION]
        found = eventually("the three documents through the read URI",
                           lambda: sorted(d["_id"] for d in collection.find({"batch": "app-io"})) or None, 15)
    assert found == ["app-io-0", "app-io-1", "app-io-2"]
    with rset.app_client() as writer:
        assert writer.write_concern.document == {"w": "majority"}


def test_app_user_cannot_read_admin(three_member_replset: ReplicaSet) -> None:
    rset = three_member_replset
    with rset.app_client() as client, pytest.raises(OperationFailure) as denied:
        client.admin["system.users"].find_one()
    assert denied.value.code == rs.UNAUTHORIZED
    anonymous = client_factory(rset.spec)(rset.primary(), None, None)
    with anonymous, pytest.raises(OperationFailure) as refused:
        anonymous.list_database_names()
    assert refused.value.code == rs.UNAUTHORIZED


# -- backup: the archiver, a dump, a point-in-time restore into a new set ----------------------------


def test_archiver_writes_contiguous_slices_soon_after_inserts(three_member_replset: ReplicaSet,
                                                              archiving_mongo0: DirStore) -> None:
    rset = three_member_replset
    written = _insert(rset, "archived", 5)
    started = time.monotonic()
    records = _archived_through(archiving_mongo0, written, SLICE_S + 10)
    assert time.monotonic() - started <= SLICE_S + 10
    gaps, overlaps = chain_problems(records)
    assert gaps == [] and overlaps == []
    assert all(name in archiving_mongo0.names() for name in (r.name for r in records))


def test_dump_and_slices_restore_exactly_the_documents_before_the_target(
    three_member_replset: ReplicaSet, archiving_mongo0: DirStore, binaries: dict[str, str]
) -> None:
    """The tools themselves, driven with dump.py's argv and the slices pitr.plan_restore picks (the flows' backup and
    restore run in test_mongodb_flows.py)."""
    rset = three_member_replset
    runner = rset.runner()
    work = f"{rset.spec.data_root}/pitr"
    runner.make_dirs(work, 0o700)
    tool_config = f"{work}/tool.yaml"
    write_tool_config(runner, tool_config, rset.passwords.superuser)
    settings = mongo_settings(rset.spec)

    _insert(rset, "before-dump", 3)
    label = dump_label(datetime.now(timezone.utc))
    oplog_start = _newest_oplog_ts(rset)
    archive = f"{work}/dump.archive.gz"
    runner.run(dump_argv(binaries["mongodump"], tool_uri(rset.members, settings, steps.ROOT_USER), tool_config,
                         archive), timeout=120)
    dump = DumpRecord(label, oplog_start, _newest_oplog_ts(rset))
    target_ts = _insert(rset, "after-dump", 3)
    after_target = _insert(rset, "after-target", 3)
    records = _archived_through(archiving_mongo0, after_target, SLICE_S + 10)

    target = parse_target(f"ts:{target_ts.time}:{target_ts.inc}")
    assert target.ts is not None
    plan = plan_restore(target, [dump], records)
    assert plan.limit == oplog_limit(target.ts)
    replay = f"{work}/replay"
    runner.make_dirs(replay, 0o700)
    runner.write_file(f"{replay}/oplog.bson",
                      replay_bytes([archiving_mongo0.read_slice(n) for n in plan.slices], plan.replay_after, plan.limit))

    restored = life_spec("mongo-life-restored", RESTORED_PORT, 1, shared_tmpdir("dbtier-mongo-restored-"),
                         binaries["mongod"])
    try:
        # secrets of its own: the restore leaves the new set's users alone (the dump and the slices hold the source's)
        new = bring_up(restored, Passwords.generate(get_engine(restored).secret_roles))
        uri = tool_uri(new.members, mongo_settings(restored), steps.ROOT_USER)
        copy_config = f"{work}/copy-tool.yaml"
        write_tool_config(runner, copy_config, new.passwords.superuser)
        runner.run(restore_dump_argv(binaries["mongorestore"], uri, copy_config, archive, replay_own_oplog=False),
                   timeout=300)
        runner.run(replay_argv(binaries["mongorestore"], uri, copy_config, replay, plan.limit), timeout=300)
        with new.root(new.members[0]) as client:  # its own root password still works after both
            ids = sorted(d["_id"] for d in client[restored.app.database][COLLECTION].find(
                {"batch": {"$in": ["before-dump", "after-dump", "after-target"]}}))
    finally:
        tear_down(restored)
    assert ids == sorted([f"before-dump-{i}" for i in range(3)] + [f"after-dump-{i}" for i in range(3)])


# -- failover --------------------------------------------------------------------------------------


def test_step_down_elects_another_primary_and_writes_continue(three_member_replset: ReplicaSet) -> None:
    rset = three_member_replset
    old = rset.primary()
    with rset.root(old) as client:
        said = rs.step_down(client, old, seconds=20, catch_up_s=10)
    assert old.name in said
    new = eventually(f"a primary other than {old.name}", lambda: _other_primary(rset, old), ELECTION_S, 0.2)
    assert new != old
    _write_eventually(rset, "after-step-down")


def test_kill_9_of_primary_elects_another_and_it_rejoins_as_secondary(three_member_replset: ReplicaSet) -> None:
    rset = three_member_replset
    old = rset.primary()
    service = rset.service(old)
    pid = procs.read_pid(rset.runner(), service.pidfile)
    assert pid is not None and procs.pid_matches(rset.runner(), pid, service.marker)
    os.kill(pid, signal.SIGKILL)
    eventually(f"{old.name} (pid {pid}) gone", lambda: not procs.pid_matches(rset.runner(), pid, service.marker), 10)
    eventually(f"a primary other than {old.name}", lambda: _other_primary(rset, old), ELECTION_S, 0.2)
    _write_eventually(rset, "after-kill")

    said = bootstrap.ensure_running(rset.provider, rset.spec, service)
    assert said.startswith(f"{old.name} started"), said
    eventually(f"{old.name} back as a secondary", lambda: (_hello(rset, old) or {}).get("secondary"), 60, 0.2)
    assert rset.engine.wait_healthy(rset.spec, timeout=60).health.healthy
