"""The archiving seam of the engine interface: what provision's backup steps ask each engine. PostgreSQL's
``archives`` table; MongoDB's archiver services (names, kinds, no secret on argv), its archiver files written
0600 through a recording provider (the root password only in the URI file), its refusal of an earlier
cluster's slices; and bootstrap's stop order (archivers before the mongods)."""

from __future__ import annotations

import os
from pathlib import Path

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from dbtier import bootstrap
from dbtier.backup.repos import BackupSecrets
from dbtier.backup.repos import S3Target
from dbtier.engines.mongodb.engine import MongoEngine
from dbtier.engines.postgres.engine import PostgresEngine
from dbtier.errors import BackupError, PreflightError
from dbtier.procs import Service
from dbtier.providers.base import Completed, Provider, Runner
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from dbtier.supervisors import Supervisor

ROOT_PASSWORD = "r00t-p@ss/w:rd"
S3_SECRET = "s3-s3cret/KEY+value"
MINIO = S3Target(bucket="dbtier-bkp", endpoint="minio.lan", port=9000, region="eu-west-1", uri_style="path",
                 access_key_id="AKIDEXAMPLE", secret_access_key=S3_SECRET)
PASSWORDS = Passwords(superuser=ROOT_PASSWORD, app="app-pw", keyfile="k3yfile")


def mongo(repositories: list[dict[str, Any]] | None = None) -> ClusterSpec:
    backup: dict[str, Any] = {"repositories": repositories} if repositories else {}
    return ClusterSpec(engine="mongodb", name="orders", data_root="/d", members=3, backup=backup)


class RecordingRunner(Runner):
    """A host that records file writes and directories, and lists what ``tree`` says is there."""

    def __init__(self, host: str, tree: Mapping[str, list[str]] | None = None) -> None:
        self.host = host
        self.tree = dict(tree or {})
        self.writes: list[tuple[str, bytes, int]] = []
        self.dirs: list[tuple[str, int]] = []
        self.commands: list[list[str]] = []
        self.removed: list[str] = []

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120,
            check: bool = True) -> Completed:
        assert argv[0] == "tar", f"no command but unpacking shipped code expected: {list(argv)}"
        self.commands.append(list(argv))
        return Completed(list(argv), 0, "", "")

    def read_file(self, path: str) -> bytes | None:
        return None

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        self.writes.append((path, data, mode))

    def make_dirs(self, path: str, mode: int = 0o700) -> None:
        self.dirs.append((path, mode))

    def list_dir(self, path: str) -> list[str] | None:
        return self.tree.get(path.rstrip("/"))

    def remove_tree(self, path: str) -> None:
        assert path.startswith("/d/orders/runtime/"), f"only the shipped code's old copy is removed, not {path}"
        self.removed.append(path)

    def rename(self, path: str, new_path: str) -> None:
        raise AssertionError("nothing is renamed")

    def port_in_use(self, port: int) -> bool:
        return False


class RecordingSupervisor(Supervisor):
    kind = "processes"

    def __init__(self, stopped: list[str]) -> None:
        self.stopped = stopped

    def start(self, runner: Runner, service: Service) -> int:
        raise AssertionError("nothing is started")

    def stop(self, runner: Runner, service: Service, timeout: float) -> str:
        self.stopped.append(service.name)
        return f"{service.name} stopped"

    def remove(self, runner: Runner, services: Iterable[Service]) -> list[str]:
        return []


class RecordingProvider(Provider):
    name = "local"

    def __init__(self, tree: Mapping[str, list[str]] | None = None) -> None:
        self.runners: dict[str, RecordingRunner] = {}
        self.tree = tree
        self.stopped: list[str] = []

    def runner(self, spec: ClusterSpec, host: str) -> RecordingRunner:
        return self.runners.setdefault(host, RecordingRunner(host, self.tree))

    def check_host(self, spec: ClusterSpec, host: str) -> list[str]:
        return []

    def supervisor(self, spec: ClusterSpec, host: str) -> Supervisor:
        return RecordingSupervisor(self.stopped)


@pytest.mark.parametrize(
    ("parameters", "archives"),
    [({}, True), ({"archive_mode": "on"}, True), ({"archive_mode": "always"}, True), ({"archive_mode": "off"}, False),
     ({"archive_mode": "OFF"}, False), ({"archive_mode": False}, False), ({"archive_mode": True}, True)],
)
def test_postgres_archives_unless_archive_mode_is_off(parameters: dict[str, Any], archives: bool) -> None:
    assert PostgresEngine().archives(ClusterSpec(postgresql_parameters=parameters)) is archives


def test_postgres_has_no_archiver_services_of_its_own() -> None:
    engine, spec = PostgresEngine(), ClusterSpec()
    assert engine.archiver_services(spec) == []
    assert bootstrap.all_services(engine, spec) == (engine.consensus_services(spec) + engine.member_services(spec)
                                                    + engine.router_services(spec))


def test_mongodb_archives_into_its_repositories() -> None:
    assert MongoEngine().archives(mongo()) is True


def test_mongodb_has_one_archiver_per_member_and_no_secret_on_argv() -> None:
    spec = mongo([{"type": "s3", "block": "minio", "path": "/dbtier"}])
    services = MongoEngine().archiver_services(spec, BackupSecrets(s3={1: MINIO}))
    assert [(s.name, s.kind) for s in services] == [(f"mongo{i}-oplog-archiver", "oplog-archiver") for i in range(3)]
    for service in services:
        text = " ".join(service.argv) + repr(service)
        assert "--s3-bucket=dbtier-bkp" in service.argv
        assert S3_SECRET not in text and ROOT_PASSWORD not in text and "AKIDEXAMPLE" not in text


def test_without_its_s3_target_an_archiver_identifies_but_cannot_start() -> None:
    spec, engine = mongo([{"type": "s3", "block": "minio"}]), MongoEngine()
    bare = engine.archiver_services(spec)
    full = engine.archiver_services(spec, BackupSecrets(s3={1: MINIO}))
    assert [(s.name, s.pidfile, s.marker) for s in bare] == [(s.name, s.pidfile, s.marker) for s in full]
    assert not any(arg.startswith("--s3-") for s in bare for arg in s.argv)
    with pytest.raises(BackupError, match="backup.repositories.0 is an s3 repository"):
        engine.start_archiving(RecordingProvider(), spec, None)


def test_bootstrap_lists_the_archivers_with_the_members() -> None:
    spec, engine = mongo(), MongoEngine()
    names = [s.name for s in bootstrap.with_exporters(engine, spec)]
    assert names == [*(f"mongo{i}" for i in range(3)), *(f"mongo{i}-oplog-archiver" for i in range(3))]


@pytest.mark.parametrize("s3", [False, True], ids=["fs", "s3"])
def test_configure_archiving_writes_0600_files_and_the_password_only_in_the_uri_file(s3: bool) -> None:
    spec = mongo([{"type": "s3", "block": "minio"}] if s3 else None)
    provider = RecordingProvider()
    said = MongoEngine().configure_archiving(provider, spec, BackupSecrets(s3={1: MINIO} if s3 else {}), PASSWORDS)
    shipped, said = said[0], said[1:]
    assert shipped.startswith("127.0.0.1: dbtier's code shipped to /d/orders/runtime (")
    assert len(said) == 3 and all("mode 0600" in line and ROOT_PASSWORD not in line for line in said)
    runner = provider.runners["127.0.0.1"]
    assert runner.commands == [["tar", "-xzf", "/d/orders/runtime/incoming/dbtier.tar.gz", "-C", "/d/orders/runtime",
                                "--no-same-owner"]], "one host: the code is shipped once"
    code = [(path, mode) for path, _, mode in runner.writes if path.startswith("/d/orders/runtime/")]
    assert code == [("/d/orders/runtime/incoming/dbtier.tar.gz", 0o600)]
    runner.writes = [w for w in runner.writes if not w[0].startswith("/d/orders/runtime/")]
    wanted = ["member.uri", "s3.credentials"] if s3 else ["member.uri"]
    assert sorted(path for path, _, _ in runner.writes) == sorted(
        f"/d/orders/mongo{i}/oplog-archiver/{name}" for i in range(3) for name in wanted)
    assert {mode for _, _, mode in runner.writes} == {0o600}
    for path, data, _ in runner.writes:
        assert (b"r00t-p%40ss%2Fw%3Ard" in data) is path.endswith("member.uri"), path
        assert (S3_SECRET.encode() in data) is path.endswith("s3.credentials"), path
    assert {mode for _, mode in runner.dirs} == {0o700}
    assert ("/d/orders/mongo0/oplog-archiver", 0o700) in runner.dirs
    if not s3:
        assert ("/d/backups/oplog/orders/mongo0/", 0o700) in runner.dirs


def test_an_earlier_clusters_slices_are_refused_in_one_line() -> None:
    engine, spec = MongoEngine(), mongo()
    assert "new in the fs repository" in engine.refuse_earlier_archive(RecordingProvider(), spec, BackupSecrets())
    empty = {"/d/backups/oplog/orders": ["mongo0"], "/d/backups/oplog/orders/mongo0": []}
    assert "new" in engine.refuse_earlier_archive(RecordingProvider(empty), spec, BackupSecrets())
    held = {"/d/backups/oplog/orders": ["mongo1"], "/d/backups/oplog/orders/mongo1": ["index.json"]}
    with pytest.raises(PreflightError) as caught:
        engine.refuse_earlier_archive(RecordingProvider(held), spec, BackupSecrets())
    line = caught.value.one_line()
    assert line.startswith("backup.repositories.0: 127.0.0.1:/d/backups/oplog/orders/ already holds oplog slices")
    assert "\n" not in line and "move that directory away" in line


def test_s3_repositories_are_said_to_be_unchecked() -> None:
    spec = mongo([{"type": "fs"}, {"type": "s3", "block": "minio"}])
    assert MongoEngine().refuse_earlier_archive(RecordingProvider(), spec, BackupSecrets()).endswith(
        "S3 repositories are not checked yet")


def test_stop_services_stops_the_archivers_before_the_mongods() -> None:
    provider = RecordingProvider()
    said = bootstrap.stop_services(MongoEngine(), provider, mongo())
    assert provider.stopped == [*(f"mongo{i}-oplog-archiver" for i in range(3)), *(f"mongo{i}" for i in range(3))]
    assert said == [f"{name} stopped" for name in provider.stopped]


def test_a_set_whose_spec_stopped_archiving_still_stops_and_wipes_the_archivers_it_has() -> None:
    """oplog_archiving turned off on a set that archived: provision starts no archiver, but teardown stops the ones
    an earlier provision started (a stopped one is not spoken of) and --wipe removes their units with the rest."""
    engine = MongoEngine()
    off = ClusterSpec(engine="mongodb", name="orders", data_root="/d", members=3, mongodb={"oplog_archiving": False})
    assert [s.name for s in bootstrap.all_services(engine, off)] == [f"mongo{i}" for i in range(3)]
    archivers = [f"mongo{i}-oplog-archiver" for i in range(3)]
    assert [s.name for s in bootstrap.with_exporters(engine, off)][-3:] == archivers
    provider = RecordingProvider()
    bootstrap.stop_services(engine, provider, off)
    assert provider.stopped == [*archivers, *(f"mongo{i}" for i in range(3))]


def test_a_set_is_configured_for_archiving_once_every_archivers_uri_file_is_there(tmp_path: Path) -> None:
    import getpass

    from dbtier.engines.mongodb.engine import MongoEngine
    from dbtier.providers.base import get_provider
    from dbtier.spec import build_spec

    spec = build_spec({"name": "orders", "engine": "mongodb", "data_root": str(tmp_path), "os_user": getpass.getuser(),
                       "backup": {"repositories": [{"type": "fs", "path": str(tmp_path / "repo")}]}}, environ={})
    engine, provider = MongoEngine(), get_provider(spec)
    from dbtier.engines.mongodb.archiving import uri_file
    from dbtier.engines.mongodb.engine import members

    markers = [uri_file(m) for m in members(spec)]
    assert len(markers) == 3 and not engine.archiving_configured(provider, spec)
    for marker in markers[:2]:
        os.makedirs(os.path.dirname(marker))
        Path(marker).write_text("uri")
    assert not engine.archiving_configured(provider, spec), "one member's archiver is not configured yet"
    os.makedirs(os.path.dirname(markers[2]))
    Path(markers[2]).write_text("uri")
    assert engine.archiving_configured(provider, spec)
