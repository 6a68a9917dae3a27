"""Session-wide test set-up: an isolated Prefect (temporary home, results, no telemetry).

The environment is set before Prefect is imported anywhere, so cached results and
blocks never leak between runs and no temporary server logs telemetry errors.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator, Iterator

import pytest

#: What no test reads back from the harness's API server, not recorded there: task runs and events, and no
#: automation triggers (dbtier defines none); flow runs, their states and logs, blocks and artifacts are recorded
#: as always. Measured: a flow of 200 tasks cost that server 7.3 s of CPU with the task-run recorder, 1.8 s without,
#: 1.0 s without the triggers too; the harness servers were a fifth of the suite's CPU on 2 cores. The UI suite's
#: own ``prefect server start`` runs without this, as a user's server does.
QUIET_SERVER = {"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false"}
_PREFECT_HOME = tempfile.mkdtemp(prefix="dbtier-test-prefect-")
os.environ.update(
    {
        "PREFECT_HOME": _PREFECT_HOME,
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": os.path.join(_PREFECT_HOME, "results"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        **QUIET_SERVER,
    }
)
for _key in [k for k in os.environ if k.startswith("DBTIER_") and not k.startswith("DBTIER_TEST_")]:
    del os.environ[_key]  # DBTIER_TEST_* name what the suites run against (tests/mongod.py), not a spec field
os.environ["DBTIER_WORK_DIR"] = os.path.join(_PREFECT_HOME, "work")  # drill evidence and local pins: removed below


#: The slowest test files (minutes each on 2 cores), started first: with a file per worker at a time, one of them
#: left for the end would run alone while the other workers idle (measured: the last 15 % of items took 13 of 20
#: minutes). Longest first by the CI's per-file totals; every other file keeps its place after them. Paths are
#: relative to tests/ (unit/ and integration/ share some file names); a unit file of subprocesses is slow too.
SLOW_FIRST = (
    "integration/test_lab.py", "integration/test_proxmox_per_member.py", "integration/test_lab_network_drills.py",
    "integration/test_backup_restore.py", "integration/test_refusals_everywhere.py", "integration/test_drills.py",
    "integration/test_lab_proxmox.py", "integration/test_ssh_provider.py", "integration/test_restore_safety.py",
    "integration/test_pg_security.py", "integration/test_lab_firewall.py", "integration/test_routing.py",
    "integration/test_certs.py", "integration/test_control_plane_auth.py", "unit/test_cli_front_door.py",
    "integration/test_backup_s3.py", "integration/test_provision.py", "integration/test_monitoring.py",
    "integration/test_ui.py", "integration/test_teardown_truth.py", "integration/test_proxmox_provider.py",
)
_TESTS = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow files first (a stable sort: inside a file, tests keep their order)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.relpath(item.path, _TESTS), len(SLOW_FIRST)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave no temporary directory behind: the clusters' data roots, the S3 servers' and Prefect's home (with
    dbtier's work directory in it)."""
    import shutil

    from tests.clusters import remove_made_dirs

    remove_made_dirs()
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (a temporary API on SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ---- the MongoDB suite's one line -----------------------------------------------------------------------------
# Here, not in tests/integration/: under pytest-xdist with no path given (make test) the controller loads only this
# conftest, and only the controller prints the terminal summary.

MONGODB_SUITE = "tests/integration/test_mongodb_life.py"
_SAID = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """The MongoDB suite's skips by its module mark, reported at the module rather than at each test, so ``-ra``
    shows them as one line (``SKIPPED [9] tests/integration/test_mongodb_life.py: <why>``) wherever it runs."""
    report = yield
    longrepr = report.longrepr
    if (item.nodeid.startswith(MONGODB_SUITE) and report.when == "setup" and report.skipped
            and isinstance(longrepr, tuple) and len(longrepr) == 3):
        report.longrepr = (longrepr[0], None, longrepr[2])  # type: ignore[assignment]  # no line: -ra folds them
    return report


def _outcomes(reporter: pytest.TerminalReporter) -> dict[str, int]:
    """How each test of the MongoDB suite ended (one outcome per test: error or failure first, then skip)."""
    ended: dict[str, str] = {}
    for reports in reporter.stats.values():
        for rep in reports:
            nodeid = str(getattr(rep, "nodeid", ""))
            if not nodeid.startswith(MONGODB_SUITE) or not isinstance(rep, pytest.TestReport):
                continue
            if rep.failed:
                ended[nodeid] = "failed" if rep.when == "call" else "errors"
            elif rep.skipped and ended.get(nodeid) not in ("failed", "errors"):
                ended[nodeid] = "skipped"
            elif rep.passed and rep.when == "call" and nodeid not in ended:
                ended[nodeid] = "passed"
    counts: dict[str, int] = {}
    for outcome in ended.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """``MongoDB integration suite: skipped (why)`` or ``... ran against PATH (db version vX.Y)``, once, from the
    process that prints the summary (a pytest-xdist worker prints none; its reports reach the controller)."""
    if hasattr(config, "workerinput") or config.stash.get(_SAID, False):
        return
    config.stash[_SAID] = True
    from tests.mongod import summary_line

    line = summary_line(_outcomes(terminalreporter))
    if line:
        terminalreporter.write_line(line)
    _file_totals(terminalreporter)


def _file_totals(reporter: pytest.TerminalReporter, shown: int = 15) -> None:
    """The slowest test files by their setup + call + teardown seconds summed (what a worker spends on each; the
    order of SLOW_FIRST comes from these), and the sum over every file: the figures for keeping make test fast."""
    seconds: dict[str, float] = {}
    for reports in reporter.stats.values():
        for rep in reports:
            if isinstance(rep, pytest.TestReport):
                path = rep.nodeid.split("::", 1)[0]
                seconds[path] = seconds.get(path, 0.0) + rep.duration
    if not seconds:
        return
    reporter.write_sep("=", f"slowest {min(shown, len(seconds))} test files (worker-seconds)")
    for path, spent in sorted(seconds.items(), key=lambda kv: -kv[1])[:shown]:
        reporter.write_line(f"{spent:8.1f}s  {path}")
    reporter.write_line(f"{sum(seconds.values()):8.1f}s  in all, over {len(seconds)} files")
