"""SSH file batches: a host's files moved one by one against in one round trip, measured in one run.

    .venv/bin/python bench/ssh_files.py [--files 9] [--rounds 5]

A real sshd on 127.0.0.1:29890 (test block 98's SSH port) with a generated key; the ssh provider's runner for a
spec on it, as the flows use it. Each round, on fresh paths under a temporary data root:
  1. one by one: ``make_dirs`` of one directory, ``write_file`` of N files (what installing a member's
     certificates did: key, certificate, CA), then ``read_file`` of each;
  2. batched: ``write_files`` of the same directory and N files, then ``read_files`` of them.
It prints the median of each in milliseconds and the ratio one-by-one / batched; no timing is asserted. The sshd
is stopped by its pid and the temporary directories removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbtier.providers.base import Runner, get_provider  # noqa: E402
from tests.clusters import spec_for_tests  # noqa: E402
from tests.sshd import running_sshd  # noqa: E402

PORT = 29890


def one_by_one(runner: Runner, root: str, files: list[tuple[str, bytes, int]]) -> float:
    start = time.perf_counter()
    runner.make_dirs(root, 0o700)
    for path, data, mode in files:
        runner.write_file(path, data, mode)
    for path, _, _ in files:
        runner.read_file(path)
    return time.perf_counter() - start


def batched(runner: Runner, root: str, files: list[tuple[str, bytes, int]]) -> float:
    start = time.perf_counter()
    runner.write_files(files, [(root, 0o700)])
    runner.read_files([path for path, _, _ in files])
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=9, help="files per round (default 9)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (default 5)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="dbtier-bench-ssh-")
    os.chmod(root, 0o755)
    try:
        with running_sshd(PORT) as sshd:
            spec = spec_for_tests(f"benchssh{os.getpid() % 10000}", block=98, data_root=root, provider="ssh",
                                  ssh={"hosts": [{"address": "127.0.0.1", "port": PORT, "host_key": sshd.host_key}],
                                       "user": "root", "key_file": sshd.key_file, "install_packages": False})
            runner = get_provider(spec).runner(spec, "127.0.0.1")
            runner.read_file("/etc/hostname")  # the connection, opened before anything is timed
            slow: list[float] = []
            fast: list[float] = []
            for r in range(args.rounds):
                for kind, measure, times in (("single", one_by_one, slow), ("batch", batched, fast)):
                    here = f"{root}/{kind}{r}"
                    files = [(f"{here}/f{i}.pem", os.urandom(1200), 0o600) for i in range(args.files)]
                    times.append(measure(runner, here, files))
                    if runner.read_files([p for p, _, _ in files]) != [d for _, d, _ in files]:
                        raise SystemExit(f"{kind}: the files read back differ from those written")
            single, batch = statistics.median(slow) * 1000, statistics.median(fast) * 1000
            print(f"{args.files} files and one directory over SSH, written then read, median of {args.rounds}:")
            print(f"  one by one: {single:7.0f} ms")
            print(f"  batched:    {batch:7.0f} ms")
            print(f"  ratio one-by-one / batched: {single / batch:.1f}x")
            print(f"  load average: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
