"""The Proxmox provider functions through real proxmoxer, over HTTPS, against the PVE API double."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from blocks.proxmox import ProxmoxCredentials
from dbtier.providers import proxmox_api as pve_api
from dbtier.providers.proxmox import learn_leases
from dbtier.providers.proxmox_api import Client, ContainerPlan, ContainerRef, ProxmoxError, StaticIPv4
from dbtier.spec import ClusterSpec, build_spec, pending_host
from dbtier.engines.postgres.topology import pg_members
from dbtier.lab.pve import PveDouble, running_pve_double

FAST = {"timeout": 5.0, "poll": 0.01}
PLAN = ContainerPlan(hostname="pg-1", cluster="pg", ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                     ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 dbtier@ci", vmid=300)


@pytest.fixture(scope="module")
def two_node_pve() -> Iterator[PveDouble]:
    with running_pve_double(nodes=("pve1", "pve2"), task_seconds=0.05) as double:
        yield double


@pytest.fixture
def empty_pve(two_node_pve: PveDouble) -> PveDouble:
    """The two-node double with no containers, tasks or faults left by an earlier test."""
    two_node_pve.reset()
    return two_node_pve


def credentials(pve: PveDouble, **fields: Any) -> ProxmoxCredentials:
    values: dict[str, Any] = {"api_url": pve.url, "token_id": pve.token_id, "token_secret": pve.token_secret,
                              "ca_file": pve.ca_file, "nodes": ["pve1", "pve2"]}
    return ProxmoxCredentials(**{**values, **fields})


@pytest.fixture
def client(empty_pve: PveDouble) -> Client:
    return credentials(empty_pve).get_client()


def creates(pve: PveDouble) -> int:
    return sum(1 for verb, path in pve.state.requests if verb == "POST" and path.endswith("/lxc"))


def test_create_start_address_reuse_destroy(empty_pve: PveDouble, client: Client) -> None:
    ref, said = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert said.startswith("CT 300 (pg-1) created on pve1 in ")
    assert ref == ContainerRef("pve1", 300, "pg-1", "running", ("dbtier", "dbtier-pg"))
    ct = empty_pve.container(300)
    assert ct is not None and ct.status == "running"
    assert ct.config["features"] == "nesting=1" and ct.config["unprivileged"] == 1
    assert pve_api.container_address(client, ref, **FAST).startswith("10.99.0.")

    again, said = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert (again.vmid, said) == (300, "CT 300 (pg-1) already running on pve1")
    assert creates(empty_pve) == 1

    pve_api.stop_container(client, ref, **FAST)
    _, said = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert said == "CT 300 (pg-1) existed stopped on pve1; started it"

    assert pve_api.destroy_container(client, ref, "pg", **FAST) == "CT 300 (pg-1) stopped and destroyed on pve1"
    assert empty_pve.container(300) is None


def test_static_address_and_vmid_from_pve(empty_pve: PveDouble, client: Client) -> None:
    plan = dataclasses.replace(PLAN, vmid=None, ipv4=StaticIPv4("192.168.5.20/24", "192.168.5.1"))
    ref, _ = pve_api.ensure_container(client, "pve2", plan, **FAST)
    assert (ref.node, ref.vmid) == ("pve2", 100)
    assert pve_api.container_address(client, ref, **FAST) == "192.168.5.20"
    ct = empty_pve.container(100)
    assert ct is not None and "ip=192.168.5.20/24,gw=192.168.5.1" in ct.config["net0"]


def test_address_waits_for_dhcp(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.state.dhcp_delay = 0.2
    ref, _ = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert pve_api.container_address(client, ref, **FAST).startswith("10.99.0.")


def test_address_timeout_says_what_to_check(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.state.dhcp_delay = 60
    ref, _ = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    with pytest.raises(ProxmoxError, match="has no IPv4 address after 0.2 s; check DHCP"):
        pve_api.container_address(client, ref, timeout=0.2, poll=0.02)


def test_wrong_token_is_one_clear_line(empty_pve: PveDouble) -> None:
    wrong = credentials(empty_pve, token_secret="00000000-0000-0000-0000-000000000000").get_client()
    with pytest.raises(ProxmoxError) as caught:
        pve_api.ensure_container(wrong, "pve1", PLAN, **FAST)
    message = str(caught.value)
    assert caught.value.status == 401
    assert message == ("listing Proxmox nodes: the Proxmox API rejected the token (401 authentication failure); "
                       "check token_id (USER@REALM!TOKENID) and token_secret in the ProxmoxCredentials block")
    assert "00000000" not in message and empty_pve.token_secret not in message


def test_missing_token_header_is_refused(empty_pve: PveDouble) -> None:
    answer = requests.get(f"{empty_pve.url}/api2/json/nodes", verify=empty_pve.ca_file, timeout=5)
    assert (answer.status_code, answer.reason) == (401, "No ticket")


def test_secret_stays_out_of_the_block_repr(empty_pve: PveDouble) -> None:
    block = credentials(empty_pve)
    assert empty_pve.token_secret not in repr(block) + str(block) + str(block.model_dump())


def test_vmid_of_a_foreign_container_is_not_taken_over(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.add_container(300, "pve2", "web")
    with pytest.raises(ProxmoxError, match=r"CT 300 \('web' on pve2\) already exists and dbtier did not create it"):
        pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert creates(empty_pve) == 0


def test_a_hostname_held_by_another_vmid_is_a_conflict(empty_pve: PveDouble, client: Client) -> None:
    pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    with pytest.raises(ProxmoxError, match="CT 300 on pve1 is named 'pg-1', but the plan wants vmid 301 named 'pg-1'"):
        pve_api.ensure_container(client, "pve1", dataclasses.replace(PLAN, vmid=301), **FAST)
    assert creates(empty_pve) == 1


def test_creating_an_existing_vmid_fails_like_pve(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.add_container(300, "pve2", "web")
    with pytest.raises(ProxmoxError) as caught:
        pve_api.create_container(client, "pve1", PLAN, 300, **FAST)
    assert caught.value.status == 500
    assert str(caught.value) == ("creating CT 300 (pg-1) on pve1: CT 300 already exists on node 'pve2'; "
                                 "choose another vmid or remove that container")


def test_a_task_ending_in_error_carries_its_exit_status(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.fail_next_task("unable to create CT 300 - lvcreate 'pve/vm-300-disk-0' error: no space left")
    with pytest.raises(ProxmoxError) as caught:
        pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    assert caught.value.exitstatus == "unable to create CT 300 - lvcreate 'pve/vm-300-disk-0' error: no space left"
    assert str(caught.value).startswith("task vzcreate for CT 300 on pve1 failed: unable to create CT 300")
    assert empty_pve.container(300) is None  # PVE removes a container whose creation failed


def test_a_missing_template_fails_the_create_task(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.state.templates = {"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}
    plan = dataclasses.replace(PLAN, ostemplate="local:vztmpl/nope.tar.zst")
    with pytest.raises(ProxmoxError, match="failed: unable to create CT 300 - volume 'local:vztmpl/nope.tar.zst'"):
        pve_api.ensure_container(client, "pve1", plan, **FAST)


def test_a_node_that_does_not_exist(empty_pve: PveDouble, client: Client) -> None:
    with pytest.raises(ProxmoxError, match=r"^node: 'pve9' is not a node of this Proxmox cluster \(it has pve1, pve2\)"):
        pve_api.ensure_container(client, "pve9", PLAN, **FAST)
    with pytest.raises(ProxmoxError, match="no such cluster node 'pve9'; fix the node name") as caught:
        pve_api.start_container(client, ContainerRef("pve9", 300, "pg-1", "stopped"), **FAST)
    assert caught.value.status == 595


def test_waiting_for_a_task_times_out(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.hang_next_task()
    with pytest.raises(ProxmoxError, match=r"task vzcreate for CT 300 on pve1 still running after 0.3 s; see its log"):
        pve_api.ensure_container(client, "pve1", PLAN, timeout=0.3, poll=0.02)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: {**p, "bogus": 1}, "(bogus: property is not defined in schema"),
        (lambda p: {k: v for k, v in p.items() if k != "ostemplate"}, "(ostemplate: property is missing"),
        (lambda p: {**p, "net0": "name=eth0,brige=vmbr0"}, "(net0: invalid format - format error: brige:"),
        (lambda p: {**p, "memory": 8}, "(memory: value must have a minimum value of 16)"),
    ],
)
def test_the_double_rejects_bad_parameters_like_pve(empty_pve: PveDouble, client: Client,
                                                    monkeypatch: pytest.MonkeyPatch, change: Any, expected: str) -> None:
    build = pve_api.create_params
    monkeypatch.setattr(pve_api, "create_params", lambda plan, vmid: change(build(plan, vmid)))
    with pytest.raises(ProxmoxError, match="Proxmox refused the parameters") as caught:
        pve_api.create_container(client, "pve1", PLAN, 300, **FAST)
    assert caught.value.status == 400 and expected in str(caught.value)


def test_destroy_leaves_foreign_containers_alone(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.add_container(120, "pve1", "web", tags="prod")
    empty_pve.add_container(121, "pve2", "pg-9", tags="dbtier;dbtier-other")
    for name, vmid in (("pg-1", 300), ("pg-2", 301)):
        pve_api.ensure_container(client, "pve1", dataclasses.replace(PLAN, hostname=name, vmid=vmid), **FAST)
    with pytest.raises(ProxmoxError, match="CT 120 on pve1 lacks the tags dbtier;dbtier-pg"):
        pve_api.destroy_container(client, ContainerRef("pve1", 120, "web", "running"), "pg", **FAST)
    said = pve_api.destroy_cluster_containers(client, "pg", **FAST)
    assert len(said) == 2
    assert sorted(ct.vmid for ct in pve_api.list_containers(client)) == [120, 121]


def test_only_schema_paths_are_served(empty_pve: PveDouble, client: Client) -> None:
    with pytest.raises(Exception, match="501 Not Implemented: Method 'GET /api2/json/nodes/pve1/nonsense' not implemented"):
        client.nodes("pve1").nonsense.get()
    with pytest.raises(Exception, match="501 .* not implemented by the PVE test double"):
        client.nodes("pve1").qemu.get()


def test_tls_is_verified_and_a_fingerprint_can_pin_it(empty_pve: PveDouble) -> None:
    system_cas = credentials(empty_pve, ca_file=None).get_client()
    with pytest.raises(ProxmoxError, match="TLS verification of the Proxmox API failed"):
        pve_api.check_node(system_cas, "pve1")
    assert empty_pve.certs is not None
    pinned = credentials(empty_pve, ca_file=None, fingerprint=empty_pve.certs.fingerprint).get_client()
    pve_api.check_node(pinned, "pve1")
    wrong_pin = credentials(empty_pve, ca_file=None, fingerprint="AB" * 32).get_client()
    with pytest.raises(ProxmoxError, match="TLS verification"):
        pve_api.check_node(wrong_pin, "pve1")


def test_stopping_the_double_leaves_no_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    with running_pve_double(nodes=("solo",)) as pve:
        assert len(pve_api.list_containers(credentials(pve).get_client())) == 0
    assert {t.ident for t in threading.enumerate()} <= before


def test_a_dhcp_reservation_is_what_the_interfaces_report_even_after_a_restart() -> None:
    with running_pve_double(nodes=("pve1",), task_seconds=0.01, leases={300: "127.0.0.12/8"}) as pve:
        client = credentials(pve, nodes=["pve1"]).get_client()
        ref, _ = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
        assert pve_api.container_address(client, ref, **FAST) == "127.0.0.12"
        pve_api.stop_container(client, ref, **FAST)
        pve_api.start_container(client, ref, **FAST)
        assert pve_api.container_address(client, ref, **FAST) == "127.0.0.12"
        other, _ = pve_api.ensure_container(client, "pve1", dataclasses.replace(PLAN, vmid=301, hostname="pg-2"), **FAST)
        assert pve_api.container_address(client, other, **FAST) == "10.99.0.100"  # no reservation: the pool


def _dhcp_spec(**proxmox: Any) -> ClusterSpec:
    settings = {"credentials_block": "unused", "ssh_credentials_block": "unused", "layout": "per-member",
                "containers": [{"vmid": 300, "node": "pve1", "address": "dhcp"},
                               {"vmid": 301, "node": "pve2", "address": "dhcp"}], **proxmox}
    return build_spec({"name": "pg", "provider": "proxmox", "members": 2, "etcd_members": 1, "proxmox": settings,
                       "backup": {"repositories": [{"type": "fs", "shared": True}]}}, environ={})


def test_learning_leases_only_reads_and_leaves_an_absent_container_pending(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.add_container(301, "pve2", "web", tags="prod")  # vmid 301 is someone else's: not ours to read
    ref, _ = pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    address = pve_api.container_address(client, ref, **FAST)
    before = len(empty_pve.state.requests)
    learned = learn_leases(_dhcp_spec(), client=client)
    assert [m.host for m in pg_members(learned)] == [address, pending_host(301)]
    assert {verb for verb, _ in empty_pve.state.requests[before:]} == {"GET"}


def test_waiting_for_a_lease_that_never_comes_names_the_container(empty_pve: PveDouble, client: Client) -> None:
    empty_pve.state.dhcp_delay = 60
    pve_api.ensure_container(client, "pve1", PLAN, **FAST)
    with pytest.raises(ProxmoxError, match=r"^CT 300 on pve1 has no IPv4 address after 0.3 s; check DHCP on its "
                                           r"bridge, or give it a static address in proxmox.containers$"):
        learn_leases(_dhcp_spec(dhcp_wait_s=0.3), wait=True, client=client)
