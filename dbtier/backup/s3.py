"""pgBackRest's repository in an S3 bucket, read with a boto3 client that the caller passes in.

Object naming is pure (``repo_prefix``, ``backup_prefix``, ``archive_prefix``, ``label_of_key``,
``parse_manifest``); the other helpers make a few S3 calls and turn every S3 failure into a
one-line :class:`~dbtier.errors.BackupError` that names the bucket, never a key or a secret.

With ``repo1-path=/dbtier`` pgBackRest writes::

    dbtier/backup/<stanza>/backup.info
    dbtier/backup/<stanza>/<label>/backup.manifest
    dbtier/backup/<stanza>/<label>/pg_data/...
    dbtier/archive/<stanza>/archive.info
    dbtier/archive/<stanza>/15-1/0000000100000000/000000010000000000000001-<sha1>.zst
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from dbtier.errors import BackupError

#: Objects per list_objects_v2 page (the S3 maximum).
LIST_PAGE_SIZE = 1000
#: The manifest keys :func:`read_manifest` returns, by section.
MANIFEST_KEYS = {
    "backup": (
        "backup-label",
        "backup-type",
        "backup-timestamp-start",
        "backup-timestamp-stop",
        "backup-archive-start",
        "backup-archive-stop",
    ),
    "backup:db": ("db-version",),
}
_LABEL = re.compile(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$")
_MISSING = {"404", "NoSuchBucket", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


class S3Client(Protocol):
    """The few calls of a boto3 S3 client these helpers make."""

    def head_bucket(self, **kwargs: Any) -> dict[str, Any]: ...

    def create_bucket(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_paginator(self, operation_name: str) -> Any: ...

    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...


def repo_prefix(repo_path: str) -> str:
    """The key prefix of a repository path (pgBackRest's ``repo-path``) inside its bucket.

    >>> repo_prefix("/dbtier"), repo_prefix("/"), repo_prefix("/a/b/")
    ('dbtier/', '', 'a/b/')
    """
    path = repo_path.strip("/")
    return f"{path}/" if path else ""


def backup_prefix(repo_path: str, stanza: str) -> str:
    """Where a stanza's backups live.

    >>> backup_prefix("/dbtier", "main")
    'dbtier/backup/main/'
    """
    return f"{repo_prefix(repo_path)}backup/{stanza}/"


def archive_prefix(repo_path: str, stanza: str) -> str:
    """Where a stanza's WAL archive lives.

    >>> archive_prefix("/", "main")
    'archive/main/'
    """
    return f"{repo_prefix(repo_path)}archive/{stanza}/"


def label_of_key(key: str, repo_path: str, stanza: str) -> str | None:
    """The backup label an object belongs to, or None (info files, history, other stanzas, the archive).

    >>> label_of_key("dbtier/backup/main/20261126-010203F/pg_data/PG_VERSION", "/dbtier", "main")
    '20261126-010203F'
    >>> label_of_key("dbtier/backup/main/backup.info", "/dbtier", "main") is None
    True
    """
    prefix = backup_prefix(repo_path, stanza)
    if not key.startswith(prefix):
        return None
    label, slash, rest = key[len(prefix) :].partition("/")
    if not slash or not rest or not _LABEL.match(label):
        return None
    return label


def parse_manifest(text: str) -> dict[str, str]:
    """The :data:`MANIFEST_KEYS` of a ``backup.manifest`` (INI whose values are JSON), decoded.

    >>> parse_manifest('[backup]\\nbackup-label="20261126-010203F"\\nbackup-timestamp-start=1764118923\\n'
    ...                '[backup:db]\\ndb-version="15"\\n')
    {'backup-label': '20261126-010203F', 'backup-timestamp-start': '1764118923', 'db-version': '15'}
    """
    found: dict[str, str] = {}
    wanted: tuple[str, ...] = ()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            wanted = MANIFEST_KEYS.get(line[1:-1], ())
            continue
        key, eq, value = line.partition("=")
        if eq and key in wanted:
            found[key] = _json_text(value)
    return found


def _json_text(value: str) -> str:
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else json.dumps(decoded)


def _endpoint(client: S3Client) -> str:
    meta = getattr(client, "meta", None)
    return str(getattr(meta, "endpoint_url", "") or "S3")


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", "")) or str(
        err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def _failure(client: S3Client, bucket: str, doing: str, err: ClientError | BotoCoreError) -> BackupError:
    """A one-line BackupError naming the bucket and the step (never a key or a secret)."""
    if isinstance(err, ClientError):
        code = _code(err)
        message = str(err.response.get("Error", {}).get("Message", "")) or "no message"
        hint = "; check the keys' permissions" if code in _DENIED else ""
        return BackupError(f"s3 bucket {bucket} at {_endpoint(client)}: {doing} failed: {code} {message}{hint}")
    return BackupError(f"s3 bucket {bucket}: {doing} failed: {' '.join(str(err).split())}")


@contextmanager
def s3_errors(client: S3Client, bucket: str, doing: str) -> Iterator[None]:
    """boto3's errors inside, as one-line BackupErrors naming the bucket and ``doing``."""
    try:
        yield
    except (ClientError, BotoCoreError) as err:
        raise _failure(client, bucket, doing, err) from err


def ensure_bucket(client: S3Client, bucket: str, region: str, *, block_name: str | None = None) -> str:
    """Create ``bucket`` in ``region`` unless it exists; say which.

    A 403 means the keys may not see the bucket (or it belongs to another account): that is
    a BackupError naming the S3Repository block, never a create attempt.
    """
    block = f"S3Repository block {block_name!r}" if block_name else "the S3Repository block"
    try:
        client.head_bucket(Bucket=bucket)
        return f"bucket {bucket} exists"
    except ClientError as err:
        if _code(err) in _DENIED:
            raise BackupError(
                f"s3 bucket {bucket} at {_endpoint(client)}: access denied to the keys of {block}; "
                "check the keys' permissions (s3:ListBucket, s3:CreateBucket, s3:GetObject, s3:PutObject, "
                "s3:DeleteObject)"
            ) from err
        if _code(err) not in _MISSING:
            raise _failure(client, bucket, "checking the bucket", err) from err
    except BotoCoreError as err:
        raise _failure(client, bucket, "checking the bucket", err) from err
    return _create_bucket(client, bucket, region)


def _create_bucket(client: S3Client, bucket: str, region: str) -> str:
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as err:
        if _code(err) == "BucketAlreadyOwnedByYou":
            return f"bucket {bucket} exists"
        raise _failure(client, bucket, f"creating the bucket in {region}", err) from err
    except BotoCoreError as err:
        raise _failure(client, bucket, f"creating the bucket in {region}", err) from err
    return f"bucket {bucket} created in {region}"


def _objects(client: S3Client, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under ``prefix``, page by page."""
    paginator = client.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE})
    with s3_errors(client, bucket, "listing objects"):
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"], int(obj["Size"])


def backup_sizes(client: S3Client, bucket: str, repo_path: str, stanza: str) -> dict[str, int]:
    """Bytes stored per backup label of ``stanza`` (a backup missing from the bucket is absent)."""
    sizes: dict[str, int] = defaultdict(int)
    for key, size in _objects(client, bucket, backup_prefix(repo_path, stanza)):
        label = label_of_key(key, repo_path, stanza)
        if label is not None:
            sizes[label] += size
    return dict(sorted(sizes.items()))


def repository_size(client: S3Client, bucket: str, repo_path: str) -> int:
    """Bytes of every object in the repository (all stanzas, backups and WAL)."""
    return sum(size for _, size in _objects(client, bucket, repo_prefix(repo_path)))


def archive_size(client: S3Client, bucket: str, repo_path: str, stanza: str) -> int:
    """Bytes of ``stanza``'s WAL archive (segments, history files and archive.info)."""
    return sum(size for _, size in _objects(client, bucket, archive_prefix(repo_path, stanza)))


def read_manifest(client: S3Client, bucket: str, repo_path: str, stanza: str, label: str) -> dict[str, str]:
    """A few ``[backup]`` and ``[backup:db]`` values of a backup's manifest (:data:`MANIFEST_KEYS`).

    Falls back to ``backup.manifest.copy`` as pgBackRest does. An encrypted repository's
    manifest is ciphertext: that gives ``{}``, not an error.
    """
    base = f"{backup_prefix(repo_path, stanza)}{label}/backup.manifest"
    doing = f"reading the manifest of backup {label}"
    for key in (base, f"{base}.copy"):
        try:
            body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            if _code(err) in _MISSING:
                continue
            raise _failure(client, bucket, doing, err) from err
        except BotoCoreError as err:
            raise _failure(client, bucket, doing, err) from err
        return _manifest_values(body)
    raise BackupError(f"s3 bucket {bucket}: backup {label} of stanza {stanza} has no manifest under {repo_path}")


def _manifest_values(body: bytes) -> dict[str, str]:
    if body.startswith(b"Salted__"):  # pgBackRest's aes-256-cbc ciphertext
        return {}
    try:
        return parse_manifest(body.decode("utf-8"))
    except UnicodeDecodeError:
        return {}
