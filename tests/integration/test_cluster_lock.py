"""One changer per cluster, and a status that checks the pid files against the ports.

Runbook order: two provisions of one spec started at once through the command line (one provisions, the
other is refused in one line naming the holder; every pid file then matches the process on its port);
status notices a pid file that names a dead process; a lock left by a dead run is taken over; a lock
held by a live run elsewhere refuses a teardown in one line and leaves the cluster running, also when
the teardown flow is run without the command line (as a worker or `make serve` runs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import prefect.settings
import pytest

from dbtier import bootstrap, procs
from dbtier.engines.base import get_engine
from dbtier.lock import Holder, lock_name
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from tests.clusters import shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env() -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value())}


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=REPO, env=_env(),
                          timeout=timeout, check=False)


def dead_pid() -> int:
    """The pid of a process that has exited."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("race", block=14, data_root=shared_tmpdir("dbtier-lock-"))


@pytest.fixture(scope="module")
def two_provisions_at_once(prefect_harness: None, spec: ClusterSpec) -> Iterator[dict[str, Any]]:
    """Two `python -m flows.provision --spec X` started together; every process stopped by pid and wiped after."""
    spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
    with stopped_at_exit(spec):
        runs = [subprocess.Popen([sys.executable, "-m", "flows.provision", "--spec", spec_file], cwd=REPO, env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            outputs = [run.communicate(timeout=300) for run in runs]
        finally:
            for run in runs:
                procs.stop_child(run)  # type: ignore[arg-type]
        yield {"spec_file": spec_file, "runs": [(run.pid, run.returncode, out, err) for run, (out, err) in
                                               zip(runs, outputs, strict=True)]}
    from prefect.variables import Variable

    Variable.unset(lock_name(spec.name))
    if bootstrap.is_initialised(get_engine(spec), get_provider(spec), spec):
        bootstrap.wipe(get_engine(spec), get_provider(spec), spec)
    shutil.rmtree(spec.data_root, ignore_errors=True)


def test_of_two_provisions_at_once_one_provisions_and_one_is_refused_naming_it(
    two_provisions_at_once: dict[str, Any]
) -> None:
    runs = sorted(two_provisions_at_once["runs"], key=lambda r: r[1])
    (winner, won, out, _), (_, lost, _, err) = runs
    assert (won, lost) == (0, 2), runs
    assert "cluster race: leader" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dbtier: error: cluster: race is busy: flow provision (")
    assert f"on host {socket.gethostname()}, pid {winner}, since 20" in lines[0]


def test_afterwards_every_pid_file_matches_the_process_on_its_port(
    two_provisions_at_once: dict[str, Any], spec: ClusterSpec
) -> None:
    engine, provider = get_engine(spec), get_provider(spec)
    assert len(bootstrap.running_services(engine, provider, spec)) == 6
    assert bootstrap.pid_file_problems(engine, provider, spec) == []
    done = cli("dbtier.cli", "status", "--spec", two_provisions_at_once["spec_file"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pid file" not in done.stdout


def test_status_notices_a_pid_file_naming_a_dead_process(
    two_provisions_at_once: dict[str, Any], spec: ClusterSpec
) -> None:
    etcd0 = next(s for s in get_engine(spec).consensus_services(spec) if s.name == "etcd0")
    runner = get_provider(spec).runner(spec, etcd0.host)
    live = procs.running_pid(runner, etcd0)
    gone = dead_pid()
    with open(etcd0.pidfile, "w") as fh:
        fh.write(f"{gone}\n")
    try:
        done = cli("dbtier.cli", "status", "--spec", two_provisions_at_once["spec_file"])
    finally:
        with open(etcd0.pidfile, "w") as fh:
            fh.write(f"{live}\n")
    assert done.returncode == 1, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("etcd0 "))
    port = etcd0.ports[0][1]
    assert f"pid {gone} dead; port {port}: pid {live}" in row, done.stdout
    assert (f"etcd0: its pid file names pid {gone}, which is not running; port {port} is held by pid {live}"
            in done.stdout)
    assert cli("dbtier.cli", "status", "--spec", two_provisions_at_once["spec_file"]).returncode == 0


def test_a_lock_left_by_a_dead_run_is_taken_over(two_provisions_at_once: dict[str, Any], spec: ClusterSpec) -> None:
    from prefect.variables import Variable

    stale = Holder(spec.name, "backup", socket.gethostname(), dead_pid(), "2026-01-01T00:00:00Z", "stale-token")
    Variable.set(lock_name(spec.name), stale.as_value())

    done = cli("flows.provision", "--spec", two_provisions_at_once["spec_file"])

    assert done.returncode == 0, done.stderr[-2000:]
    assert (f"dbtier: cluster race: took over a stale lock from {stale.describe()}: pid {stale.pid} on "
            f"{socket.gethostname()} is gone") in done.stderr.splitlines()
    assert "(nothing changed)" in done.stdout
    assert Variable.get(lock_name(spec.name)) is None  # released at the end


def test_a_lock_held_elsewhere_refuses_teardown_in_one_line(
    two_provisions_at_once: dict[str, Any], spec: ClusterSpec
) -> None:
    from prefect.variables import Variable

    holder = Holder(spec.name, "backup", "db-elsewhere", 4242, "2026-01-01T00:00:00Z", "live-token")
    Variable.set(lock_name(spec.name), holder.as_value())
    try:
        done = cli("flows.teardown", "--spec", two_provisions_at_once["spec_file"], "--wipe")
    finally:
        Variable.unset(lock_name(spec.name))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"dbtier: error: cluster: race is busy: {holder.describe()} is changing it; wait for that run to end and "
        "run again (if it is dead and dbtier cannot tell from here: prefect variable unset dbtier-race-lock)"
    ]
    engine, provider = get_engine(spec), get_provider(spec)
    assert len(bootstrap.running_services(engine, provider, spec)) == 6 and os.path.isdir(spec.cluster_dir)


def test_a_scheduled_run_takes_the_lock_itself_and_is_refused_while_another_holds_it(
    two_provisions_at_once: dict[str, Any], spec: ClusterSpec
) -> None:
    """A flow run a worker or `make serve` starts has no command line in front of it: the flow takes the lock."""
    from prefect.variables import Variable

    from dbtier.errors import ClusterBusy
    from flows.teardown import teardown

    holder = Holder(spec.name, "restore-drill", "db-elsewhere", 4242, "2026-01-01T00:00:00Z", "live-token")
    Variable.set(lock_name(spec.name), holder.as_value())
    try:
        with pytest.raises(ClusterBusy, match="cluster: race is busy: flow restore-drill"):
            teardown(spec_path=two_provisions_at_once["spec_file"], wipe=True)
    finally:
        Variable.unset(lock_name(spec.name))
    engine, provider = get_engine(spec), get_provider(spec)
    assert len(bootstrap.running_services(engine, provider, spec)) == 6 and os.path.isdir(spec.cluster_dir)
