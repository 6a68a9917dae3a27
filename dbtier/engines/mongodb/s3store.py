"""The oplog archive in an S3 bucket: a :class:`~dbtier.engines.mongodb.archiver.SliceStore` over boto3.

Slices and the index are objects under one prefix (``<prefix>/<member>/...``, the caller's choice). A PUT is
atomic in S3 (a reader gets the old object or the new one, never a part), which is the store's contract; the
index is written after its slice, as in a directory, so a crash between them leaves an orphan slice the
archiver ignores and rewrites. Every boto3 error is a one-line :class:`BackupError` naming the bucket and the
step (:func:`dbtier.backup.s3.s3_errors`), never a key.
"""

from __future__ import annotations

from typing import cast

from botocore.exceptions import ClientError

from dbtier.backup.s3 import S3Client, s3_errors
from dbtier.engines.mongodb.archiver import INDEX, checked_name
from dbtier.errors import BackupError


def s3_client(endpoint_url: str, region: str, access_key_id: str, secret_access_key: str, *, verify: bool | str = True,
              path_style: bool = False) -> S3Client:
    """A boto3 client configured as :meth:`blocks.s3.S3Repository.get_boto3_client` makes one (the archiver
    process has no Prefect: its keys come from a 0600 file). ``verify``: a CA file, True, or False (a lab only)."""
    import boto3
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path" if path_style else "virtual"}, connect_timeout=10, read_timeout=60,
                    retries={"mode": "standard", "max_attempts": 3})
    return cast(S3Client, boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key, verify=verify, config=config))


class S3Store:
    """A :class:`SliceStore` under ``prefix`` of ``bucket``."""

    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{checked_name(name)}" if self.prefix else checked_name(name)

    def names(self) -> list[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        found: list[str] = []
        with s3_errors(self.client, self.bucket, f"listing the oplog archive {start or '/'}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                found += [obj["Key"][len(start):] for obj in page.get("Contents", [])]
        return sorted(n for n in found if n and "/" not in n and not n.startswith("."))

    def read_index(self) -> str | None:
        try:
            return self._get(INDEX).decode("utf-8")
        except _Missing:
            return None

    def read_slice(self, name: str) -> bytes:
        try:
            return self._get(name)
        except _Missing:
            raise BackupError(f"s3 bucket {self.bucket}: oplog slice {self._key(name)} is missing") from None

    def write_slice(self, name: str, data: bytes) -> None:
        self._put(name, data)

    def write_index(self, text: str) -> None:
        self._put(INDEX, text.encode("utf-8"))

    def _get(self, name: str) -> bytes:
        key = self._key(name)
        with s3_errors(self.client, self.bucket, f"reading {key}"):  # _Missing passes through it
            try:
                body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise _Missing from None
                raise
        return body

    def _put(self, name: str, data: bytes) -> None:
        key = self._key(name)
        with s3_errors(self.client, self.bucket, f"writing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)


class _Missing(Exception):
    """The object is not there (an empty archive has no index)."""
