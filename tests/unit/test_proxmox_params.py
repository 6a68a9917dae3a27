"""The pure Proxmox builders and parsers, as tables of cases (no network, no server)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dbtier.errors import ProvisionError
from dbtier.providers.proxmox_api import (
    ContainerPlan,
    ProxmoxError,
    StaticIPv4,
    api_host,
    check_plan,
    create_params,
    describe_api_error,
    ipv4_of,
    net0_value,
    node_of_upid,
    normalize_fingerprint,
    owned_by,
    parse_tags,
    rootfs_value,
    split_token_id,
    task_failure,
    tls_verify,
)
from dbtier.lab.pve.schema import load_schema, validate

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 dbtier@ci"
PLAN = ContainerPlan(hostname="pg-1", cluster="pg", ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                     ssh_public_key=KEY, vmid=300, cores=4, memory_mb=4096, swap_mb=0, rootfs_gb=100)


def test_create_params_for_the_seed_container() -> None:
    assert create_params(PLAN, 300) == {
        "vmid": 300,
        "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "hostname": "pg-1",
        "cores": 4,
        "memory": 4096,
        "swap": 0,
        "rootfs": "local-lvm:100",
        "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
        "unprivileged": 1,
        "features": "nesting=1",
        "ssh-public-keys": KEY,
        "tags": "dbtier;dbtier-pg",
        "description": "Created by dbtier for cluster pg. dbtier teardown destroys it (tag dbtier-pg); do not reuse.",
        "onboot": 1,
        "start": 1,
    }


@pytest.mark.parametrize("plan", [PLAN, dataclasses.replace(PLAN, ipv4=StaticIPv4("10.1.2.3/24", "10.1.2.1"))])
def test_create_params_pass_the_published_schema(plan: ContainerPlan) -> None:
    method = load_schema().match("/nodes/pve1/lxc")[0].method("POST")  # type: ignore[index]
    wire = {k: str(v) for k, v in create_params(plan, 300).items()}
    assert validate(method, {**wire, "node": "pve1"}) == {}


@pytest.mark.parametrize(
    ("bridge", "ipv4", "expected"),
    [
        ("vmbr0", None, "name=eth0,bridge=vmbr0,ip=dhcp"),
        ("vmbr1", StaticIPv4("192.168.5.20/24"), "name=eth0,bridge=vmbr1,ip=192.168.5.20/24"),
        ("vmbr0", StaticIPv4("10.0.0.21/16", "10.0.0.1"), "name=eth0,bridge=vmbr0,ip=10.0.0.21/16,gw=10.0.0.1"),
    ],
)
def test_net0(bridge: str, ipv4: StaticIPv4 | None, expected: str) -> None:
    assert net0_value(bridge, ipv4) == expected


@pytest.mark.parametrize(
    ("bridge", "ipv4", "field"),
    [
        ("vmbr0,tag=5", None, "bridge:"),
        ("vmbr0", StaticIPv4("10.0.0.300/24"), "ipv4.address:"),
        ("vmbr0", StaticIPv4("10.0.0.21"), "ipv4.address:"),
        ("vmbr0", StaticIPv4("10.0.0.21/24", "gateway"), "ipv4.gateway:"),
        ("vmbr0", StaticIPv4("10.0.0.21/24", "10.0.1.1"), "ipv4.gateway:"),
    ],
)
def test_net0_refusals_name_the_field(bridge: str, ipv4: StaticIPv4 | None, field: str) -> None:
    with pytest.raises(ProxmoxError, match=f"^{field}"):
        net0_value(bridge, ipv4)


@pytest.mark.parametrize(("storage", "size", "expected"), [("local-lvm", 100, "local-lvm:100"), ("ceph.pool", 8, "ceph.pool:8")])
def test_rootfs(storage: str, size: int, expected: str) -> None:
    assert rootfs_value(storage, size) == expected


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cores": 0}, "cores:"),
        ({"cores": 9000}, "cores:"),
        ({"memory_mb": 8}, "memory_mb:"),
        ({"swap_mb": -1}, "swap_mb:"),
        ({"rootfs_gb": 0}, "rootfs_gb:"),
        ({"vmid": 99}, "vmid:"),
        ({"hostname": "PG_1"}, "hostname:"),
        ({"hostname": "a" * 64}, "hostname:"),
        ({"ostemplate": "debian.tar.zst"}, "template:"),
        ({"ssh_public_key": "AAAA..."}, "ssh_public_key:"),
        ({"storage": "local lvm"}, "storage:"),
    ],
)
def test_plan_refusals_name_the_field(change: dict[str, Any], field: str) -> None:
    plan = dataclasses.replace(PLAN, **change)
    with pytest.raises(ProxmoxError, match=f"^{field}") as caught:
        create_params(plan, 300)
    assert isinstance(caught.value, ProvisionError)
    assert "\n" not in str(caught.value)


def test_a_plan_without_vmid_is_valid() -> None:
    check_plan(dataclasses.replace(PLAN, vmid=None))


@pytest.mark.parametrize(
    ("tags", "cluster", "owned"),
    [
        ("dbtier;dbtier-pg", "pg", True),
        ("dbtier-pg,dbtier,prod", "pg", True),
        ("dbtier dbtier-pg", "pg", True),
        ("dbtier;dbtier-pg", "other", False),
        ("dbtier-pg", "pg", False),
        (None, "pg", False),
        ("", "pg", False),
    ],
)
def test_ownership_by_tags(tags: str | None, cluster: str, owned: bool) -> None:
    assert owned_by(parse_tags(tags), cluster) is owned


@pytest.mark.parametrize(
    ("upid", "node"),
    [
        ("UPID:pve1:00001234:0000ABCD:65F0A1B2:vzcreate:300:root@pam!dbtier:", "pve1"),
        ("UPID:node-b:000FFFFF:00000001:65F0A1B2:vzstart:301:dbtier@pve!provision:", "node-b"),
    ],
)
def test_node_of_upid(upid: str, node: str) -> None:
    assert node_of_upid(upid) == node


@pytest.mark.parametrize("upid", ["", "OK", "UPID:pve1:1:2:3", "TASK:pve1:1:2:3:vzcreate:300:root@pam:"])
def test_node_of_upid_refuses_non_upids(upid: str) -> None:
    with pytest.raises(ProxmoxError, match="not a PVE UPID"):
        node_of_upid(upid)


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        ({"status": "stopped", "exitstatus": "OK"}, None),
        ({"status": "stopped", "exitstatus": "WARNINGS: 2"}, None),
        ({"status": "stopped", "exitstatus": "unable to create CT 300 - no space"}, "unable to create CT 300 - no space"),
        ({"status": "stopped"}, "no exit status"),
    ],
)
def test_task_failure(status: dict[str, str], failure: str | None) -> None:
    assert task_failure(status) == failure


@pytest.mark.parametrize(
    ("interfaces", "address"),
    [
        ([{"name": "lo", "inet": "127.0.0.1/8"}, {"name": "eth0", "inet": "10.0.0.5/24"}], "10.0.0.5"),
        ([{"name": "lo", "inet": "127.0.0.1/8"}, {"name": "eth0", "inet6": "fe80::1/64"}], None),
        ([{"name": "eth0", "inet": "192.168.1.9"}], "192.168.1.9"),
        ([{"name": "eth0", "hwaddr": "bc:24:11:00:01:5f", "ip-addresses": [
            {"ip-address": "fe80::1", "ip-address-type": "inet6", "prefix": 64},
            {"ip-address": "10.0.0.7", "ip-address-type": "inet", "prefix": 24}]}], "10.0.0.7"),
        ([{"name": "eth0", "hwaddr": "bc:24:11:00:01:5f", "ip-addresses": []}], None),
        ([], None),
    ],
)
def test_ipv4_of(interfaces: list[dict[str, str]], address: str | None) -> None:
    assert ipv4_of(interfaces) == address


@pytest.mark.parametrize(
    ("status", "reason", "errors", "expected"),
    [
        (401, "authentication failure", None, "rejected the token (401 authentication failure); check token_id"),
        (403, "Permission check failed", None, "lacks a permission"),
        (400, "Parameter verification failed.", {"bogus": "property is not defined"}, "(bogus: property is not defined)"),
        (595, "no such cluster node 'pve9'", None, "no such cluster node 'pve9'; fix the node name"),
        (500, "CT 300 already exists on node 'pve1'", None, "already exists on node 'pve1'; choose another vmid"),
        (500, "CT 300 not running", None, "Proxmox answered 500 CT 300 not running"),
    ],
)
def test_api_errors_are_one_line_with_a_fix(status: int, reason: str, errors: dict[str, str] | None,
                                             expected: str) -> None:
    message = describe_api_error("doing it", status, reason, errors)
    assert message.startswith("doing it: ")
    assert expected in message


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://pve1.example.com:8006", "pve1.example.com:8006"),
        ("https://pve1.example.com", "pve1.example.com:8006"),
        ("pve1:443", "pve1:443"),
        ("https://10.0.0.2:8006/api2/json", "10.0.0.2:8006"),
        ("https://[fd00::2]:8006", "[fd00::2]:8006"),
    ],
)
def test_api_host(url: str, host: str) -> None:
    assert api_host(url) == host


@pytest.mark.parametrize("url", ["http://pve1:8006", "https://pve1:8006/ui", "https://"])
def test_api_host_refusals(url: str) -> None:
    with pytest.raises(ProxmoxError, match="^api_url:"):
        api_host(url)


@pytest.mark.parametrize(
    ("token_id", "parts"),
    [("root@pam!dbtier", ("root@pam", "dbtier")), ("ops@pve!ci-01", ("ops@pve", "ci-01"))],
)
def test_split_token_id(token_id: str, parts: tuple[str, str]) -> None:
    assert split_token_id(token_id) == parts


@pytest.mark.parametrize("token_id", ["root@pam", "dbtier", "root!dbtier", "root@pam!", "root@pam!db tier"])
def test_split_token_id_refusals(token_id: str) -> None:
    with pytest.raises(ProxmoxError, match="^token_id:"):
        split_token_id(token_id)


def test_fingerprint_is_normalized_and_checked() -> None:
    digits = "ab" * 32
    assert normalize_fingerprint(digits) == ":".join(["AB"] * 32)
    assert normalize_fingerprint(":".join(["ab"] * 32)) == ":".join(["AB"] * 32)
    with pytest.raises(ProxmoxError, match="^fingerprint:"):
        normalize_fingerprint("AB:CD")


@pytest.mark.parametrize(
    ("verify_ssl", "ca_file", "verify"),
    [(True, None, True), (True, "/etc/pve/ca.pem", "/etc/pve/ca.pem"), (False, "/etc/pve/ca.pem", False), (False, None, False)],
)
def test_tls_verify(verify_ssl: bool, ca_file: str | None, verify: bool | str) -> None:
    assert tls_verify(verify_ssl, ca_file) == verify
