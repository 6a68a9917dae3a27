"""A cluster's passwords read from their Secret blocks: a client per block against one client for all, in one run.

    .venv/bin/python bench/secret_blocks.py [--rounds 10]

A Prefect test harness (a temporary API on SQLite, as the test suite runs) holding the Secret blocks of a
default PostgreSQL cluster (``ensure_passwords``). Each round reads every block of the cluster:
  1. one by one: ``Secret.load`` of each block, a new API client each (how dbtier read them before);
  2. at once: ``blocks.passwords.load_secrets`` of the same names, over one client.
It checks both read the same values, then prints the median wall and CPU milliseconds of each and the ratio
one-by-one / at once; no timing is asserted. The harness removes its database at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import PREFECT_ENV  # noqa: E402


def timed(read: Callable[[], dict[str, str | None]]) -> tuple[float, float, dict[str, str | None]]:
    wall, cpu = time.perf_counter(), time.process_time()
    values = read()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    os.environ.update(PREFECT_ENV)  # before Prefect is imported

    from prefect.blocks.system import Secret
    from prefect.testing.utilities import prefect_test_harness

    from blocks.passwords import ensure_passwords, load_secrets
    from dbtier.secrets import secret_roles
    from dbtier.spec import build_spec

    spec = build_spec({"name": "bench-secrets"}, environ={})
    names = [role.block(spec.name) for role in secret_roles(spec)]

    def one_by_one() -> dict[str, str | None]:
        return {name: str(Secret.load(name).get()) for name in names}  # type: ignore[union-attr]

    def at_once() -> dict[str, str | None]:
        return load_secrets(names)

    with prefect_test_harness():
        ensure_passwords(spec, initialised=False)
        one_by_one(), at_once()  # warm both paths once
        rows: dict[str, list[tuple[float, float]]] = {"one by one": [], "at once": []}
        for _ in range(args.rounds):
            for label, read in (("one by one", one_by_one), ("at once", at_once)):
                wall, cpu, values = timed(read)
                assert values == one_by_one(), f"{label}: read other values"
                rows[label].append((wall, cpu))
    medians = {label: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
               for label, r in rows.items()}
    print(f"{len(names)} Secret blocks of cluster {spec.name}, median of {args.rounds} rounds")
    for label, (wall, cpu) in medians.items():
        print(f"  {label:<11} {wall:7.1f} ms wall  {cpu:7.1f} ms CPU (this process)")
    (w1, c1), (w2, c2) = medians["one by one"], medians["at once"]
    print(f"  one by one / at once: {w1 / w2:.1f}x wall, {c1 / c2:.1f}x CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
