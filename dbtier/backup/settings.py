"""The ``backup:`` section of the cluster spec: repositories, retention, archiving, restore drills."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FsRepository(_Model):
    """A pgBackRest repository on the hosts' file system (default: ``<data_root>/backups``).

    It outlives ``teardown --wipe`` (it is not inside the cluster's directory). When the members
    live on several hosts, the path must be a mount they share (``shared: true``).
    """

    type: Literal["fs"] = "fs"
    path: str | None = None
    shared: bool = False

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        if path is not None and not path.startswith("/"):
            raise ValueError(f"must be an absolute path (got {path!r})")
        return path.rstrip("/") if path else path


class S3RepositorySettings(_Model):
    """A pgBackRest repository in an S3 bucket; bucket, endpoint and keys live in an S3Repository block."""

    type: Literal["s3"]
    block: str = Field(description="name of an S3Repository block")
    path: str = Field("/dbtier", description="the repository's prefix inside the bucket")

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"must start with / (got {path!r}); e.g. /dbtier")
        return path.rstrip("/") or "/"


Repository = Annotated[FsRepository | S3RepositorySettings, Field(discriminator="type")]


class Retention(_Model):
    """What expire keeps: the newest ``full`` full backups (and enough older ones that any second of the
    last ``window_days`` can be restored), and the newest ``diff`` differentials."""

    full: int = Field(2, ge=1, le=9999999)
    diff: int = Field(7, ge=1, le=9999999)
    window_days: float = Field(7.0, ge=0)


class RestoreDrillSettings(_Model):
    """The weekly restore drill: a throwaway one-member copy, checked, then removed."""

    port_offset: int = Field(300, ge=1, le=30000, description="the throwaway copy's ports: the cluster's + this")
    check_query: str | None = Field(
        None, description="SQL run on the restored copy (in the app database); its first column must be true"
    )
    timeout_s: float = Field(900.0, gt=0, description="how long the restore may take to come up healthy")


def _default_repositories() -> list[Repository]:
    return [FsRepository()]


class BackupSettings(_Model):
    """pgBackRest: where backups go, how they are made and kept."""

    repositories: list[Repository] = Field(default_factory=lambda: _default_repositories(), min_length=1, max_length=4)
    cipher_block: str | None = Field(
        None, description="a Secret block holding the repository passphrase (created on first use); None: no encryption"
    )
    compress_type: Literal["zst", "gz", "lz4", "bz2", "none"] = "zst"
    process_max: int = Field(2, ge=1, le=64)
    archive_timeout_s: int = Field(60, ge=1, le=86400)
    archive_lag_limit_s: int = Field(300, ge=1, description="archive health fails when WAL waits longer than this")
    full_every_days: float = Field(7.0, gt=0, description="type 'auto' takes a full when the newest full is older")
    from_replica: bool = Field(False, description="copy the data files from a replica (backup-standby)")
    command_timeout_s: int = Field(6 * 3600, ge=60, description="a backup, verify or expire running longer is stopped")
    restore_timeout_s: int = Field(6 * 3600, ge=60, description="how long a restore may take to be promoted and healthy")
    retention: Retention = Retention()
    restore_drill: RestoreDrillSettings = RestoreDrillSettings()

    @model_validator(mode="after")
    def _one_fs(self) -> BackupSettings:
        kinds = [r.type for r in self.repositories]
        if kinds.count("fs") > 1:
            raise ValueError("repositories: at most one fs repository; the others must be s3")
        return self


class RestoreSource(_Model):
    """Set by the restore flow on the spec of the cluster it creates: bootstrap from this backup."""

    cluster: str = Field(description="the source cluster's name (its pgBackRest stanza)")
    config: str = Field(description="the pgBackRest config (on the target's hosts) that reads the source's repository")
    options: list[str] = Field(default_factory=list, description="pgBackRest restore options (--type, --target, --set)")
