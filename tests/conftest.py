"""Session-wide test set-up: an isolated Prefect (temporary home, results, no telemetry).

The environment is set before Prefect is imported anywhere, so cached results and
blocks never leak between runs and no temporary server logs telemetry errors.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="dbtier-test-prefect-")
os.environ.update(
    {
        "PREFECT_HOME": _PREFECT_HOME,
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": os.path.join(_PREFECT_HOME, "results"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
)
for _key in [k for k in os.environ if k.startswith("DBTIER_")]:
    del os.environ[_key]
os.environ["DBTIER_WORK_DIR"] = os.path.join(_PREFECT_HOME, "work")  # drill evidence and local pins: removed below


#: The slowest test files (minutes each on 2 cores), started first: with a file per worker at a time, one of them
#: left for the end would run alone while the other workers idle (measured: the last 15 % of items took 13 of 20
#: minutes). Longest first; every other file keeps its place after them.
SLOW_FIRST = (
    "test_lab_network_drills.py", "test_proxmox_per_member.py", "test_lab.py", "test_backup_restore.py",
    "test_routing.py", "test_lab_proxmox.py", "test_ssh_provider.py", "test_monitoring.py", "test_drills.py",
    "test_certs.py", "test_backup_s3.py", "test_pg_security.py", "test_lab_firewall.py", "test_control_plane_auth.py",
)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow files first (a stable sort: inside a file, tests keep their order)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)) if item.path.parent.name == "integration"
               else len(SLOW_FIRST))


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
