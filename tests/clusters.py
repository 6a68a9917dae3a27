"""Helpers for tests that run real clusters: their own port range and data roots, teardown by PID."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dbtier.spec import OLD_PLACES, ClusterSpec, build_spec, port_plan
from dbtier.engines.postgres.topology import PgMember

#: Tests use ports from 20000 up, never a user's defaults (5432, 8008, 2379...). Each suite takes a block of 100
#: and keeps every port it opens inside it, restored copies included, because suites run side by side (xdist):
#: members on +0..+2 (postgres), +20..+22 (patroni), +40..+45 (etcd client and peer); routers on +60..+65,
#: PgBouncers on +80..+82, the monitoring stack on +70..+72 (Prometheus, Alertmanager, node exporter); copies made by
#: ``restore --into`` on those + RESTORE_OFFSET; the restore drill's throwaway copy on those + DRILL_OFFSET;
#: sshd and S3 servers on +90 and up. ``spec_for_tests`` checks it.
TEST_PORT_BASE = 20000
DRILL_OFFSET = 12
RESTORE_OFFSET = 6

FAST_TIMING = {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}


def spec_for_tests(name: str, block: int, data_root: str, **fields: Any) -> ClusterSpec:
    """A spec on the test port block ``block`` (0-99) with tuned Patroni timing, without routers unless
    ``routing`` says so (the routing suites turn them on)."""
    base = TEST_PORT_BASE + 100 * block
    backup = dict(fields.pop("backup", None) or {})
    backup["restore_drill"] = {"port_offset": DRILL_OFFSET, **backup.get("restore_drill", {})}
    postgres = {"ports": {"postgres": base, "patroni": base + 20, "etcd": base + 40, "router": base + 60,
                          "router_stats": base + 65, "pgbouncer": base + 80},
                "patroni": FAST_TIMING, "routing": {"enabled": False}}
    postgres.update({key: fields.pop(key) for key in OLD_PLACES["postgres"] if key in fields})  # patroni=, routing=
    postgres.update(fields.pop("postgres", None) or {})
    data: dict[str, Any] = {
        "name": name,
        "postgres": postgres,
        "monitoring": {"ports": {"prometheus": base + 70, "alertmanager": base + 71, "node_exporter": base + 72},
                       "exporters": {"postgres": base + 74, "pgbouncer": base + 77, "node": base + 83}},
        "data_root": data_root,
        "backup": backup,
    }
    data.update(fields)
    spec = build_spec(data, environ={})
    check_inside_block(spec, block)
    return spec


def one_member(spec: ClusterSpec) -> dict[str, Any]:
    """``spec``'s data with one member and one etcd member: a PostgreSQL cluster's smallest copy."""
    data = spec.model_dump(mode="json")
    data["members"] = 1
    data["postgres"]["etcd_members"] = 1
    return data


def check_inside_block(spec: ClusterSpec, block: int) -> None:
    """Fail fast when the cluster, its restored copies or its drill copy would open a port outside the block,
    or two of them would share one (another suite, running beside this one, owns the next block)."""
    from dbtier.backup.restore import derive_target, throwaway_spec

    base = TEST_PORT_BASE + 100 * block
    taken: dict[int, str] = {}
    for copy in (spec, derive_target(spec, f"{spec.name}-restored", RESTORE_OFFSET), throwaway_spec(spec)):
        for field, port in port_plan(copy):
            where = f"{copy.name} {field}"
            assert base <= port < base + 90, f"{where}: port {port} is outside test block {block}"
            assert port not in taken, f"{where}: port {port} is also {taken[port]}"
            taken[port] = where


#: Every directory ``shared_tmpdir`` made in this process; removed when the test session ends.
MADE_DIRS: list[str] = []


def shared_tmpdir(prefix: str) -> str:
    """A temporary directory the database OS user can traverse (mkdtemp makes 0700 ones), removed at the end
    of the test session (``remove_made_dirs``), after every fixture has stopped its processes."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    MADE_DIRS.append(path)
    return path


def remove_made_dirs() -> None:
    import shutil

    while MADE_DIRS:
        shutil.rmtree(MADE_DIRS.pop(), ignore_errors=True)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@contextmanager
def stopped_at_exit(spec: ClusterSpec) -> Iterator[None]:
    """Whatever happens in the block, stop every process of the cluster by its pid file."""
    from blocks.loaders import PREFECT_LOADERS
    from dbtier import bootstrap
    from dbtier.engines.base import get_engine
    from dbtier.providers.base import get_provider

    try:
        yield
    finally:
        bootstrap.stop_services(get_engine(spec), get_provider(spec, PREFECT_LOADERS), spec)


@contextmanager
def provisioned_by_flow(spec: ClusterSpec, wipe: bool = False) -> Iterator[str]:
    """``spec`` provisioned by the provision flow from a spec file in its data root (yielded); afterwards every
    process stopped by PID and, with ``wipe``, the cluster's data and its data root removed."""
    import shutil

    from blocks.loaders import PREFECT_LOADERS
    from dbtier import bootstrap
    from dbtier.engines.base import get_engine
    from dbtier.providers.base import get_provider
    from flows.provision import provision

    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        provision(spec_path=spec_file)
        yield spec_file
    if wipe:
        bootstrap.wipe(get_engine(spec), get_provider(spec, PREFECT_LOADERS), spec)
        shutil.rmtree(spec.data_root, ignore_errors=True)


def rest_request(spec: ClusterSpec, member: PgMember, method: str, path: str, timeout: float = 5,
                 **kwargs: Any) -> Any:
    """One call to ``member``'s Patroni REST API as dbtier makes it (HTTPS verifying the cluster CA when TLS
    is on); the ``requests`` response."""
    from dbtier.engines.postgres.control_plane import http_session

    with http_session(spec) as session:
        return session.request(method, f"{member.rest_url}{path}", timeout=timeout, **kwargs)


def rest_json(spec: ClusterSpec, member: PgMember, path: str) -> Any:
    """A readable REST document (``/cluster``, ``/patroni``) of ``member``."""
    answer = rest_request(spec, member, "GET", path)
    answer.raise_for_status()
    return answer.json()


def write_spec(spec: ClusterSpec, path: str) -> str:
    """Save ``spec`` as a YAML file a CLI run can take with --spec."""
    import yaml

    with open(path, "w") as fh:
        yaml.safe_dump(spec.model_dump(mode="json"), fh)
    return path


def run_log_lines(run_ids: list[Any]) -> list[str]:
    """Every log line the Prefect API holds for the flow runs ``run_ids`` (oldest first, paged through), after
    flushing this process's log handler and letting the last batch land."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    time.sleep(2)  # logs reach the API in batches
    lines: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)), limit=200,
                                    offset=len(lines))
            lines += [log.message for log in page]
            if len(page) < 200:
                return lines


def dbtier_metric(cluster: str, source: str, name: str, **labels: str) -> float | None:
    """The value of one of dbtier's own metrics as a flow left it for Prometheus (parsed by prometheus_client's
    own text parser, so the file is valid exposition format too), or None when the file or the sample is missing."""
    from prometheus_client.parser import text_string_to_metric_families

    from dbtier import workdir
    from dbtier.monitoring.metrics import textfile_name

    path = os.path.join(workdir.metrics_dir(cluster), textfile_name(cluster, source))
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        for family in text_string_to_metric_families(fh.read()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
    return None


def eventually(what: str, check: Any, timeout: float = 60.0, every: float = 0.3) -> Any:
    """``check()``'s first truthy answer, asked every ``every`` seconds; fails the test naming ``what`` after
    ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)
