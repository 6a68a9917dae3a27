"""Failover benchmark: RTO and lost acknowledged writes per Patroni timing profile.

    .venv/bin/python bench/failover.py [--crashes 3] [--switchovers 3] [--profiles default tuned] [--modes async sync]

For each timing profile (Patroni's defaults: ttl 30, loop_wait 10, retry_timeout 10; tuned:
ttl 20, loop_wait 2, retry_timeout 5) and each replication mode, it provisions a fresh
three-member cluster (plain function calls, passwords kept in memory, no Prefect), runs N
crash drills and M switchovers under the drill writer, prints the median and worst RTO and
the total of lost acknowledged writes, then stops the cluster by pid and wipes it. Each drill's
evidence stays in the work directory (``$DBTIER_WORK_DIR``, see dbtier/workdir.py).
Ports: --port-base (default 30100) to +99 (the tests use 20000-20999).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import provision_plain  # noqa: E402
from dbtier import bootstrap, workdir  # noqa: E402
from dbtier.drills import scenarios  # noqa: E402
from dbtier.drills.settings import DrillSettings  # noqa: E402
from dbtier.drills.verdict import Verdict  # noqa: E402
from dbtier.engines.base import get_engine  # noqa: E402
from dbtier.providers.base import get_provider  # noqa: E402
from dbtier.secrets import Passwords, new_password  # noqa: E402
from dbtier.spec import ClusterSpec, build_spec  # noqa: E402

TIMINGS = {"default": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
           "tuned": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}}
SETTINGS = DrillSettings(rto_budget_s=90, settle_s=1.0, tail_s=0.5)


def bench_spec(profile: str, synchronous: bool, port_base: int) -> ClusterSpec:
    root = tempfile.mkdtemp(prefix="dbtier-bench-failover-")
    os.chmod(root, 0o755)
    return build_spec(
        {"name": "benchfailover", "data_root": root, "patroni": TIMINGS[profile], "synchronous_mode": synchronous,
         "ports": {"postgres": port_base, "patroni": port_base + 20, "etcd": port_base + 40}},
        environ={},
    )


def run_profile(profile: str, synchronous: bool, crashes: int, switchovers: int, port_base: int) -> list[Verdict]:
    spec = bench_spec(profile, synchronous, port_base)
    engine, provider = get_engine(spec), get_provider(spec)
    passwords = Passwords(*(new_password() for _ in range(4)))
    verdicts: list[Verdict] = []
    try:
        provision_plain(spec, passwords)
        for scenario in ["crash"] * crashes + ["switchover"] * switchovers:
            verdict = scenarios.run(spec, scenario, SETTINGS, passwords.app).verdict
            print(f"  {profile:7} {'sync' if synchronous else 'async':5} {verdict.sentence}", flush=True)
            verdicts.append(verdict)
    finally:
        bootstrap.stop_services(engine, provider, spec)
        bootstrap.wipe(engine, provider, spec)
    return verdicts


def summary_line(profile: str, synchronous: bool, scenario: str, verdicts: list[Verdict]) -> str:
    rtos = [v.rto_s for v in verdicts if v.scenario == scenario and v.rto_s is not None]
    runs = [v for v in verdicts if v.scenario == scenario]
    if not runs:
        return ""
    median = f"{statistics.median(rtos):7.2f}" if rtos else "    n/a"
    worst = f"{max(rtos):7.2f}" if rtos else "    n/a"
    lost = sum(v.lost_writes for v in runs)
    failed = sum(1 for v in runs if not v.passed)
    mode = "sync" if synchronous else "async"
    return f"{profile:8} {mode:6} {scenario:11} {len(runs):4} {median} {worst} {lost:6} {failed:6}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--switchovers", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", choices=sorted(TIMINGS), default=["default", "tuned"])
    parser.add_argument("--modes", nargs="+", choices=["async", "sync"], default=["async", "sync"])
    parser.add_argument("--port-base", type=int, default=30100)
    args = parser.parse_args()
    lines = []
    started = time.monotonic()
    for profile in args.profiles:
        for mode in args.modes:
            verdicts = run_profile(profile, mode == "sync", args.crashes, args.switchovers, args.port_base)
            lines += [summary_line(profile, mode == "sync", s, verdicts) for s in ("crash", "switchover")]
    print(f"\n{'profile':8} {'mode':6} {'scenario':11} {'runs':>4} {'median':>7} {'worst':>7} {'lost':>6} {'failed':>6}")
    print("\n".join(line for line in lines if line))
    print(f"(RTO in seconds: fault to the first write acknowledged by the new primary; {time.monotonic() - started:.0f} s)")
    print(f"(each drill's writes.jsonl and verdict.json: {workdir.cluster_work_dir('benchfailover')}/drills/, on this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
