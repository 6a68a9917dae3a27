"""The PVE API double with a host backend: each container is a host, and its lifecycle drives that host.

The backend is :class:`tests.fake_hosts.FakeHosts` (flags that record every call); the calls go through
real proxmoxer over HTTPS, and the tests read what a user would: the container's status, the task's end.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator

import pytest

from dbtier.lab.pve import PveDouble, running_pve_double
from dbtier.lab.pve.backend import HostBackend
from dbtier.lab.pve.handlers import HOST_ACTIONS
from dbtier.providers import proxmox_api as pve_api
from dbtier.providers.proxmox_api import Client, ContainerPlan, ContainerRef, ProxmoxError, StaticIPv4
from tests.fake_hosts import FakeHosts

FAST = {"timeout": 10.0, "poll": 0.01}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 dbtier@ci"
PLAN = ContainerPlan(hostname="pg-1", cluster="pg", ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                     ssh_public_key=KEY, vmid=300, ipv4=StaticIPv4("198.18.0.11/15", "198.18.0.1"))
REF = ContainerRef("pve1", 300, "pg-1", "running", ("dbtier", "dbtier-pg"))
LAB = {"lab-0": "198.18.0.11", "lab-1": "198.18.0.12"}


@pytest.fixture
def hosts() -> FakeHosts:
    """Two lab hosts, both down (so a created container's boot shows)."""
    return FakeHosts(LAB, down=True)


@pytest.fixture
def pve(hosts: FakeHosts) -> Iterator[PveDouble]:
    with running_pve_double(nodes=("pve1", "pve2"), task_seconds=0.01, backend=hosts) as double:
        yield double


@pytest.fixture
def client(pve: PveDouble) -> Client:
    return pve_api.make_client(pve.url, pve.token_id, pve.token_secret, verify=pve.ca_file)


def power(action: str) -> Callable[[Client], None]:
    """A power call on CT 300 through the API, its task waited on."""
    def call(client: Client) -> None:
        upid = getattr(client.nodes("pve1").lxc(300).status, action).post()
        pve_api.wait_for_task(client, upid, **FAST)

    return call


def destroy(client: Client) -> None:
    pve_api.destroy_container(client, REF, "pg", **FAST)


def status(client: Client) -> str:
    return str(client.nodes("pve1").lxc(300).status.current.get()["status"])


CREATED = [("authorize", "lab-0"), ("boot", "lab-0")]


@pytest.mark.parametrize(("steps", "calls", "after"), [
    ([], CREATED, "running"),
    ([power("stop")], [*CREATED, ("kill", "lab-0")], "stopped"),
    ([power("shutdown")], [*CREATED, ("kill", "lab-0")], "stopped"),
    ([power("stop"), power("start")], [*CREATED, ("kill", "lab-0"), ("boot", "lab-0")], "running"),
    ([power("suspend")], [*CREATED, ("freeze", "lab-0")], "running"),
    ([power("suspend"), power("resume")], [*CREATED, ("freeze", "lab-0"), ("thaw", "lab-0")], "running"),
    ([destroy], [*CREATED, ("kill", "lab-0"), ("kill", "lab-0")], "gone"),  # stopped first, then destroyed
], ids=["create", "stop", "shutdown", "stop-start", "suspend", "suspend-resume", "destroy"])
def test_each_lifecycle_call_drives_the_containers_host(pve: PveDouble, client: Client, hosts: FakeHosts,
                                                        steps: list[Callable[[Client], None]],
                                                        calls: list[tuple[str, str]], after: str) -> None:
    pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    for step in steps:
        step(client)
    assert hosts.calls == calls
    if after == "gone":
        assert pve.container(300) is None and pve_api.list_containers(client) == []
    else:
        assert status(client) == after
    assert hosts.keys["lab-0"] == [KEY] and hosts.keys["lab-1"] == []


def test_a_suspended_container_is_a_frozen_host_and_resume_lets_it_go(client: Client, hosts: FakeHosts) -> None:
    pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    power("suspend")(client)
    assert hosts.frozen == {"lab-0"} and status(client) == "running"
    power("resume")(client)
    assert hosts.frozen == set()


def test_status_is_the_hosts_real_state(pve: PveDouble, client: Client, hosts: FakeHosts) -> None:
    ref, _ = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert pve_api.container_address(client, ref, **FAST) == "198.18.0.11"
    hosts.kill("lab-0")  # the host dies behind the API's back
    assert status(client) == "stopped"
    assert [ct.status for ct in pve_api.list_containers(client)] == ["stopped"]
    with pytest.raises(Exception, match="CT 300 not running"):
        client.nodes("pve1").lxc(300).interfaces.get()
    _, said = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert said == "CT 300 (pg-1) existed stopped on pve1; started it"
    assert hosts.calls[-1] == ("boot", "lab-0") and status(client) == "running"


def test_a_host_already_up_is_a_running_container_once_created() -> None:
    with running_pve_double(nodes=("pve1",), task_seconds=0.01, backend=FakeHosts(LAB)) as pve:
        up = pve_api.make_client(pve.url, pve.token_id, pve.token_secret, verify=pve.ca_file)
        pve_api.ensure_container(up, "pve1", PLAN, **FAST)
        assert status(up) == "running"
        with pytest.raises(ProxmoxError, match="CT 300 already running"):
            pve_api.start_container(up, REF, **FAST)


@pytest.mark.parametrize(("ipv4", "said"), [
    (StaticIPv4("198.18.0.99/15"), "net0: no lab host has the address 198.18.0.99; use a lab host's address"),
    (None, "net0: this PVE test double serves lab hosts, each at its own static address; set ip=ADDRESS/PREFIX"),
])
def test_a_container_without_a_lab_host_is_refused_like_a_bad_parameter(pve: PveDouble, client: Client,
                                                                       hosts: FakeHosts, ipv4: StaticIPv4 | None,
                                                                       said: str) -> None:
    with pytest.raises(ProxmoxError) as caught:
        pve_api.ensure_container(client, "pve1", dataclasses.replace(PLAN, ipv4=ipv4), **FAST)
    assert caught.value.status == 400
    assert str(caught.value).startswith(f"creating CT 300 (pg-1) on pve1: Proxmox refused the parameters ({said}")
    assert pve.container(300) is None and hosts.calls == []


def test_one_host_is_one_container(client: Client, hosts: FakeHosts) -> None:
    pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    with pytest.raises(ProxmoxError, match=r"net0: lab host lab-0 \(198.18.0.11\) is CT 300 already; destroy CT 300"):
        pve_api.ensure_container(client, "pve2", dataclasses.replace(PLAN, vmid=301, hostname="pg-2"), **FAST)
    second = dataclasses.replace(PLAN, vmid=301, hostname="pg-2", ipv4=StaticIPv4("198.18.0.12/15"))
    pve_api.ensure_container(client, "pve2", second, **FAST)
    assert hosts.up == {"lab-0", "lab-1"}


def test_a_failing_host_action_fails_its_task_with_the_hosts_words(client: Client, hosts: FakeHosts) -> None:
    pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    power("stop")(client)
    hosts.failures["boot"] = "lab host lab-0: systemd did not come up\n(see its journal)"
    with pytest.raises(ProxmoxError) as caught:
        pve_api.start_container(client, REF, **FAST)
    assert caught.value.exitstatus == "lab host lab-0: systemd did not come up (see its journal)"
    assert status(client) == "stopped"


def test_the_task_runs_while_the_host_boots(client: Client, hosts: FakeHosts) -> None:
    pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    power("stop")(client)
    hosts.gate = threading.Event()
    upid = client.nodes("pve1").lxc(300).status.start.post()
    try:
        assert client.nodes("pve1").tasks(upid).status.get()["status"] == "running"
    finally:
        hosts.gate.set()
    assert pve_api.wait_for_task(client, upid, **FAST)["exitstatus"] == "OK"
    assert status(client) == "running"


def test_every_host_action_is_a_backend_method() -> None:
    methods = {name for name in dir(HostBackend) if not name.startswith("_")}
    assert set(HOST_ACTIONS.values()) <= methods
    assert isinstance(FakeHosts(LAB), HostBackend)


def test_without_a_backend_suspend_and_resume_only_answer() -> None:
    with running_pve_double(nodes=("pve1",), task_seconds=0.01) as pve:
        plain = pve_api.make_client(pve.url, pve.token_id, pve.token_secret, verify=pve.ca_file)
        pve_api.ensure_container(plain, "pve1", dataclasses.replace(PLAN, ipv4=None), **FAST)
        power("suspend")(plain)
        power("resume")(plain)
        assert status(plain) == "running"
        pve_api.stop_container(plain, REF, **FAST)
        with pytest.raises(Exception, match="CT 300 not running"):
            power("suspend")(plain)
