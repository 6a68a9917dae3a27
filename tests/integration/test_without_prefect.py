"""The library reaches SSH hosts and the Proxmox API with no Prefect at all: its default loaders.

Each check runs in a fresh Python process (so "Prefect was never imported" means something) against a
real sshd on loopback and the PVE API double, with only a key file, the work directory (where the host
key gets pinned) and a PVE token file in it. Port block 19.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbtier import workdir
from dbtier.lab.pve import PveDouble, running_pve_double
from dbtier.spec import ClusterSpec
from tests.clusters import TEST_PORT_BASE, shared_tmpdir, spec_for_tests, write_spec
from tests.sshd import SSHServer, running_sshd

BLOCK = 19
SSHD_PORT = TEST_PORT_BASE + 100 * BLOCK + 90
REPO = Path(__file__).resolve().parents[2]

#: Runs in its own process: print what the library did, and whether Prefect got imported on the way.
SCRIPT = """
import json, sys
from dbtier.errors import DbtierError
from dbtier.providers.base import get_provider, resolve_addresses
from dbtier.spec import load_spec
from dbtier.engines.postgres.topology import pg_members
spec = load_spec(sys.argv[1])
try:
    if spec.provider == "ssh":
        said = get_provider(spec).runner(spec, spec.ssh.hosts[0].address).run_as_root(["id", "-un"]).out.strip()
    else:
        said = [m.host for m in pg_members(resolve_addresses(spec))]
except DbtierError as err:
    print(err.one_line(), file=sys.stderr)
    sys.exit(err.exit_code)
print(json.dumps({"said": said, "prefect": sorted(m for m in sys.modules if m.split(".")[0] == "prefect")}))
"""


@pytest.fixture(scope="module")
def work() -> str:
    return os.path.join(shared_tmpdir("dbtier-noprefect-"), "work")


def library(spec_file: str, work: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBTIER_", "PREFECT_"))}
    env["DBTIER_WORK_DIR"] = work
    return subprocess.run([sys.executable, "-c", SCRIPT, spec_file], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    with running_sshd(SSHD_PORT) as server:
        yield server


@pytest.fixture(scope="module")
def ssh_spec(sshd: SSHServer, work: str) -> ClusterSpec:
    return spec_for_tests("noprefect", block=BLOCK, data_root=os.path.dirname(work), provider="ssh",
                          ssh={"hosts": [{"address": "127.0.0.1", "port": sshd.port}], "key_file": sshd.key_file,
                               "install_packages": False})


def test_a_key_file_reaches_the_host_and_its_key_is_pinned_in_the_work_directory(
    ssh_spec: ClusterSpec, sshd: SSHServer, work: str
) -> None:
    spec_file = write_spec(ssh_spec, os.path.join(os.path.dirname(work), "ssh.yaml"))
    done = library(spec_file, work)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"said": "root", "prefect": []}
    pins = Path(work, ssh_spec.name, "host-keys.json")
    assert json.loads(pins.read_text()) == {f"[127.0.0.1]:{sshd.port}": sshd.host_key}
    assert again_with_a_stranger_pinned(spec_file, pins, sshd, work)


def again_with_a_stranger_pinned(spec_file: str, pins: Path, sshd: SSHServer, work: str) -> bool:
    """A changed host key is refused in one line, as with the flows' pins."""
    pins.write_text(json.dumps({f"[127.0.0.1]:{sshd.port}": sshd.other_public_key}))
    done = library(spec_file, work)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "not SHA256:" in done.stderr and "pinned on first use" in done.stderr
    return True


@pytest.fixture(scope="module")
def pve() -> Iterator[PveDouble]:
    with running_pve_double(nodes=("pve1",), task_seconds=0.01, leases={391: "127.0.0.21/8"}) as double:
        double.add_container(391, "pve1", "noprefectpve-0", tags="dbtier;dbtier-noprefectpve",
                             net0="name=eth0,bridge=vmbr0,ip=dhcp")
        yield double


def test_the_pve_token_file_of_the_work_directory_reads_the_lease(pve: PveDouble, work: str) -> None:
    spec = spec_for_tests("noprefectpve", block=BLOCK, data_root=os.path.dirname(work), provider="proxmox",
                          members=1, proxmox={"credentials_block": "lab-pve", "ssh_key_file": "/unused",
                                              "layout": "per-member",
                                              "containers": [{"vmid": 391, "node": "pve1", "address": "dhcp"}]})
    spec_file = write_spec(spec, os.path.join(os.path.dirname(work), "pve.yaml"))
    token_file = workdir.pve_token_file("lab-pve", {"DBTIER_WORK_DIR": work})
    refused = library(spec_file, work)
    assert refused.returncode == 2 and f"write the token to {token_file}" in refused.stderr, refused.stderr
    token = {"api_url": pve.url, "token_id": pve.token_id, "token_secret": pve.token_secret, "ca_file": pve.ca_file}
    workdir.write_private(token_file, json.dumps(token).encode())  # JSON is YAML
    done = library(spec_file, work)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"said": ["127.0.0.21"], "prefect": []}
    assert {verb for verb, _ in pve.state.requests} == {"GET"}
