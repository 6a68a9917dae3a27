"""MongoDB's oplog archiver runs on a member host as the database OS user, with the host's runtime venv and the
dbtier code shipped there: real processes through the local provider, no mongod needed.

Before this, the archiver ran with this machine's own Python, which lives under a root-only home: as the database
OS user it could not even start (``Permission denied``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dbtier.backup.repos import BackupSecrets
from dbtier.engines.base import get_engine
from dbtier.providers.base import get_provider
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from tests.clusters import shared_tmpdir

pytestmark = pytest.mark.cluster
PORT = 47517  # nothing listens here: the archiver must say so in one line


@pytest.fixture(scope="module")
def spec() -> Iterator[ClusterSpec]:
    root = shared_tmpdir("dbtier-mongo-runtime-")
    yield ClusterSpec(engine="mongodb", name="rt", data_root=root, members=1, mongodb={"port": PORT},
                      tls={"enabled": False}, backup={"repositories": [{"type": "fs", "path": f"{root}/backups"}]})


@pytest.fixture(scope="module")
def configured(spec: ClusterSpec) -> list[str]:
    engine = get_engine(spec)
    return engine.configure_archiving(get_provider(spec), spec, BackupSecrets(), Passwords.generate(engine.secret_roles))


def assert_the_os_user_runs_the_shipped_code(spec: ClusterSpec, configured: list[str]) -> None:
    assert configured[0].startswith(f"127.0.0.1: dbtier's code shipped to {spec.cluster_dir}/runtime (")
    service = get_engine(spec).archiver_services(spec)[0]
    assert service.argv[0] == spec.binaries.python == "/opt/dbtier/venv/bin/python"
    runner = get_provider(spec).runner(spec, service.host)
    probe = ("import os, pwd, boto3, dbtier.engines.mongodb.archiver as a, dbtier.engines.mongodb.s3store; "
             "print(pwd.getpwuid(os.getuid()).pw_name, a.__file__)")
    done = runner.run([service.argv[0], "-c", probe], env=service.env, check=False)
    assert done.rc == 0, done.err
    assert done.out.split() == [spec.os_user, f"{spec.cluster_dir}/runtime/dbtier/engines/mongodb/archiver.py"]
    assert os.stat(f"{spec.cluster_dir}/runtime/dbtier").st_uid != 0, "the shipped code is the OS user's"


def test_provision_ships_the_code_and_the_archiver_imports_it_as_the_os_user(spec: ClusterSpec,
                                                                             configured: list[str]) -> None:
    assert_the_os_user_runs_the_shipped_code(spec, configured)


def test_the_archiver_without_its_mongod_exits_1_with_one_line_naming_the_member(spec: ClusterSpec,
                                                                                 configured: list[str]) -> None:
    service = get_engine(spec).archiver_services(spec)[0]
    done = get_provider(spec).runner(spec, service.host).run(service.argv, env=service.env, check=False, timeout=90)
    lines = done.err.strip().splitlines()
    assert done.rc == 1 and len(lines) == 1, done.err
    assert lines[0].startswith(f"dbtier-archiver: error: mongo0 (127.0.0.1:{PORT}): ") and "Connection refused" in lines[0]
    assert "Traceback" not in done.err


def test_a_second_provision_replaces_the_shipped_code(spec: ClusterSpec, configured: list[str]) -> None:
    stale = f"{spec.cluster_dir}/runtime/dbtier/stale_module.py"
    with open(stale, "w") as fh:
        fh.write("raise SystemExit('old code')\n")
    engine = get_engine(spec)
    again = engine.configure_archiving(get_provider(spec), spec, BackupSecrets(), Passwords.generate(engine.secret_roles))
    assert_the_os_user_runs_the_shipped_code(spec, again)
    assert not os.path.exists(stale), "a provision replaces the package: no module of older code stays"
