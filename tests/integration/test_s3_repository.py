"""pgBackRest's S3 repository against moto's S3 HTTP API over TLS on loopback: the block, the boto3
helpers, and pgBackRest itself writing and listing through the same server."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from blocks.s3 import S3Repository
from dbtier.backup import s3 as s3_keys
from dbtier.backup.s3 import archive_size, backup_sizes, ensure_bucket, read_manifest, repository_size
from dbtier.errors import BackupError, PreflightError
from dbtier.spec import ClusterSpec
from tests.clusters import TEST_PORT_BASE, listening, shared_tmpdir
from dbtier.lab.s3 import S3Endpoint, running_s3

BLOCK = 8
S3_PORT = TEST_PORT_BASE + 100 * BLOCK + 1
KEY_CHECKING_S3_PORT = S3_PORT + 1
DEAD_PORT = TEST_PORT_BASE + 100 * BLOCK + 99
OS_USER = "dbtier"
FULL, DIFF = "20261126-010203F", "20261126-010203F_20261127-040506D"


def manifest(label: str, kind: str) -> bytes:
    return (
        '[backrest]\nbackrest-format=5\nbackrest-version="2.45"\n\n'
        f'[backup]\nbackup-archive-start="000000010000000000000002"\nbackup-archive-stop="000000010000000000000002"\n'
        f'backup-label="{label}"\nbackup-timestamp-start=1764118923\nbackup-timestamp-stop=1764118930\n'
        f'backup-type="{kind}"\n\n[backup:db]\ndb-id=1\ndb-system-id=7441234567890123456\ndb-version="15"\n\n'
        '[target:file]\npg_data/PG_VERSION={"size":3,"timestamp":1764118925}\n'
    ).encode()


#: The layout pgBackRest writes with repo-path /dbtier, stanza main; plus a second stanza and a stranger.
LAYOUT: dict[str, bytes] = {
    "dbtier/backup/main/backup.info": b"i" * 370,
    "dbtier/backup/main/backup.info.copy": b"i" * 370,
    f"dbtier/backup/main/{FULL}/backup.manifest": manifest(FULL, "full"),
    f"dbtier/backup/main/{FULL}/backup.manifest.copy": manifest(FULL, "full"),
    f"dbtier/backup/main/{FULL}/pg_data/PG_VERSION": b"15\n",
    f"dbtier/backup/main/{FULL}/pg_data/base/1/1259.zst": b"f" * 5000,
    f"dbtier/backup/main/{DIFF}/backup.manifest": manifest(DIFF, "diff"),
    f"dbtier/backup/main/{DIFF}/pg_data/base/1/1259.zst": b"d" * 700,
    f"dbtier/backup/main/backup.history/2026/{FULL}.manifest.gz": b"h" * 50,
    "dbtier/archive/main/archive.info": b"a" * 253,
    "dbtier/archive/main/15-1/0000000100000000/000000010000000000000001-dcbb0cf5.zst": b"w" * 1234,
    f"dbtier/backup/other/{FULL}/backup.manifest": manifest(FULL, "full"),
    "elsewhere/not-a-repository": b"x" * 999,
}


def _size(prefix: str) -> int:
    return sum(len(body) for key, body in LAYOUT.items() if key.startswith(prefix))


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with running_s3(S3_PORT, shared_tmpdir("dbtier-s3-")) as endpoint:
        yield endpoint


def repository(s3: S3Endpoint, bucket: str = "dbtier-itest", **fields: Any) -> S3Repository:
    settings: dict[str, Any] = {
        "bucket": bucket,
        "region": s3.region,
        "endpoint": s3.host,
        "port": s3.port,
        "uri_style": "path",
        "ca_file": s3.ca_file,
        "access_key_id": SecretStr(s3.access_key),
        "secret_access_key": SecretStr(s3.secret_key),
    }
    return S3Repository(**{**settings, **fields})


@pytest.fixture(scope="module")
def bucket_with_two_backups(s3: S3Endpoint) -> S3Repository:
    """Bucket dbtier-itest-layout holding a full and a diff backup of stanza main, WAL, and neighbours."""
    block = repository(s3, "dbtier-itest-layout")
    client = block.get_boto3_client()
    ensure_bucket(client, block.bucket, block.region)
    for key, body in LAYOUT.items():
        client.put_object(Bucket=block.bucket, Key=key, Body=body)
    return block


def test_ensure_bucket_creates_a_missing_bucket_then_finds_it(s3: S3Endpoint) -> None:
    client = repository(s3).get_boto3_client()
    assert ensure_bucket(client, "dbtier-itest-new", "us-east-1") == "bucket dbtier-itest-new created in us-east-1"
    assert ensure_bucket(client, "dbtier-itest-new", "us-east-1") == "bucket dbtier-itest-new exists"


def test_ensure_bucket_outside_us_east_1_sets_the_location(s3: S3Endpoint) -> None:
    client = repository(s3, region="eu-west-1").get_boto3_client()
    assert ensure_bucket(client, "dbtier-itest-eu", "eu-west-1") == "bucket dbtier-itest-eu created in eu-west-1"
    assert client.get_bucket_location(Bucket="dbtier-itest-eu")["LocationConstraint"] == "eu-west-1"


def test_backup_sizes_count_the_bytes_of_each_label(bucket_with_two_backups: S3Repository) -> None:
    block = bucket_with_two_backups
    sizes = backup_sizes(block.get_boto3_client(), block.bucket, "/dbtier", "main")
    assert sizes == {FULL: _size(f"dbtier/backup/main/{FULL}/"), DIFF: _size(f"dbtier/backup/main/{DIFF}/")}
    assert backup_sizes(block.get_boto3_client(), block.bucket, "/dbtier", "absent") == {}


def test_repository_and_archive_sizes(bucket_with_two_backups: S3Repository) -> None:
    block = bucket_with_two_backups
    client = block.get_boto3_client()
    assert repository_size(client, block.bucket, "/dbtier") == _size("dbtier/")
    assert repository_size(client, block.bucket, "/") == _size("")
    assert archive_size(client, block.bucket, "/dbtier", "main") == 253 + 1234


def test_sizes_add_up_across_listing_pages(
    bucket_with_two_backups: S3Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = bucket_with_two_backups
    monkeypatch.setattr(s3_keys, "LIST_PAGE_SIZE", 2)
    client = block.get_boto3_client()
    assert repository_size(client, block.bucket, "/dbtier") == _size("dbtier/")
    assert backup_sizes(client, block.bucket, "/dbtier", "main") == {
        FULL: _size(f"dbtier/backup/main/{FULL}/"),
        DIFF: _size(f"dbtier/backup/main/{DIFF}/"),
    }


def test_read_manifest_decodes_the_backup_section(bucket_with_two_backups: S3Repository) -> None:
    block = bucket_with_two_backups
    assert read_manifest(block.get_boto3_client(), block.bucket, "/dbtier", "main", DIFF) == {
        "backup-label": DIFF,
        "backup-type": "diff",
        "backup-timestamp-start": "1764118923",
        "backup-timestamp-stop": "1764118930",
        "backup-archive-start": "000000010000000000000002",
        "backup-archive-stop": "000000010000000000000002",
        "db-version": "15",
    }


def test_read_manifest_falls_back_to_the_copy(bucket_with_two_backups: S3Repository) -> None:
    block = bucket_with_two_backups
    client = block.get_boto3_client()
    label = "20261128-000000F"
    key = f"dbtier/backup/main/{label}/backup.manifest.copy"
    client.put_object(Bucket=block.bucket, Key=key, Body=manifest(label, "full"))
    assert read_manifest(client, block.bucket, "/dbtier", "main", label)["backup-label"] == label


def test_read_manifest_of_an_encrypted_repository_is_empty(bucket_with_two_backups: S3Repository) -> None:
    block = bucket_with_two_backups
    client = block.get_boto3_client()
    label = "20261129-000000F"
    client.put_object(Bucket=block.bucket, Key=f"dbtier/backup/main/{label}/backup.manifest",
                      Body=b"Salted__" + os.urandom(248))
    assert read_manifest(client, block.bucket, "/dbtier", "main", label) == {}


def test_read_manifest_of_a_missing_backup_is_a_backup_error(bucket_with_two_backups: S3Repository) -> None:
    block = bucket_with_two_backups
    with pytest.raises(BackupError, match="backup 20261130-000000F of stanza main has no manifest"):
        read_manifest(block.get_boto3_client(), block.bucket, "/dbtier", "main", "20261130-000000F")


def test_wrong_endpoint_port_is_a_one_line_backup_error(s3: S3Endpoint) -> None:
    assert not listening(DEAD_PORT)
    block = repository(s3, port=DEAD_PORT)
    with pytest.raises(BackupError) as caught:
        ensure_bucket(block.get_boto3_client(), block.bucket, block.region)
    message = str(caught.value)
    assert message == caught.value.one_line()
    assert "s3 bucket dbtier-itest: checking the bucket failed: Could not connect" in message
    assert str(DEAD_PORT) in message
    assert s3.secret_key not in message and s3.access_key not in message


def test_untrusted_certificate_is_a_backup_error_unless_verification_is_off(s3: S3Endpoint) -> None:
    untrusted = repository(s3, ca_file=None)
    with pytest.raises(BackupError, match="certificate verify failed"):
        ensure_bucket(untrusted.get_boto3_client(), untrusted.bucket, untrusted.region)
    unverified = repository(s3, ca_file=None, verify_tls=False)
    with pytest.warns(Warning, match="Unverified HTTPS request"):
        assert ensure_bucket(unverified.get_boto3_client(), "dbtier-itest", unverified.region).startswith("bucket")


def test_refused_keys_are_a_backup_error_naming_the_block() -> None:
    with running_s3(KEY_CHECKING_S3_PORT, shared_tmpdir("dbtier-s3-keys-"), check_keys=True) as strict:
        block = repository(strict, "dbtier-itest-denied")
        with pytest.raises(BackupError) as caught:
            ensure_bucket(block.get_boto3_client(), block.bucket, block.region, block_name="offsite")
    message = str(caught.value)
    assert "access denied to the keys of S3Repository block 'offsite'" in message
    assert "check the keys' permissions" in message
    assert strict.secret_key not in message


def test_block_keeps_its_keys_out_of_repr_and_str(s3: S3Endpoint) -> None:
    block = repository(s3)
    for text in (repr(block), str(block)):
        assert s3.secret_key not in text and s3.access_key not in text
    assert block.endpoint_url == f"https://localhost:{S3_PORT}"


@pytest.mark.parametrize("endpoint", ["https://s3.example.com", "s3.example.com:9000", "s3.example.com/bucket", ""])
def test_block_endpoint_is_a_host_name_only(s3: S3Endpoint, endpoint: str) -> None:
    with pytest.raises(ValueError, match="a host name only"):
        repository(s3, endpoint=endpoint)


def test_saved_block_loads_back_and_a_missing_one_is_a_preflight_error(prefect_harness: None, s3: S3Endpoint) -> None:
    repository(s3, "dbtier-itest-saved").save("itest-s3", overwrite=True)
    loaded = S3Repository.load_repository("itest-s3")
    assert (loaded.bucket, loaded.port, loaded.uri_style) == ("dbtier-itest-saved", S3_PORT, "path")
    assert loaded.secret_access_key.get_secret_value() == s3.secret_key
    assert ensure_bucket(loaded.get_boto3_client(), loaded.bucket, loaded.region).endswith("created in us-east-1")
    with pytest.raises(PreflightError) as caught:
        S3Repository.load_repository("itest-s3-missing")
    assert str(caught.value) == (
        "backup.s3.block: no S3Repository block named 'itest-s3-missing'; "
        "save one first (S3Repository(bucket=..., ...).save('itest-s3-missing'))"
    )


# --- pgBackRest itself over TLS ---------------------------------------------------------------


@dataclass(frozen=True)
class PgBackRest:
    """Runs pgbackrest as the database OS user against one bucket of the test S3."""

    s3: S3Endpoint
    bucket: str
    workdir: str

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [
            "pgbackrest", "--no-config", "--repo1-type=s3", f"--repo1-s3-bucket={self.bucket}",
            f"--repo1-s3-endpoint={self.s3.host}", f"--repo1-storage-port={self.s3.port}",
            f"--repo1-s3-region={self.s3.region}", "--repo1-s3-uri-style=path",
            f"--repo1-storage-ca-file={self.s3.ca_file}", "--repo1-path=/dbtier", "--io-timeout=15",
            "--log-level-console=info", f"--log-path={self.workdir}", *args,
        ]  # fmt: skip
        env = {
            **os.environ,
            "PGBACKREST_REPO1_S3_KEY": self.s3.access_key,  # keys are refused on the command line
            "PGBACKREST_REPO1_S3_KEY_SECRET": self.s3.secret_key,
        }
        return subprocess.run(_as_os_user(argv), env=env, capture_output=True, text=True, timeout=timeout)


def _as_os_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *argv] if os.geteuid() == 0 else argv


def _owned_tmpdir(prefix: str) -> str:
    path = shared_tmpdir(prefix)
    if os.geteuid() == 0:
        user = pwd.getpwnam(OS_USER)
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _clean(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "unexpected eof" not in output.lower(), output
    return output


@pytest.fixture(scope="module")
def pgbackrest(s3: S3Endpoint) -> Iterator[PgBackRest]:
    """pgBackRest pointed at bucket dbtier-itest-pgbackrest, with a private lock and log directory."""
    block = repository(s3, "dbtier-itest-pgbackrest")
    ensure_bucket(block.get_boto3_client(), block.bucket, block.region)
    workdir = _owned_tmpdir("dbtier-pgbackrest-")
    yield PgBackRest(s3, block.bucket, workdir)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def initdb_data_dir() -> Iterator[str]:
    """A stopped PostgreSQL data directory (initdb only), owned by the database OS user."""
    workdir = _owned_tmpdir("dbtier-s3-pg-")
    initdb = os.path.join(ClusterSpec().pg.binaries.pg_bin_dir, "initdb")
    data = os.path.join(workdir, "data")
    subprocess.run(_as_os_user([initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]),
                   check=True, capture_output=True, timeout=120)
    yield data
    shutil.rmtree(workdir, ignore_errors=True)


def test_pgbackrest_lists_what_boto3_uploaded(pgbackrest: PgBackRest) -> None:
    client = repository(pgbackrest.s3, pgbackrest.bucket).get_boto3_client()
    client.put_object(Bucket=pgbackrest.bucket, Key="dbtier/probe/hello.txt", Body=b"hello from boto3\n")
    listing = _clean(pgbackrest.run("repo-ls", "--recurse"))
    assert "probe/hello.txt" in listing.splitlines()
    assert _clean(pgbackrest.run("repo-get", "/dbtier/probe/hello.txt")) == "hello from boto3\n"


def test_pgbackrest_writes_a_stanza_and_wal_that_boto3_reads(pgbackrest: PgBackRest, initdb_data_dir: str) -> None:
    started = time.monotonic()
    common = ("--stanza=main", f"--pg1-path={initdb_data_dir}", f"--lock-path={pgbackrest.workdir}")
    _clean(pgbackrest.run("stanza-create", "--no-online", *common))
    segment = os.path.join(initdb_data_dir, "pg_wal", "000000010000000000000001")
    _clean(pgbackrest.run("archive-push", "--compress-type=zst", *common, segment))
    assert time.monotonic() - started < 20  # a connection dropped without close_notify costs io-timeout per call
    client = repository(pgbackrest.s3, pgbackrest.bucket).get_boto3_client()
    listed = client.list_objects_v2(Bucket=pgbackrest.bucket, Prefix="dbtier/archive/main/")["Contents"]
    keys = {o["Key"]: o["Size"] for o in listed}
    wal = [k for k in keys if k.startswith("dbtier/archive/main/15-1/0000000100000000/000000010000000000000001-")]
    assert len(wal) == 1 and wal[0].endswith(".zst")
    assert {"dbtier/archive/main/archive.info", "dbtier/archive/main/archive.info.copy"} <= set(keys)
    assert archive_size(client, pgbackrest.bucket, "/dbtier", "main") == sum(keys.values())
    assert backup_sizes(client, pgbackrest.bucket, "/dbtier", "main") == {}


# ---- the MongoDB oplog archive's S3 store, on the same server ---------------------------------------


@pytest.fixture(scope="module")
def oplog_bucket(s3: S3Endpoint) -> S3Repository:
    block = repository(s3, "dbtier-itest-oplog")
    ensure_bucket(block.get_boto3_client(), block.bucket, block.region)
    return block


def test_the_oplog_s3_store_keeps_slices_and_the_index_under_its_prefix(oplog_bucket: S3Repository) -> None:
    from bson.timestamp import Timestamp

    from dbtier.engines.mongodb.archiver import INDEX, orphans, read_records
    from dbtier.engines.mongodb.oplog import SliceRecord, index_json, slice_name
    from dbtier.engines.mongodb.s3store import S3Store

    client = oplog_bucket.get_boto3_client()
    store = S3Store(client, oplog_bucket.bucket, "/orders/mongo0/")
    assert store.names() == [] and store.read_index() is None and read_records(store) == []
    record = SliceRecord(start=Timestamp(100, 1), end=Timestamp(160, 4), name=slice_name(Timestamp(100, 1), Timestamp(160, 4)),
                         count=7, after=None)
    crashed = slice_name(Timestamp(160, 5), Timestamp(220, 1))
    store.write_slice(record.name, b"\x00oplog bytes")
    store.write_slice(crashed, b"written, then a crash before the index")
    store.write_index(index_json([record]))
    assert read_records(store) == [record]
    assert store.read_slice(record.name) == b"\x00oplog bytes"
    assert store.names() == sorted([INDEX, record.name, crashed])
    assert orphans(store.names(), read_records(store)) == [crashed]
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=oplog_bucket.bucket)["Contents"]]
    assert sorted(listed) == [f"orders/mongo0/{n}" for n in store.names()]  # under its prefix, nowhere else
    assert S3Store(client, oplog_bucket.bucket, "orders/mongo1").names() == []  # another member's prefix


@pytest.mark.parametrize("name", ["../escape", ".hidden", ""])
def test_the_oplog_s3_store_refuses_a_name_that_is_no_slice(oplog_bucket: S3Repository, name: str) -> None:
    from dbtier.engines.mongodb.s3store import S3Store

    with pytest.raises(BackupError, match="is not a slice name"):
        S3Store(oplog_bucket.get_boto3_client(), oplog_bucket.bucket, "orders/mongo0").write_slice(name, b"x")


def test_the_oplog_s3_store_says_a_missing_slice_and_a_dead_endpoint_in_one_line(oplog_bucket: S3Repository,
                                                                                s3: S3Endpoint) -> None:
    from dbtier.engines.mongodb.s3store import S3Store

    with pytest.raises(BackupError) as missing:
        S3Store(oplog_bucket.get_boto3_client(), oplog_bucket.bucket, "orders/mongo0").read_slice("never-written")
    assert str(missing.value) == "s3 bucket dbtier-itest-oplog: oplog slice orders/mongo0/never-written is missing"
    dead = repository(s3, "dbtier-itest-oplog", port=DEAD_PORT).get_boto3_client()
    with pytest.raises(BackupError) as refused:
        S3Store(dead, "dbtier-itest-oplog", "orders/mongo0").write_index("{}")
    line = str(refused.value)
    assert "\n" not in line and line.startswith("s3 bucket dbtier-itest-oplog: writing orders/mongo0/index.json failed")
