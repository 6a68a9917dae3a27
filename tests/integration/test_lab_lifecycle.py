"""``dbtier lab`` as a command: an interrupted ``up`` leaves nothing that ``down`` cannot remove, a second
``down`` is a no-op, and bad input is one line that makes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbtier.lab import lab
from dbtier.lab.lab import LabState
from tests.lab import unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(unavailable() is not None, reason=f"lab: {unavailable()}")]
NAME, SUBNET = "tcut", "198.18.13.0/24"
DBTIER = [sys.executable, "-m", "dbtier.cli"]


def dbtier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DBTIER, *args], capture_output=True, text=True, timeout=300)


def leftovers(state: LabState) -> list[str]:
    """What of the lab is still on this machine."""
    found = []
    if subprocess.run(["ip", "link", "show", state.plan.bridge], capture_output=True).returncode == 0:
        found.append(f"bridge {state.plan.bridge}")
    found += [f"veth {h.veth}" for h in state.plan.hosts
              if subprocess.run(["ip", "link", "show", h.veth], capture_output=True).returncode == 0]
    found += [str(p) for p in Path("/sys/fs/cgroup/unified").glob(f"dbtier-lab-{NAME}-*")]
    found += [f"pid {pid}" for pid, args in [*((state.launchers.get(h.name), state.launcher_args(h))
                                                for h in state.plan.hosts),
                                              (state.s3_pid, state.s3_args), (state.pve_pid, state.pve_args)]
              if lab.pid_runs(pid, args)]
    found += [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if str(state.dir) in line.split()[1]]
    if state.dir.exists():
        found.append(str(state.dir))
    return found


@pytest.fixture
def clean() -> Iterator[None]:
    lab.down(NAME, progress=lambda _line: None)
    yield
    lab.down(NAME, progress=lambda _line: None)


def test_an_interrupted_up_is_removed_by_down(clean: None) -> None:
    up = subprocess.Popen([*DBTIER, "lab", "up", "--name", NAME, "--subnet", SUBNET, "--hosts", "2"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    state_file = lab.lab_root() / NAME / "lab.json"
    deadline = time.monotonic() + 120
    while not (state_file.exists() and json.loads(state_file.read_text())["launchers"]):
        assert up.poll() is None and time.monotonic() < deadline, "up ended before its first host booted"
        time.sleep(0.05)
    os.killpg(up.pid, signal.SIGKILL)  # as a power cut of the command: no cleanup of its own
    up.wait(10)
    state = LabState.load(NAME)
    assert state is not None and leftovers(state), "the interrupted up had made something"
    again = dbtier("lab", "up", "--name", NAME, "--subnet", SUBNET)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"dbtier lab: error: lab {NAME}: a lab of that name is partly up (an interrupted up, or a host down); "
        f"run `dbtier lab down --name {NAME}` first"]
    down = dbtier("lab", "down", "--name", NAME)
    assert down.returncode == 0, down.stderr
    assert leftovers(state) == []
    second = dbtier("lab", "down", "--name", NAME)
    assert second.returncode == 0 and second.stdout.strip() == f"lab {NAME}: nothing to take down"
    status = dbtier("lab", "status", "--name", NAME)
    assert status.returncode == 3 and status.stdout.startswith(f"no lab {NAME}")


@pytest.mark.parametrize(("args", "line"), [
    (["--subnet", "10.1.0.0/24"], "--subnet: 10.1.0.0/24 is outside 198.18.0.0/15, the range reserved for network "
                                  "tests; pick one inside it"),
    (["--name", "Bad_Name"], "--name: 'Bad_Name' is not a lab name; use 1-8 lower-case letters or digits, "
                             "starting with a letter"),
    (["--hosts", "0"], "--hosts: 0 is out of range; a lab has 1 to 9 hosts"),
])
def test_bad_input_is_one_line_and_makes_nothing(clean: None, args: list[str], line: str) -> None:
    done = dbtier("lab", "up", "--name", NAME, "--subnet", SUBNET, *args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"dbtier lab: error: {line}"]
    assert not (lab.lab_root() / NAME).exists()
    assert subprocess.run(["ip", "link", "show", f"dbtl-{NAME}"], capture_output=True).returncode != 0
