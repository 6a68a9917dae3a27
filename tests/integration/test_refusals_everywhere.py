"""Every command refuses bad input before its flow run starts: exit 2, exactly one line on stderr, nothing touched.

Provision's preflight is the model (tests/integration/test_refusals.py); here the other commands, through their
command lines: backup, the failover drill, the restore drill, a spec whose copies land on its own ports, and the
Prefect API as input (one that does not answer, one that does not hold the cluster's blocks).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dbtier import bootstrap, procs
from dbtier.backup.drill import MARKER_TABLE
from dbtier.backup.restore import throwaway_spec
from dbtier.engines.base import get_engine
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec, port_plan
from tests.clusters import listening, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(argv: list[str], api: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m <argv>`` as a user types it; ``api`` is the PREFECT_API_URL it gets (None: none at all)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if api is not None:
        env["PREFECT_API_URL"] = api
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout, check=False)


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, nothing on stdout, exactly one stderr line, ``dbtier: error: ...`` holding every one of ``words``."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dbtier: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert done.stdout == ""
    return lines[0]


def nothing_listens(spec: ClusterSpec) -> bool:
    return not [p for _, p in port_plan(spec) if listening(p)]


# ---- without a cluster (block 18) ---------------------------------------------------------------


@pytest.fixture
def idle(tmp_path: Any) -> ClusterSpec:
    """A spec of a cluster that was never provisioned: nothing of it runs or exists."""
    return spec_for_tests("idle", block=18, data_root=shared_tmpdir("dbtier-refusals-idle-"))


def _spec_file(spec: ClusterSpec, **changes: Any) -> str:
    data = spec.model_dump(mode="json")
    data.update(changes)
    path = os.path.join(spec.data_root, "spec.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(data, fh)
    return path


def test_backup_into_a_repository_the_spec_lacks_is_refused_before_the_flow_run(idle: ClusterSpec) -> None:
    started = time.monotonic()
    done = run_cli(["flows.backup", "--spec", _spec_file(idle), "--repo", "2"])
    refused(done, "repo: 2 is not a repository of the spec (1..1); pass --repo 1..1")
    assert time.monotonic() - started < 30  # no temporary API, no flow run
    assert "Flow run" not in done.stderr and not os.path.exists(idle.cluster_dir)


def test_a_drill_on_a_production_cluster_is_refused(idle: ClusterSpec) -> None:
    done = run_cli(["flows.failover_drill", "--scenario", "crash", "--spec", _spec_file(idle, production=True)])
    refused(done, "drills.allow_in_production: the cluster is marked production: true",
            "set drills.allow_in_production: true")
    assert not os.path.exists(idle.cluster_dir) and nothing_listens(idle)


def test_a_drill_on_a_cluster_that_does_not_run_is_refused_at_once(idle: ClusterSpec) -> None:
    started = time.monotonic()
    done = run_cli(["flows.failover_drill", "--scenario", "crash", "--spec", _spec_file(idle)])
    refused(done, "cluster: idle is not running (no process of it runs under", "provision it first")
    assert time.monotonic() - started < 30 and not os.path.exists(idle.cluster_dir) and nothing_listens(idle)


def test_an_unknown_scenario_is_refused(idle: ClusterSpec) -> None:
    done = run_cli(["flows.failover_drill", "--scenario", "meteor", "--spec", _spec_file(idle)])
    refused(done, "--scenario: invalid choice: 'meteor'")
    assert not os.path.exists(idle.cluster_dir)


def test_a_flow_run_from_the_ui_refuses_too(prefect_harness: None, idle: ClusterSpec) -> None:
    """A deployment or UI run has no command line before it: the flow's first step makes the same refusal."""
    from dbtier.errors import Refused
    from flows.backup import backup

    with pytest.raises(Refused, match=r"repo: 3 is not a repository of the spec \(1..1\)"):
        backup(spec_path=_spec_file(idle), repo=3)
    assert not os.path.exists(idle.cluster_dir)


def test_a_failed_run_says_why_in_one_line_without_a_traceback(idle: ClusterSpec) -> None:
    """Not a refusal (exit 1): the backup flow runs and finds no stanza. dbtier's own error ends the run; the
    console shows the run's few lines and the one error line, no stack trace (today: 84 lines, 2 tracebacks)."""
    done = run_cli(["flows.backup", "--spec", _spec_file(idle)])
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(lines) <= 10, done.stderr
    assert lines[-1].startswith("dbtier: error: command '") and "pgbackrest" in lines[-1], lines[-1]


def test_the_ui_shows_a_failed_run_without_a_traceback(prefect_harness: None, idle: ClusterSpec) -> None:
    """The logs a person reads in the UI for a run that ended in dbtier's error carry its message, no stack."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.backup import backup

    state = backup(spec_path=_spec_file(idle), repo=3, return_state=True)
    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    deadline, text = time.monotonic() + 20, ""
    while "Finished in state Failed" not in text and time.monotonic() < deadline:  # logs reach the API in batches
        time.sleep(0.5)
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        text = "\n".join(log.message for log in logs)
    assert "Encountered exception during execution: Refused('repo: 3 is not a repository of the spec" in text, text
    assert "Traceback" not in text, text


def test_a_drill_copy_on_the_clusters_own_ports_is_refused_when_the_spec_loads(idle: ClusterSpec) -> None:
    path = _spec_file(idle, backup={**idle.backup.model_dump(mode="json"), "restore_drill": {"port_offset": 1}})
    for argv in (["flows.restore_drill", "--spec", path], ["dbtier.cli", "status", "--spec", path]):
        refused(run_cli(argv), "backup.restore_drill.port_offset: the restore drill's copy (postgres.ports + 1) "
                "would put its postgres.ports.postgres (member 0) on port",
                "which is the cluster's postgres.ports.postgres (member 1)")
    assert not os.path.exists(idle.cluster_dir)


@pytest.mark.parametrize("argv", [["dbtier.cli", "password"], ["flows.status"], ["flows.backup"],
                                  ["flows.failover_drill", "--scenario", "crash"]])
def test_a_prefect_api_that_does_not_answer_is_one_line_naming_it(idle: ClusterSpec, argv: list[str]) -> None:
    done = run_cli([*argv, "--spec", _spec_file(idle)], api="http://127.0.0.1:1/api", timeout=60)
    refused(done, "prefect api: the Prefect API at http://127.0.0.1:1/api does not answer (ConnectError",
            "point PREFECT_API_URL at the API that serves this cluster, or unset it")
    assert not os.path.exists(idle.cluster_dir)


def test_a_missing_block_of_a_cluster_that_exists_points_at_another_api(idle: ClusterSpec) -> None:
    """A new shell without PREFECT_API_URL asks the local temporary API, which does not hold the cluster's blocks:
    never 'run provision' nor 'teardown' for a cluster that exists, and no block is created."""
    path = _spec_file(idle)
    never = run_cli(["dbtier.cli", "password", "--spec", path])
    refused(never, "dbtier-idle-superuser-password: no such block in the local temporary Prefect API (database",
            "run 'python -m flows.provision' to create the cluster")
    os.makedirs(idle.cluster_dir)
    with open(os.path.join(idle.cluster_dir, bootstrap.MARKER), "w") as fh:
        fh.write('{"name": "idle", "engine": "postgres"}')
    done = run_cli(["dbtier.cli", "password", "--spec", path])
    line = refused(done, f"but cluster idle exists under {idle.cluster_dir}: its blocks must be in another Prefect API",
                   "point PREFECT_API_URL at the API that serves this cluster")
    assert "teardown" not in line and "provision" not in line
    provision = run_cli(["flows.provision", "--spec", path])
    line = refused(provision, "dbtier-idle-superuser-password: no such Secret block in the local temporary Prefect API",
                   f"but cluster idle under {idle.cluster_dir} was initialised with it: its blocks must be in another")
    assert "teardown" not in line and "WIPE" not in line
    assert sorted(os.listdir(idle.cluster_dir)) == [bootstrap.MARKER] and nothing_listens(idle)
    again = run_cli(["dbtier.cli", "password", "--spec", path])
    assert again.stderr == done.stderr  # nothing was created by asking, nor by provision


# ---- on a running cluster (block 17) -----------------------------------------------------------


@pytest.fixture(scope="module")
def source() -> ClusterSpec:
    return spec_for_tests("refall", block=17, data_root=shared_tmpdir("dbtier-refusals-all-"), members=2,
                          etcd_members=1)


@pytest.fixture(scope="module")
def running_cluster_without_backups(prefect_harness: None, source: ClusterSpec) -> Iterator[str]:
    """A healthy two-member cluster provisioned through the flow (archiving on, no backup taken); stopped by PID."""
    from flows.provision import provision

    with stopped_at_exit(source), stopped_at_exit(throwaway_spec(source)):
        spec_file = write_spec(source, os.path.join(source.data_root, "spec.yaml"))
        provision(spec_path=spec_file)
        yield spec_file


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def _marker_rows(spec: ClusterSpec) -> int | None:
    """Rows in the restore drill's marker table on the source's primary (None: no such table)."""
    from blocks.passwords import load_passwords
    from dbtier.engines.postgres.engine import connect
    from dbtier.engines.postgres.topology import client_dsn

    with connect(client_dsn(spec), load_passwords(spec).app) as conn:
        row = conn.execute(f"SELECT to_regclass('{MARKER_TABLE}') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return None
        counted = conn.execute(f"SELECT count(*) FROM {MARKER_TABLE}").fetchone()
        return int(counted[0]) if counted else 0


def _copy_untouched(copy: ClusterSpec) -> bool:
    return not bootstrap.running_services(get_engine(copy), get_provider(copy), copy) and nothing_listens(copy)


def test_restore_drill_without_a_backup_writes_nothing(running_cluster_without_backups: str, source: ClusterSpec) -> None:
    before = _marker_rows(source)
    done = run_cli(["flows.restore_drill", "--spec", running_cluster_without_backups], api=_api())
    refused(done, "stanza refall: no backup to restore from", "run the backup flow first")
    assert _marker_rows(source) == before
    copy = throwaway_spec(source)
    assert not os.path.exists(copy.cluster_dir) and _copy_untouched(copy)


def test_restore_drill_whose_copy_port_is_taken_writes_nothing(running_cluster_without_backups: str,
                                                                source: ClusterSpec) -> None:
    copy = throwaway_spec(source)
    port = copy.pg.ports.patroni
    before = _marker_rows(source)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        done = run_cli(["flows.restore_drill", "--spec", running_cluster_without_backups], api=_api())
    refused(done, f"postgres.ports.patroni: 127.0.0.1:{port} (for pg0) is already in use",
            "choose another offset for this copy of refall")
    assert _marker_rows(source) == before
    assert not os.path.exists(copy.cluster_dir)


def test_restore_drill_over_a_leftover_that_is_not_its_own_leaves_it(running_cluster_without_backups: str,
                                                                      source: ClusterSpec) -> None:
    copy = throwaway_spec(source)
    os.makedirs(copy.cluster_dir)
    keep = os.path.join(copy.cluster_dir, "somebody-elses.txt")
    with open(keep, "w") as fh:
        fh.write("not the drill's\n")
    try:
        before = _marker_rows(source)
        done = run_cli(["flows.restore_drill", "--spec", running_cluster_without_backups], api=_api())
        refused(done, f"data_root: {copy.cluster_dir} is not empty and belongs to no dbtier cluster")
        assert _marker_rows(source) == before
        assert os.listdir(copy.cluster_dir) == ["somebody-elses.txt"] and open(keep).read() == "not the drill's\n"
    finally:
        os.remove(keep)
        os.rmdir(copy.cluster_dir)


def test_the_restore_drill_flow_itself_refuses_too(running_cluster_without_backups: str, source: ClusterSpec) -> None:
    """Run from the UI or a deployment, the flow's first step makes the same check, before any marker row."""
    from dbtier.errors import RestoreError
    from flows.restore_drill import restore_drill

    before = _marker_rows(source)
    with pytest.raises(RestoreError, match="stanza refall: no backup to restore from"):
        restore_drill(spec_path=running_cluster_without_backups)
    assert _marker_rows(source) == before


def test_a_drill_on_an_unhealthy_cluster_is_refused_at_once(running_cluster_without_backups: str,
                                                            source: ClusterSpec) -> None:
    """Last: it stops a member. Today's drill waited 180 s in silence before failing."""
    engine, provider = get_engine(source), get_provider(source)
    replica = next(s for s in engine.member_services(source) if s.name == "pg1")
    runner = provider.runner(source, replica.host)
    procs.stop(runner, replica)
    pids = {s.name: procs.running_pid(provider.runner(source, s.host), s) for s in bootstrap.all_services(engine, source)}
    started = time.monotonic()
    done = run_cli(["flows.failover_drill", "--scenario", "crash", "--spec", running_cluster_without_backups],
                   api=_api())
    took = time.monotonic() - started
    refused(done, "cluster: refall is already unhealthy (", "pg1", "fix it first (see 'dbtier status --spec")
    assert took < 40, took
    after = {s.name: procs.running_pid(provider.runner(source, s.host), s) for s in bootstrap.all_services(engine, source)}
    assert after == pids and after["pg1"] is None  # nothing stopped, nothing started
    assert not os.path.exists(os.path.join(source.cluster_dir, "drills"))
