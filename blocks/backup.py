"""The backup secrets of a cluster, read from blocks: S3 repositories and the repository passphrase."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prefect.blocks.system import Secret

from blocks.passwords import load_secret
from dbtier.backup.repos import BackupSecrets, S3Target
from dbtier.backup.settings import S3RepositorySettings
from dbtier.errors import SecretError
from dbtier.spec import ClusterSpec

if TYPE_CHECKING:
    from blocks.s3 import S3Repository


def s3_repositories(spec: ClusterSpec) -> Iterator[tuple[int, S3RepositorySettings, S3Repository]]:
    """Each S3 repository of the spec: its number (repoN), its spec entry and its loaded block."""
    for n, repo in enumerate(spec.backup.repositories, start=1):
        if isinstance(repo, S3RepositorySettings):
            from blocks.s3 import S3Repository  # boto3 only when an S3 repository is configured

            yield n, repo, S3Repository.load_repository(repo.block)


def load_backup_secrets(spec: ClusterSpec, *, create_cipher: bool = False) -> BackupSecrets:
    """Resolve every S3 repository's block and the cipher passphrase (generated once when asked)."""
    s3: dict[int, S3Target] = {}
    for n, _repo, block in s3_repositories(spec):
        s3[n] = S3Target(
            bucket=block.bucket,
            endpoint=block.endpoint,
            port=block.port,
            region=block.region,
            uri_style=block.uri_style,
            access_key_id=block.access_key_id.get_secret_value(),
            secret_access_key=block.secret_access_key.get_secret_value(),
            ca_file=block.ca_file,
            verify_tls=block.verify_tls,
        )
    return BackupSecrets(s3=s3, cipher_pass=_cipher_pass(spec, create_cipher))


def _cipher_pass(spec: ClusterSpec, create: bool) -> str | None:
    name = spec.backup.cipher_block
    if name is None:
        return None
    value = load_secret(name)
    from blocks.cleanup import record_cipher_use

    if value is not None:
        if create:  # a cluster about to write backups with it: its teardown must not delete it under another
            record_cipher_use(spec, created=False)
        return value
    if not create:
        raise SecretError(
            f"backup.cipher_block: no Secret block named {name!r}; the repository cannot be read without its "
            "passphrase: restore the block from your copy"
        )
    passphrase = secrets.token_urlsafe(48)
    Secret(value=passphrase).save(name)
    record_cipher_use(spec, created=True)
    return passphrase
