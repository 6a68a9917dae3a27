"""What the benchmarks share: the provision runbook as plain function calls (no Prefect)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dbtier import bootstrap  # noqa: E402
from dbtier.engines.postgres import pgbackrest  # noqa: E402
from dbtier.ca_store import CAStore  # noqa: E402
from dbtier.engines.base import get_engine  # noqa: E402
from dbtier.providers.base import get_provider  # noqa: E402
from dbtier.secrets import Passwords  # noqa: E402
from dbtier.spec import ClusterSpec  # noqa: E402

#: A benchmark's Prefect: no telemetry from its temporary server, warnings only.
PREFECT_ENV = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}


def provision_plain(spec: ClusterSpec, passwords: Passwords, ca_store: CAStore | None = None) -> None:
    """The provision flow's steps, in its order, as plain calls: the baseline the flow is measured against.

    Its providers use the library's loaders (key files, the spec's ``host_key`` pins); it configures no backups.
    With ``ca_store`` (``dbtier.ca_store.FILE_CA_STORE`` without Prefect) it also issues the cluster's CA and
    certificates where the flow does, after the directories: a spec with ``tls.enabled`` needs them.
    """
    engine, provider = get_engine(spec), get_provider(spec)
    bootstrap.prepare_hosts(engine, provider, spec)  # a no-op on the local provider; the ssh provider's host set-up
    bootstrap.preflight(engine, provider, spec)
    bootstrap.prepare_dirs(engine, provider, spec)
    if ca_store is not None:
        bootstrap.ensure_certificates(provider, spec, ca_store)
    for host in bootstrap.cluster_hosts(engine, spec):  # the superuser's pgpass (the flow's configure_backups writes it)
        runner = provider.runner(spec, host)
        runner.make_dirs(spec.backup_dir, 0o700)
        runner.write_file(pgbackrest.pgpass_path(spec), (pgbackrest.pgpass_line(passwords.superuser) + "\n").encode())
    for service in engine.consensus_services(spec):
        bootstrap.ensure_running(provider, spec, service)
    engine.wait_consensus(spec)
    engine.secure_consensus(spec, passwords)
    for service in engine.member_services(spec):
        bootstrap.write_member_files(engine, provider, spec, service, passwords)
        bootstrap.ensure_running(provider, spec, service)
    engine.prepare_replicas(spec, passwords, 300)
    engine.wait_healthy(spec, 300)
    engine.create_app_database(spec, passwords)
    engine.verify_replication(spec, passwords, 60)


def stop_popen(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """Stop a process this bench started, by its pid: SIGTERM, then SIGKILL after ``grace_s`` (a no-op once it
    has exited)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def exit_with(main: Callable[[], int], interrupted: str) -> NoReturn:
    """Exit with ``main()``'s code; on Ctrl-C (its clean-up has run by then) say ``interrupted`` and exit 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)


def remove_cluster(spec: ClusterSpec) -> None:
    """Stop every process of ``spec`` by its pid file, then wipe its directory (no-op when absent)."""
    engine, provider = get_engine(spec), get_provider(spec)
    bootstrap.stop_services(engine, provider, spec)
    bootstrap.wipe(engine, provider, spec)
