"""pgBackRest operations on a running cluster: runner in, sentence or record out (no Prefect here).

Commands run as the cluster's OS user on the host of the member they act on, through the
provider's runner, so they work the same on every provider.
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from dbtier.engines.postgres import pgbackrest
from dbtier.engines.postgres.wal_archive import WAL_RE, ArchiverStats
from dbtier.backup.catalog import Catalog, parse_info
from dbtier.backup.restore import source_config_path
from dbtier.backup.repos import BackupSecrets
from dbtier.backup.settings import FsRepository
from dbtier.engines.postgres.pg_roles import MONITORING_USER
from dbtier.engines.postgres.engine import connect, fetch_cluster
from dbtier.errors import BackupError, PreflightError, RestoreFailed
from dbtier.procs import Service
from dbtier.providers.base import Completed, Provider, Runner
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.patroni_health import role_holder
from dbtier.engines.postgres.topology import PgMember, conninfo, pg_member, pg_members


def hosts_with_members(spec: ClusterSpec) -> dict[str, PgMember]:
    """Each member host and the first member on it (the stanza's default pg1 there)."""
    chosen: dict[str, PgMember] = {}
    for member in pg_members(spec):
        chosen.setdefault(member.host, member)
    return chosen


def write_configs(
    provider: Provider,
    spec: ClusterSpec,
    secrets: BackupSecrets,
    superuser_password: str,
    *,
    source: ClusterSpec | None = None,
    source_secrets: BackupSecrets | None = None,
) -> list[str]:
    """Write pgbackrest.conf and its pgpass on every member host; create fs repositories.

    With ``source``, also write the source cluster's config (``source.conf``) that the restore reads.
    """
    sentences = []
    for host, member in hosts_with_members(spec).items():
        runner = provider.runner(spec, host)
        for path in (spec.backup_dir, *(f"{spec.backup_dir}/{sub}" for sub in ("log", "lock", "spool"))):
            runner.make_dirs(path, 0o700)
        for repo in spec.backup.repositories:
            if isinstance(repo, FsRepository):
                runner.make_dirs(pgbackrest.fs_repo_path(spec, repo), 0o750)
        runner.write_file(pgbackrest.config_path(spec), pgbackrest.render_config(spec, member, secrets.s3, secrets.cipher_pass).encode())
        runner.write_file(pgbackrest.pgpass_path(spec), (pgbackrest.pgpass_line(superuser_password) + "\n").encode())
        if source is not None:
            theirs = source_secrets or secrets
            text = pgbackrest.render_config(source, member, theirs.s3, theirs.cipher_pass, home=spec.backup_dir)
            runner.write_file(source_config_path(spec), text.encode())
        repos = ", ".join(_repo_name(spec, n) for n in range(1, len(spec.backup.repositories) + 1))
        sentences.append(f"{host}: pgBackRest stanza {spec.name} configured ({repos})")
    return sentences


def configured(provider: Provider, spec: ClusterSpec) -> bool:
    """True when every member host has the cluster's pgbackrest.conf."""
    return all(provider.runner(spec, h).read_file(pgbackrest.config_path(spec)) is not None for h in hosts_with_members(spec))


def _repo_name(spec: ClusterSpec, n: int) -> str:
    repo = spec.backup.repositories[n - 1]
    if isinstance(repo, FsRepository):
        return f"repo{n} fs {pgbackrest.fs_repo_path(spec, repo)}"
    return f"repo{n} s3 block {repo.block} {repo.path}"


def leader(spec: ClusterSpec) -> PgMember:
    """The member Patroni names leader; a BackupError when there is none."""
    name = role_holder(fetch_cluster(spec), "leader")
    if name is None:
        raise BackupError(f"cluster {spec.name}: no leader answers; check it with 'dbtier status'")
    return pg_member(spec, name)


def streaming_replica(spec: ClusterSpec, primary: PgMember) -> PgMember:
    """A streaming replica on the primary's host (pgBackRest reaches both locally)."""
    doc = fetch_cluster(spec) or {}
    streaming = {m["name"] for m in doc.get("members", []) if m.get("state") == "streaming"}
    for member in pg_members(spec):
        if member.name in streaming and member.host == primary.host:
            return member
    raise BackupError(
        f"backup.from_replica: no streaming replica shares {primary.host} with the primary; "
        "set from_replica: false or wait for the replicas to stream"
    )


def run(provider: Provider, spec: ClusterSpec, member: PgMember, argv: list[str], timeout: float | None = None) -> Completed:
    """Run a pgBackRest command on ``member``'s host; it connects with the cluster's pgpass."""
    runner = provider.runner(spec, member.host)
    limit = spec.backup.command_timeout_s if timeout is None else timeout
    return runner.run(argv, env={"PGPASSFILE": pgbackrest.pgpass_path(spec)}, timeout=limit)


def create_stanza(provider: Provider, spec: ClusterSpec) -> str:
    """``stanza-create`` (idempotent) then ``check``: archiving reaches every repository."""
    primary = leader(spec)
    run(provider, spec, primary, pgbackrest.command_argv(spec, primary, "stanza-create"))
    run(provider, spec, primary, pgbackrest.command_argv(spec, primary, "check"))
    return f"stanza {spec.name} ready on {len(spec.backup.repositories)} repositor(y/ies); check passed from {primary.name}"


def check(provider: Provider, spec: ClusterSpec) -> str:
    """``pgbackrest check``: forces a WAL switch and waits until it is archived in every repository."""
    primary = leader(spec)
    run(provider, spec, primary, pgbackrest.command_argv(spec, primary, "check"))
    return f"pgbackrest check passed on {primary.name}: a fresh WAL file reached every repository"


def catalog(provider: Provider, spec: ClusterSpec, member: PgMember | None = None) -> Catalog:
    """Every backup of the cluster's stanza, in every repository."""
    where = member or pg_members(spec)[0]
    done = run(provider, spec, where, pgbackrest.command_argv(spec, None, "info", "--output=json"), timeout=300)
    try:
        doc = json.loads(done.out)
    except ValueError:
        raise BackupError(f"pgbackrest info gave no JSON for stanza {spec.name}") from None
    return parse_info(doc, spec.name)


@contextmanager
def temp_config(provider: Provider, host_spec: ClusterSpec, spec: ClusterSpec, secrets: BackupSecrets) -> Iterator[tuple[Runner, str]]:
    """A pgBackRest config for ``spec``'s repositories and stanza, on ``host_spec``'s first host, removed after."""
    host, member = next(iter(hosts_with_members(host_spec).items()))
    runner = provider.runner(host_spec, host)
    tmp = f"/tmp/dbtier-pgbackrest-{spec.name}-{uuid.uuid4().hex[:8]}"
    for path in (tmp, f"{tmp}/log", f"{tmp}/lock", f"{tmp}/spool"):
        runner.make_dirs(path, 0o700)
    try:
        conf = f"{tmp}/pgbackrest.conf"
        runner.write_file(conf, pgbackrest.render_config(spec, member, secrets.s3, secrets.cipher_pass, home=tmp).encode())
        yield runner, conf
    finally:
        runner.remove_tree(tmp)


def read_source_catalog(provider: Provider, target: ClusterSpec, source: ClusterSpec, secrets: BackupSecrets) -> Catalog:
    """The source's catalog, read from the target's first host through a temporary config (left nowhere)."""
    with temp_config(provider, target, source, secrets) as (runner, conf):
        done = runner.run([*pgbackrest.base_argv(source.pg.binaries.pgbackrest, conf, source.name),
                           "--output=json", "info"],
                          timeout=300)
    try:
        return parse_info(json.loads(done.out), source.name)
    except ValueError:
        raise BackupError(f"pgbackrest info gave no JSON for stanza {source.name}") from None


def last_archived_transaction(provider: Provider, target: ClusterSpec, source: ClusterSpec, secrets: BackupSecrets,
                              repo: int, newest: str, oldest: str | None) -> datetime | None:
    """The time of the last commit or abort in ``source``'s archive in repository ``repo``, read back from its
    newest segment (at most :data:`walscan.MAX_SEGMENTS` of them, down to ``oldest``, the base backup's first WAL),
    on the target's first host: ``pgbackrest repo-ls`` / ``repo-get`` (which decrypts; the segment is then
    decompressed) into a temporary directory, then ``pg_waldump --rmgr=Transaction``. It needs no data
    directory, so it works for a source that is gone. None when no segment since the backup holds a transaction.
    """
    from dbtier.engines.postgres import walscan

    with temp_config(provider, target, source, secrets) as (runner, conf):
        argv = [*pgbackrest.base_argv(source.pg.binaries.pgbackrest, conf, source.name), f"--repo={repo}"]
        archive = f"archive/{source.name}"
        found_id = walscan.archive_id(_repo_names(runner, argv, archive))
        if found_id is None:
            return None
        work = conf.rsplit("/", 1)[0]
        for names in walscan.segments_back(newest, oldest):
            for name in names:
                directory = f"{archive}/{found_id}/{name[:16]}"
                stored = walscan.stored_segment(_repo_names(runner, argv, directory, f"^{name}"), name)
                if stored is None:
                    continue  # not on this timeline: try the one below
                file, decompress = stored
                script = f"{shlex.join([*argv, 'repo-get', f'{directory}/{file}'])} | {shlex.join(decompress)} > {shlex.quote(f'{work}/{name}')}"
                runner.run(["sh", "-c", script], timeout=120)
                dump = runner.run([f"{source.pg.binaries.pg_bin_dir}/pg_waldump", "--rmgr=Transaction",
                                   f"{work}/{name}"],
                                  env={"TZ": "UTC"}, check=False, timeout=60)
                runner.run(["rm", "-f", f"{work}/{name}"], check=False)
                found = walscan.last_transaction(dump.out)
                if found is not None:
                    return found
                break  # this segment holds no transaction: read the one before it
    return None


def _repo_names(runner: Runner, argv: list[str], path: str, pattern: str | None = None) -> list[str]:
    """The names ``pgbackrest repo-ls`` lists under a repository path (none when it does not exist)."""
    extra = [f"--filter={pattern}"] if pattern else []
    done = runner.run([*argv, "--output=json", *extra, "repo-ls", path], check=False, timeout=120)
    try:
        listing = json.loads(done.out or "{}")
    except ValueError:
        return []
    return [name for name in listing if name != "."] if isinstance(listing, dict) else []


def first_unarchived_transaction(provider: Provider, spec: ClusterSpec, archived_max: str | None) -> tuple[str, datetime] | None:
    """The member whose own ``pg_wal`` (the cluster is stopped) holds the earliest transaction past the archive's
    newest segment, and that transaction's time; None when every committed transaction reached the archive."""
    from dbtier.engines.postgres import walscan

    found: list[tuple[datetime, str]] = []
    for member in pg_members(spec):
        runner = provider.runner(spec, member.host)
        wal_dir = f"{member.data_dir}/pg_wal"
        for name in walscan.unarchived_segments(runner.list_dir(wal_dir) or [], archived_max):
            dump = runner.run([f"{spec.pg.binaries.pg_bin_dir}/pg_waldump", "--rmgr=Transaction", f"{wal_dir}/{name}"],
                              env={"TZ": "UTC"}, check=False, timeout=60)
            first = walscan.first_transaction(dump.out)
            if first is not None:
                found.append((first, member.name))
                break
    if not found:
        return None
    when, name = min(found)
    return name, when


def refuse_earlier_stanza(provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
    """A new cluster must not inherit the stanza of an earlier cluster of the same name (pgBackRest would
    refuse its WAL: another system identifier); say how to restore it or drop it instead."""
    catalog = read_source_catalog(provider, spec, spec, secrets)
    if not catalog.backups and catalog.wal_max is None:
        return f"stanza {spec.name}: new in every repository"
    raise PreflightError(
        f"backup: the repositories already hold stanza {spec.name} of an earlier cluster of that name "
        f"({len(catalog.backups)} backup(s), WAL up to {catalog.wal_max}); restore it "
        "(python -m flows.restore --in-place) or drop it (python -m flows.teardown --wipe --drop-backups)"
    )


def drop_stanza(provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
    """Delete the cluster's stanza (its backups and WAL) from every repository. Its PostgreSQL must be stopped."""
    with temp_config(provider, spec, spec, secrets) as (runner, conf):
        argv = pgbackrest.base_argv(spec.pg.binaries.pgbackrest, conf, spec.name)
        runner.run([*argv, "stop"], timeout=120)
        for n in range(1, len(spec.backup.repositories) + 1):
            runner.run([*argv, f"--repo={n}", "--force", "stanza-delete"], timeout=spec.backup.command_timeout_s)
    return f"stanza {spec.name} deleted from {len(spec.backup.repositories)} repositor(y/ies): its backups and WAL are gone"


def take_backup(provider: Provider, spec: ClusterSpec, kind: str, repo: int) -> str:
    """One backup of ``kind`` into repository ``repo``, from the primary (or a replica on its host)."""
    primary = leader(spec)
    standby = streaming_replica(spec, primary) if spec.backup.from_replica else None
    run(provider, spec, primary, pgbackrest.backup_argv(spec, primary, kind, repo, standby))
    source = f"{standby.name} (standby of {primary.name})" if standby else primary.name
    return f"{kind} backup into repo{repo} from {source}"


def verify(provider: Provider, spec: ClusterSpec, repo: int) -> str:
    """``pgbackrest verify`` of a repository: every file's checksum and the WAL it needs."""
    primary = leader(spec)
    done = run(provider, spec, primary, pgbackrest.command_argv(spec, None, "verify", f"--repo={repo}", "--output=text"))
    summary = " ".join(done.out.split())[:200]
    return f"repo{repo} verified" + (f": {summary}" if summary else "")


def expire(provider: Provider, spec: ClusterSpec, repo: int, keep_full: int, keep_diff: int) -> None:
    primary = leader(spec)
    run(provider, spec, primary, pgbackrest.command_argv(spec, None, "expire", *pgbackrest.expire_options(repo, keep_full, keep_diff)))


def archiver_stats(spec: ClusterSpec, monitoring_password: str) -> ArchiverStats:
    """``pg_stat_archiver`` and the current WAL file, read on the primary by the monitoring role (pg_monitor:
    the superuser is not reachable from client networks, where the machine running dbtier may be)."""
    primary = leader(spec)
    with connect(conninfo(spec, primary.host, primary.pg_port, MONITORING_USER, "postgres"), monitoring_password) as conn:
        row = conn.execute(
            "SELECT now(), pg_walfile_name(pg_current_wal_lsn()), archived_count, last_archived_wal, "
            "last_archived_time, failed_count, last_failed_wal, last_failed_time FROM pg_stat_archiver"
        ).fetchone()
        ready = conn.execute(
            "SELECT count(*), min(modification) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
        ).fetchone()
    assert row is not None and ready is not None
    now, current, archived, last_wal, last_time, failed, failed_wal, failed_time = row
    return ArchiverStats(
        now=now or datetime.now(timezone.utc),
        current_wal=current,
        archived_count=archived,
        last_archived_wal=_segment(last_wal),
        last_archived_time=last_time,
        failed_count=failed,
        last_failed_wal=failed_wal,
        last_failed_time=failed_time,
        ready_count=int(ready[0]),
        oldest_ready=ready[1],
    )


def _segment(name: str | None) -> str | None:
    """The WAL segment of an archived file name (``...0003.00000028.backup`` too); None for a ``.history``."""
    head = (name or "")[:24]
    return head if WAL_RE.match(head) else None


def wait_for_restore(provider: Provider, spec: ClusterSpec, timeout: float) -> str:
    """Wait until a member has restored the backup and been promoted; fail fast when every Patroni gave up.

    Patroni exits when its custom bootstrap fails; the reason is pgBackRest's ``ERROR:`` line in its log.
    """
    from dbtier import procs
    from dbtier.engines.base import get_engine

    services = get_engine(spec).member_services(spec)
    started = time.monotonic()
    while True:
        doc = fetch_cluster(spec) or {}
        leader = next((m["name"] for m in doc.get("members", [])
                       if m.get("role") == "leader" and m.get("state") == "running"), None)
        if leader is not None:
            return f"{leader} restored the backup and was promoted after {time.monotonic() - started:.1f} s"
        alive = [s for s in services if procs.running_pid(provider.runner(spec, s.host), s) is not None]
        if not alive:
            raise RestoreFailed(f"restore of {spec.name} failed: {_bootstrap_error(provider, spec, services)}")
        if time.monotonic() - started > timeout:
            raise RestoreFailed(f"restore of {spec.name} not promoted after {timeout:.0f} s; see the patroni.log "
                               f"files under {spec.cluster_dir}")
        time.sleep(1.0)


def _bootstrap_error(provider: Provider, spec: ClusterSpec, services: list[Service]) -> str:
    """The last pgBackRest or PostgreSQL error line any member logged while bootstrapping."""
    for service in services:
        raw = provider.runner(spec, service.host).read_file(service.logfile) or b""
        errors = [line for line in raw.decode(errors="replace").splitlines()
                  if line.startswith("ERROR: [") or " FATAL: " in line or "FATAL:  " in line]
        if errors:
            return " ".join(errors[-1].split())[:300]
    return f"every Patroni exited; see the patroni.log files under {spec.cluster_dir}"


def stanzas(provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> list[str]:
    """Every stanza the cluster's repositories hold, its own included when it exists (``pgbackrest info``
    without a stanza, from the cluster's first host through a temporary config)."""
    with temp_config(provider, spec, spec, secrets) as (runner, conf):
        done = runner.run([spec.pg.binaries.pgbackrest, f"--config={conf}", "--output=json", "info"], timeout=300)
    try:
        return sorted(str(entry.get("name")) for entry in json.loads(done.out))
    except (ValueError, AttributeError):
        raise BackupError(f"pgbackrest info gave no JSON list of stanzas for cluster {spec.name}'s repositories") from None
