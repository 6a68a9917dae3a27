"""The PVE test double as its own process (``python -m dbtier.lab.pve``), as ``dbtier lab up`` leaves it running:
reached with the project's proxmoxer client from the connection file it writes, stopped by PID with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dbtier.providers import proxmox_api as pve_api
from dbtier.providers.proxmox_api import Client, ContainerPlan, StaticIPv4

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = {"timeout": 10.0, "poll": 0.01}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 dbtier@ci"
PLAN = ContainerPlan(hostname="lab-0", cluster="lab", ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                     ssh_public_key=KEY, vmid=300, ipv4=StaticIPv4("198.18.0.11/15", "198.18.0.1"))


@dataclass
class Served:
    process: subprocess.Popen[str]
    state_dir: Path
    calls: Path  # the fake backend's journal: "action host" a line
    ready: str  # the line it printed once serving

    def connection(self) -> dict[str, str]:
        loaded: dict[str, str] = json.loads((self.state_dir / "pve-api.json").read_text())
        return loaded

    def client(self) -> Client:
        c = self.connection()
        return pve_api.make_client(c["api_url"], c["token_id"], c["token_secret"], verify=c["ca_file"])


def start(state_dir: Path, *args: str) -> subprocess.Popen[str]:
    with open(state_dir.parent / "stderr.log", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "dbtier.lab.pve", "--state-dir", str(state_dir), *args],
                                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=err, text=True)


@pytest.fixture
def served_with_fake_hosts(tmp_path: Path) -> Iterator[Served]:
    """The double's process on a free loopback port, its containers the hosts of tests.fake_hosts."""
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"lab-0": "198.18.0.11", "lab-1": "198.18.0.12"}))
    process = start(tmp_path / "pve", "--listen", "127.0.0.1:0", "--backend", "tests.fake_hosts:backend_for",
                    "--lab", str(hosts), "--nodes", "pve1", "--task-seconds", "0.01")
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready, f"the double did not start: {(tmp_path / 'stderr.log').read_text()}"
        yield Served(process, tmp_path / "pve", Path(f"{hosts}.calls"), ready)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_the_process_serves_lab_hosts_and_stops_on_sigterm(served_with_fake_hosts: Served) -> None:
    served = served_with_fake_hosts
    connection_file = served.state_dir / "pve-api.json"
    assert stat.S_IMODE(connection_file.stat().st_mode) == 0o600
    connection = served.connection()
    assert sorted(connection) == ["api_url", "ca_file", "fingerprint", "nodes", "token_id", "token_secret"]
    assert connection["nodes"] == ["pve1"] and connection["api_url"].startswith("https://127.0.0.1:")
    assert (served.state_dir / "pve.pid").read_text().strip() == str(served.process.pid)
    assert f"serving {connection['api_url']}" in served.ready and connection["token_secret"] not in served.ready

    client = served.client()
    ref, said = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert said.startswith("CT 300 (lab-0) created on pve1")
    assert pve_api.container_address(client, ref, **FAST) == "198.18.0.11"
    pve_api.stop_container(client, ref, **FAST)
    assert served.calls.read_text().splitlines() == ["authorize lab-0", "boot lab-0", "kill lab-0"]
    assert client.nodes("pve1").lxc(300).status.current.get()["status"] == "stopped"

    port = int(connection["api_url"].rsplit(":", 1)[1])
    os.kill(served.process.pid, signal.SIGTERM)
    out, _ = served.process.communicate()
    assert served.process.returncode == 0
    assert out.strip() == "PVE test double on 127.0.0.1 stopped"
    assert not connection_file.exists() and not (served.state_dir / "pve.pid").exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


@pytest.mark.parametrize(("args", "said"), [
    (["--listen", "0.0.0.0:8006"], "--listen: 0.0.0.0 is no one address"),
    (["--listen", "localhost"], "--listen: 'localhost' is not ADDRESS:PORT; write it like 198.18.0.1:8006"),
    (["--backend", "tests.fake_hosts:nothing", "--lab", "x"], "--backend: cannot load tests.fake_hosts:nothing"),
    (["--backend", "tests.fake_hosts:backend_for"], "--lab: required with --backend"),
    (["--backend", "json:loads", "--lab", "{}"], "--backend: json:loads('{}') returned a dict, which lacks the methods"),
])
def test_a_refused_argument_is_one_line_and_exit_2(tmp_path: Path, args: list[str], said: str) -> None:
    process = start(tmp_path / "pve", *args)
    out, _ = process.communicate(timeout=60)
    err = (tmp_path / "stderr.log").read_text()
    assert (process.returncode, out) == (2, "")
    assert err.startswith(f"python -m dbtier.lab.pve: error: {said}") and err.count("\n") == 1


def test_a_state_dir_another_live_double_serves_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "pve"
    state_dir.mkdir()
    (state_dir / "pve.pid").write_text(f"{os.getpid()}\n")  # this test's process: alive
    process = start(state_dir, "--listen", "127.0.0.1:0")
    process.communicate(timeout=60)
    assert process.returncode == 2
    assert f"--state-dir: {state_dir} is served by pid {os.getpid()} already" in (tmp_path / "stderr.log").read_text()
