"""Monitoring benchmark: what the monitoring stack and the exporters cost, next to the cluster they watch (issue 14).

    .venv/bin/python bench/monitoring.py [--seconds 120] [--scrape-interval 15] [--every 5]

One run, local provider, ports 24200-24299 (test block 42) and a temporary data root:
  1. the 3-member default spec (3 PostgreSQL + Patroni members, 3 etcd, HAProxy and a PgBouncer per member, TLS
     on) provisioned as plain function calls (bench/common.py's provision_plain and the routing steps: no Prefect);
  2. the exporters on the hosts (engine.exporter_services: a PostgreSQL exporter per member) and the stack on this
     machine (dbtier.monitoring.run.bring_up: dbtier's PgBouncer exporter, node exporter, Alertmanager, Prometheus) at
     ``monitoring.scrape_interval_s`` = --scrape-interval; then wait_targets_up;
  3. for --seconds, every --every s: the PSS (/proc/PID/smaps_rollup) of each process group, each process with its
     descendants; at both ends its CPU (/proc/PID/stat utime+stime+cutime+cstime: reaped children count too),
     the delta over the window. Groups: per member Patroni with its postmaster and backends (Patroni double-forks
     the postmaster: its pid comes from postmaster.pid), per etcd member, HAProxy, per PgBouncer, per stack process,
     per exporter (the PgBouncer exporter's psql runs are its reaped children); the
     backends the exporters log in as ``monitoring`` are taken out of their member and counted on the stack side;
  4. from Prometheus' API: each target's lastScrapeDuration (/api/v1/targets), and over the window
     avg/max_over_time(scrape_duration_seconds) and the samples of its last scrape; the head's series and the
     series kept per job, with its heaviest metric names (/api/v1/status/tsdb, count by job and name).
It prints a table (group, PSS MiB mean and max, CPU s over the window, % of one core), the stack's total (stack and
exporters) against the issue's targets (150 MiB PSS, 2% of one core) with PASS/OVER, the ratios of the stack to the
cluster (measured in the same run), and the scrape durations per job and target. Exit 0 when it ran (the figures
are the result), 1 when the set-up failed (one line). Whatever happens (Ctrl-C, SIGTERM) the stack, the exporters
and the cluster are stopped by their pids and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import exit_with, provision_plain  # noqa: E402
from common import remove_cluster  # noqa: E402
from tls import load_1min, proc_table, tree  # noqa: E402
from dbtier import bootstrap, procs  # noqa: E402
from dbtier.ca_store import FILE_CA_STORE  # noqa: E402
from dbtier.engines.base import get_engine  # noqa: E402
from dbtier.engines.postgres.pg_roles import MONITORING_USER  # noqa: E402
from dbtier.monitoring import run as monitoring  # noqa: E402
from dbtier.monitoring.stack import stack_services  # noqa: E402
from dbtier.providers.base import get_provider  # noqa: E402
from dbtier.providers.local import LocalRunner  # noqa: E402
from dbtier.engines.postgres.engine import POSTGRES_SECRETS  # noqa: E402
from dbtier.secrets import Passwords  # noqa: E402
from dbtier.spec import ClusterSpec  # noqa: E402
from dbtier.engines.postgres.topology import pg_members  # noqa: E402
from tests.clusters import spec_for_tests  # noqa: E402

#: tests/clusters.py's block 42: ports 24200-24299 (postgres +0, patroni +20, etcd +40, the stack +70..72, the
#: PostgreSQL exporters +74..76, the PgBouncer exporter +77), which no test suite uses
BLOCK = 42
TARGET_PSS_MIB = 150.0
TARGET_CORE_PCT = 2.0
TICK = os.sysconf("SC_CLK_TCK")

Table = dict[int, tuple[int, int, str]]


class SetupFailed(Exception):
    """The cluster, the exporters or the stack did not come up: the bench measured nothing."""


@dataclass
class Group:
    """Processes measured together: ``roots`` and their descendants."""

    name: str
    side: str  # "stack" (the stack and the exporters) or "cluster"
    roots: set[int]
    #: only the postmasters' backends of the monitoring role (the exporters'); the others leave them out
    backends: bool = False
    pss_kib: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    procs: int = 0


# ---- the cluster, the exporters and the stack ---------------------------------------------------


def bench_spec(root: str, scrape_interval: int) -> ClusterSpec:
    """The 3-member default on block 42 (TLS on, routing and pooling on, the exporters on), no WAL archiving (a
    plain provision makes no stanza), scraped every ``scrape_interval`` s."""
    made = spec_for_tests("benchmon", BLOCK, root, routing={"enabled": True}, postgresql_parameters={"archive_mode": "off"})
    data = made.model_dump(mode="json")
    data["monitoring"]["scrape_interval_s"] = scrape_interval
    return ClusterSpec.model_validate(data)


def set_up(spec: ClusterSpec) -> str:
    """Provision, exporters, stack, every target up; what the stack's wait said."""
    passwords = Passwords.generate(POSTGRES_SECRETS)
    started = time.monotonic()
    provision_plain(spec, passwords, FILE_CA_STORE)
    engine, provider = get_engine(spec), get_provider(spec)
    for service in engine.router_services(spec):  # the provision flow's routing steps
        bootstrap.apply_service_files(engine, provider, spec, service, passwords)
        bootstrap.ensure_running(provider, spec, service)
    engine.wait_routes(spec, passwords)
    print(f"{spec.name}: provisioned (3 members + 3 etcd, HAProxy, 3 PgBouncers, TLS on) in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    exporters = bootstrap.start_exporters(engine, provider, spec, passwords)  # make monitor's step
    for sentence in [*exporters, *monitoring.bring_up(spec, passwords)]:
        print(f"  {sentence}", flush=True)
    return monitoring.wait_targets_up(spec, 120)


# ---- the process groups -------------------------------------------------------------------------


def groups(spec: ClusterSpec) -> list[Group]:
    """The stack's processes and the exporters, then each member (Patroni and its postmaster) and etcd member."""
    engine, provider = get_engine(spec), get_provider(spec)
    me = LocalRunner(pwd.getpwuid(os.geteuid()).pw_name, spec.monitoring.host)  # the stack runs as this user
    found = [Group(s.name, "stack", {procs.running_pid(me, s) or 0})
             for s in stack_services(spec, monitoring.stack_paths(spec))]
    found += [Group(s.name, "stack", {procs.running_pid(provider.runner(spec, s.host), s) or 0})
              for s in engine.exporter_services(spec)]
    members = []
    for m, s in zip(pg_members(spec), engine.member_services(spec), strict=True):
        runner = provider.runner(spec, m.host)
        postmaster = procs.read_pid(runner, f"{m.data_dir}/postmaster.pid") or 0
        members.append(Group(f"{m.name} (Patroni + postgres)", "cluster", {procs.running_pid(runner, s) or 0, postmaster}))
    found.append(Group("exporters' backends (in postgres)", "stack", {r for g in members for r in g.roots}, backends=True))
    found += members
    found += [Group(s.name, "cluster", {procs.running_pid(provider.runner(spec, s.host), s) or 0})
              for s in engine.consensus_services(spec) + engine.router_services(spec)]
    missing = [g.name for g in found if 0 in g.roots]
    if missing:
        raise SetupFailed(f"no running pid for {', '.join(missing)}")
    return found


def monitoring_backend(pid: int) -> bool:
    """A postgres backend logged in as the monitoring role (its title: ``postgres: <cluster>: monitoring <db> ...``)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return title.startswith("postgres: ") and f" {MONITORING_USER} " in title


def members(group: Group, table: Table) -> set[int]:
    pids = tree(table, group.roots)
    ours = {p for p in pids if monitoring_backend(p)}
    return ours if group.backends else pids - ours


def pss_kib(pids: set[int]) -> int:
    """The sum of the processes' PSS (a process gone meanwhile counts nothing)."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("Pss:"))
    return total


def sample(found: list[Group], seconds: int, every: float) -> float:
    """PSS every ``every`` s and CPU over ``seconds``, into each group; the wall seconds of the window."""
    before, started = proc_table(), time.monotonic()
    at_start = {g.name: members(g, before) for g in found}
    deadline = started + seconds
    while True:
        table = proc_table()
        for g in found:
            g.pss_kib.append(pss_kib(members(g, table)))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(every, left))
    after, window = proc_table(), time.monotonic() - started
    for g in found:
        at_end = members(g, after)
        used = sum(after[p][1] for p in at_end) - sum(before[p][1] for p in at_start[g.name])
        g.cpu_s, g.procs = max(0, used) / TICK, len(at_end)
    return window


# ---- Prometheus' view of its scrapes ------------------------------------------------------------


def scrape_rows(spec: ClusterSpec, window: float) -> list[tuple[str, str, str, float, float | None, float | None, str]]:
    """(job, instance, health, last scrape s, mean and max over the window, samples of the last scrape)."""
    span = f"[{max(1, int(window))}s]"

    def by_target(query: str) -> dict[tuple[str, str], float]:
        return {(r["metric"].get("job", ""), r["metric"].get("instance", "")): float(r["value"][1])
                for r in monitoring.prometheus_api(spec, "query", query=query)["result"]}

    mean = by_target(f"avg_over_time(scrape_duration_seconds{span})")
    worst = by_target(f"max_over_time(scrape_duration_seconds{span})")
    samples = by_target("scrape_samples_scraped")
    rows = []
    for t in monitoring.prometheus_api(spec, "targets", state="active")["activeTargets"]:
        key = (t["labels"].get("job", ""), t["labels"].get("instance", ""))
        got = samples.get(key)
        rows.append((*key, t["health"], float(t.get("lastScrapeDuration", 0.0)), mean.get(key), worst.get(key),
                     f"{got:.0f}" if got is not None else "-"))
    return sorted(rows)


# ---- the report ---------------------------------------------------------------------------------


def mib(kib: float) -> float:
    return kib / 1024


def pct(cpu_s: float, window: float) -> float:
    return 100 * cpu_s / window if window else 0.0


def group_table(found: list[Group], window: float) -> str:
    lines = [f"{'process group':36} {'side':7} {'procs':>5} {'PSS MiB':>8} {'max':>7} {'CPU s':>7} {'% core':>7}"]
    for side in ("stack", "cluster"):
        for g in (g for g in found if g.side == side):
            mean = sum(g.pss_kib) / len(g.pss_kib) if g.pss_kib else 0
            lines.append(f"{g.name:36} {side:7} {g.procs:5d} {mib(mean):8.1f} {mib(max(g.pss_kib, default=0)):7.1f} "
                         f"{g.cpu_s:7.2f} {pct(g.cpu_s, window):6.2f}%")
    return "\n".join(lines)


def side_totals(found: list[Group], side: str) -> tuple[float, float, float]:
    """(mean PSS MiB, max PSS MiB: the largest sum at one sample, CPU s) of one side."""
    ours = [g for g in found if g.side == side]
    sums = [sum(col) for col in zip(*(g.pss_kib for g in ours), strict=True)] or [0]
    return mib(sum(sums) / len(sums)), mib(max(sums)), sum(g.cpu_s for g in ours)


def verdict_lines(found: list[Group], window: float) -> list[str]:
    s_mean, s_max, s_cpu = side_totals(found, "stack")
    c_mean, c_max, c_cpu = side_totals(found, "cluster")
    core = pct(s_cpu, window)
    return [
        f"stack + exporters: PSS {s_mean:.1f} MiB (max {s_max:.1f}) against {TARGET_PSS_MIB:.0f} MiB: "
        f"{'PASS' if s_max < TARGET_PSS_MIB else 'OVER'}; CPU {s_cpu:.2f} s in {window:.0f} s = {core:.2f}% of one core "
        f"against {TARGET_CORE_PCT:.0f}%: {'PASS' if core < TARGET_CORE_PCT else 'OVER'}",
        f"cluster (3 members, 3 etcd, HAProxy, 3 PgBouncers): PSS {c_mean:.1f} MiB (max {c_max:.1f}); CPU {c_cpu:.2f} s = "
        f"{pct(c_cpu, window):.2f}% of one core",
        f"stack / cluster: PSS {s_mean / c_mean if c_mean else 0:.2f}x, CPU "
        + (f"{s_cpu / c_cpu:.2f}x" if c_cpu else "- (the cluster used no CPU)"),
    ]


def scrape_table(rows: list[tuple[str, str, str, float, float | None, float | None, str]]) -> str:
    def ms(value: float | None) -> str:
        return f"{1000 * value:.1f}" if value is not None else "-"

    lines = [f"{'job':10} {'instance':18} {'health':7} {'last ms':>8} {'mean ms':>8} {'max ms':>8} {'series':>8}"]
    lines += [f"{job:10} {instance:18} {health:7} {ms(last):>8} {ms(mean):>8} {ms(worst):>8} {samples:>8}"
              for job, instance, health, last, mean, worst, samples in rows]
    return "\n".join(lines)


def series_lines(spec: ClusterSpec) -> list[str]:
    """What Prometheus holds: its head's series, and per job the series kept after the stack's drop rules and the
    heaviest metric names (what a memory cut would look at)."""
    head = monitoring.prometheus_api(spec, "status/tsdb")["headStats"]["numSeries"]
    per_job = {r["metric"]["job"]: int(float(r["value"][1])) for r in monitoring.prometheus_api(
        spec, "query", query=f'count by (job) ({{cluster="{spec.name}"}})')["result"]}
    heavy = monitoring.prometheus_api(spec, "query", query=f'topk by (job) (3, count by (job, __name__) ({{cluster="{spec.name}"}}))')
    names: dict[str, list[str]] = {}
    for r in sorted(heavy["result"], key=lambda r: -float(r["value"][1])):
        names.setdefault(r["metric"]["job"], []).append(f"{r['metric']['__name__']} {float(r['value'][1]):.0f}")
    lines = [f"Prometheus head: {head} series; kept per job (all targets) and its heaviest names:"]
    lines += [f"  {job:10} {count:>6}  {', '.join(names.get(job, []))}" for job, count in sorted(per_job.items())]
    return lines


# ---- the run ------------------------------------------------------------------------------------


def run(root: str, args: argparse.Namespace, cleanup: contextlib.ExitStack) -> None:
    spec = bench_spec(root, args.scrape_interval)
    cleanup.callback(remove_cluster, spec)  # runs last: the exporters (stopped first), then the cluster
    cleanup.callback(monitoring.stop_stack, spec)
    try:
        print(set_up(spec), flush=True)
        found = groups(spec)
    except SetupFailed:
        raise
    except Exception as err:  # noqa: BLE001 - the set-up's failure, whatever raised it, is the one line
        raise SetupFailed(f"{type(err).__name__}: {err}") from None
    print(f"sampling {args.seconds} s (PSS every {args.every:g} s, scrapes every {args.scrape_interval} s, "
          f"1-min load {load_1min():.2f})", flush=True)
    window = sample(found, args.seconds, args.every)
    rows = scrape_rows(spec, window)
    print(f"\n{group_table(found, window)}\n")
    print("\n".join(verdict_lines(found, window)))
    print(f"\nscrape duration per target over {window:.0f} s (Prometheus' scrape_duration_seconds; series: samples "
          f"of its last scrape, before the drop rules):\n{scrape_table(rows)}")
    print("\n" + "\n".join(series_lines(spec)))
    print(f"\n(PSS: mean of {len(found[0].pss_kib)} samples, each process with its descendants; CPU: utime+stime of "
          f"each process and its reaped children, over the window; an exporter's backend that reconnected meanwhile is "
          f"counted in its postmaster's; 1-min load at the end {load_1min():.2f}, {os.cpu_count()} cores)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120, help="length of the measured window (default 120)")
    parser.add_argument("--scrape-interval", type=int, default=15,
                        help="monitoring.scrape_interval_s of the stack (default 15, the issue's target)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between PSS samples (default 5)")
    args = parser.parse_args()
    if args.seconds < 1 or args.every <= 0 or not 1 <= args.scrape_interval <= 300:
        parser.error("--seconds >= 1, --every > 0, --scrape-interval 1-300")
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill too
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="dbtier-bench-monitoring-")
    os.chmod(root, 0o755)  # the database OS user traverses it
    os.environ["DBTIER_WORK_DIR"] = os.path.join(root, "work")  # the CA's client copy and the stack: removed with root
    print(f"one 3-member cluster on 127.0.0.1:24200-24299, scrape interval {args.scrape_interval} s, {args.seconds} s "
          f"window; temporary root {root}", flush=True)
    with contextlib.ExitStack() as cleanup:  # runs in reverse: the stack, the exporters, the cluster, the directory
        cleanup.callback(shutil.rmtree, root, True)
        try:
            run(root, args, cleanup)
        except SetupFailed as err:
            print(f"bench/monitoring.py: set-up failed: {err}", file=sys.stderr)
            return 1
        finally:  # no second Ctrl-C or kill half-way through the clean-up
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"(whole run, set-up and clean-up included: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    exit_with(main, "bench/monitoring.py: interrupted; its stack, exporters and cluster stopped, its directory removed")
