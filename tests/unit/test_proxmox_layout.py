"""Where the proxmox provider puts members and what it asks PVE for, as tables (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from dbtier.errors import ProvisionError, SpecError
from dbtier.providers.base import resolve_addresses
from dbtier.providers.proxmox import (
    AbsentHost,
    ProxmoxProvider,
    container_hostname,
    container_of,
    container_plan,
    ssh_settings,
    with_leases,
)
from dbtier.providers.proxmox_api import StaticIPv4, create_params
from dbtier.spec import ClusterSpec, build_spec, pending_host
from dbtier.topology import member_host
from dbtier.engines.postgres.topology import client_dsn, etcd_members, pg_members

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 dbtier"
CONTAINERS = [
    {"vmid": 301, "node": "pve1", "address": "10.0.0.21/24", "gateway": "10.0.0.1"},
    {"vmid": 302, "node": "pve2", "address": "10.0.0.22/24"},
    {"vmid": 303, "node": "pve3", "address": "10.0.0.23/24"},
]
DHCP = {"vmid": 302, "node": "pve2", "address": "dhcp"}


def pve_spec(layout: str = "per-member", members: int = 3, **proxmox: Any) -> ClusterSpec:
    settings = {"credentials_block": "pve", "ssh_credentials_block": "key", "layout": layout,
                "containers": CONTAINERS[:members] if layout == "per-member" else CONTAINERS[:1], **proxmox}
    backup = {"repositories": [{"type": "s3", "block": "orders-backups"}]}
    return build_spec({"name": "orders", "provider": "proxmox", "members": members, "proxmox": settings,
                       "backup": backup}, environ={})


@pytest.mark.parametrize(
    ("layout", "members", "hosts"),
    [
        ("single", 3, ["10.0.0.21", "10.0.0.21", "10.0.0.21"]),
        ("single", 1, ["10.0.0.21"]),
        ("per-member", 3, ["10.0.0.21", "10.0.0.22", "10.0.0.23"]),
    ],
)
def test_member_host_is_the_static_address_of_its_container(layout: str, members: int, hosts: list[str]) -> None:
    spec = pve_spec(layout, members)
    assert [member_host(spec, i) for i in range(members)] == hosts
    assert [e.host for e in etcd_members(spec)] == hosts


@pytest.mark.parametrize(
    ("cluster", "layout", "index", "hostname"),
    [("orders", "single", 0, "orders"), ("orders", "per-member", 0, "orders-0"), ("pg", "per-member", 2, "pg-2")],
)
def test_container_hostnames(cluster: str, layout: str, index: int, hostname: str) -> None:
    assert container_hostname(cluster, layout, index) == hostname


def test_ssh_settings_reach_every_container_with_the_spec_key() -> None:
    proxmox = pve_spec(ssh_port=2222, ssh_user="admin").proxmox
    assert proxmox is not None
    settings = ssh_settings(proxmox)
    assert [(h.address, h.port) for h in settings.hosts] == [("10.0.0.21", 2222), ("10.0.0.22", 2222), ("10.0.0.23", 2222)]
    assert (settings.user, settings.credentials_block, settings.install_packages) == ("admin", "key", True)


@pytest.mark.parametrize(
    ("proxmox", "index", "expected"),
    [
        ({}, 0, {"hostname": "orders-0", "vmid": 301, "storage": "local-lvm", "bridge": "vmbr0", "cores": 4,
                 "memory_mb": 4096, "swap_mb": 512, "rootfs_gb": 100, "ipv4": StaticIPv4("10.0.0.21/24", "10.0.0.1")}),
        ({"storage": "ceph", "bridge": "vmbr1", "template": "nfs:vztmpl/d12.tar.zst", "cores": 8}, 1,
         {"hostname": "orders-1", "vmid": 302, "storage": "ceph", "bridge": "vmbr1", "cores": 8,
          "ostemplate": "nfs:vztmpl/d12.tar.zst", "ipv4": StaticIPv4("10.0.0.22/24", None)}),
    ],
)
def test_container_plan_takes_the_spec_over_the_block(proxmox: dict[str, Any], index: int, expected: dict[str, Any]) -> None:
    plan = container_plan(pve_spec(**proxmox), index, KEY, storage="local-lvm", bridge="vmbr0",
                          template="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")
    assert {k: getattr(plan, k) for k in expected} == expected
    assert plan.cluster == "orders" and plan.ssh_public_key == KEY


def test_the_seed_container_as_create_parameters() -> None:
    plan = container_plan(pve_spec("single"), 0, KEY, storage="local-lvm", bridge="vmbr0", template="local:vztmpl/d.tar.zst")
    params = create_params(plan, 301)
    assert (params["cores"], params["memory"], params["rootfs"]) == (4, 4096, "local-lvm:100")
    assert params["net0"] == "name=eth0,bridge=vmbr0,ip=10.0.0.21/24,gw=10.0.0.1"
    assert (params["hostname"], params["tags"]) == ("orders", "dbtier;dbtier-orders")


def test_container_of_an_address() -> None:
    spec = pve_spec()
    assert container_of(spec, "10.0.0.22")[0] == 1
    with pytest.raises(ProvisionError, match="no container has the address 10.0.0.99"):
        container_of(spec, "10.0.0.99")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"provider": "proxmox"}, "provider 'proxmox' needs a proxmox: section"),
        ({"proxmox": {"layout": "per-member", "containers": CONTAINERS[:2]}},
         "proxmox.containers: layout 'per-member' needs 3 container(s) for 3 members, got 2"),
        ({"proxmox": {"layout": "single", "containers": CONTAINERS}},
         "proxmox.containers: layout 'single' needs 1 container(s) for 3 members, got 3"),
        ({"proxmox": {"containers": [{**CONTAINERS[0], "address": "10.0.0.21"}]}}, "has no prefix length"),
        ({"proxmox": {"containers": [{**CONTAINERS[0], "address": "fe80::1/64"}]}}, "is neither IPv4 CIDR nor dhcp"),
        ({"proxmox": {"containers": [{**CONTAINERS[0], "gateway": "10.9.9.1"}]}}, "gateway: 10.9.9.1 is outside 10.0.0.0/24"),
        ({"proxmox": {"containers": [{**CONTAINERS[0], "vmid": 99}]}}, "vmid: Input should be greater than or equal to 100"),
        ({"proxmox": {"layout": "per-member", "containers": [CONTAINERS[0], CONTAINERS[0], CONTAINERS[2]]}},
         "containers: vmid 301 is given to two containers"),
        ({"proxmox": {"layout": "sideways"}}, "proxmox.layout: must be 'single' or 'per-member'"),
        ({"proxmox": {"memory_mb": 8}}, "proxmox.memory_mb: Input should be greater than or equal to 16"),
    ],
)
def test_bad_proxmox_settings_are_refused_in_one_line(data: dict[str, Any], words: str) -> None:
    base: dict[str, Any] = {"name": "orders", "provider": "proxmox",
                            "proxmox": {"credentials_block": "pve", "ssh_credentials_block": "key", "containers": CONTAINERS[:1]}}
    if "proxmox" in data:
        base["proxmox"] = {**base["proxmox"], **data["proxmox"]}
    else:
        base = {k: v for k, v in base.items() if k != "proxmox"}
    with pytest.raises(SpecError) as err:
        build_spec(base, environ={})
    assert words in err.value.one_line(), err.value.one_line()


@pytest.mark.parametrize(
    ("call", "result"),
    [
        (lambda r: r.read_file("/x/pid"), None),
        (lambda r: r.list_dir("/var/lib/dbtier"), None),
        (lambda r: r.port_in_use(5432), False),
        (lambda r: r.run(["true"], check=False).rc, 255),
    ],
)
def test_a_container_that_does_not_run_yet_holds_nothing(call: Any, result: Any) -> None:
    assert call(AbsentHost("10.0.0.21", "CT 301 on pve1 does not run yet")) == result


@pytest.mark.parametrize("call", [lambda r: r.run(["true"]), lambda r: r.write_file("/x", b""), lambda r: r.make_dirs("/x")])
def test_a_container_that_does_not_run_yet_refuses_changes(call: Any) -> None:
    with pytest.raises(ProvisionError, match="10.0.0.21: CT 301 on pve1 does not run yet; provision creates and starts it first"):
        call(AbsentHost("10.0.0.21", "CT 301 on pve1 does not run yet"))


# -- DHCP containers: a placeholder host until the address is read from the PVE API -------------------


def dhcp_spec(layout: str = "per-member") -> ClusterSpec:
    """Per member: containers 0 and 2 static, 1 on DHCP; single: the one container on DHCP."""
    containers = [CONTAINERS[0], DHCP, CONTAINERS[2]] if layout == "per-member" else [{**DHCP, "vmid": 301}]
    return pve_spec(layout, containers=containers)


@pytest.mark.parametrize(
    ("layout", "leases", "hosts"),
    [
        ("per-member", {}, ["10.0.0.21", pending_host(302), "10.0.0.23"]),
        ("per-member", {1: "10.0.0.57"}, ["10.0.0.21", "10.0.0.57", "10.0.0.23"]),
        ("per-member", {0: "10.0.0.99", 1: "10.0.0.57"}, ["10.0.0.21", "10.0.0.57", "10.0.0.23"]),  # static stays
        ("per-member", {1: None}, ["10.0.0.21", pending_host(302), "10.0.0.23"]),
        ("single", {}, [pending_host(301)] * 3),
        ("single", {0: "192.168.7.40"}, ["192.168.7.40"] * 3),
    ],
)
def test_members_of_a_dhcp_container_move_to_its_lease(layout: str, leases: dict[int, str | None],
                                                       hosts: list[str]) -> None:
    spec = with_leases(dhcp_spec(layout), leases)
    assert [m.host for m in pg_members(spec)] == hosts
    assert [e.host for e in etcd_members(spec)] == hosts
    assert client_dsn(spec).split("@")[1].split("/")[0] == ",".join(f"{h}:{5432 + i}" for i, h in enumerate(hosts))


def test_a_learned_lease_can_be_forgotten_and_is_never_written_out() -> None:
    learned = with_leases(dhcp_spec(), {1: "10.0.0.57"})
    assert member_host(with_leases(learned, {}), 1) == "10.0.0.57"  # kept unless named
    assert member_host(with_leases(learned, {1: None}), 1) == pending_host(302)
    dumped = learned.model_dump(mode="json")
    assert dumped["proxmox"]["containers"][1] == {"vmid": 302, "node": "pve2", "address": "dhcp", "gateway": None}
    assert build_spec(dumped, environ={}) == dhcp_spec()


def test_a_dhcp_container_is_created_with_ip_dhcp() -> None:
    plan = container_plan(dhcp_spec(), 1, KEY, storage="local-lvm", bridge="vmbr0", template="local:vztmpl/d.tar.zst")
    assert plan.ipv4 is None
    assert create_params(plan, 302)["net0"] == "name=eth0,bridge=vmbr0,ip=dhcp"
    static = container_plan(dhcp_spec(), 2, KEY, storage="local-lvm", bridge="vmbr0", template="local:vztmpl/d.tar.zst")
    assert create_params(static, 303)["net0"] == "name=eth0,bridge=vmbr0,ip=10.0.0.23/24"


def test_the_ssh_provider_reaches_a_dhcp_container_at_its_lease() -> None:
    proxmox = with_leases(dhcp_spec(), {1: "10.0.0.57"}).proxmox
    assert proxmox is not None
    assert [h.address for h in ssh_settings(proxmox).hosts] == ["10.0.0.21", "10.0.0.57", "10.0.0.23"]


def test_a_pending_dhcp_container_is_absent_without_asking_the_api() -> None:
    spec = dhcp_spec()
    assert spec.proxmox is not None
    runner = ProxmoxProvider(spec.proxmox).runner(spec, pending_host(302))  # no block, no client: no I/O
    assert isinstance(runner, AbsentHost)
    assert (runner.read_file("/x/pid"), runner.list_dir("/var/lib/dbtier")) == (None, None)
    with pytest.raises(ProvisionError, match=f"^{pending_host(302)}: CT 302 on pve2 does not run yet or has no "
                                             "DHCP address yet; provision creates and starts it first$"):
        runner.run(["true"])
    assert container_of(spec, pending_host(302))[0] == 1


@pytest.mark.parametrize("spec", [ClusterSpec(), pve_spec()], ids=["local", "proxmox-static"])
def test_resolving_a_spec_without_dhcp_changes_nothing_and_asks_nobody(spec: ClusterSpec) -> None:
    assert resolve_addresses(spec) is spec


@pytest.mark.parametrize(
    ("container", "words"),
    [
        ({**DHCP, "gateway": "10.0.0.1"},
         "proxmox.containers.0: gateway: 10.0.0.1 is not used with address: dhcp (DHCP hands out the gateway)"),
        ({**DHCP, "lease": "10.0.0.57"},
         "proxmox.containers.0.lease: dbtier reads a DHCP container's address from the Proxmox API; remove lease"),
        ({**DHCP, "address": "dhcp4"}, "proxmox.containers.0.address: 'dhcp4' is neither IPv4 CIDR nor dhcp"),
    ],
)
def test_bad_dhcp_settings_are_refused_in_one_line(container: dict[str, Any], words: str) -> None:
    data = {"name": "orders", "provider": "proxmox",
            "proxmox": {"credentials_block": "pve", "ssh_credentials_block": "key", "containers": [container]}}
    with pytest.raises(SpecError) as err:
        build_spec(data, environ={})
    assert words in err.value.one_line(), err.value.one_line()


@pytest.mark.parametrize("written", ["dhcp", "DHCP", " dhcp "])
def test_dhcp_is_written_in_any_case(written: str) -> None:
    spec = build_spec({"provider": "proxmox", "members": 1, "proxmox": {
        "credentials_block": "pve", "ssh_credentials_block": "key", "containers": [{**DHCP, "address": written}]}},
        environ={})
    assert spec.proxmox is not None and spec.proxmox.containers[0].address == "dhcp" and spec.proxmox.uses_dhcp


# -- restored copies run in the source's containers, which stay the source's ------------------------


@pytest.mark.parametrize(
    ("layout", "members", "copy_hosts"),
    [
        pytest.param("single", 3, ["10.0.0.21"], id="single"),
        pytest.param("per-member", 3, ["10.0.0.21"], id="per-member-first-container"),
        pytest.param("per-member", 1, ["10.0.0.21"], id="per-member-one"),
    ],
)
def test_the_drill_copy_runs_in_the_first_container_of_its_source(layout: str, members: int,
                                                                  copy_hosts: list[str]) -> None:
    from dbtier.backup.restore import throwaway_spec

    source = pve_spec(layout, members)
    copy = throwaway_spec(source)
    assert copy.proxmox is not None
    assert [ct.vmid for ct in copy.proxmox.containers] == [301]
    assert [member_host(copy, i) for i in range(copy.members)] == copy_hosts
    assert (copy.name, copy.host_owner) == ("orders-drill", "orders")
    plan = container_plan(copy, 0, KEY, storage="local-lvm", bridge="vmbr0", template="local:vztmpl/d.tar.zst")
    assert plan == container_plan(source, 0, KEY, storage="local-lvm", bridge="vmbr0",
                                  template="local:vztmpl/d.tar.zst")  # found as the source's, never created anew


def test_a_restored_copy_keeps_every_container_of_its_source_and_never_destroys_them() -> None:
    from dbtier.backup.restore import derive_target

    source = pve_spec("per-member", 3)
    copy = derive_target(source, "orders-restored", 100)
    assert copy.proxmox is not None and source.proxmox is not None
    assert copy.proxmox.containers == source.proxmox.containers
    assert copy.host_owner == "orders"
    said = ProxmoxProvider(copy.proxmox).destroy_hosts(copy)  # no client: it must not reach the API at all
    assert said == ["orders-restored runs in the containers of cluster orders: none destroyed "
                    "(teardown of orders with --destroy-hosts destroys them)"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        pytest.param({"hosts_of": "Orders_1"}, "hosts_of: must be 2-32 characters", id="bad-name"),
        pytest.param({"hosts_of": ""}, "hosts_of: must be 2-32 characters", id="empty"),
    ],
)
def test_hosts_of_is_a_cluster_name(data: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        build_spec({"name": "orders-drill", **data}, environ={})
