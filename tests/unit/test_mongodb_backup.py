"""MongoDB's backups through the engine interface: mongodump's argv (no password), the record as a catalog
entry, retention's choice; take / catalog / verify / expire against a fake host on tmp_path (and moto's S3);
PostgreSQL's kinds; the backup flow refusing a kind the engine lacks before any Prefect API is asked."""

from __future__ import annotations

import gzip
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from bson import Timestamp

from dbtier.backup.repos import BackupSecrets
from dbtier.backup.repos import S3Target
from dbtier.engines.mongodb import backup, dump
from dbtier.engines.mongodb.config import MongoMember
from dbtier.engines.mongodb.engine import members
from dbtier.engines.postgres.engine import PostgresEngine
from dbtier.errors import BackupError, CommandFailed
from dbtier.providers.base import Completed, Provider
from dbtier.spec import ClusterSpec
from tests import file_hosts

PASSWORD = "r00t-p@ss/w:rd"
AT = datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone.utc)


class FileRunner(file_hosts.FileRunner):
    """A host whose files are the real ones (tmp_path); mongodump writes a small gzip where argv says."""

    def answer(self, argv: list[str]) -> Completed:
        if argv[0].endswith("mongodump"):
            if self.fail:
                raise CommandFailed(argv, 1, "", f"progress\n{self.fail}\n")
            path = next(a for a in argv if a.startswith("--archive=")).split("=", 1)[1]
            Path(path).write_bytes(gzip.compress(b"dump of the set"))
            return Completed(argv, 0, "", "")
        if argv[0] == "stat":
            ok = os.path.exists(argv[-1])
            return Completed(argv, 0 if ok else 1, str(os.path.getsize(argv[-1])) if ok else "", "")
        if argv[0] == "gzip":
            try:
                gzip.decompress(Path(argv[-1]).read_bytes())
            except (OSError, EOFError):
                return Completed(argv, 1, "", "not in gzip format")
            return Completed(argv, 0, "", "")
        return super().answer(argv)


class FileProvider(file_hosts.FileProvider):
    runner_class = FileRunner


def mongo(tmp_path: Path, repositories: list[dict[str, Any]] | None = None, **extra: Any) -> ClusterSpec:
    backup_section: dict[str, Any] = {"repositories": repositories or [{"type": "fs"}]}
    return ClusterSpec(engine="mongodb", name="orders", data_root=str(tmp_path), members=3, backup=backup_section,
                       **extra)


def oplog_clock(start: int = 1764118923) -> Any:
    ticks = iter(range(100))
    return lambda: Timestamp(start + 10 * next(ticks), 1)


# -- pure ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True])
def test_the_dump_argv_names_the_user_and_the_config_file_never_the_password(tls: bool, tmp_path: Path) -> None:
    spec = mongo(tmp_path, tls={"enabled": tls})
    primary = members(spec)[0]
    uri = dump.tool_uri([primary], backup._settings(spec), "root", primary.tls_ca if tls else None)
    argv = dump.dump_argv("/usr/bin/mongodump", uri, "/w/tool.yaml", "/r/dump.archive.gz")
    text = " ".join(argv)
    assert PASSWORD not in text and "p%40ss" not in text
    assert argv[:1] == ["/usr/bin/mongodump"] and "--oplog" in argv and "--gzip" in argv
    assert "--config=/w/tool.yaml" in argv and "--archive=/r/dump.archive.gz" in argv
    assert ("tlsCAFile" in text) is tls
    assert dump.tool_config(PASSWORD) == f'password: "{PASSWORD}"\n'


@pytest.mark.parametrize(("start", "end", "size", "repo", "duration"), [
    (Timestamp(1764118923, 1), Timestamp(1764118923, 9), 10, 1, 0.0),
    (Timestamp(1764118923, 1), Timestamp(1764119023, 2), 2048, 2, 100.0),
])
def test_a_dump_record_is_a_full_backup_record(start: Timestamp, end: Timestamp, size: int, repo: int,
                                                duration: float) -> None:
    record = backup.record_of(dump.DumpRecord("20261126-010203F", start, end, size), repo)
    assert (record.label, record.kind, record.repo, record.size, record.repo_size) == (
        "20261126-010203F", "full", repo, size, size)
    assert record.duration_s == duration
    assert (record.wal_start, record.wal_stop) == (f"{start.time}:{start.inc}", f"{end.time}:{end.inc}")


@pytest.mark.parametrize(("labels", "keep", "gone"), [
    ([], 2, []),
    (["20261124-010000F"], 1, []),
    (["20261126-010000F", "20261124-010000F", "20261125-010000F"], 2, ["20261124-010000F"]),
    (["20261126-010000F", "20261124-010000F"], 0, ["20261124-010000F", "20261126-010000F"]),
])
def test_expire_keeps_the_newest_dumps(labels: list[str], keep: int, gone: list[str]) -> None:
    assert dump.dumps_to_expire(labels, keep) == gone


def test_postgres_takes_full_diff_and_incr_and_mongodb_full_only() -> None:
    from dbtier.engines.mongodb.engine import MongoEngine

    assert PostgresEngine().backup_kinds(ClusterSpec()) == ("full", "diff", "incr")
    assert MongoEngine().backup_kinds(ClusterSpec(engine="mongodb")) == ("full",)


# -- through a fake host ---------------------------------------------------------------------------


def take(provider: Provider, spec: ClusterSpec, at: datetime, clock: Any, secrets: BackupSecrets | None = None,
         **kw: Any) -> str:
    primary: MongoMember = members(spec)[0]
    return backup.take(provider, spec, 1, secrets or BackupSecrets(), PASSWORD, primary, clock, now=at, **kw)


def test_take_catalog_verify_expire_in_an_fs_repository(tmp_path: Path) -> None:
    spec, provider, clock = mongo(tmp_path), FileProvider(), oplog_clock()
    said = take(provider, spec, AT, clock)
    assert said.startswith("full dump 20261126-010203F into repo1 from mongo0")
    runner = provider.runners["127.0.0.1"]
    dumped = runner.commands[0]
    assert dumped[0] == "/usr/bin/mongodump" and PASSWORD not in " ".join(dumped)
    config = next(a for a in dumped if a.startswith("--config=")).split("=", 1)[1]
    assert runner.modes[config] == 0o600 and not os.path.exists(config)  # the tool config is gone after
    where = tmp_path / "backups/mongodump/orders/20261126-010203F"
    assert sorted(os.listdir(where)) == [dump.ARCHIVE, dump.RECORD]

    take(provider, spec, AT.replace(day=27), clock)
    catalog = backup.catalog(provider, spec, BackupSecrets())
    assert [(b.label, b.kind, b.repo) for b in catalog.backups] == [
        ("20261126-010203F", "full", 1), ("20261127-010203F", "full", 1)]
    assert catalog.stanza == "orders" and catalog.backups[0].size == os.path.getsize(where / dump.ARCHIVE)
    assert catalog.backups[0].wal_start == "1764118923:1" and catalog.backups[0].wal_stop == "1764118933:1"

    assert backup.verify(provider, spec, 1, BackupSecrets()) == "repo1 verified: 2 dump(s) whole, sizes as recorded"
    (where / dump.ARCHIVE).write_bytes(b"short")
    with pytest.raises(BackupError, match="20261126-010203F's archive is 5 bytes"):
        backup.verify(provider, spec, 1, BackupSecrets())

    assert backup.expire(provider, spec, 1, 1, BackupSecrets()) == ["20261126-010203F"]
    assert not where.exists()
    assert [b.label for b in backup.catalog(provider, spec, BackupSecrets()).backups] == ["20261127-010203F"]


def test_the_clusters_a_repository_holds_are_named_and_a_drop_takes_only_its_own(tmp_path: Path) -> None:
    """Teardown's --drop-backups reads them first (a cipher block another cluster needs is kept)."""
    spec, provider = mongo(tmp_path), FileProvider()
    assert backup.clusters_held(provider, spec, BackupSecrets()) == []
    take(provider, spec, AT, oplog_clock())
    (tmp_path / "backups/oplog/billing/mongo1").mkdir(parents=True)
    (tmp_path / "backups/oplog/billing/mongo1/index.json").write_text("[]")
    (tmp_path / "backups/mongodump/emptied").mkdir()  # nothing inside: no backup of a cluster
    assert backup.clusters_held(provider, spec, BackupSecrets()) == ["billing", "orders"]
    backup.drop(provider, spec, BackupSecrets())
    assert backup.clusters_held(provider, spec, BackupSecrets()) == ["billing"]


def test_a_failed_mongodump_is_one_line_naming_the_member(tmp_path: Path) -> None:
    spec = mongo(tmp_path)
    provider = FileProvider(fail="Failed: error connecting to db server: server selection timeout")
    with pytest.raises(BackupError) as caught:
        take(provider, spec, AT, oplog_clock())
    line = caught.value.one_line()
    assert line.startswith("mongo0 (127.0.0.1:27017): mongodump exited 1: Failed: error connecting")
    assert "\n" not in str(caught.value) and PASSWORD not in line
    assert not (tmp_path / "orders" / "backup-20261126-010203F").exists()


def test_an_s3_repository_without_its_target_is_refused(tmp_path: Path) -> None:
    spec = mongo(tmp_path, [{"type": "s3", "block": "minio"}])
    with pytest.raises(BackupError, match=r"backup.repositories.0: an s3 repository without its S3Target"):
        take(FileProvider(), spec, AT, oplog_clock())


def test_take_catalog_verify_expire_in_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    target = S3Target("dbtier-bkp", "s3.local", 443, "us-east-1", "path", "AKID", "s3cr3t")
    secrets = BackupSecrets(s3={1: target})
    spec = mongo(tmp_path, [{"type": "s3", "block": "minio", "path": "/dbtier"}])
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="dbtier-bkp")
        provider, clock = FileProvider(), oplog_clock()
        kw = {"s3": lambda _t: client}
        take(provider, spec, AT, clock, secrets, **kw)
        take(provider, spec, AT.replace(day=27), clock, secrets, **kw)
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="dbtier-bkp")["Contents"])
        assert keys[0] == "dbtier/mongodump/orders/20261126-010203F/dump.archive.gz" and len(keys) == 4
        assert not list((tmp_path / "orders").glob("backup-*"))  # the temporary archive is gone
        labels = [b.label for b in backup.catalog(provider, spec, secrets, s3=kw["s3"]).backups]
        assert labels == ["20261126-010203F", "20261127-010203F"]
        assert "2 dump(s) whole" in backup.verify(provider, spec, 1, secrets, s3=kw["s3"])
        assert backup.expire(provider, spec, 1, 1, secrets, s3=kw["s3"]) == ["20261126-010203F"]
        assert len(client.list_objects_v2(Bucket="dbtier-bkp")["Contents"]) == 2
        client.put_object(Bucket="dbtier-bkp", Key="dbtier/oplog/billing/mongo1/index.json", Body=b"[]")
        assert backup.clusters_held(provider, spec, secrets, s3=kw["s3"]) == ["billing", "orders"]
        with pytest.raises(BackupError) as caught:
            backup.catalog(provider, spec, BackupSecrets(s3={1: S3Target("missing", "s", 443, "us-east-1", "path",
                                                                        "AKID", "s3cr3t")}), s3=kw["s3"])
        assert caught.value.one_line().startswith("S3 bucket missing: listing dbtier/mongodump/orders/ failed")


# -- the flow's edge -------------------------------------------------------------------------------


def test_the_flow_refuses_a_kind_the_engine_lacks_before_asking_prefect(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from flows import backup as flow

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr(flow, "run_edge", lambda *a: pytest.fail("the edge (and its API check) must not run"))
    assert flow.main(["--kind", "diff", "--spec", "deployments/clusters/mongodb.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "dbtier: error: --kind diff: engine mongodb takes auto, full backups; pass one of them"


def test_a_flow_run_given_a_kind_the_engine_lacks_says_the_same_line() -> None:
    """From the UI or a deployment the flow's task refuses it, in the command line's words (field ``kind``)."""
    from dbtier.backup.catalog import Catalog
    from dbtier.errors import BackupError
    from tasks.backup import pick_backup_kind

    spec = ClusterSpec(engine="mongodb")
    with pytest.raises(BackupError) as info:
        pick_backup_kind.fn(spec, "diff", Catalog("mongo", (), None, None, "ok"), 1)
    assert str(info.value) == "kind diff: engine mongodb takes auto, full backups; pass one of them"
    assert pick_backup_kind.fn(spec, "auto", Catalog("mongo", (), None, None, "ok"), 1) == "full"
