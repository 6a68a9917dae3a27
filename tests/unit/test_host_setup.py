"""scripts/host-setup.sh installs what the spec's engine runs: its plan mode (DBTIER_HOST_SETUP_PLAN=1) prints the
packages and their source and changes nothing, so it runs here for both engines, as any user."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent.parent / "scripts" / "host-setup.sh"


def plan(engine: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "DBTIER_ENGINE": engine, "DBTIER_HOST_SETUP_PLAN": "1"})


def test_mongodb_hosts_get_mongodb_org_7_from_mongodbs_signed_repository() -> None:
    done = plan("mongodb")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("host-setup: engine mongodb: would install mongodb-org gnupg ca-certificates ")
    assert "postgresql" not in done.stdout and "etcd" not in done.stdout and "patroni" not in done.stdout.lower()
    assert ("from MongoDB's apt repository: deb [ signed-by=/usr/share/keyrings/mongodb-server-7.0.gpg ] "
            "http://repo.mongodb.org/apt/debian bookworm/mongodb-org/7.0 main "
            "(key https://www.mongodb.org/static/pgp/server-7.0.asc into /usr/share/keyrings/mongodb-server-7.0.gpg)"
            ) in lines[1]
    assert "own units: mongod prometheus-node-exporter;" in lines[2], "the packages' units would hold 27017 and 9100"
    assert " prometheus-node-exporter " in lines[0], "make monitor runs node exporter on each member host"


def test_postgres_hosts_keep_debians_stack() -> None:
    done = plan("postgres")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(
        "host-setup: engine postgres: would install postgresql-15 postgresql-15-pgaudit etcd-server etcd-client pgbackrest")
    assert "mongodb" not in done.stdout


def test_an_unset_engine_is_postgres() -> None:
    done = plan("")
    assert done.returncode == 0 and "engine postgres" in done.stdout


def test_an_unknown_engine_is_one_line_exit_2() -> None:
    done = plan("mysql")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "host-setup: DBTIER_ENGINE=mysql is not an engine; use postgres or mongodb\n"
