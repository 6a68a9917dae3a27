"""Routing benchmark: what HAProxy and PgBouncer cost and save against direct connections, measured in one run.

    .venv/bin/python bench/routing.py [--seconds 15] [--scale 5] [--drill-runs 2] [--quick]

One 3-member cluster (3 PostgreSQL + Patroni members, 3 etcd, HAProxy router0 and a PgBouncer beside each
member; TLS on, synchronous_mode off) on ports 24100-24199 (test block 41) and a temporary data root:
  1. provisioned as plain function calls (bench/common.py's provision_plain, which also creates the pooler's
     auth role), then the provision flow's routing steps: each router's and pooler's files written, the
     services started, the cluster healthy and every route agreeing with Patroni;
  2. `pgbench -i -s N` as the app role on the primary; then `pgbench -S` (select-only) and `pgbench -N`
     (simple update) with 10 and 50 clients (-j 2), each for N s after a 2 s warm-up (not counted), three
     ways in turn: direct to the primary's PostgreSQL port, through HAProxy's rw route, and through its
     rw-pooled route (HAProxy, then the primary's PgBouncer in transaction mode): tps and mean latency;
  3. a connection storm, `pgbench -C -S` (a new connection per transaction), 200 clients with a thread each
     (a pgbench thread connects its clients one at a time: with -j 2 only two logins would be in flight and
     the figure would be pgbench's own), direct and through rw-pooled: connections per second, and from
     pgbench's per-transaction log (-l) the 99th percentile of the transaction alone and of a client's whole
     cycle (disconnect, connect, TLS, SCRAM, query: the gap between its consecutive log lines). max_connections
     is raised to 300 on this cluster, so that 200 direct clients fit (the default 100 would refuse most of
     them); PgBouncer keeps its default_pool_size of 20;
  4. crash and switchover drills (dbtier.engines.postgres.scenarios, no Prefect) with the drill writer through the rw
     route (drills.via: router) and through the multi-host DSN (via: direct), alternately: RTO, lost writes.
Every connection uses sslmode=verify-full with the cluster CA as sslrootcert (dbtier.engines.postgres.topology.conninfo).
pgbench runs here, as this user, from the cluster's pg_bin_dir, with the simple query protocol (-M simple,
its default: PgBouncer's transaction mode keeps no prepared statements). It prints the figures, their ratios
against the direct ones of the same run and the issue's targets beside them; no timing is asserted. It also
says how busy the machine was (bench/tls.py's report). Everything it starts is stopped by its pid and its
temporary directory (the drills' evidence with it) removed at the end, whatever happens (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import exit_with, provision_plain, remove_cluster  # noqa: E402
from tls import (CLIENTS, Busy, busy_report, figure, load_1min, stop_client, stop_clients,  # noqa: E402
                 watched)
from dbtier import bootstrap  # noqa: E402
from dbtier.engines.postgres import pgbackrest_ops  # noqa: E402
from dbtier.ca_store import FILE_CA_STORE  # noqa: E402
from dbtier.engines.postgres import scenarios  # noqa: E402
from dbtier.drills.settings import DrillSettings  # noqa: E402
from dbtier.drills.verdict import Verdict  # noqa: E402
from dbtier.engines.base import get_engine  # noqa: E402
from dbtier.engines.postgres.control_plane import rest_login  # noqa: E402
from dbtier.engines.postgres.engine import connect  # noqa: E402
from dbtier.errors import DbtierError  # noqa: E402
from dbtier.providers.base import get_provider  # noqa: E402
from dbtier.engines.postgres.routing import bouncers, listener_port, routers  # noqa: E402
from dbtier.engines.postgres.engine import POSTGRES_SECRETS  # noqa: E402
from dbtier.secrets import Passwords  # noqa: E402
from dbtier.spec import ClusterSpec  # noqa: E402
from dbtier.engines.postgres.topology import conninfo, pg_members  # noqa: E402
from tests.clusters import spec_for_tests  # noqa: E402

#: tests/clusters.py's block 41: ports 24100-24199 (postgres +0, patroni +20, etcd +40, routes +60..64, router
#: stats +65, PgBouncers +80..82), which no test suite uses
BLOCK = 41
WARM_UP_S = 2
MAX_CONNECTIONS = 300
STORM_CLIENTS = 200
#: direct: the primary's PostgreSQL port; rw and rw-pooled: router0's listeners
WAYS = {"direct": "direct", "rw": "rw (HAProxy)", "rw-pooled": "rw-pooled (HAProxy + PgBouncer)"}
_DRILL = {"rto_budget_s": 40, "rejoin_budget_s": 60, "settle_s": 1.0, "tail_s": 0.5, "healthy_timeout_s": 90}
DRILL_SETTINGS = {"router": DrillSettings(**_DRILL, via="router"), "direct": DrillSettings(**_DRILL, via="direct")}


@dataclass
class Load:
    """One timed pgbench run."""

    tps: float
    latency_ms: float


@dataclass
class Storm:
    """One connection storm: pgbench -C -S."""

    clients: int
    per_s: float
    connect_ms: float
    p99_txn_ms: float | None
    p99_cycle_ms: float | None
    samples: int
    aborted: int
    why: str  # the first connection error pgbench printed ("" when none)


#: A drill that raised (not a verdict): its one line.
Outcome = Verdict | str


# ---- the cluster --------------------------------------------------------------------------------


def bench_spec(root: str) -> ClusterSpec:
    """Block 41, routing and pooling on, TLS on, asynchronous; no WAL archiving (a plain provision makes no
    stanza), max_connections 300 for the direct storm."""
    return spec_for_tests("benchroute", BLOCK, root, routing={"enabled": True},
                          postgresql_parameters={"archive_mode": "off", "max_connections": MAX_CONNECTIONS})


def provision(spec: ClusterSpec, passwords: Passwords) -> tuple[float, str]:
    """Wall seconds of the plain provision with the flow's routing steps (configure_router, start_service,
    wait_until_healthy, wait_for_routes, as plain calls), and what the routes' wait said."""
    started = time.monotonic()
    provision_plain(spec, passwords, FILE_CA_STORE)
    engine, provider = get_engine(spec), get_provider(spec)
    for service in engine.router_services(spec):
        bootstrap.apply_service_files(engine, provider, spec, service, passwords)
        bootstrap.ensure_running(provider, spec, service)
    engine.wait_healthy(spec, spec.timeouts.healthy)
    said = engine.wait_routes(spec, passwords)
    return time.monotonic() - started, said


def way_conninfo(spec: ClusterSpec, way: str, connect_timeout: int = 3) -> str:
    """The app role's conninfo for one of :data:`WAYS`, with the cluster's TLS settings."""
    if way == "direct":
        member = pgbackrest_ops.leader(spec)
        host, port = member.host, member.pg_port
    else:
        host, port = routers(spec)[0].host, listener_port(spec, "rw", pooled=way == "rw-pooled")
    return conninfo(spec, host, port, spec.app.user, spec.app.database, connect_timeout)


def describe_way(spec: ClusterSpec, way: str, password: str) -> str:
    """Where a connection made one way lands, and its TLS: proof of what was measured."""
    by_port = {m.pg_port: m.name for m in pg_members(spec)}
    options = {"prepare_threshold": None} if way == "rw-pooled" else {}
    info = way_conninfo(spec, way)
    with connect(info, password, **options) as conn:
        port, version = conn.execute("SELECT inet_server_port(), version FROM pg_stat_ssl "
                                     "WHERE pid = pg_backend_pid()").fetchone()
    via = info.split(" port=")[1].split()[0]
    return f"{WAYS[way]}: port {via} -> {by_port.get(port, port)}, its PostgreSQL session {version or 'without TLS'}"


# ---- pgbench ------------------------------------------------------------------------------------


def pgbench(spec: ClusterSpec, info: str, password: str, *options: str, may_abort: bool = False) -> str:
    """One pgbench run from this machine against ``info``; its output. The password is in its environment.
    ``may_abort``: a run some of whose clients aborted (rc 2, results printed) still counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    argv = [f"{spec.pg.binaries.pg_bin_dir}/pgbench", *options, info]
    client = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    CLIENTS[client.pid] = client
    try:
        out, err = client.communicate(timeout=3600)
    finally:
        stop_client(client)
    if client.returncode != 0 and not (may_abort and "tps = " in out):
        tail = " | ".join(err.strip().splitlines()[-3:])
        raise SystemExit(f"pgbench {' '.join(options)} against {spec.name} failed (rc {client.returncode}): {tail}")
    return out + err


def timed(spec: ClusterSpec, info: str, password: str, busy: Busy, seconds: int, options: list[str],
          log_prefix: str | None = None) -> str:
    """A warm-up of WARM_UP_S (not counted), then ``seconds`` of pgbench, watched for other processes' CPU;
    with ``log_prefix`` the timed run logs each transaction (-l)."""
    storm = "-C" in options
    pgbench(spec, info, password, *options, "-T", str(WARM_UP_S), may_abort=storm)
    logging = ["-l", f"--log-prefix={log_prefix}"] if log_prefix else []
    busy.loads.append(load_1min())
    with watched(spec, busy):
        return pgbench(spec, info, password, *options, *logging, "-T", str(seconds), may_abort=storm)


def measure_loads(spec: ClusterSpec, password: str, busy: Busy, args: argparse.Namespace) -> dict[tuple[str, int, str], Load]:
    """(workload, clients, way) -> tps and mean latency; the three ways one after the other for each
    workload and client count, so that drift in the machine's load hits them alike."""
    found = {}
    for workload in args.workloads:
        for clients in (10, 50):
            for way in WAYS:
                options = [workload, "-n", "-c", str(clients), "-j", "2"]
                out = timed(spec, way_conninfo(spec, way), password, busy, args.seconds, options)
                found[(workload, clients, way)] = Load(figure(r"tps = ([\d.]+)", out),
                                                       figure(r"latency average = ([\d.]+) ms", out))
                print(f"  pgbench {workload} {clients:2} clients {WAYS[way]:32} "
                      f"{found[(workload, clients, way)].tps:8.0f} tps", flush=True)
    return found


# ---- the connection storm -----------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float | None:
    """Nearest rank.

    >>> percentile([float(x) for x in range(1, 101)], 0.99), percentile([], 0.99)
    (99.0, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def read_log(directory: str) -> tuple[list[float], list[float]]:
    """From pgbench's per-transaction logs (one per thread: client, transaction, latency µs, script, epoch s,
    µs): each transaction's latency and each client's gap between consecutive ends, in ms. Under -C a
    transaction's latency leaves its connection out; the gap holds the disconnect, connect and transaction."""
    latencies: list[float] = []
    ends: dict[int, list[float]] = {}
    for name in os.listdir(directory):
        for line in Path(directory, name).read_text().splitlines():
            fields = line.split()
            if len(fields) < 6 or not fields[2].isdigit():  # "failed" or "skipped"
                continue
            latencies.append(int(fields[2]) / 1000)
            ends.setdefault(int(fields[0]), []).append(int(fields[4]) + int(fields[5]) / 1e6)
    gaps = [(b - a) * 1000 for times in ends.values() for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    return latencies, gaps


def storm(spec: ClusterSpec, way: str, password: str, busy: Busy, seconds: int, root: str) -> Storm:
    """pgbench -C -S with STORM_CLIENTS clients, a thread each (connect_timeout 10: a burst of logins queues)."""
    log_dir = tempfile.mkdtemp(prefix=f"storm-{way}-", dir=root)
    options = ["-S", "-n", "-C", "-c", str(STORM_CLIENTS), "-j", str(STORM_CLIENTS)]
    out = timed(spec, way_conninfo(spec, way, connect_timeout=10), password, busy, seconds, options,
                log_prefix=f"{log_dir}/tx")
    latencies, gaps = read_log(log_dir)
    shutil.rmtree(log_dir, ignore_errors=True)
    aborted = len(re.findall(r"client \d+ aborted", out))
    why = re.search(r"failed: (.+)", out)
    result = Storm(STORM_CLIENTS, figure(r"tps = ([\d.]+)", out), figure(r"average connection time = ([\d.]+) ms", out),
                   percentile(latencies, 0.99), percentile(gaps, 0.99), len(latencies), aborted,
                   why.group(1).strip() if why else "")
    print(f"  storm {WAYS[way]:32} {result.per_s:8.0f} connections/s, {aborted} clients aborted"
          + (f" (first error: {result.why})" if result.why else ""), flush=True)
    return result


# ---- the drills ---------------------------------------------------------------------------------


def drill(spec: ClusterSpec, passwords: Passwords, scenario: str, via: str) -> Outcome:
    """One drill, the writer ``via`` the router or direct; it starts once every route agrees with Patroni."""
    started = time.monotonic()
    try:
        get_engine(spec).wait_routes(spec, passwords)
        verdict = scenarios.run(spec, scenario, DRILL_SETTINGS[via], passwords.app,
                                rest_login=rest_login(passwords)).verdict
    except DbtierError as err:
        print(f"  drill {scenario} via {via}: ERROR {err.one_line()}", flush=True)
        return err.one_line()
    print(f"  drill via {via:6} {verdict.sentence} [{time.monotonic() - started:.0f} s]", flush=True)
    return verdict


def run_drills(spec: ClusterSpec, passwords: Passwords, args: argparse.Namespace) -> dict[tuple[str, str], list[Outcome]]:
    """(scenario, via) -> outcomes; router and direct alternate which goes first from one run to the next."""
    found: dict[tuple[str, str], list[Outcome]] = {}
    for run in range(args.drill_runs):
        for scenario in args.scenarios:
            for via in (("router", "direct") if run % 2 == 0 else ("direct", "router")):
                found.setdefault((scenario, via), []).append(drill(spec, passwords, scenario, via))
    return found


# ---- the report ---------------------------------------------------------------------------------


def ratio(value: float, base: float) -> str:
    return f"{value / base:8.2f}x" if base else f"{'-':>9}"


def load_table(loads: dict[tuple[str, int, str], Load], args: argparse.Namespace) -> str:
    lines = [f"{'pgbench, ' + str(args.seconds) + ' s each, -j 2':24} {'route':32} {'tps':>8} {'vs direct':>9} "
             f"{'latency ms':>10} {'vs direct':>9}"]
    for workload in args.workloads:
        for clients in (10, 50):
            base = loads[(workload, clients, "direct")]
            for way, label in WAYS.items():
                got = loads[(workload, clients, way)]
                head = f"{workload} {clients} clients" if way == "direct" else ""
                lines.append(f"{head:24} {label:32} {got.tps:8.0f} {ratio(got.tps, base.tps)} "
                             f"{got.latency_ms:10.2f} {ratio(got.latency_ms, base.latency_ms)}")
    added = [loads[("-S", c, "rw")].latency_ms / loads[("-S", c, "direct")].latency_ms - 1 for c in (10, 50)]
    lines.append("target, HAProxy adds <= 5 % to -S latency: rw vs direct " + ", ".join(
        f"{c} clients {a * 100:+.1f} % ({'met' if a <= 0.05 else 'not met'})" for c, a in zip((10, 50), added, strict=True)))
    return "\n".join(lines)


def ms(value: float | None) -> str:
    return f"{value:12.2f}" if value is not None else f"{'n/a':>12}"


def storm_table(storms: dict[str, Storm], seconds: int) -> str:
    direct, pooled = storms["direct"], storms["rw-pooled"]
    lines = [f"{f'storm -C -S -j {STORM_CLIENTS}, {seconds} s':32} {'clients':>7} {'conn/s':>8} {'vs direct':>9} "
             f"{'connect ms':>10} {'p99 txn ms':>12} {'p99 cycle ms':>12} {'samples':>8} {'aborted':>7}"]
    for way, got in storms.items():
        lines.append(f"{WAYS[way]:32} {got.clients:7} {got.per_s:8.0f} {ratio(got.per_s, direct.per_s)} "
                     f"{got.connect_ms:10.2f} {ms(got.p99_txn_ms)} {ms(got.p99_cycle_ms)} {got.samples:8} {got.aborted:7}")
    lines += [f"  {WAYS[way]}: {got.aborted} clients aborted, the first error: {got.why}"
              for way, got in storms.items() if got.why]
    times = pooled.per_s / direct.per_s if direct.per_s else 0.0
    lines.append(f"target, pooled storm >= 5x direct connections/s: {times:.2f}x ({'met' if times >= 5 else 'not met'})")
    return "\n".join(lines)


def drill_table(found: dict[tuple[str, str], list[Outcome]]) -> str:
    lines = [f"{'drill':11} {'writer via':10} {'run':>3} {'RTO s':>7} {'lost':>5} {'passed':>6}"]
    for (scenario, via), outcomes in found.items():
        for run, got in enumerate(outcomes, 1):
            if isinstance(got, str):
                lines.append(f"{scenario:11} {via:10} {run:3} ERROR {got}")
                continue
            rto = f"{got.rto_s:7.2f}" if got.rto_s is not None else f"{'n/a':>7}"
            lines.append(f"{scenario:11} {via:10} {run:3} {rto} {got.lost_writes:5} {'yes' if got.passed else 'NO':>6}")
    for scenario in dict.fromkeys(s for s, _ in found):
        medians = {via: median_rto(found.get((scenario, via), [])) for via in ("router", "direct")}
        if medians["router"] is None or medians["direct"] is None:
            lines.append(f"target, routing adds <= 1 s to {scenario} RTO: n/a (no RTO both ways)")
            continue
        extra = medians["router"] - medians["direct"]
        lines.append(f"target, routing adds <= 1 s to {scenario} RTO: median router {medians['router']:.2f} s - direct "
                     f"{medians['direct']:.2f} s = {extra:+.2f} s ({'met' if extra <= 1 else 'not met'})")
    return "\n".join(lines)


def median_rto(outcomes: list[Outcome]) -> float | None:
    rtos = [o.rto_s for o in outcomes if isinstance(o, Verdict) and o.rto_s is not None]
    return statistics.median(rtos) if rtos else None


# ---- the run ------------------------------------------------------------------------------------


def run(root: str, args: argparse.Namespace, busy: Busy, cleanup: contextlib.ExitStack) -> None:
    spec = bench_spec(root)
    cleanup.callback(remove_cluster, spec)
    passwords = Passwords.generate(POSTGRES_SECRETS)
    seconds, said = provision(spec, passwords)
    print(f"{spec.name}: provisioned (3 members + 3 etcd, {len(routers(spec))} HAProxy, {len(bouncers(spec))} PgBouncer) "
          f"in {seconds:.1f} s; {said}", flush=True)
    for way in WAYS:
        print(f"  {describe_way(spec, way, passwords.app)}", flush=True)
    pgbench(spec, way_conninfo(spec, "direct"), passwords.app, "-i", "-q", "-s", str(args.scale))
    loads = measure_loads(spec, passwords.app, busy, args)
    storms = {way: storm(spec, way, passwords.app, busy, args.seconds, root) for way in ("direct", "rw-pooled")}
    stop_clients()
    drills = run_drills(spec, passwords, args)
    print(f"\n{load_table(loads, args)}\n\n{storm_table(storms, args.seconds)}\n\n{drill_table(drills)}\n")
    pooler = spec.pg.routing.pooler
    print(f"(max_connections {MAX_CONNECTIONS} for this bench, so that {STORM_CLIENTS} direct clients fit: the direct "
          f"storm runs {STORM_CLIENTS} clients like the pooled one; PgBouncer {pooler.pool_mode} mode, default_pool_size "
          f"{pooler.default_pool_size}; synchronous_mode off; RTO: fault to the first write acknowledged by the new "
          f"primary, as the drill writer saw it)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="length of each timed pgbench run (default 15)")
    parser.add_argument("--scale", type=int, default=5, help="pgbench -i scale (default 5: about 75 MiB)")
    parser.add_argument("--drill-runs", type=int, default=2, help="runs of each drill each way (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="5 s runs, pgbench -S only, one switchover each way (overrides the others)")
    args = parser.parse_args()
    args.workloads, args.scenarios = ["-S", "-N"], ["crash", "switchover"]
    if args.quick:
        args.seconds, args.workloads, args.scenarios, args.drill_runs = 5, ["-S"], ["switchover"], 1
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill too
    started = time.monotonic()
    busy = Busy(loads=[load_1min()])
    root = tempfile.mkdtemp(prefix="dbtier-bench-routing-")
    os.chmod(root, 0o755)  # the database OS user traverses it
    os.environ["DBTIER_WORK_DIR"] = os.path.join(root, "work")  # the CA's client copy, the drills: removed with root
    print(f"scale {args.scale}, {args.seconds} s runs, pgbench {' '.join(args.workloads)}, drills "
          f"{' '.join(args.scenarios)} x {args.drill_runs} each way; one cluster on 127.0.0.1:24100-24199; "
          f"1-min load at start {busy.loads[0]:.2f}; temporary root {root}", flush=True)
    with contextlib.ExitStack() as cleanup:  # runs in reverse: clients, the cluster, then the directory
        cleanup.callback(shutil.rmtree, root, True)
        cleanup.callback(stop_clients)
        try:
            run(root, args, busy, cleanup)
        finally:  # no second Ctrl-C or kill half-way through the clean-up
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(busy_report(busy, load_1min()))
    print(f"(whole run, set-up and clean-up included: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    exit_with(main, "bench/routing.py: interrupted; its cluster and pgbench stopped, its directory removed")
