"""Where pgBackRest's repository objects live in a bucket, and what a manifest says, as tables (no network)."""

from __future__ import annotations

import pytest

from dbtier.backup.s3 import archive_prefix, backup_prefix, label_of_key, parse_manifest, repo_prefix

INCR = "20261126-010203F_20261127-040506I"
MANIFEST = """\
[backrest]
backrest-format=5
backrest-version="2.45"

[backup]
backup-archive-start="000000010000000000000002"
backup-archive-stop="000000010000000000000003"
backup-label="20261126-010203F_20261127-040506D"
backup-lsn-start="0/2000028"
backup-prior="20261126-010203F"
backup-timestamp-start=1764118923
backup-timestamp-stop=1764118930
backup-type="diff"

[backup:db]
db-id=1
db-system-id=7441234567890123456
db-version="15"

[backup:target]
pg_data={"path":"/var/lib/dbtier/orders/pg0/data","type":"path"}

[target:file]
pg_data/backup-label={"size":226,"timestamp":1764118925}
"""


@pytest.mark.parametrize(
    ("repo_path", "prefix"),
    [("/dbtier", "dbtier/"), ("/", ""), ("/a/b", "a/b/"), ("/a/b/", "a/b/"), ("dbtier", "dbtier/")],
)
def test_repo_prefix(repo_path: str, prefix: str) -> None:
    assert repo_prefix(repo_path) == prefix


@pytest.mark.parametrize(
    ("repo_path", "stanza", "backups", "archive"),
    [
        ("/dbtier", "main", "dbtier/backup/main/", "dbtier/archive/main/"),
        ("/", "orders", "backup/orders/", "archive/orders/"),
        ("/team/pg/", "orders", "team/pg/backup/orders/", "team/pg/archive/orders/"),
    ],
)
def test_backup_and_archive_prefixes(repo_path: str, stanza: str, backups: str, archive: str) -> None:
    assert backup_prefix(repo_path, stanza) == backups
    assert archive_prefix(repo_path, stanza) == archive


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("dbtier/backup/main/20261126-010203F/backup.manifest", "20261126-010203F"),
        ("dbtier/backup/main/20261126-010203F/pg_data/base/1/1259.zst", "20261126-010203F"),
        ("dbtier/backup/main/20261126-010203F_20261127-040506D/backup.manifest", "20261126-010203F_20261127-040506D"),
        ("dbtier/backup/main/20261126-010203F_20261127-040506I/pg_data/PG_VERSION", INCR),
        ("dbtier/backup/main/backup.info", None),
        ("dbtier/backup/main/backup.info.copy", None),
        ("dbtier/backup/main/backup.history/2026/20261126-010203F.manifest.gz", None),
        ("dbtier/backup/main/20261126-010203F", None),
        ("dbtier/backup/main/20261126-010203F/", None),
        ("dbtier/backup/mainx/20261126-010203F/backup.manifest", None),
        ("dbtier/backup/other/20261126-010203F/backup.manifest", None),
        ("dbtier/archive/main/15-1/0000000100000000/000000010000000000000001-ab12.zst", None),
        ("elsewhere/backup/main/20261126-010203F/backup.manifest", None),
        ("dbtier/backup/main/20261126-010203D/backup.manifest", None),
        ("dbtier/backup/main/latest/backup.manifest", None),
    ],
)
def test_label_of_key(key: str, label: str | None) -> None:
    assert label_of_key(key, "/dbtier", "main") == label


@pytest.mark.parametrize(
    ("key", "repo_path", "label"),
    [
        ("backup/main/20261126-010203F/backup.manifest", "/", "20261126-010203F"),
        ("a/b/backup/main/20261126-010203F/backup.manifest", "/a/b", "20261126-010203F"),
        ("dbtier/backup/main/20261126-010203F/backup.manifest", "/", None),
    ],
)
def test_label_of_key_under_other_repo_paths(key: str, repo_path: str, label: str | None) -> None:
    assert label_of_key(key, repo_path, "main") == label


def test_manifest_values_are_decoded_from_their_json() -> None:
    assert parse_manifest(MANIFEST) == {
        "backup-archive-start": "000000010000000000000002",
        "backup-archive-stop": "000000010000000000000003",
        "backup-label": "20261126-010203F_20261127-040506D",
        "backup-timestamp-start": "1764118923",
        "backup-timestamp-stop": "1764118930",
        "backup-type": "diff",
        "db-version": "15",
    }


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("", {}),
        ("backup-label=\"x\"\n", {}),  # outside any section
        ("[backup:option]\nbackup-type=\"full\"\n", {}),  # a key of another section
        ("[backup]\nbackup-type=\"full\"\n", {"backup-type": "full"}),
        ("[backup]\nbackup-type=full\n", {"backup-type": "full"}),  # not JSON: kept as written
        ("[backup:db]\ndb-version=\"9.6\"\ndb-id=2\n", {"db-version": "9.6"}),
        ("[backup]\r\nbackup-label=\"20261126-010203F\"\r\n", {"backup-label": "20261126-010203F"}),
    ],
)
def test_manifest_edge_cases(text: str, values: dict[str, str]) -> None:
    assert parse_manifest(text) == values
