"""Failover benchmark: RTO and lost acknowledged writes per Patroni timing profile.

    .venv/bin/python bench/failover.py [--crashes 3] [--switchovers 3] [--profiles default tuned] [--modes async sync]
    .venv/bin/python bench/failover.py --lab [--runs 5] [--scenarios ...] [--baseline-crashes 3] [--profiles ...] [--modes sync async]

For each timing profile (Patroni's defaults: ttl 30, loop_wait 10, retry_timeout 10; tuned:
ttl 20, loop_wait 2, retry_timeout 5) and each replication mode, it provisions a fresh
three-member cluster (plain function calls, passwords kept in memory, no Prefect), runs N
crash drills and M switchovers under the drill writer, prints the median and worst RTO and
the total of lost acknowledged writes, then stops the cluster by pid and wipes it. Each drill's
evidence stays in the work directory (``$DBTIER_WORK_DIR``, see dbtier/workdir.py).
Ports: --port-base (default 30100) to +99 (the tests use 20000-20999).

``--lab`` (root) brings up ``dbtier lab`` ``bench`` (3 hosts, 198.18.20.0/24) and provisions the lab's own
ssh spec on it (one member per host, ``ssh.lab`` for power over the hosts; archiving off, so no S3 block is
needed), a fresh lab per profile; per mode (set in Patroni's DCS) it runs N rounds of crash, host-crash and
partition-primary and prints median and worst RTO, lost acknowledged writes, split brain and the old
primary's window (writes it acknowledged after the new primary's first). The ratio column divides each
median by the median of --baseline-crashes local crashes measured first in the same run (0: none). The
lab is always taken down, also after a failure or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import provision_plain  # noqa: E402
from dbtier import bootstrap, workdir  # noqa: E402
from dbtier.ca_store import FILE_CA_STORE  # noqa: E402
from dbtier.engines.postgres import faults, scenarios  # noqa: E402
from dbtier.drills.settings import DrillSettings  # noqa: E402
from dbtier.drills.verdict import Verdict  # noqa: E402
from dbtier.engines.base import get_engine  # noqa: E402
from dbtier.engines.postgres.control_plane import rest_login  # noqa: E402
from dbtier.errors import DbtierError  # noqa: E402
from dbtier.providers.base import get_provider  # noqa: E402
from dbtier.engines.postgres.engine import POSTGRES_SECRETS  # noqa: E402
from dbtier.secrets import Passwords  # noqa: E402
from dbtier.spec import ClusterSpec, build_spec  # noqa: E402

TIMINGS = {"default": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
           "tuned": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}}
SETTINGS = DrillSettings(rto_budget_s=90, settle_s=1.0, tail_s=0.5)
LAB, LAB_SUBNET, LAB_CLUSTER = "bench", "198.18.20.0/24", "benchlab"
LAB_SCENARIOS = ("crash", "host-crash", "partition-primary")
#: A host that lost power boots, and its members start and rejoin: more time than a crashed member's restart.
LAB_SETTINGS = DrillSettings(rto_budget_s=90, rejoin_budget_s=180, settle_s=1.0, tail_s=0.5, healthy_timeout_s=180)
#: A lab drill that raised (not a verdict): its one line.
Outcome = Verdict | str


def bench_spec(profile: str, synchronous: bool, port_base: int) -> ClusterSpec:
    root = tempfile.mkdtemp(prefix="dbtier-bench-failover-")
    os.chmod(root, 0o755)
    return build_spec(
        {"name": "benchfailover", "data_root": root,
         "postgres": {"patroni": TIMINGS[profile], "synchronous_mode": synchronous,
                      "ports": {"postgres": port_base, "patroni": port_base + 20, "etcd": port_base + 40}}},
        environ={},
    )


def run_profile(profile: str, synchronous: bool, crashes: int, switchovers: int, port_base: int) -> list[Verdict]:
    spec = bench_spec(profile, synchronous, port_base)
    engine, provider = get_engine(spec), get_provider(spec)
    passwords = Passwords.generate(POSTGRES_SECRETS)
    verdicts: list[Verdict] = []
    try:
        provision_plain(spec, passwords, FILE_CA_STORE)
        for scenario in ["crash"] * crashes + ["switchover"] * switchovers:
            verdict = scenarios.run(spec, scenario, SETTINGS, passwords.app, rest_login=rest_login(passwords)).verdict
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


# -- the lab ------------------------------------------------------------------------------------------------


def lab_spec(public: Path, profile: str, synchronous: bool) -> ClusterSpec:
    """The lab's own ssh spec with the profile's timing; archiving off, so its S3 repository (a Prefect block)
    is named but never configured: provision without Prefect writes no pgbackrest.conf."""
    data: dict[str, Any] = yaml.safe_load((public / "ssh-spec.yaml").read_text())
    data["name"] = LAB_CLUSTER
    data["postgres"] = {**data.get("postgres", {}), "patroni": TIMINGS[profile], "synchronous_mode": synchronous,
                        "postgresql_parameters": {"archive_mode": "off"}}
    return build_spec(data, environ={})


def lab_drill(spec: ClusterSpec, scenario: str, passwords: Passwords, label: str) -> Outcome:
    started = time.monotonic()
    try:
        verdict = scenarios.run(spec, scenario, LAB_SETTINGS, passwords.app, rest_login=rest_login(passwords)).verdict
    except DbtierError as err:
        print(f"  {label} {scenario}: ERROR {err.one_line()}", flush=True)
        return f"{scenario}: {err.one_line()}"
    window = "" if verdict.old_primary_window is None else f", old-primary window {verdict.old_primary_window}"
    print(f"  {label} {verdict.sentence}{window} [{time.monotonic() - started:.0f} s]", flush=True)
    return verdict


def lab_profile(public: Path, profile: str, modes: list[str], runs: int,
                scenario_names: list[str]) -> dict[str, list[tuple[str, Outcome]]]:
    """Provision the lab's cluster with ``profile``; per mode, ``runs`` rounds of ``scenario_names``."""
    spec = lab_spec(public, profile, modes[0] == "sync")
    engine, provider = get_engine(spec), get_provider(spec)
    passwords = Passwords.generate(POSTGRES_SECRETS)
    found: dict[str, list[tuple[str, Outcome]]] = {}
    try:
        started = time.monotonic()
        provision_plain(spec, passwords, FILE_CA_STORE)
        print(f"  {profile}: provisioned on the lab in {time.monotonic() - started:.0f} s", flush=True)
        for mode in modes:
            print(f"  {profile}: {faults.set_synchronous_mode(spec, mode == 'sync', rest_login(passwords))}", flush=True)
            found[mode] = [(s, lab_drill(spec, s, passwords, f"{profile:7} {mode:5}"))
                           for _ in range(runs) for s in scenario_names]
    finally:
        bootstrap.stop_services(engine, provider, spec)
        bootstrap.wipe(engine, provider, spec)
    return found


def lab_line(profile: str, mode: str, scenario: str, outcomes: list[tuple[str, Outcome]], base: float | None) -> str:
    done = [o for s, o in outcomes if s == scenario]
    verdicts = [o for o in done if isinstance(o, Verdict)]
    rtos = [v.rto_s for v in verdicts if v.rto_s is not None]
    windows = [v.old_primary_window for v in verdicts if v.old_primary_window is not None]
    median = statistics.median(rtos) if rtos else None
    ratio = f"{median / base:5.2f}x" if median is not None and base else "   n/a"
    figures = [f"{median:7.2f}" if median is not None else "    n/a", f"{max(rtos):7.2f}" if rtos else "    n/a",
               ratio, f"{sum(v.lost_writes for v in verdicts):5}", f"{sum(1 for v in verdicts if v.split_brain):5}",
               f"{max(windows):6}" if windows else "   n/a", f"{sum(1 for o in done if isinstance(o, str) or not o.passed):6}"]
    return f"{profile:8} {mode:6} {scenario:17} {len(done):4} " + " ".join(figures)


def local_baseline(profile: str, mode: str, crashes: int, port_base: int) -> float | None:
    """The median RTO of ``crashes`` local-provider crash drills (same profile and mode), or None."""
    if crashes <= 0:
        return None
    rtos = [v.rto_s for v in run_profile(profile, mode == "sync", crashes, 0, port_base) if v.rto_s is not None]
    return statistics.median(rtos) if rtos else None


def run_lab(args: argparse.Namespace) -> int:
    from dbtier.lab import lab

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally below takes the lab down
    started = time.monotonic()
    bases = {(p, m): local_baseline(p, m, args.baseline_crashes, args.port_base) for p in args.profiles for m in args.modes}
    results: dict[str, dict[str, list[tuple[str, Outcome]]]] = {}
    errors: list[str] = []
    for profile in args.profiles:
        # A fresh lab per profile: new hosts, new host keys, so new SSH connections. A host that lost power
        # leaves its old connection's SFTP channel dead, and provision uploads its files over SFTP.
        lab.down(LAB, progress=lambda _line: None)  # what a killed earlier run left of this lab
        try:
            state = lab.up(LAB, 3, LAB_SUBNET, progress=lambda line: print(f"  {line}", flush=True))
            results[profile] = lab_profile(state.public, profile, args.modes, args.runs, args.scenarios)
        except DbtierError as err:  # this profile's figures are lost; the others' are still printed
            errors.append(f"failed: {profile}: {err.one_line()}")
            print(f"  {errors[-1]}", flush=True)
        finally:
            lab.down(LAB, progress=lambda line: print(f"  {line}", flush=True))
    print_lab_table(results, bases, args.baseline_crashes, args.scenarios)
    print(f"(RTO in seconds, fault to the first write acknowledged by the new primary; ratio: median / the local "
          f"crash median; split: runs with split brain; window: most writes the old primary acknowledged after the "
          f"new primary's first; {time.monotonic() - started:.0f} s)")
    for line in errors + failures(results):
        print(line)
    print(f"(each drill's writes.jsonl and verdict.json: {workdir.cluster_work_dir(LAB_CLUSTER)}/drills/, on this machine)")
    return 1 if errors else 0


def print_lab_table(results: dict[str, dict[str, list[tuple[str, Outcome]]]],
                    bases: dict[tuple[str, str], float | None], baseline_crashes: int, scenario_names: list[str]) -> None:
    print(f"\n{'profile':8} {'mode':6} {'scenario':17} {'runs':>4} {'median':>7} {'worst':>7} {'ratio':>6} "
          f"{'lost':>5} {'split':>5} {'window':>6} {'failed':>6}")
    for profile, by_mode in results.items():
        for mode, outcomes in by_mode.items():
            base = bases[(profile, mode)]
            print(f"{profile:8} {mode:6} {'local crash':17} {baseline_crashes:4} "
                  + (f"{base:7.2f}" if base is not None else "    n/a") + "   (baseline)")
            for scenario in scenario_names:
                print(lab_line(profile, mode, scenario, outcomes, base))


def failures(results: dict[str, dict[str, list[tuple[str, Outcome]]]]) -> list[str]:
    """One line per lab drill that failed or raised, with the verdict's reasons."""
    return [f"failed: {profile} {mode} " + (o if isinstance(o, str) else f"{o.scenario}: {'; '.join(o.reasons)}")
            for profile, by_mode in results.items() for mode, outcomes in by_mode.items()
            for _scenario, o in outcomes if isinstance(o, str) or not o.passed]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--switchovers", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", choices=sorted(TIMINGS), default=["default", "tuned"])
    parser.add_argument("--modes", nargs="+", choices=["async", "sync"], default=None,
                        help="default: async sync (local); sync async (--lab)")
    parser.add_argument("--port-base", type=int, default=30100)
    parser.add_argument("--lab", action="store_true", help="crash, host-crash and partition-primary on a dbtier lab")
    parser.add_argument("--runs", type=int, default=5, help="--lab: runs of each scenario per profile and mode")
    parser.add_argument("--scenarios", nargs="+", choices=sorted(scenarios.SCENARIO_FUNCS), default=list(LAB_SCENARIOS),
                        help=f"--lab: which drills (default: {' '.join(LAB_SCENARIOS)})")
    parser.add_argument("--baseline-crashes", type=int, default=3, help="--lab: local crashes for the ratio (0: none)")
    args = parser.parse_args()
    if args.lab:
        args.modes = args.modes or ["sync", "async"]
        return run_lab(args)
    args.modes = args.modes or ["async", "sync"]
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
