"""A MongoDB point-in-time restore into a NEW replica set that bring-up has started empty (initiated, users made).

The runbook (:func:`restore_to_target`): read the source's dumps (every repository, :mod:`.backup`) and its members'
oplog archives (repository 1, :mod:`.archiving`); choose one archive (:func:`choose_archive`); plan the restore
(:func:`~dbtier.engines.mongodb.pitr.plan_restore`); on the new primary's host, as the database OS user, run
``mongorestore`` of the dump, then of the slices it needs, cut at the target (``--oplogLimit``, exclusive, so every
entry with ``ts <= target`` is in). The root password is only in a 0600 tool config file; every file the restore
fetched or wrote lives in one temporary directory under the target's cluster directory and is removed at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from bson import Timestamp

from dbtier.backup.repos import fs_repo_path
from dbtier.backup.settings import FsRepository
from dbtier.engines.mongodb import dump
from dbtier.engines.mongodb.archiver import INDEX, SliceStore, checked_name
from dbtier.engines.mongodb.archiving import ARCHIVER_USER, archive_location, repository
from dbtier.engines.mongodb.backup import DumpS3Client, S3Factory, _Repo, _records, _s3_errors, _tail, default_s3
from dbtier.engines.mongodb.config import MongoMember
from dbtier.engines.mongodb.oplog import SliceRecord, chain_problems, parse_index, replay_bytes, ts_when
from dbtier.engines.mongodb.pitr import FIELD, PitrPlan, describe, parse_target, plan_restore
from dbtier.errors import BackupError, CommandFailed, RestoreError
from dbtier.providers.base import Provider, Runner
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec

if TYPE_CHECKING:
    from dbtier.backup.repos import BackupSecrets
    from dbtier.backup.s3 import S3Client

#: The file mongorestore --oplogReplay reads in the replay directory.
REPLAY_FILE = "oplog.bson"


@dataclass(frozen=True)
class HeldDump:
    """A dump of the source: its record, its repository, and the host holding it (an fs one; '' for S3)."""

    record: dump.DumpRecord
    repo: int
    host: str


@dataclass(frozen=True)
class Archive:
    """One member's oplog archive: its records (oldest first) and the store they are read from."""

    member: str
    records: list[SliceRecord]
    store: SliceStore


# -- pure choices ----------------------------------------------------------------------------------


def _length(records: list[SliceRecord]) -> tuple[int, Timestamp]:
    """Seconds from the first entry covered to the last (then the newest end)."""
    return records[-1].end.time - records[0].covers_after.time, records[-1].end


def choose_archive(archives: dict[str, list[SliceRecord]]) -> str | None:
    """The member whose archive to restore from: one whose chain has no gap nor overlap, the longest; when every
    archive has a problem, the longest of them (the plan refuses a target the problem spoils). None: all empty.

    >>> from bson import Timestamp as T
    >>> s = lambda a, b, after: SliceRecord(T(a, 1), T(b, 1), f"s{a}", 1, T(after, 1) if after else None)
    >>> choose_archive({"mongo0": [s(10, 20, None)], "mongo1": [s(5, 20, None), s(21, 30, 20)], "mongo2": []})
    'mongo1'
    >>> choose_archive({"mongo0": [s(10, 20, None)], "mongo1": [s(5, 20, None), s(25, 40, None)]})
    'mongo0'
    >>> choose_archive({"mongo0": []}) is None
    True
    """
    held = {name: records for name, records in archives.items() if records}
    clean = {name: records for name, records in held.items() if chain_problems(records) == ([], [])}
    pool = clean or held
    if not pool:
        return None
    return max(sorted(pool), key=lambda name: _length(pool[name]))


def pick_dumps(held: list[HeldDump]) -> dict[str, HeldDump]:
    """One copy per label: the lowest repository's (every repository holds whole dumps).

    >>> from bson import Timestamp as T
    >>> r = dump.DumpRecord("20261126-010203F", T(1, 1), T(2, 1))
    >>> pick_dumps([HeldDump(r, 2, ""), HeldDump(r, 1, "h")])["20261126-010203F"].repo
    1
    """
    chosen: dict[str, HeldDump] = {}
    for copy in sorted(held, key=lambda h: h.repo):
        chosen.setdefault(copy.record.label, copy)
    return chosen


def window_text(dumps: list[dump.DumpRecord], records: list[SliceRecord]) -> str:
    """The restorable window in words: the oldest dump's end up to the newest archived entry.

    >>> from bson import Timestamp as T
    >>> window_text([], [])
    'nothing is restorable (no dump)'
    >>> window_text([dump.DumpRecord("20261126-010203F", T(1764118923, 1), T(1764118925, 2))], [])[:40]
    'dump:20261126-010203F only (no oplog arc'
    """
    if not dumps:
        return "nothing is restorable (no dump)"
    oldest = min(dumps, key=lambda d: d.oplog_end)
    if not records:
        return f"dump:{oldest.label} only (no oplog archived)" if len(dumps) == 1 else \
            "dump:LABEL only (no oplog archived): " + ", ".join(sorted(d.label for d in dumps))
    return f"restorable from {ts_when(oldest.oplog_end)} to {ts_when(records[-1].end)}"


def plan(target_text: str, dumps: list[dump.DumpRecord], records: list[SliceRecord]) -> PitrPlan:
    """:func:`~dbtier.engines.mongodb.pitr.plan_restore` with its refusals naming ``--target`` and the window."""
    try:
        return plan_restore(parse_target(target_text), dumps, records)
    except RestoreError as err:
        reason = str(err).removeprefix("target: ")
        raise RestoreError(f"{FIELD}: {reason} ({window_text(dumps, records)})") from None


# -- the stores the source is read from ------------------------------------------------------------


class RunnerStore:
    """A member's archive in an fs repository, read through the runner of the host that holds it."""

    def __init__(self, runner: Runner, path: str) -> None:
        self.runner, self.path = runner, path if path.endswith("/") else f"{path}/"

    def names(self) -> list[str]:
        return sorted(n for n in self.runner.list_dir(self.path) or [] if not n.startswith("."))

    def read_index(self) -> str | None:
        raw = self.runner.read_file(f"{self.path}{INDEX}")
        return None if raw is None else raw.decode("utf-8")

    def read_slice(self, name: str) -> bytes:
        raw = self.runner.read_file(f"{self.path}{checked_name(name)}")
        if raw is None:
            raise BackupError(f"oplog archive {self.runner.host}:{self.path}: slice {name} is missing")
        return raw

    def write_slice(self, name: str, data: bytes) -> None:
        raise BackupError("a restore never writes the source's archive")

    def write_index(self, text: str) -> None:
        raise BackupError("a restore never writes the source's archive")


def source_archives(provider: Provider, source: ClusterSpec, secrets: BackupSecrets, *,
                    s3: S3Factory = default_s3) -> dict[str, Archive]:
    """Each source member's archive in repository 1 (an fs one on the member's host), by member name."""
    from dbtier.engines.mongodb.engine import members
    from dbtier.engines.mongodb.s3store import S3Store

    settings, found = repository(source, 1), {}
    for m in members(source):
        store: SliceStore
        if isinstance(settings, FsRepository):
            where = archive_location(fs_repo_path(source, settings), False, source.name, m.name)
            store = RunnerStore(provider.runner(source, m.host), where)
        else:
            target = secrets.s3.get(1)
            if target is None:
                raise RestoreError("backup.repositories.0: an s3 repository without its S3Target; load the "
                                   "source's S3Repository block (blocks.backup.load_backup_secrets)")
            client = cast("S3Client", s3(target))
            store = S3Store(client, target.bucket, archive_location(settings.path, True, source.name, m.name))
        text = store.read_index()
        found[m.name] = Archive(m.name, [] if text is None else parse_index(text), store)
    return found


def source_dumps(provider: Provider, source: ClusterSpec, secrets: BackupSecrets, *,
                 s3: S3Factory = default_s3) -> dict[str, HeldDump]:
    """The source's dumps of every repository, one copy per label (:func:`pick_dumps`)."""
    held = [HeldDump(record, n, host) for n in range(1, len(source.backup.repositories) + 1)
            for host, record in _records(provider, source, _Repo(source, n, secrets), s3).values()]
    return pick_dumps(held)


# -- before the restore: its checks, and the source's archive caught up ---------------------------


def check_target(provider: Provider, source: ClusterSpec, target_text: str, secrets: BackupSecrets, *,
                 s3: S3Factory = default_s3) -> tuple[str, str]:
    """(the target in words, what serves it): the plan :func:`restore_to_target` would follow now, or its one-line
    RestoreError naming ``target``. Reads the source's dumps and archives; writes nothing."""
    wanted = parse_target(target_text)  # a typo is refused before any repository is read
    dumps = source_dumps(provider, source, secrets, s3=s3)
    archives = source_archives(provider, source, secrets, s3=s3)
    chosen = choose_archive({name: a.records for name, a in archives.items()})
    pitr = plan(target_text, [d.record for d in dumps.values()], archives[chosen].records if chosen else [])
    served = f"{pitr.sentence}, from repo{dumps[pitr.dump.label].repo}"
    return describe(wanted), served + (f" and {chosen}'s oplog archive" if pitr.slices else "")


def wait_archived(provider: Provider, source: ClusterSpec, secrets: BackupSecrets, newest: Timestamp, timeout: float,
                  *, s3: S3Factory = default_s3, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> str:
    """Wait until some member's archive holds ``newest`` (the primary's newest oplog entry when the restore began):
    then 'latest' restores everything committed before the restore started. BackupError after ``timeout``."""
    deadline, reached = clock() + timeout, None
    while True:
        ends = {name: a.records[-1].end for name, a in source_archives(provider, source, secrets, s3=s3).items()
                if a.records}
        reached = max(ends.values(), default=None)
        if reached is not None and reached >= newest:
            member = max(ends, key=lambda name: ends[name])
            return (f"oplog of {source.name} archived up to {ts_when(newest)}, its newest entry when the restore "
                    f"began ({member}'s archive)")
        if clock() >= deadline:
            upto = ts_when(reached) if reached is not None else "nothing yet"
            raise BackupError(f"oplog archive of {source.name}: reaches {upto}, not the primary's newest entry "
                              f"({ts_when(newest)}), after {timeout:.0f} s; check its archivers run "
                              "(python -m flows.archive_health)")
        sleep(1.0)


# -- the runbook -----------------------------------------------------------------------------------


def restore_to_target(provider: Provider, target_spec: ClusterSpec, source_spec: ClusterSpec, target_text: str,
                      secrets: BackupSecrets, passwords: Passwords, *, primary: MongoMember | None = None,
                      s3: S3Factory = default_s3, work_name: str = "restore") -> list[str]:
    """Restore ``source_spec``'s backup to ``target_text`` into the running, empty ``target_spec``.

    ``secrets``: the source's repositories'; ``passwords``: the target's (root's is ``superuser``); ``primary``:
    the new set's primary (found by asking the set when None). Returns the sentences of what was done."""
    from dbtier.engines.mongodb.engine import members, mongo_settings

    dumps = source_dumps(provider, source_spec, secrets, s3=s3)
    archives = source_archives(provider, source_spec, secrets, s3=s3)
    chosen = choose_archive({name: a.records for name, a in archives.items()})
    archive = archives[chosen] if chosen else None
    pitr = plan(target_text, [d.record for d in dumps.values()], archive.records if archive else [])
    primary = primary or find_primary(target_spec, passwords)
    runner = provider.runner(target_spec, primary.host)
    work = f"{target_spec.cluster_dir}/{work_name}-{pitr.dump.label}"
    settings = mongo_settings(target_spec)
    uri = dump.tool_uri(members(target_spec), settings, ARCHIVER_USER,
                        primary.tls_ca if target_spec.tls.enabled else None)
    binary, timeout = target_spec.mongo.binaries.mongorestore, target_spec.backup.restore_timeout_s
    runner.make_dirs(work, 0o700)
    try:
        config = f"{work}/tool.yaml"
        dump.write_tool_config(runner, config, passwords.superuser)
        held = dumps[pitr.dump.label]
        path = _fetch_dump(provider, source_spec, secrets, held, runner, work, s3)
        _mongorestore(runner, primary, dump.restore_dump_argv(binary, uri, config, path,
                                                              replay_own_oplog=not pitr.slices), timeout)
        said = [f"{primary.name}: dump {pitr.dump.label} restored from repo{held.repo}"]
        if pitr.slices and archive is not None:
            data = replay_bytes((archive.store.read_slice(n) for n in pitr.slices), pitr.replay_after, pitr.limit)
            runner.make_dirs(f"{work}/oplog", 0o700)
            runner.write_file(f"{work}/oplog/{REPLAY_FILE}", data, 0o600)
            _mongorestore(runner, primary, dump.replay_argv(binary, uri, config, f"{work}/oplog", pitr.limit), timeout)
            said.append(f"{primary.name}: {len(pitr.slices)} oplog slice(s) of {archive.member}'s archive replayed "
                        f"to {target_text} ({pitr.sentence})")
        else:
            said.append(f"{primary.name}: 0 oplog slices replayed: {target_text} is {pitr.sentence}")
    finally:
        runner.remove_tree(work)
    return [*said, f"restore of {source_spec.name} into {target_spec.name} at {target_text}: temporary files removed"]


def _fetch_dump(provider: Provider, source: ClusterSpec, secrets: BackupSecrets, held: HeldDump, runner: Runner,
                work: str, s3: S3Factory) -> str:
    """The dump archive's path on the primary's host: the fs repository's own file when it is there, else a copy
    in ``work`` (from the host holding it, or downloaded from S3)."""
    repo = _Repo(source, held.repo, secrets)
    where = f"{dump.dump_dir(repo.root, source.name, held.record.label)}{dump.ARCHIVE}"
    if repo.target is None and held.host == runner.host:
        return where
    copy = f"{work}/{dump.ARCHIVE}"
    if repo.target is None:
        data = provider.runner(source, held.host).read_file(where)
        if data is None:
            raise RestoreError(f"repo{held.repo}: dump {held.record.label}'s archive {held.host}:{where} is missing; "
                               "pick another target")
    else:
        client: DumpS3Client = s3(repo.target)
        with _s3_errors(repo.target.bucket, f"downloading {where}"):
            data = client.get_object(Bucket=repo.target.bucket, Key=where)["Body"].read()
    runner.write_file(copy, data, 0o600)
    return copy


def _mongorestore(runner: Runner, member: MongoMember, argv: list[str], timeout: float) -> None:
    try:
        runner.run(argv, timeout=timeout)
    except CommandFailed as err:
        raise RestoreError(f"{member.label}: mongorestore exited {err.rc}: {_tail(err)}; see its output on "
                           f"{member.host}, check binaries.mongorestore and that root can write the set") from None


def find_primary(spec: ClusterSpec, passwords: Passwords) -> MongoMember:
    """The new set's primary, as ``replSetGetStatus`` names it (member 0 when none is named)."""
    from dbtier.engines.mongodb import steps
    from dbtier.engines.mongodb.engine import client_factory, members

    name = steps.cluster_status(members(spec), client_factory(spec), passwords.superuser,
                                spec.mongo.max_lag_s).health.leader
    return next((m for m in members(spec) if m.name == name), members(spec)[0])
