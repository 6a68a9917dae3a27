"""TLS benchmark: what `tls.enabled` costs, against the same cluster in clear, measured in one run.

    .venv/bin/python bench/tls.py [--seconds 15] [--clients 10] [--scale 5] [--quick]

One after the other, on the same ports (24000-24099, test block 40) and temporary data roots, the same
3-member spec (3 PostgreSQL + Patroni members, 3 etcd) with `tls: {enabled: false}`, then with TLS on:
  1. provision as plain function calls (bench/common.py's provision_plain: no Prefect), wall seconds;
  2. `pgbench -i -s N` as the app role, then against the primary, each after a 2 s warm-up (not counted):
     `pgbench -S` (select-only) for N s, and `pgbench -S -C` (a new connection per transaction), which
     gives connections per second. TLS: sslmode=verify-full and the cluster CA's certificate as sslrootcert
     (dbtier.engines.postgres.topology.conninfo); clear: sslmode=disable (no SSLRequest round trip, nothing encrypted).
  3. stopped by PID and wiped before the next cluster.
It prints the figures and their ratios TLS / clear; no timing is asserted. It also says how busy the
machine was: the load average, and the CPU that processes other than this bench and its clusters used
while pgbench ran. pgbench runs here, as this user, from the cluster's pg_bin_dir. Everything it starts is
stopped by its pid and its temporary directory removed at the end, whatever happens (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import exit_with, provision_plain, remove_cluster, stop_popen  # noqa: E402
from dbtier import bootstrap, procs  # noqa: E402
from dbtier.engines.postgres import pgbackrest_ops  # noqa: E402
from dbtier.ca_store import FILE_CA_STORE  # noqa: E402
from dbtier.engines.postgres import etcd, etcd_auth  # noqa: E402
from dbtier.engines.base import Engine, get_engine  # noqa: E402
from dbtier.engines.postgres.engine import PostgresEngine, connect  # noqa: E402
from dbtier.providers.base import get_provider  # noqa: E402
from dbtier.engines.postgres.engine import POSTGRES_SECRETS  # noqa: E402
from dbtier.secrets import Passwords  # noqa: E402
from dbtier.spec import ClusterSpec  # noqa: E402
from dbtier.engines.postgres.topology import conninfo, pg_members  # noqa: E402
from tests.clusters import spec_for_tests  # noqa: E402

#: tests/clusters.py's block 40 is ports 24000-24099 (postgres +0, patroni +20, etcd +40), the range this bench
#: owns; both clusters use it in turn, never at once
BLOCK = 40
WARM_UP_S = 2
#: pgbench client processes running now, stopped by pid at the end whatever happens
CLIENTS: dict[int, subprocess.Popen[str]] = {}


@dataclass
class Figures:
    """What one cluster measured."""

    provision_s: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # seconds of each of STEPS within provision_s
    select_tps: float = 0.0
    connect_per_s: float = 0.0
    connect_ms: float = 0.0  # pgbench's "average connection time" under -C
    session: str = ""  # what pg_stat_ssl says about a client connection
    rest: str = ""  # the Patroni REST API's scheme


@dataclass
class Busy:
    """CPU used by processes other than this bench and its clusters, during the pgbench runs."""

    seconds: float = 0.0  # wall seconds watched
    foreign_jiffies: int = 0
    loads: list[float] = field(default_factory=list)  # 1-minute load average before each step
    top: dict[str, int] = field(default_factory=dict)  # foreign command name -> jiffies

    def cores(self) -> float:
        return self.foreign_jiffies / os.sysconf("SC_CLK_TCK") / self.seconds if self.seconds else 0.0


# ---- the clusters -------------------------------------------------------------------------------


def bench_spec(root: str, tls: bool) -> ClusterSpec:
    """The same 3-member spec on block 24, in clear or with TLS; no WAL archiving (a plain provision makes no
    stanza, so archive_command would only fail and retry while pgbench -i writes)."""
    name = "benchtls-on" if tls else "benchtls-off"  # each its own directory under ``root``, and its own CA
    return spec_for_tests(name, BLOCK, root, tls={"enabled": tls}, postgresql_parameters={"archive_mode": "off"})


def warm_up(spec: ClusterSpec) -> None:
    """Not timed: the programs in the page cache and the modules provision imports loaded, so the first
    cluster provisioned pays no more for a cold start than the second."""
    import cryptography.x509  # noqa: F401 - certificates
    import psycopg  # noqa: F401
    import requests  # noqa: F401

    import dbtier.tls_files  # noqa: F401

    b = spec.pg.binaries
    for argv in ([b.patroni, "--version"], [b.etcd, "--version"], [f"{b.pg_bin_dir}/postgres", "--version"]):
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


#: The provision steps timed one by one: where TLS's cost (or its absence) shows. Each is wrapped where
#: provision_plain reaches it (a module attribute or the engine's class) and put back afterwards.
STEPS = {
    "certificates (CA and every member's)": (bootstrap, "ensure_certificates"),
    "etcd quorum": (etcd, "wait_for_quorum"),
    "etcd users and roles": (etcd_auth, "secure"),
    "leader, replicas' slots": (PostgresEngine, "prepare_replicas"),
    "until healthy": (Engine, "wait_healthy"),
}


@contextlib.contextmanager
def step_clock(spent: dict[str, float]) -> Iterator[None]:
    """While inside, ``spent[step]`` adds up the wall seconds of each of :data:`STEPS`."""
    originals = {step: getattr(owner, name) for step, (owner, name) in STEPS.items()}

    def timed(step: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.monotonic()
            try:
                return call(*args, **kwargs)
            finally:
                spent[step] = spent.get(step, 0.0) + time.monotonic() - began
        return wrapper

    for step, (owner, name) in STEPS.items():
        setattr(owner, name, timed(step, originals[step]))
    try:
        yield
    finally:
        for step, (owner, name) in STEPS.items():
            setattr(owner, name, originals[step])


def provision(spec: ClusterSpec, passwords: Passwords) -> tuple[float, dict[str, float]]:
    """Wall seconds of the whole plain provision, and of each of :data:`STEPS` in it."""
    spent = {step: 0.0 for step in STEPS}
    started = time.monotonic()
    with step_clock(spent):
        provision_plain(spec, passwords, FILE_CA_STORE if spec.tls.enabled else None)
    return time.monotonic() - started, spent


def primary_conninfo(spec: ClusterSpec) -> str:
    """The primary as the app role: with the cluster's libpq TLS settings, or explicitly in clear."""
    member = pgbackrest_ops.leader(spec)
    info = conninfo(spec, member.host, member.pg_port, spec.app.user, spec.app.database)
    return info if spec.tls.enabled else f"{info} sslmode=disable"


def describe_session(info: str, password: str) -> str:
    """What the server says about a connection made with ``info``: proof of what was measured."""
    with connect(info, password) as conn:
        ssl, version, cipher = conn.execute(
            "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    return f"{version} {cipher}" if ssl else "no TLS"


# ---- pgbench ------------------------------------------------------------------------------------


def pgbench(spec: ClusterSpec, info: str, password: str, *options: str, timeout: float = 3600) -> str:
    """One pgbench run from this machine against ``info``; its output. The password is in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    argv = [f"{spec.pg.binaries.pg_bin_dir}/pgbench", *options, info]
    client = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    CLIENTS[client.pid] = client
    try:
        out, err = client.communicate(timeout=timeout)
    finally:
        stop_client(client)
    if client.returncode != 0:
        tail = " | ".join(err.strip().splitlines()[-3:])
        raise SystemExit(f"pgbench {' '.join(options)} against {spec.name} failed (rc {client.returncode}): {tail}")
    return out + err


def stop_client(client: subprocess.Popen[str]) -> None:
    """Stop one pgbench by its pid (a no-op once it has exited)."""
    CLIENTS.pop(client.pid, None)
    stop_popen(client, 10)


def stop_clients() -> None:
    for client in list(CLIENTS.values()):
        stop_client(client)


def figure(pattern: str, output: str) -> float:
    found = re.search(pattern, output)
    if not found:
        raise SystemExit(f"pgbench printed no {pattern!r}: {output.strip()[-300:]}")
    return float(found.group(1))


# ---- how busy the machine is --------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, CPU jiffies of the process and of its reaped children, command name)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
        table[int(entry)] = (int(rest[1]), sum(int(x) for x in rest[11:15]), comm)
    return table


def tree(table: dict[int, tuple[int, int, str]], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    ours, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in ours:
            ours.add(pid)
            todo.extend(children.get(pid, []))
    return ours


def busy_jiffies() -> int:
    """Non-idle CPU time of the whole machine, all cores (/proc/stat: user nice system irq softirq steal)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return values[0] + values[1] + values[2] + sum(values[5:8])


def cluster_roots(spec: ClusterSpec) -> set[int]:
    """This process, the cluster's services (pid files) and its postmasters (Patroni double-forks them: their
    parent is init, not Patroni)."""
    engine, provider = get_engine(spec), get_provider(spec)
    pids = {procs.running_pid(provider.runner(spec, s.host), s) for s in bootstrap.all_services(engine, spec)}
    pids |= {procs.read_pid(provider.runner(spec, m.host), f"{m.data_dir}/postmaster.pid") for m in pg_members(spec)}
    return {p for p in pids if p} | {os.getpid()}


@contextlib.contextmanager
def watched(spec: ClusterSpec, busy: Busy) -> Iterator[None]:
    """Add to ``busy`` the CPU that other processes used meanwhile: the machine's busy time minus this process
    tree's and the cluster's (their exited children's time counts in their parents' as they are reaped)."""
    roots = cluster_roots(spec)
    before, machine, started = proc_table(), busy_jiffies(), time.monotonic()
    yield
    after, machine = proc_table(), busy_jiffies() - machine
    busy.seconds += time.monotonic() - started
    ours_before, ours_after = tree(before, roots), tree(after, roots)
    ours = sum(after[p][1] for p in ours_after) - sum(before[p][1] for p in ours_before)
    busy.foreign_jiffies += max(0, machine - ours)
    for pid in (set(after) & set(before)) - ours_after - ours_before:
        used = after[pid][1] - before[pid][1]
        if used > 0:
            busy.top[after[pid][2]] = busy.top.get(after[pid][2], 0) + used


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---- one cluster, then the run ------------------------------------------------------------------


def measure(spec: ClusterSpec, args: argparse.Namespace, busy: Busy) -> Figures:
    """Provision ``spec``, load pgbench data, run the two timed runs; the caller stops and wipes it."""
    passwords = Passwords.generate(POSTGRES_SECRETS)
    fig = Figures()
    fig.provision_s, fig.steps = provision(spec, passwords)
    print(f"  {spec.name}: provisioned (3 members + 3 etcd healthy, replication verified) in {fig.provision_s:.1f} s: "
          + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in fig.steps.items()), flush=True)
    info = primary_conninfo(spec)
    fig.session, fig.rest = describe_session(info, passwords.app), pgbackrest_ops.leader(spec).rest_url.split(":")[0]
    pgbench(spec, info, passwords.app, "-i", "-q", "-s", str(args.scale))
    threads = ["-j", str(min(args.clients, os.cpu_count() or 1))]
    common = ["-S", "-n", "-c", str(args.clients), *threads]
    out = timed_pgbench(spec, info, passwords.app, busy, args.seconds, *common)
    fig.select_tps = figure(r"tps = ([\d.]+)", out)
    out = timed_pgbench(spec, info, passwords.app, busy, args.seconds, *common, "-C")
    fig.connect_per_s = figure(r"tps = ([\d.]+)", out)
    fig.connect_ms = figure(r"average connection time = ([\d.]+) ms", out)
    print(f"  {spec.name}: client session {fig.session}; REST {fig.rest}; pgbench -S {fig.select_tps:.0f} tps, "
          f"-S -C {fig.connect_per_s:.0f} connections/s ({fig.connect_ms:.2f} ms each)", flush=True)
    return fig


def timed_pgbench(spec: ClusterSpec, info: str, password: str, busy: Busy, seconds: int, *options: str) -> str:
    """A warm-up of WARM_UP_S (not counted), then ``seconds`` of pgbench, watched for other processes' CPU."""
    pgbench(spec, info, password, *options, "-T", str(WARM_UP_S))
    busy.loads.append(load_1min())
    with watched(spec, busy):
        return pgbench(spec, info, password, *options, "-T", str(seconds))


def table(clear: Figures, tls: Figures, args: argparse.Namespace) -> str:
    rows = [("provision, 3 members + 3 etcd (s)", clear.provision_s, tls.provision_s, "{:.1f}")]
    rows += [(f"  {step}", clear.steps[step], tls.steps[step], "{:.2f}") for step in STEPS]
    rows += [("  the rest", clear.provision_s - sum(clear.steps.values()), tls.provision_s - sum(tls.steps.values()),
              "{:.2f}")]
    rows += [
        (f"pgbench -S, {args.clients} clients, {args.seconds} s (tps)", clear.select_tps, tls.select_tps, "{:.0f}"),
        (f"pgbench -S -C, {args.clients} clients (connections/s)", clear.connect_per_s, tls.connect_per_s, "{:.0f}"),
        ("  average connection time (ms)", clear.connect_ms, tls.connect_ms, "{:.2f}"),
    ]
    lines = [f"{'measure':52} {'clear':>9} {'TLS':>9} {'TLS/clear':>10}"]
    for name, a, b, fmt in rows:
        ratio = f"{b / a:9.2f}x" if a else f"{'-':>10}"
        lines.append(f"{name:52} {fmt.format(a):>9} {fmt.format(b):>9} {ratio}")
    return "\n".join(lines)


def busy_report(busy: Busy, load_end: float) -> str:
    top = ", ".join(f"{name} {j / os.sysconf('SC_CLK_TCK'):.1f} s" for name, j in
                    sorted(busy.top.items(), key=lambda kv: -kv[1])[:3]) or "none"
    verdict = "BUSY, rerun when it is quiet" if busy.cores() > 0.2 or busy.loads[0] > 1.5 else "quiet"
    return (f"machine: {os.cpu_count()} cores; 1-min load at the start {busy.loads[0]:.2f}, then before each step "
            f"{', '.join(f'{x:.2f}' for x in busy.loads[1:])}, at the end {load_end:.2f} (those include this bench's own "
            f"clusters and pgbench); processes other than this bench and its clusters used {busy.cores():.2f} cores "
            f"on average during the {busy.seconds:.0f} s of timed pgbench (most: {top}): {verdict}")


def run(root: str, args: argparse.Namespace, cleanup: contextlib.ExitStack) -> tuple[Figures, Figures, Busy]:
    busy, results = Busy(loads=[load_1min()]), []
    for tls in (False, True):
        spec = bench_spec(root, tls)
        cleanup.callback(remove_cluster, spec)
        if not tls:
            warm_up(spec)
        print(f"{'TLS on' if tls else 'TLS off'}: {spec.name}, postgres {spec.pg.ports.postgres}+, "
              f"data root {spec.data_root}", flush=True)
        try:
            results.append(measure(spec, args, busy))
        finally:  # before the next cluster, on the same ports
            stop_clients()
            remove_cluster(spec)
    return results[0], results[1], busy


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="length of each timed pgbench run (default 15)")
    parser.add_argument("--clients", type=int, default=10, help="pgbench clients (default 10)")
    parser.add_argument("--scale", type=int, default=5, help="pgbench -i scale (default 5: about 75 MiB)")
    parser.add_argument("--quick", action="store_true", help="5 s runs (overrides --seconds)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 5
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill too
    started, load_start = time.monotonic(), load_1min()
    root = tempfile.mkdtemp(prefix="dbtier-bench-tls-")
    os.chmod(root, 0o755)  # the database OS user traverses it
    os.environ["DBTIER_WORK_DIR"] = os.path.join(root, "work")  # the CA and its client copy: removed with root
    print(f"scale {args.scale}, {args.clients} clients, {args.seconds} s runs; the clear cluster measured, stopped and wiped, then the TLS one, "
          f"both on 127.0.0.1:24000-24099; 1-min load at start {load_start:.2f}; temporary root {root}", flush=True)
    with contextlib.ExitStack() as cleanup:  # runs in reverse: clients, clusters, then the directory
        cleanup.callback(shutil.rmtree, root, True)
        cleanup.callback(stop_clients)
        try:
            clear, tls, busy = run(root, args, cleanup)
        finally:  # no second Ctrl-C or kill half-way through the clean-up
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"\n{table(clear, tls, args)}\n")
    print(f"TLS: {tls.session} (sslmode=verify-full, the cluster CA as sslrootcert), REST {tls.rest}; "
          f"clear: {clear.session} (sslmode=disable), REST {clear.rest}")
    print(busy_report(busy, load_1min()))
    print(f"(whole run, set-up and clean-up included: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    exit_with(main, "bench/tls.py: interrupted; its clusters and pgbench stopped, its directory removed")
