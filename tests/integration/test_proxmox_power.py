"""Proxmox power for the host drills: freeze, thaw, kill and boot a container through the PVE API double.

The double's backend is :class:`tests.fake_hosts.FakeHosts` (it records what each call asks of the host);
the container's "sshd" is a real OpenSSH server on loopback, which ``boot`` waits for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from dbtier.errors import ProvisionError
from dbtier.lab.pve import PveDouble, running_pve_double
from dbtier.power import HostPower
from dbtier.providers import proxmox_api as pve_api
from dbtier.providers.base import get_provider
from dbtier.providers.proxmox import container_plan, with_leases
from dbtier.providers.proxmox_api import Client, ProxmoxError
from dbtier.providers.proxmox_power import ProxmoxPower
from dbtier.spec import ClusterSpec
from tests.clusters import TEST_PORT_BASE, shared_tmpdir, spec_for_tests
from tests.fake_hosts import FakeHosts
from tests.sshd import SSHServer, running_sshd

BLOCK = 31
SSHD_PORT = TEST_PORT_BASE + 100 * BLOCK + 90
CLOSED_PORT = SSHD_PORT + 1  # nothing listens there
VMID = 360
HOST = "127.0.0.1"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 dbtier@ci"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def power_spec(address: str = f"{HOST}/8", ssh_port: int = SSHD_PORT, **proxmox: Any) -> ClusterSpec:
    settings = {"credentials_block": "unused", "ssh_credentials_block": "unused", "layout": "single",
                "containers": [{"vmid": VMID, "node": "pve1", "address": address}], "ssh_port": ssh_port,
                "task_timeout_s": 10, **proxmox}
    return spec_for_tests("pvepower", block=BLOCK, data_root=shared_tmpdir("dbtier-pve-power-"), members=1,
                          provider="proxmox", proxmox=settings)


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    with running_sshd(SSHD_PORT, addresses=(HOST,)) as server:
        yield server


@pytest.fixture
def hosts() -> FakeHosts:
    return FakeHosts({"lab-0": HOST}, down=True)


@pytest.fixture
def pve(hosts: FakeHosts) -> Iterator[PveDouble]:
    with running_pve_double(nodes=("pve1",), task_seconds=0.01, backend=hosts) as double:
        yield double


def client_of(pve: PveDouble) -> Client:
    return pve_api.make_client(pve.url, pve.token_id, pve.token_secret, verify=pve.ca_file)


def provisioned(client: Client, spec: ClusterSpec) -> None:
    """The spec's container as provision creates it (tagged for the cluster, started)."""
    plan = container_plan(spec, 0, KEY, storage="local-lvm", bridge="vmbr0", template=TEMPLATE)
    pve_api.ensure_container(client, "pve1", plan, timeout=10, poll=0.01)


def status(client: Client) -> str:
    return str(client.nodes("pve1").lxc(VMID).status.current.get()["status"])


def power_calls(pve: PveDouble) -> list[str]:
    return [path.rsplit("/", 1)[1] for verb, path in pve.state.requests if verb == "POST" and "/status/" in path]


def test_freeze_thaw_kill_boot_are_suspend_resume_stop_start(pve: PveDouble, hosts: FakeHosts, sshd: SSHServer) -> None:
    client, spec = client_of(pve), power_spec()
    provisioned(client, spec)
    power = ProxmoxPower(spec, lambda: client, poll=0.01)

    said = power.freeze(HOST)
    assert re.fullmatch(r"127\.0\.0\.1: CT 360 \(pvepower\) on pve1 suspended \(every process paused\) in \d+\.\d s", said)
    assert hosts.frozen == {"lab-0"} and status(client) == "running"
    assert power.thaw(HOST).startswith("127.0.0.1: CT 360 (pvepower) on pve1 resumed in ")
    assert hosts.frozen == set()
    assert power.kill(HOST).startswith("127.0.0.1: CT 360 (pvepower) on pve1 stopped at once (power cut) in ")
    assert status(client) == "stopped"
    said = power.boot(HOST, timeout=30)
    assert re.fullmatch(r"127\.0\.0\.1: CT 360 \(pvepower\) on pve1 started in \d+\.\d s; SSH answered after \d+\.\d s", said)
    assert status(client) == "running"

    assert power_calls(pve) == ["suspend", "resume", "stop", "start"]
    assert hosts.calls == [("authorize", "lab-0"), ("boot", "lab-0"), ("freeze", "lab-0"), ("thaw", "lab-0"),
                           ("kill", "lab-0"), ("boot", "lab-0")]


def test_the_provider_offers_it_without_touching_the_api(pve: PveDouble) -> None:
    spec = power_spec()
    power = get_provider(spec).power(spec)
    assert isinstance(power, HostPower) and isinstance(power, ProxmoxPower)
    assert pve.state.requests == []


def test_a_failed_task_is_one_line_with_the_hosts_words(pve: PveDouble, hosts: FakeHosts) -> None:
    client, spec = client_of(pve), power_spec()
    provisioned(client, spec)
    hosts.failures["freeze"] = "cgroup freezer: permission denied"
    with pytest.raises(ProxmoxError, match=r"^task vzsuspend for CT 360 on pve1 failed: cgroup freezer: permission denied$"):
        ProxmoxPower(spec, lambda: client, poll=0.01).freeze(HOST)


def test_killing_a_stopped_container_says_what_pve_said(pve: PveDouble) -> None:
    client, spec = client_of(pve), power_spec()
    provisioned(client, spec)
    power = ProxmoxPower(spec, lambda: client, poll=0.01)
    power.kill(HOST)
    with pytest.raises(ProxmoxError, match=r"^stopping CT 360 on pve1: Proxmox answered 500 CT 360 not running$"):
        power.kill(HOST)


@pytest.mark.parametrize(("host", "setup", "said"), [
    ("127.0.0.9", None, r"^proxmox\.containers: no container has the address 127\.0\.0\.9$"),
    (HOST, None, r"^proxmox\.containers\[0\]: CT 360 \(pvepower\) does not exist; provision creates it$"),
    (HOST, "foreign", r"^proxmox\.containers\[0\]: CT 360 on pve1 lacks the tags dbtier;dbtier-pvepower; dbtier powers "
                      r"only containers it created for the cluster \(fix the vmid\)$"),
])
def test_only_the_clusters_own_containers_are_powered(pve: PveDouble, host: str, setup: str | None, said: str) -> None:
    if setup == "foreign":
        pve.add_container(VMID, "pve1", "web", tags="prod")
    client = client_of(pve)
    with pytest.raises(ProvisionError, match=said):
        ProxmoxPower(power_spec(), lambda: client, poll=0.01).kill(host)
    assert power_calls(pve) == []


def test_boot_fails_in_one_line_when_sshd_never_answers(pve: PveDouble) -> None:
    client, spec = client_of(pve), power_spec(ssh_port=CLOSED_PORT)
    provisioned(client, spec)
    power = ProxmoxPower(spec, lambda: client, poll=0.01)
    power.kill(HOST)
    with pytest.raises(ProvisionError, match=rf"^proxmox: 127\.0\.0\.1:{CLOSED_PORT} did not answer SSH within 0\.5 s"):
        power.boot(HOST, timeout=0.5)
    assert status(client) == "running"  # started: only its sshd is missing


def test_a_dhcp_container_boots_back_at_its_lease(sshd: SSHServer) -> None:
    with running_pve_double(nodes=("pve1",), task_seconds=0.01, leases={VMID: f"{HOST}/8"}) as plain:
        client = client_of(plain)
        dhcp = power_spec(address="dhcp")
        provisioned(client, dhcp)
        spec = with_leases(dhcp, {0: HOST})  # what resolve_addresses learns
        power = ProxmoxPower(spec, lambda: client, poll=0.01)
        power.kill(HOST)
        said = power.boot(HOST, timeout=30)
        assert "started in" in said and "SSH answered after" in said and "DHCP gave it" not in said
