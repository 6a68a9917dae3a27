"""mongodump and mongorestore argv, the password file and repository naming (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml
from bson import Timestamp

from dbtier.engines.mongodb.config import MongoSettings, mongo_members
from dbtier.engines.mongodb.dump import (
    DumpRecord, dump_argv, dump_dir, dump_label, dumps_to_expire, label_of_name, label_time, oplog_dir, replay_argv,
    repo_root, restore_dump_argv, tool_config, tool_uri,
)
from dbtier.errors import BackupError

SECRET = "s3cr:t@/x\"y"
MEMBERS = mongo_members("/d", ["10.0.0.5"], MongoSettings())
URI = tool_uri(MEMBERS, MongoSettings(), "root")
#: The new set keeps its own users, roles and auth schema.
NO_USERS = ["--nsExclude=admin.system.users", "--nsExclude=admin.system.roles", "--nsExclude=admin.system.version"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (dump_argv("mongodump", URI, "/w/t.yaml", "/w/d.gz"),
         ["mongodump", f"--uri={URI}", "--config=/w/t.yaml", "--oplog", "--gzip", "--archive=/w/d.gz",
          "--readPreference=primary"]),
        (restore_dump_argv("mongorestore", URI, "/w/t.yaml", "/w/d.gz", replay_own_oplog=True),
         ["mongorestore", f"--uri={URI}", "--config=/w/t.yaml", "--gzip", "--archive=/w/d.gz", "--drop", *NO_USERS,
          "--oplogReplay"]),
        (restore_dump_argv("mongorestore", URI, "/w/t.yaml", "/w/d.gz", replay_own_oplog=False),
         ["mongorestore", f"--uri={URI}", "--config=/w/t.yaml", "--gzip", "--archive=/w/d.gz", "--drop", *NO_USERS]),
        (replay_argv("mongorestore", URI, "/w/t.yaml", "/w/r", Timestamp(1764118924, 0)),
         ["mongorestore", f"--uri={URI}", "--config=/w/t.yaml", "--oplogReplay", "--oplogLimit=1764118924:0", "--dir=/w/r"]),
        (replay_argv("mongorestore", URI, "/w/t.yaml", "/w/r", None),
         ["mongorestore", f"--uri={URI}", "--config=/w/t.yaml", "--oplogReplay", "--dir=/w/r"]),
    ],
)
def test_argv(argv: list[str], expected: list[str]) -> None:
    assert argv == expected
    assert not any(SECRET in a for a in argv)


def test_password_only_in_the_config_file() -> None:
    assert yaml.safe_load(tool_config(SECRET)) == {"password": SECRET}
    assert URI == "mongodb://root@10.0.0.5:27017,10.0.0.5:27018,10.0.0.5:27019/?replicaSet=rs0&authSource=admin"


@pytest.mark.parametrize(
    ("path", "s3", "root"),
    [("/var/lib/dbtier/backups", False, "/var/lib/dbtier/backups/"), ("/b/", False, "/b/"),
     ("/dbtier", True, "dbtier/"), ("/", True, ""), ("/a/b/", True, "a/b/")],
)
def test_repo_root(path: str, s3: bool, root: str) -> None:
    assert repo_root(path, s3) == root


@pytest.mark.parametrize(
    ("name", "label"),
    [("dbtier/mongodump/orders/20261126-010203F/dump.archive.gz", "20261126-010203F"),
     ("dbtier/mongodump/orders/20261126-010203F/dump.json", "20261126-010203F"),
     ("dbtier/mongodump/other/20261126-010203F/dump.archive.gz", None),
     ("dbtier/mongodump/orders/latest/dump.archive.gz", None),
     ("dbtier/oplog/orders/index.json", None)],
)
def test_label_of_name(name: str, label: str | None) -> None:
    assert label_of_name(name, "dbtier/", "orders") == label


def test_naming_round_trip() -> None:
    at = datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone.utc)
    label = dump_label(at)
    assert label_time(label) == at
    assert dump_dir("/b/", "orders", label) == "/b/mongodump/orders/20261126-010203F/"
    assert oplog_dir("dbtier/", "orders") == "dbtier/oplog/orders/"
    with pytest.raises(BackupError, match="dump label"):
        label_time("nope")


def test_dump_record_round_trip() -> None:
    record = DumpRecord("20261126-010203F", Timestamp(10, 1), Timestamp(20, 3), 99)
    assert DumpRecord.from_json(record.to_json()) == record
    with pytest.raises(BackupError):
        DumpRecord.from_json("{}")


@pytest.mark.parametrize(("keep", "expired"), [(1, ["a1", "a2"]), (2, ["a1"]), (3, []), (5, [])])
def test_dumps_to_expire(keep: int, expired: list[str]) -> None:
    assert dumps_to_expire(["a3", "a1", "a2"], keep) == expired
