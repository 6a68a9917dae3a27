"""A restore destroys nothing it has not replaced, and a time inside a quiet period restores.

Runbook on a one-member cluster with a full backup, through the command line (exit code, stderr), each step
checking the state a user would look at:
1. live source, a time with no commit after it: restored, exactly the rows committed before it;
2. a restore that fails into a new cluster: exit 1, and nothing of the new cluster is left (processes, data,
   stanza, Secret blocks);
3. an in-place restore that fails: exit 1, the old data is back and serves every row;
4. after a crash, an in-place restore that would drop transactions only the member's own WAL holds: refused,
   exit 2 (a clean shutdown switches WAL and archives everything; a crash does not);
5. crashed (lost) source, a time inside a quiet period before those transactions: restored into a new cluster,
   then in place, exactly the rows before it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import prefect.settings
import pytest

from blocks.backup import load_backup_secrets
from blocks.passwords import load_passwords, load_secret
from dbtier import bootstrap
from dbtier.engines.postgres import pgbackrest_ops
from dbtier.backup.inplace import aside_path
from dbtier.backup.restore import derive_target
from dbtier.engines.postgres import faults
from dbtier.engines.base import get_engine
from dbtier.engines.postgres.engine import connect
from dbtier.providers.base import get_provider
from dbtier.secrets import block_name, role_names
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import client_dsn
from tests.clusters import RESTORE_OFFSET, listening, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    # archive_timeout far away: WAL reaches the archive only when a step pushes it (a backup, a check).
    return spec_for_tests("safe", block=12, data_root=shared_tmpdir("dbtier-restore-safety-"), members=1,
                          etcd_members=1, backup={"archive_timeout_s": 3600})


@pytest.fixture(scope="module")
def source(prefect_harness: None, spec: ClusterSpec) -> Iterator[str]:
    from flows.backup import backup
    from flows.provision import provision

    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        provision(spec_path=spec_file)
        backup(spec_path=spec_file, kind="full")
        with _conn(spec) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        yield spec_file


@pytest.fixture()
def copies() -> Iterator[list[ClusterSpec]]:
    made: list[ClusterSpec] = []
    yield made
    for copy in made:
        engine, provider = get_engine(copy), get_provider(copy)
        bootstrap.stop_services(engine, provider, copy)
        if bootstrap.is_initialised(engine, provider, copy):
            bootstrap.wipe(engine, provider, copy)


def _conn(spec: ClusterSpec) -> object:
    return connect(client_dsn(spec), load_passwords(spec).app)


def _insert(spec: ClusterSpec, first: int, last: int) -> None:
    with _conn(spec) as conn:  # type: ignore[attr-defined]
        conn.execute(f"INSERT INTO orders SELECT g FROM generate_series({first}, {last}) g")


def _count(spec: ClusterSpec) -> int:
    with _conn(spec) as conn:  # type: ignore[attr-defined]
        return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])


def _quiet_moment() -> str:
    """A time with nothing committed for a while before and after it."""
    time.sleep(1.5)
    at = datetime.now(timezone.utc).isoformat(sep=" ")
    time.sleep(1.5)
    return at


def _restore(spec_file: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value())}
    return subprocess.run([sys.executable, "-m", "flows.restore", "--spec", spec_file, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("dbtier: error:")]


def _stop(spec: ClusterSpec) -> None:
    bootstrap.stop_services(get_engine(spec), get_provider(spec), spec)


def test_a_quiet_time_restores_on_a_live_source(source: str, spec: ClusterSpec, copies: list[ClusterSpec]) -> None:
    _insert(spec, 1, 30)
    quiet = _quiet_moment()
    copy = derive_target(spec, "safe-quiet", RESTORE_OFFSET)
    copies.append(copy)
    done = _restore(source, "--target", quiet, "--into", copy.name, "--port-offset", str(RESTORE_OFFSET))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "how: no transaction after" in done.stdout and "(the last one at " in done.stdout, done.stdout
    assert _count(copy) == 30, "exactly the rows committed before the quiet moment"
    assert _count(spec) == 30, "the source is untouched"


def test_a_failed_restore_into_a_new_cluster_leaves_nothing(source: str, spec: ClusterSpec,
                                                            copies: list[ClusterSpec]) -> None:
    copy = derive_target(spec, "safe-failed", RESTORE_OFFSET)
    copies.append(copy)
    done = _restore(source, "--target", "name:no-such-point", "--into", copy.name, "--port-offset", str(RESTORE_OFFSET))
    assert done.returncode == 1, done.stderr[-3000:]
    errors = _errors(done)
    assert len(errors) == 1 and "restore of safe into safe-failed failed" in errors[0], done.stderr[-3000:]
    assert "nothing of safe-failed is left" in errors[0]
    assert not os.path.exists(copy.cluster_dir), "its data directory is gone"
    assert not [p for p in (copy.pg.ports.postgres, copy.pg.ports.patroni, copy.pg.ports.etcd) if listening(p)]
    assert [load_secret(block_name(copy, role)) for role in role_names(copy)] == [None] * len(role_names(copy)), "its blocks are gone"
    left = pgbackrest_ops.read_source_catalog(get_provider(copy), copy, copy, load_backup_secrets(copy))
    assert left.backups == () and left.wal_max is None, "no stanza of the failed copy stays in the repository"


def test_a_failed_in_place_restore_leaves_the_cluster_as_it_was(source: str, spec: ClusterSpec) -> None:
    from flows.provision import provision

    _insert(spec, 31, 50)
    pgbackrest_ops.check(get_provider(spec), spec)  # every commit archived: the in-place restore has no tail to refuse
    _stop(spec)
    done = _restore(source, "--in-place", "--target", "name:no-such-point")
    assert done.returncode == 1, done.stderr[-3000:]
    errors = _errors(done)
    assert len(errors) == 1 and "cluster safe is as it was before the restore" in errors[0], done.stderr[-3000:]
    assert not os.path.exists(aside_path(spec))
    provision(spec_path=source)
    assert _count(spec) == 50, "the old data serves every row again"


def test_in_place_restore_refuses_to_drop_transactions_that_were_never_archived(source: str, spec: ClusterSpec) -> None:
    pgbackrest_ops.check(get_provider(spec), spec)
    QUIET.append(_quiet_moment())
    _insert(spec, 51, 60)  # committed, but its WAL stays in pg_wal: archive_timeout is an hour away, and a crash
    faults.crash_member(get_provider(spec), spec, "pg0")  # skips the WAL switch a clean shutdown makes
    _stop(spec)
    before = sorted(os.listdir(spec.cluster_dir))
    done = _restore(source, "--in-place", "--target", "latest")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == _errors(done), "one line, nothing else"
    assert "own WAL holds transactions that never reached the archive" in _errors(done)[0]
    assert sorted(os.listdir(spec.cluster_dir)) == before and not os.path.exists(aside_path(spec))


#: The quiet moment before the rows that never reached the archive.
QUIET: list[str] = []


def test_a_quiet_time_restores_from_a_lost_source(source: str, spec: ClusterSpec, copies: list[ClusterSpec]) -> None:
    """The source is stopped and its last rows never reached the archive (as if its host were gone)."""
    copy = derive_target(spec, "safe-lost", RESTORE_OFFSET)
    copies.append(copy)
    done = _restore(source, "--target", QUIET[0], "--into", copy.name, "--port-offset", str(RESTORE_OFFSET))
    assert done.returncode == 0, done.stderr[-3000:]
    assert _count(copy) == 50, "exactly the rows committed before the quiet moment"


def test_in_place_restore_to_a_quiet_time_of_a_stopped_cluster(source: str, spec: ClusterSpec) -> None:
    done = _restore(source, "--in-place", "--target", QUIET[0])
    assert done.returncode == 0, done.stderr[-3000:]
    assert _count(spec) == 50, "exactly the rows committed before the quiet moment (51-60 came after it)"
    assert get_engine(spec).status(spec).health.healthy
    assert not os.path.exists(aside_path(spec)), "the replaced data is dropped once the restore is up"
