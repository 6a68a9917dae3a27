"""Provision benchmark: seconds to a healthy cluster, Prefect's share, and the cluster's peak memory.

    .venv/bin/python bench/provision.py [--timing default|tuned]

In one run, on this machine, on ports 30000-30099 and temporary data roots:
  1. baseline: the same steps called as plain functions (no Prefect at all);
  2. dbtier:   `python -m flows.provision` end to end, as a user runs it (Python start-up,
     ephemeral Prefect API, flow and task runs included).
It prints both, their ratio, the difference (the price of orchestration), and the peak
proportional set size (PSS) of every cluster process, sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import PREFECT_ENV, provision_plain  # noqa: E402
from dbtier import bootstrap  # noqa: E402
from dbtier.ca_store import FILE_CA_STORE  # noqa: E402
from dbtier.engines.base import get_engine  # noqa: E402
from dbtier.providers.base import get_provider  # noqa: E402
from dbtier.engines.postgres.engine import POSTGRES_SECRETS  # noqa: E402
from dbtier.secrets import Passwords  # noqa: E402
from dbtier.spec import ClusterSpec, build_spec  # noqa: E402

TIMINGS = {"default": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}, "tuned": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}}


def bench_spec(name: str, timing: str) -> ClusterSpec:
    root = tempfile.mkdtemp(prefix="dbtier-bench-")
    os.chmod(root, 0o755)
    return build_spec(
        {"name": name, "data_root": root, "postgres": {"patroni": TIMINGS[timing],
                                                        "ports": {"postgres": 30000, "patroni": 30020, "etcd": 30040}}},
        environ={},
    )


def bare(spec: ClusterSpec) -> float:
    """The provision steps as plain function calls: the baseline."""
    passwords = Passwords.generate(POSTGRES_SECRETS)
    started = time.monotonic()
    provision_plain(spec, passwords, FILE_CA_STORE)
    return time.monotonic() - started


SERVER_PORT = 30090
#: One Prefect home for the timed runs, its database created before timing starts: a warm machine.
WARM_PREFECT_HOME = tempfile.mkdtemp(prefix="dbtier-bench-prefect-")


def warm_up_prefect() -> float:
    """Run one empty flow so the temporary API's database exists (migrations done); return how long that took."""
    env = {**os.environ, **PREFECT_ENV, "PREFECT_HOME": WARM_PREFECT_HOME}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "from prefect import flow; flow(lambda: None)()"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def with_flow(spec: ClusterSpec, api_url: str | None = None) -> float:
    """`python -m flows.provision` as a user runs it: against a temporary API, or a running server."""
    import yaml

    spec_file = os.path.join(spec.data_root, "spec.yaml")
    Path(spec_file).write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    env = {**os.environ, **PREFECT_ENV, "PREFECT_HOME": WARM_PREFECT_HOME}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "flows.provision", "--spec", spec_file], cwd=REPO, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def with_server(spec: ClusterSpec) -> float:
    return with_flow(spec, f"http://127.0.0.1:{SERVER_PORT}/api")


def start_prefect_server() -> subprocess.Popen[bytes]:
    """A Prefect server on loopback, as a user who keeps the UI open has (its start-up is not timed)."""
    import requests

    env = {**os.environ, **PREFECT_ENV, "PREFECT_HOME": tempfile.mkdtemp(prefix="dbtier-bench-server-")}
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(SERVER_PORT)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{SERVER_PORT}/api/health", timeout=1).ok:
                return server
        except requests.RequestException:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("the Prefect server did not start within 120 s")


def cluster_pids(spec: ClusterSpec) -> set[int]:
    """Every process of the cluster: the services from their pid files, and all their descendants."""
    engine, provider = get_engine(spec), get_provider(spec)
    from dbtier import procs

    roots = {procs.running_pid(provider.runner(spec, s.host), s) for s in bootstrap.all_services(engine, spec)}
    pids = {p for p in roots if p}
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in pids:
                pids.add(child)
                todo.append(child)
    return pids


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory(threading.Thread):
    def __init__(self, spec: ClusterSpec) -> None:
        super().__init__(daemon=True)
        self.spec, self.peak, self.done = spec, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            # pid files come and go while the cluster starts
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, sum(pss_kib(p) for p in cluster_pids(self.spec)))
            self.done.wait(0.2)


def measure(name: str, spec: ClusterSpec, runner: Callable[[ClusterSpec], float]) -> tuple[float, int]:
    engine, provider = get_engine(spec), get_provider(spec)
    sampler = PeakMemory(spec)
    sampler.start()
    try:
        seconds = runner(spec)
        time.sleep(2)  # the first seconds of a healthy cluster (checkpoints, walsenders) count too
    finally:
        sampler.done.set()
        sampler.join()
        bootstrap.stop_services(engine, provider, spec)
        bootstrap.wipe(engine, provider, spec)
    return seconds, sampler.peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timing", choices=sorted(TIMINGS), default="default")
    args = parser.parse_args()
    print(f"timing profile: {args.timing} {TIMINGS[args.timing]}; 3 PostgreSQL members + 3 etcd members on 127.0.0.1")
    cold_s = warm_up_prefect()
    base_s, base_mem = measure("baseline", bench_spec("benchbare", args.timing), bare)
    flow_s, flow_mem = measure("flow", bench_spec("benchflow", args.timing), with_flow)
    server = start_prefect_server()
    try:
        served_s, _ = measure("served", bench_spec("benchserved", args.timing), with_server)
    finally:
        server.terminate()
        server.wait(30)
    print(f"baseline (plain function calls, no Prefect):            healthy and verified in {base_s:6.1f} s")
    print(f"dbtier, python -m flows.provision, temporary Prefect API: {flow_s:6.1f} s "
          f"({flow_s / base_s:.2f}x; Prefect and Python start-up {flow_s - base_s:+.1f} s)")
    print(f"dbtier, python -m flows.provision, running Prefect server: {served_s:6.1f} s "
          f"({served_s / base_s:.2f}x; {served_s - base_s:+.1f} s)")
    print(f"(first flow run ever on a machine, creating Prefect's database, an empty flow: {cold_s:.1f} s)")
    print(f"peak PSS of the whole cluster: {max(base_mem, flow_mem) / 1024:.0f} MiB "
          f"(baseline run {base_mem / 1024:.0f} MiB, flow run {flow_mem / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
