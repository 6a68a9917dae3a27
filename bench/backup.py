"""Backup benchmark: pgBackRest through dbtier against the bare commands, on the same data, in one run.

    .venv/bin/python bench/backup.py [--scale 10]

On ports 30200-30299 and a temporary data root, with a Prefect server started first (not timed):
  1. a three-member cluster from the provision flow (stanza created), `pgbench -i -s N` data in it;
  2. a full backup: the bare pgBackRest command dbtier builds, then the backup flow (kind full);
  3. the same data copied by pg_basebackup, plain and tar+gzip: what pgBackRest is up against
     (as the replication role: dbtier's pg_hba lets no other role open a replication connection);
  4. a point-in-time restore to T, between two batches of rows: the bare `pgbackrest restore` and a
     bare postgres on it until promoted, then the restore flow into a new cluster; both copies must
     hold exactly the rows written before T;
  5. the archive lag pg_stat_archiver shows while pgbench writes for 10 s.
Ratios are against baselines measured in the same run; no timing is asserted. Everything it starts
is stopped by its pid and the data root removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import PREFECT_ENV, remove_cluster, stop_popen  # noqa: E402
from dbtier import bootstrap, procs  # noqa: E402
from dbtier.engines.postgres import pgbackrest, pgbackrest_ops  # noqa: E402
from dbtier.engines.postgres.wal_archive import ArchiverStats, judge_archive  # noqa: E402
from dbtier.backup.archive import ArchiveVerdict  # noqa: E402
from dbtier.backup.catalog import human_bytes, parse_target, restore_options  # noqa: E402
from dbtier.backup.restore import derive_target  # noqa: E402
from dbtier.engines.base import get_engine  # noqa: E402
from dbtier.engines.postgres.patroni_config import REPLICATION_USER  # noqa: E402
from dbtier.engines.postgres.engine import connect  # noqa: E402
from dbtier.providers.base import Provider, Runner, get_provider  # noqa: E402
from dbtier.secrets import Passwords  # noqa: E402
from dbtier.spec import ClusterSpec, build_spec  # noqa: E402
from dbtier.engines.postgres.topology import PgMember, client_dsn  # noqa: E402
from tests.clusters import FAST_TIMING, shared_tmpdir, write_spec  # noqa: E402

NAME = "benchbackup"
PORTS = {"postgres": 30200, "patroni": 30220, "etcd": 30240}
RESTORED, RESTORED_OFFSET = f"{NAME}-bench-restored", 50  # postgres 30250, patroni 30270, etcd 30290-30295
SERVER_PORT = 30285  # the Prefect server
BARE_PG_PORT = 30298  # the bare postgres on the bare restore
ROWS_BEFORE, ROWS_AFTER = 1000, 500
LONG = 6 * 3600.0  # command timeout: a large --scale takes long, and nothing here should hang forever
TASK_SUFFIX = re.compile(r"-[0-9a-z]{3}$")  # Prefect's default task run name: "<task>-<3 random characters>"

BARE_BACKUP = "pgbackrest backup --type=full, bare"
PLAIN = "pg_basebackup -X stream -c fast, plain"
TGZ = "pg_basebackup -X stream -c fast -Ft -z"
BARE_RESTORE = "pgbackrest restore --type=time, bare"
BARE_READY = "  restore + bare postgres until promoted"


@dataclass
class Bench:
    """The cluster under test and what every step needs to reach it."""

    spec: ClusterSpec
    spec_file: str
    provider: Provider
    passwords: Passwords
    scratch: str  # owned by the cluster's OS user, under the data root, on every host of the cluster

    def primary(self) -> tuple[PgMember, Runner]:
        member = pgbackrest_ops.leader(self.spec)
        return member, self.provider.runner(self.spec, member.host)

    def binary(self, name: str) -> str:
        return f"{self.spec.pg.binaries.pg_bin_dir}/{name}"


@dataclass
class Report:
    """Timed figures, each with its ratio against baselines measured earlier in the run."""

    seconds: dict[str, float] = field(default_factory=dict)
    rows: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def time(self, name: str, seconds: float, *against: str) -> None:
        self.seconds[name] = seconds
        self.compare(name, *against)

    def compare(self, name: str, *against: str) -> None:
        self.rows.append((name, against))
        ratios = ", ".join(f"{self.seconds[name] / self.seconds[b]:.2f}x {b.strip()}" for b in against)
        print(f"  {name.strip()}: {self.seconds[name]:.1f} s" + (f" ({ratios})" if ratios else ""), flush=True)

    def note(self, line: str) -> None:
        self.notes.append(line)
        print(f"  {line}", flush=True)

    def table(self) -> str:
        lines = [f"{'measure':44} {'seconds':>8} {'ratio':>7}  against"]
        for name, against in self.rows:
            first = f"{name:44} {self.seconds[name]:8.1f}"
            if not against:
                lines.append(first)
            for i, base in enumerate(against):
                head = first if i == 0 else " " * 53
                lines.append(f"{head} {self.seconds[name] / self.seconds[base]:6.2f}x  {base.strip()}")
        return "\n".join([*lines, "", *self.notes])


# ---- set-up and clean-up ------------------------------------------------------------------------


def bench_spec() -> ClusterSpec:
    root = shared_tmpdir("dbtier-bench-backup-")
    return build_spec({"name": NAME, "data_root": root, "postgres": {"patroni": FAST_TIMING, "ports": PORTS}},
                      environ={})


def use_prefect_server(home: str) -> None:
    """Point this process's flows at the bench's server (before Prefect is first imported)."""
    os.environ.update({**PREFECT_ENV, "PREFECT_HOME": home, "PREFECT_API_URL": f"http://127.0.0.1:{SERVER_PORT}/api"})


def start_prefect_server(home: str) -> subprocess.Popen[bytes]:
    """A Prefect server on loopback, as a user who keeps the UI open has (its start-up is not timed)."""
    import requests

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with open(f"{home}/server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(SERVER_PORT)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{SERVER_PORT}/api/health", timeout=1).ok:
                return server
        time.sleep(0.5)
    stop_prefect_server(server)
    raise SystemExit(f"the Prefect server did not start within 120 s; see {home}/server.log")


def stop_prefect_server(server: subprocess.Popen[bytes]) -> None:
    stop_popen(server, 30)


def provision(spec: ClusterSpec, report: Report) -> Bench:
    """The provision flow (it creates the passwords' Secret blocks and the stanza), then what the bench needs."""
    from blocks.passwords import load_passwords
    from flows.provision import provision as provision_flow

    spec_file = write_spec(spec, f"{spec.data_root}/spec.yaml")
    started = time.monotonic()
    provision_flow(spec_path=spec_file)
    report.note(f"provision flow: 3 members + 3 etcd healthy, stanza created, in {time.monotonic() - started:.1f} s")
    engine, provider = get_engine(spec), get_provider(spec)
    scratch = f"{spec.data_root}/bench"
    for host in bootstrap.cluster_hosts(engine, spec):  # whichever member is primary finds it on its host
        provider.runner(spec, host).make_dirs(scratch, 0o700)
    return Bench(spec, spec_file, provider, load_passwords(spec), scratch)


# ---- data ---------------------------------------------------------------------------------------


def app_conninfo(member: PgMember, spec: ClusterSpec) -> str:
    return f"-h {member.host} -p {member.pg_port} -U {spec.app.user} -d {spec.app.database}"


def pgbench(b: Bench, *options: str) -> str:
    """pgbench against the primary as the app role (the password travels in the environment only)."""
    member, runner = b.primary()
    argv = [b.binary("pgbench"), *options, *app_conninfo(member, b.spec).split()]
    done = runner.run(argv, env={"PGPASSWORD": b.passwords.app}, timeout=LONG)
    return done.out + done.err


def load_data(b: Bench, scale: int, report: Report) -> int:
    started = time.monotonic()
    pgbench(b, "-i", "-q", "-s", str(scale))
    report.time(f"pgbench -i -s {scale} (data load, info)", time.monotonic() - started)
    with connect(client_dsn(b.spec), b.passwords.app) as conn:
        size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    report.note(f"database {b.spec.app.database}: {human_bytes(size)} after pgbench -i -s {scale}")
    return size


def superuser(b: Bench) -> Any:
    """A superuser connection to the primary."""
    return connect(client_dsn(b.spec, pgbackrest.SUPERUSER, "postgres"), b.passwords.superuser)


def ready_files(b: Bench) -> tuple[int, float]:
    """WAL files waiting for archive_command on the primary, and the age of the oldest one's ``.ready`` file."""
    with superuser(b) as conn:
        count, oldest = conn.execute(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(modification)), 0) "
            "FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
        ).fetchone()
    return int(count), float(oldest)


def settle(b: Bench) -> None:
    """Not timed: a checkpoint, then an empty archive queue, so every timed copy starts from the same state
    (otherwise the first one pays for flushing the freshly loaded data and competes with archive-push)."""
    with superuser(b) as conn:
        conn.execute("CHECKPOINT")
    deadline = time.monotonic() + 300
    while ready_files(b)[0] and time.monotonic() < deadline:
        time.sleep(0.2)


# ---- backups ------------------------------------------------------------------------------------


def bare_backup(b: Bench, report: Report) -> None:
    """The exact argv dbtier builds for a full backup from the leader, run as the OS user, timed."""
    member = pgbackrest_ops.leader(b.spec)
    argv = pgbackrest.backup_argv(b.spec, member, "full", 1)
    settle(b)
    started = time.monotonic()
    pgbackrest_ops.run(b.provider, b.spec, member, argv, timeout=LONG)
    report.time(BARE_BACKUP, time.monotonic() - started)


def backup_flow(b: Bench, report: Report) -> None:
    """The backup flow (kind full) against the running server, end to end, and its backup task alone."""
    from flows.backup import backup

    settle(b)
    started = time.monotonic()
    state = backup(spec_path=b.spec_file, kind="full", return_state=True)
    elapsed = time.monotonic() - started
    state.result()  # raises when the run failed
    report.time("backup flow --kind full, end to end", elapsed, BARE_BACKUP)
    tasks = task_seconds(state.state_details.flow_run_id, "backup repo1")
    if "backup repo1" in tasks:
        report.time("  its task 'backup repo1'", tasks["backup repo1"][0], BARE_BACKUP)
    report.note(f"backup flow tasks: {describe_tasks(tasks)}; outside tasks {elapsed - sum(t for t, _ in tasks.values()):.1f} s")


def task_seconds(flow_run_id: UUID | None, expected: str, wait_s: float = 30) -> dict[str, tuple[float, int]]:
    """Seconds spent in each task of a flow run (summed per task name) and how many runs, read from the API.

    Task states reach the server as events, a moment after the flow returns: wait for ``expected``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            times: dict[str, tuple[float, int]] = {}
            for run in runs:
                if run.start_time and run.end_time:
                    name = TASK_SUFFIX.sub("", run.name)
                    seconds, count = times.get(name, (0.0, 0))
                    times[name] = (seconds + (run.end_time - run.start_time).total_seconds(), count + 1)
            finished = sum(count for _, count in times.values()) == len(runs)
            if (expected in times and finished) or time.monotonic() > deadline:
                return times
            time.sleep(0.5)


def describe_tasks(tasks: dict[str, tuple[float, int]], top: int = 7) -> str:
    """The longest tasks first; the rest summed."""
    ordered = sorted(tasks.items(), key=lambda item: -item[1][0])
    shown = [f"{name} {seconds:.1f} s" + (f" (x{count})" if count > 1 else "") for name, (seconds, count) in ordered[:top]]
    rest = ordered[top:]
    if rest:
        shown.append(f"{len(rest)} more {sum(seconds for _, (seconds, _) in rest):.1f} s")
    return ", ".join(shown)


def backup_sizes(b: Bench, report: Report) -> None:
    fulls = [r for r in pgbackrest_ops.catalog(b.provider, b.spec).backups if r.kind == "full"]
    for who, record in zip(("bare", "flow"), fulls, strict=False):
        report.note(f"full backup ({who}) {record.label}: {human_bytes(record.size)} of data, "
                    f"{human_bytes(record.repo_size)} in the repository (zst), {record.duration_s:.0f} s by pgBackRest's clock")


def pg_basebackup(b: Bench, label: str, *extra: str) -> int:
    """One pg_basebackup of the primary into the scratch directory; returns its size (then removes it)."""
    member, runner = b.primary()
    target = f"{b.scratch}/basebackup-{label}"
    argv = [b.binary("pg_basebackup"), "-h", member.host, "-p", str(member.pg_port), "-U", REPLICATION_USER,
            "-D", target, "-X", "stream", "-c", "fast", *extra]
    try:
        runner.run(argv, env={"PGPASSWORD": b.passwords.replication}, timeout=LONG)
        sizes = runner.run(["find", target, "-type", "f", "-printf", "%s\n"], timeout=LONG).out.split()
        return sum(int(size) for size in sizes)  # measured on the primary's host, where the copy is
    finally:
        runner.remove_tree(target)


def basebackups(b: Bench, report: Report) -> None:
    for name, label, extra in ((PLAIN, "plain", ()), (TGZ, "tar+gzip", ("-Ft", "-z"))):
        settle(b)
        started = time.monotonic()
        size = pg_basebackup(b, label.replace("+", ""), *extra)
        report.time(name, time.monotonic() - started)
        report.note(f"pg_basebackup {label}: {human_bytes(size)} on disk")
    report.compare(BARE_BACKUP, PLAIN, TGZ)


# ---- point-in-time restore ----------------------------------------------------------------------


def rows_around_a_time(b: Bench) -> str:
    """ROWS_BEFORE rows, then T (the server's clock), then ROWS_AFTER more; returns T as the flow takes it."""
    with connect(client_dsn(b.spec), b.passwords.app) as conn:
        conn.execute("CREATE TABLE bench_pitr (id int PRIMARY KEY, written_at timestamptz DEFAULT clock_timestamp())")
        conn.execute("INSERT INTO bench_pitr (id) SELECT g FROM generate_series(1, %s::int) g", (ROWS_BEFORE,))
        target: datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.3)
        conn.execute("INSERT INTO bench_pitr (id) SELECT g FROM generate_series(%s::int, %s::int) g",
                     (ROWS_BEFORE + 1, ROWS_BEFORE + ROWS_AFTER))
    return target.isoformat(sep=" ")


def rows_in(dsn: str, password: str) -> tuple[int, int]:
    with connect(dsn, password) as conn:
        count, top = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM bench_pitr").fetchone()
    return int(count), int(top)


def bare_restore(b: Bench, target: str, report: Report) -> tuple[int, int]:
    """`pgbackrest restore` to ``target`` into an empty directory, then a bare postgres on it until promoted."""
    _, runner = b.primary()
    pgbackrest_ops.check(b.provider, b.spec)  # not timed: WAL past T reaches the repository (the flow does it, timed)
    data_dir = f"{b.scratch}/bare-restore"
    runner.make_dirs(data_dir, 0o700)
    argv = [*pgbackrest.base_argv(b.spec.pg.binaries.pgbackrest, pgbackrest.config_path(b.spec), b.spec.name),
            f"--pg1-path={data_dir}", *restore_options(parse_target(target)), "restore"]
    started = time.monotonic()
    runner.run(argv, env={"PGPASSFILE": pgbackrest.pgpass_path(b.spec)}, timeout=LONG)
    report.time(BARE_RESTORE, time.monotonic() - started)
    try:
        with bare_postgres(b, runner, data_dir):
            wait_promoted(b, runner, data_dir)
            report.time(BARE_READY, time.monotonic() - started)
            return rows_in(f"host=127.0.0.1 port={BARE_PG_PORT} user={b.spec.app.user} dbname={b.spec.app.database}",
                           b.passwords.app)
    finally:
        runner.remove_tree(data_dir)


@contextlib.contextmanager
def bare_postgres(b: Bench, runner: Runner, data_dir: str) -> Iterator[None]:
    """A plain postmaster on a restored data directory (no Patroni, no archiving), stopped by its pid at exit."""
    socket_dir = f"{b.scratch}/bare-run"
    runner.make_dirs(socket_dir, 0o700)
    options = (f"-p {BARE_PG_PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories={socket_dir} "
               f"-c archive_mode=off -c hba_file={data_dir}/pg_hba.conf -c ident_file={data_dir}/pg_ident.conf")
    pg_ctl = b.binary("pg_ctl")
    runner.run([pg_ctl, "-D", data_dir, "-l", f"{b.scratch}/bare-postgres.log", "-o", options, "-W", "start"])
    try:
        yield
    finally:
        pid = procs.read_pid(runner, f"{data_dir}/postmaster.pid")
        runner.run([pg_ctl, "-D", data_dir, "-m", "fast", "-w", "-t", "60", "stop"], check=False, timeout=90)
        if pid is not None and procs.pid_matches(runner, pid, data_dir):
            procs.stop_pid(runner, pid, data_dir, "bare restored postgres")


def wait_promoted(b: Bench, runner: Runner, data_dir: str, timeout: float = 1800) -> None:
    """Until the bare postgres accepts connections and has left recovery (promoted at the target)."""
    conninfo = f"host=127.0.0.1 port={BARE_PG_PORT} user={b.spec.app.user} dbname={b.spec.app.database} connect_timeout=2"
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        # refused while it starts, then "the database system is starting up"
        with contextlib.suppress(Exception), connect(conninfo, b.passwords.app) as conn:
            if conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0]:
                return
        pid = procs.read_pid(runner, f"{data_dir}/postmaster.pid")
        if time.monotonic() - started > 5 and (pid is None or not procs.pid_matches(runner, pid, data_dir)):
            break
        time.sleep(0.1)
    log = (runner.read_file(f"{b.scratch}/bare-postgres.log") or b"").decode(errors="replace").strip().splitlines()
    raise SystemExit(f"the bare restored postgres was not promoted; last log lines: {' | '.join(log[-3:])}")


def restore_flow(b: Bench, target: str, report: Report) -> tuple[int, int]:
    """The restore flow into a new cluster, end to end; the copy is stopped and wiped right after it is counted."""
    from blocks.passwords import load_passwords
    from flows.restore import restore

    copy = derive_target(b.spec, RESTORED, RESTORED_OFFSET)
    started = time.monotonic()
    state = restore(spec_path=b.spec_file, target=target, into=RESTORED, port_offset=RESTORED_OFFSET, return_state=True)
    elapsed = time.monotonic() - started
    try:
        result: dict[str, Any] = state.result()
        report.time("restore flow (3-member copy), end to end", elapsed, BARE_READY)
        tasks = task_seconds(state.state_details.flow_run_id, "wait_for_restore")
        if "wait_for_restore" in tasks:
            report.time("  its task wait_for_restore (to promotion)", tasks["wait_for_restore"][0], BARE_READY)
        report.note(f"restore flow: {result['from']}; tasks: {describe_tasks(tasks)}")
        return rows_in(client_dsn(copy), load_passwords(copy).app)
    finally:
        remove_cluster(copy)


def point_in_time(b: Bench, report: Report) -> bool:
    target = rows_around_a_time(b)
    bare = bare_restore(b, target, report)
    flow = restore_flow(b, target, report)
    want = (ROWS_BEFORE, ROWS_BEFORE)
    ok = bare == want and flow == want
    report.note(f"rows restored to T (count, max id): bare {bare}, flow {flow}; written before T {ROWS_BEFORE}, "
                f"after T {ROWS_AFTER}: {'exactly the rows before T in both' if ok else 'MISMATCH'}")
    return ok


# ---- archive lag --------------------------------------------------------------------------------


def archive_lag(b: Bench, report: Report, seconds: int = 10) -> None:
    """Sample pg_stat_archiver every 0.5 s while pgbench writes, then until nothing waits (at most 60 s more)."""
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["out"] = pgbench(b, "-T", str(seconds), "-c", "2", "-n")
        except Exception as err:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = err

    writer = threading.Thread(target=load, daemon=True)
    writer.start()
    samples, catch_up_s = sample_archiver(b, writer)
    writer.join()
    if "error" in outcome:
        raise outcome["error"]
    first, last = samples[0].stats, samples[-1].stats
    tps = re.search(r"tps = ([\d.]+)", outcome.get("out", ""))
    report.note(
        f"archiving under pgbench -T {seconds} -c 2 ({float(tps.group(1)) if tps else 0:.0f} tps; WAL {first.current_wal} .. "
        f"{last.current_wal}, {last.archived_count - first.archived_count} file(s) archived), {len(samples)} samples "
        f"every 0.5 s: judge_archive max lag {max(s.verdict.lag_s for s in samples):.1f} s, max pending "
        f"{max(s.verdict.pending_segments for s in samples)}; oldest .ready file max age {max(s.oldest_s for s in samples):.1f} s, "
        f"max .ready files {max(s.ready for s in samples)}; nothing pending {catch_up_s:.1f} s after the load stopped"
    )


@dataclass(frozen=True)
class Sample:
    stats: ArchiverStats
    verdict: ArchiveVerdict
    ready: int  # .ready files in pg_wal/archive_status: what really waits
    oldest_s: float  # how long the oldest of them has waited: the true archive lag


def sample_archiver(b: Bench, writer: threading.Thread) -> tuple[list[Sample], float]:
    """Samples until ``writer`` is done and nothing waits; and how long after the writer that took."""
    samples: list[Sample] = []
    stopped_at: float | None = None
    while True:
        stats = pgbackrest_ops.archiver_stats(b.spec, b.passwords.monitoring)
        samples.append(Sample(stats, judge_archive(stats, b.spec.backup.archive_lag_limit_s), *ready_files(b)))
        if not writer.is_alive():
            stopped_at = stopped_at or time.monotonic()
            if (samples[-1].verdict.pending_segments == 0 and samples[-1].ready == 0) or time.monotonic() - stopped_at > 60:
                return samples, time.monotonic() - stopped_at
        time.sleep(0.5)


# ---- the run ------------------------------------------------------------------------------------


def run(spec: ClusterSpec, scale: int, report: Report) -> bool:
    b = provision(spec, report)
    load_data(b, scale, report)
    bare_backup(b, report)
    backup_flow(b, report)
    backup_sizes(b, report)
    basebackups(b, report)
    ok = point_in_time(b, report)
    archive_lag(b, report)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale factor (10: about 160 MiB)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill too
    started = time.monotonic()
    home = tempfile.mkdtemp(prefix="dbtier-bench-backup-prefect-")
    use_prefect_server(home)
    spec = bench_spec()
    report = Report()
    print(f"scale {args.scale}; 3 PostgreSQL members + 3 etcd on 127.0.0.1:30200-30299; data root {spec.data_root}",
          flush=True)
    with contextlib.ExitStack() as cleanup:  # run in reverse: copies, cluster, data root, server, Prefect home
        cleanup.callback(shutil.rmtree, home, True)
        server = start_prefect_server(home)
        cleanup.callback(stop_prefect_server, server)
        cleanup.callback(shutil.rmtree, spec.data_root, True)
        cleanup.callback(remove_cluster, spec)
        cleanup.callback(remove_cluster, derive_target(spec, RESTORED, RESTORED_OFFSET))
        ok = run(spec, args.scale, report)
    print(f"\n{report.table()}")
    print(f"(whole run, set-up and clean-up included: {time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
