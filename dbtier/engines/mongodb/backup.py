"""MongoDB's backups: one ``mongodump --oplog`` per repository, its record beside it (runner and stores in).

The dump runs on the primary's host as the database OS user, the root password in a 0600 tool config
(:func:`~dbtier.engines.mongodb.dump.write_tool_config`), never on argv. An fs repository receives the archive
in its ``mongodump/<cluster>/<label>/`` directly; for an S3 one the archive goes to a temporary file under the
cluster's directory, is uploaded, and removed. The oplog's newest entry before and after the dump bound what
the dump holds (its :class:`~dbtier.engines.mongodb.dump.DumpRecord`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from bson import Timestamp

from dbtier.backup.catalog import BackupRecord, Catalog
from dbtier.backup.repos import S3Target, fs_repo_path
from dbtier.backup.settings import FsRepository
from dbtier.engines.mongodb import dump
from dbtier.engines.mongodb.archiving import ARCHIVER_USER, repository
from dbtier.engines.mongodb.config import MongoMember, MongoSettings
from dbtier.engines.mongodb.oplog import ts_text
from dbtier.errors import BackupError, CommandFailed
from dbtier.providers.base import Provider, Runner
from dbtier.spec import ClusterSpec

if TYPE_CHECKING:
    from dbtier.backup.repos import BackupSecrets


class DumpS3Client(Protocol):
    """The calls of a boto3 S3 client the dumps need."""

    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_paginator(self, operation_name: str) -> Any: ...

    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def head_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def delete_objects(self, **kwargs: Any) -> dict[str, Any]: ...


#: Builds the S3 client of a repository's target (a test hands in moto's).
S3Factory = Callable[[S3Target], DumpS3Client]


def default_s3(target: S3Target) -> DumpS3Client:
    from dbtier.engines.mongodb.s3store import s3_client

    verify: bool | str = target.ca_file or target.verify_tls
    return s3_client(  # type: ignore[return-value]  # a boto3 client has every call of DumpS3Client
        f"https://{target.endpoint}:{target.port}", target.region, target.access_key_id,
                     target.secret_access_key, verify=verify, path_style=target.uri_style == "path")


def record_of(dumped: dump.DumpRecord, repo: int) -> BackupRecord:
    """A dump as the catalog's record: a full, from its first to its last oplog entry.

    >>> r = record_of(dump.DumpRecord("20261126-010203F", Timestamp(1764118923, 1), Timestamp(1764118930, 4), 9), 2)
    >>> r.kind, r.repo, r.duration_s, r.size, r.wal_start, r.wal_stop
    ('full', 2, 7.0, 9, '1764118923:1', '1764118930:4')
    """
    return BackupRecord(label=dumped.label, kind="full", repo=repo,
                        start=datetime.fromtimestamp(dumped.oplog_start.time, tz=timezone.utc),
                        stop=datetime.fromtimestamp(dumped.oplog_end.time, tz=timezone.utc),
                        size=dumped.size, repo_size=dumped.size, wal_start=ts_text(dumped.oplog_start),
                        wal_stop=ts_text(dumped.oplog_end))


class _Repo:
    """Repository ``n`` of the spec: its root (fs path with a slash, or S3 key prefix) and its S3 target."""

    def __init__(self, spec: ClusterSpec, n: int, secrets: BackupSecrets) -> None:
        settings = repository(spec, n)
        self.n, self.fs = n, isinstance(settings, FsRepository)
        if isinstance(settings, FsRepository):
            self.root, self.target = dump.repo_root(fs_repo_path(spec, settings), False), None
        else:
            self.root, self.target = dump.repo_root(settings.path, True), secrets.s3.get(n)
            if self.target is None:
                raise BackupError(f"backup.repositories.{n - 1}: an s3 repository without its S3Target; load its "
                                  "S3Repository block (blocks.backup.load_backup_secrets)")

    def cluster_dir(self, spec: ClusterSpec) -> str:
        return f"{self.root}mongodump/{spec.name}/"


@contextmanager
def _s3_errors(bucket: str, doing: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "?")
        raise BackupError(f"S3 bucket {bucket}: {doing} failed ({code}); check the bucket exists and the "
                          "S3Repository block's keys may read and write it") from None
    except BotoCoreError as err:
        raise BackupError(f"S3 bucket {bucket}: {doing} failed ({type(err).__name__}); check the block's "
                          "endpoint answers from here") from None


def _tail(err: CommandFailed) -> str:
    lines = (err.err or err.out).strip().splitlines()
    return " ".join(lines[-1].split())[:200] if lines else f"exit {err.rc}"


def take(provider: Provider, spec: ClusterSpec, n: int, secrets: BackupSecrets, root_password: str,
         primary: MongoMember, newest_oplog: Callable[[], Timestamp], *, s3: S3Factory = default_s3,
         now: datetime | None = None) -> str:
    """One ``mongodump --oplog --gzip --archive`` of the set from ``primary``'s host into repository ``n``."""
    repo, runner = _Repo(spec, n, secrets), provider.runner(spec, primary.host)
    label = dump.dump_label(now or datetime.now(timezone.utc))
    where = dump.dump_dir(repo.root, spec.name, label)
    work = f"{spec.cluster_dir}/backup-{label}"
    runner.make_dirs(work, 0o700)
    archive = f"{where}{dump.ARCHIVE}" if repo.fs else f"{work}/{dump.ARCHIVE}"
    if repo.fs:
        runner.make_dirs(where, 0o750)
    config = f"{work}/tool.yaml"
    try:
        dump.write_tool_config(runner, config, root_password)
        uri = dump.tool_uri([primary], _settings(spec), ARCHIVER_USER, primary.tls_ca if spec.tls.enabled else None)
        start = newest_oplog()
        try:
            runner.run(dump.dump_argv(spec.mongo.binaries.mongodump, uri, config, archive),
                       timeout=spec.backup.command_timeout_s)
        except CommandFailed as err:
            if repo.fs:
                runner.remove_tree(where.rstrip("/"))  # no half dump left beside the whole ones
            raise BackupError(f"{primary.label}: mongodump exited {err.rc}: {_tail(err)}; check binaries.mongodump "
                              f"and that root can read the set") from None
        end = newest_oplog()
        size = _size(runner, archive, primary)
        record = dump.DumpRecord(label, start, end, size).to_json().encode()
        if repo.fs:
            runner.write_file(f"{where}{dump.RECORD}", record, 0o640)
        else:
            _upload(runner, repo, s3, archive, where, record)
    finally:
        runner.remove_tree(work)
    return f"full dump {label} into repo{n} from {primary.name} ({size} bytes, oplog {ts_text(start)} .. {ts_text(end)})"


def _settings(spec: ClusterSpec) -> MongoSettings:
    from dbtier.engines.mongodb.engine import mongo_settings

    return mongo_settings(spec)


def _size(runner: Runner, path: str, member: MongoMember) -> int:
    done = runner.run(["stat", "-c", "%s", path], check=False)
    try:
        return int(done.out.strip())
    except ValueError:
        raise BackupError(f"{member.label}: mongodump left no archive at {path}; see its output") from None


def _upload(runner: Runner, repo: _Repo, s3: S3Factory, archive: str, where: str, record: bytes) -> None:
    assert repo.target is not None
    data = runner.read_file(archive)
    if data is None:
        raise BackupError(f"{runner.host}: mongodump left no archive at {archive}; see its output")
    client = s3(repo.target)
    with _s3_errors(repo.target.bucket, f"uploading {where}{dump.ARCHIVE}"):
        client.put_object(Bucket=repo.target.bucket, Key=f"{where}{dump.ARCHIVE}", Body=data)
        client.put_object(Bucket=repo.target.bucket, Key=f"{where}{dump.RECORD}", Body=record)


def _hosts(spec: ClusterSpec) -> list[str]:
    from dbtier.engines.mongodb.engine import members

    return sorted({m.host for m in members(spec)})


def _records(provider: Provider, spec: ClusterSpec, repo: _Repo, s3: S3Factory) -> dict[str, tuple[str, dump.DumpRecord]]:
    """label -> (host, or '' for S3; its record) of every dump in the repository."""
    found: dict[str, tuple[str, dump.DumpRecord]] = {}
    if repo.target is not None:
        client, bucket = s3(repo.target), repo.target.bucket
        with _s3_errors(bucket, f"listing {repo.cluster_dir(spec)}"):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=repo.cluster_dir(spec))
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
            for key in keys:
                label = dump.label_of_name(key, repo.root, spec.name)
                if label and key.endswith(f"/{dump.RECORD}"):
                    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                    found[label] = ("", dump.DumpRecord.from_json(body.decode()))
        return found
    for host in _hosts(spec):
        runner = provider.runner(spec, host)
        for label in runner.list_dir(repo.cluster_dir(spec)) or []:
            raw = runner.read_file(f"{dump.dump_dir(repo.root, spec.name, label)}{dump.RECORD}")
            if raw is not None:
                found.setdefault(label, (host, dump.DumpRecord.from_json(raw.decode())))
    return found


def catalog(provider: Provider, spec: ClusterSpec, secrets: BackupSecrets, *, s3: S3Factory = default_s3) -> Catalog:
    """Every dump of every repository as the catalog's full backups, oldest first."""
    records = [record_of(r, n) for n in range(1, len(spec.backup.repositories) + 1)
               for _, r in _records(provider, spec, _Repo(spec, n, secrets), s3).values()]
    records.sort(key=lambda b: (b.stop, b.label))
    status = "ok" if records else "no valid backups"
    return Catalog(spec.name, tuple(records), records[0].wal_start if records else None,
                   records[-1].wal_stop if records else None, status)


def verify(provider: Provider, spec: ClusterSpec, n: int, secrets: BackupSecrets, *, s3: S3Factory = default_s3) -> str:
    """Each dump's archive is there with its recorded size (and, in an fs repository, ``gzip -t`` reads it)."""
    repo = _Repo(spec, n, secrets)
    records = _records(provider, spec, repo, s3)
    for label, (host, record) in sorted(records.items()):
        key = f"{dump.dump_dir(repo.root, spec.name, label)}{dump.ARCHIVE}"
        if repo.target is not None:
            with _s3_errors(repo.target.bucket, f"reading {key}"):
                size = int(s3(repo.target).head_object(Bucket=repo.target.bucket, Key=key)["ContentLength"])
        else:
            runner = provider.runner(spec, host)
            done = runner.run(["stat", "-c", "%s", key], check=False)
            size = int(done.out.strip()) if done.rc == 0 and done.out.strip().isdigit() else -1
            if size == record.size and runner.run(["gzip", "-t", key], check=False).rc != 0:
                raise BackupError(f"repo{n}: {host}:{key} is not a whole gzip file; take a new dump")
        if size < 0:
            raise BackupError(f"repo{n}: dump {label}'s archive {key} is missing on {host}; take a new dump and "
                              "expire this one")
        if size != record.size:
            raise BackupError(f"repo{n}: dump {label}'s archive is {size} bytes, its record says {record.size}; "
                              "take a new dump and expire this one")
    return f"repo{n} verified: {len(records)} dump(s) whole, sizes as recorded"


def expire(provider: Provider, spec: ClusterSpec, n: int, keep_full: int, secrets: BackupSecrets, *,
           s3: S3Factory = default_s3) -> list[str]:
    """Remove all but the newest ``keep_full`` dumps of repository ``n``; the labels removed."""
    repo = _Repo(spec, n, secrets)
    records = _records(provider, spec, repo, s3)
    gone = dump.dumps_to_expire(list(records), keep_full)
    for label in gone:
        where = dump.dump_dir(repo.root, spec.name, label)
        if repo.target is not None:
            client, bucket = s3(repo.target), repo.target.bucket
            with _s3_errors(bucket, f"deleting {where}"):
                objects = [{"Key": f"{where}{name}"} for name in (dump.ARCHIVE, dump.RECORD)]
                client.delete_objects(Bucket=bucket, Delete={"Objects": objects})
        else:
            for host in _hosts(spec):
                provider.runner(spec, host).remove_tree(where.rstrip("/"))
    return gone


def drop(provider: Provider, spec: ClusterSpec, secrets: BackupSecrets, *, s3: S3Factory = default_s3) -> str:
    """Delete the cluster's dumps and oplog archive from every repository (fs: on every member host; S3: every key
    under its two prefixes). Nothing of another cluster is touched."""
    removed = []
    for n in range(1, len(spec.backup.repositories) + 1):
        repo = _Repo(spec, n, secrets)
        prefixes = [repo.cluster_dir(spec), dump.oplog_dir(repo.root, spec.name)]
        if repo.target is None:
            for host in _hosts(spec):
                runner = provider.runner(spec, host)
                for where in prefixes:
                    runner.remove_tree(where.rstrip("/"))
            removed.append(f"repo{n}")
            continue
        client, bucket, count = s3(repo.target), repo.target.bucket, 0
        for prefix in prefixes:
            with _s3_errors(bucket, f"deleting {prefix}"):
                pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
                for i in range(0, len(keys), 1000):  # S3's most per DeleteObjects call
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000]})
                count += len(keys)
        removed.append(f"repo{n} ({count} object(s))")
    return (f"dumps and oplog archive of {spec.name} deleted from {', '.join(removed)}: its backups are gone")


def clusters_held(provider: Provider, spec: ClusterSpec, secrets: BackupSecrets, *,
                  s3: S3Factory = default_s3) -> list[str]:
    """Every cluster whose dumps or oplog archive the spec's repositories hold, sorted (fs: on every member host;
    S3: the names under its two prefixes). Reads only."""
    names: set[str] = set()
    for n in range(1, len(spec.backup.repositories) + 1):
        repo = _Repo(spec, n, secrets)
        tops = [f"{repo.root}mongodump/", f"{repo.root}oplog/"]
        if repo.target is None:
            for host in _hosts(spec):
                runner = provider.runner(spec, host)
                for top in tops:
                    names.update(name for name in runner.list_dir(top.rstrip("/")) or []
                                 if runner.list_dir(f"{top}{name}"))
            continue
        client, bucket = s3(repo.target), repo.target.bucket
        for top in tops:
            with _s3_errors(bucket, f"listing {top}"):
                pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=top, Delimiter="/")
                names.update(str(p["Prefix"])[len(top):].rstrip("/") for page in pages
                             for p in page.get("CommonPrefixes", []))
    return sorted(names)
