"""A cluster's backup repositories as its engine's tool reaches them: the fs path, the S3 target with its block's
settings resolved, the secrets the blocks hold (shared by every engine; kept out of argv, logs and reprs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dbtier.backup.settings import FsRepository
from dbtier.spec import ClusterSpec


@dataclass(frozen=True)
class S3Target:
    """An S3 repository with its block's settings resolved (the keys included: keep it out of logs)."""

    bucket: str
    endpoint: str
    port: int
    region: str
    uri_style: str
    access_key_id: str
    secret_access_key: str
    ca_file: str | None = None
    verify_tls: bool = True

    def __repr__(self) -> str:
        return f"S3Target(bucket={self.bucket!r}, endpoint={self.endpoint!r}, port={self.port})"


@dataclass(frozen=True)
class BackupSecrets:
    """What the engine's backup tool needs from blocks: resolved S3 repositories and the cipher passphrase."""

    s3: dict[int, S3Target] = field(default_factory=dict)
    cipher_pass: str | None = None

    def __repr__(self) -> str:
        return f"BackupSecrets(s3 repos {sorted(self.s3)}, encrypted={self.cipher_pass is not None})"


def fs_repo_path(spec: ClusterSpec, repo: FsRepository) -> str:
    """
    >>> fs_repo_path(ClusterSpec(), FsRepository())
    '/var/lib/dbtier/backups'
    """
    return repo.path or f"{spec.data_root}/backups"
