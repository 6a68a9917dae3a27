"""Both repositories at once: a filesystem one and S3 (moto's real S3 API over TLS on loopback), encrypted.

Runbook: provision with both repositories (the bucket is created, WAL reaches both), back up into both,
rows before and after T, restore to T from the S3 repository into a new cluster: exactly the rows before T.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.engines.postgres import pgbackrest_ops
from dbtier.backup.restore import derive_target
from dbtier.backup.s3 import backup_sizes, repository_size
from dbtier.engines.base import get_engine
from dbtier.engines.postgres.engine import connect
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import client_dsn
from tests.clusters import RESTORE_OFFSET, one_member, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec
from dbtier.lab.s3 import S3Endpoint, running_s3

pytestmark = pytest.mark.cluster
S3_PORT = 21090  # inside this suite's port block (10)
BUCKET = "dbtier-test-backups"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with running_s3(S3_PORT, shared_tmpdir("dbtier-s3-cluster-")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    backup = {
        "repositories": [{"type": "fs"}, {"type": "s3", "block": "test-s3-repo", "path": "/dbtier"}],
        "cipher_block": "test-repo-cipher",
    }
    return spec_for_tests("bks3", block=10, data_root=shared_tmpdir("dbtier-backup-s3-"), backup=backup)


@pytest.fixture(scope="module")
def cluster_with_two_repositories(prefect_harness: None, s3: S3Endpoint, spec: ClusterSpec) -> Iterator[str]:
    from pydantic import SecretStr

    from blocks.s3 import S3Repository
    from flows.provision import provision

    S3Repository(bucket=BUCKET, endpoint=s3.host, port=s3.port, region=s3.region, uri_style="path",
                 access_key_id=SecretStr(s3.access_key), secret_access_key=SecretStr(s3.secret_key),
                 ca_file=s3.ca_file).save("test-s3-repo", overwrite=True)
    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        provision(spec_path=spec_file)
        yield spec_file
    bootstrap.wipe(get_engine(spec), get_provider(spec), spec)
    shutil.rmtree(spec.data_root, ignore_errors=True)


def _client() -> object:
    from blocks.s3 import S3Repository

    return S3Repository.load_repository("test-s3-repo").get_boto3_client()


def test_provision_creates_the_bucket_and_archives_into_both_repositories(cluster_with_two_repositories: str) -> None:
    client = _client()
    assert repository_size(client, BUCKET, "/dbtier") > 0
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="dbtier/archive/bks3/")["Contents"]]  # type: ignore[attr-defined]
    assert any(k.endswith(".zst") for k in keys), "WAL reached the bucket, compressed with zst"
    conf = open(os.path.join(cluster_with_two_repositories.rsplit("/", 1)[0], "bks3", "pgbackrest", "pgbackrest.conf")).read()
    assert "repo2-type=s3" in conf and "repo1-cipher-type=aes-256-cbc" in conf


def test_backup_into_both_then_restore_to_a_time_from_s3(cluster_with_two_repositories: str, spec: ClusterSpec) -> None:
    from flows.backup import backup
    from flows.restore import restore

    result = backup(spec_path=cluster_with_two_repositories, kind="full")
    assert sorted(b["repo"] for b in result["taken"]) == [1, 2]
    s3_label = next(b["label"] for b in result["taken"] if b["repo"] == 2)
    sizes = backup_sizes(_client(), BUCKET, "/dbtier", "bks3")
    assert sizes.get(s3_label, 0) > 0, "the backup's files are in the bucket"
    assert result["buckets"] and result["buckets"][0].startswith(f"repo2 s3://{BUCKET}/dbtier: 1 backup(s)")
    assert result["buckets"][0].endswith(f"newest {s3_label}: manifest encrypted"), "the repositories are encrypted"

    with connect(client_dsn(spec), load_passwords(spec).app) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY)")
        conn.execute("INSERT INTO events SELECT g FROM generate_series(1, 40) g")
        target_time = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.3)
        conn.execute("INSERT INTO events SELECT g FROM generate_series(41, 70) g")

    # One member and one etcd member: restoring from S3 is what this proves (test_backup_restore restores into
    # three members); a third of the copy's bring-up time.
    derived = derive_target(spec, "bks3-pitr", RESTORE_OFFSET)
    copy = ClusterSpec.model_validate(one_member(derived))
    copy_file = write_spec(copy, os.path.join(spec.data_root, "bks3-pitr.yaml"))
    try:
        done = restore(spec_path=cluster_with_two_repositories, target=target_time.isoformat(sep=" "),
                       target_spec_path=copy_file, repo=2)
        assert s3_label in done["from"]
        with connect(client_dsn(copy), load_passwords(copy).app) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 40
        assert pgbackrest_ops.catalog(get_provider(copy), copy).wal_max is not None, "the copy archives into its own stanza"
    finally:
        bootstrap.stop_services(get_engine(copy), get_provider(copy), copy)
        if bootstrap.is_initialised(get_engine(copy), get_provider(copy), copy):
            bootstrap.wipe(get_engine(copy), get_provider(copy), copy)
