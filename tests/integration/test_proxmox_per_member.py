"""Three members in three containers (layout per-member) on three PVE nodes, through the proxmox provider.

Containers 0 and 2 have static addresses; container 1 takes DHCP, and the PVE double's reservation
gives it 127.0.0.12 a moment after it starts, so provision must read it from the container's
interfaces. All three addresses are loopback (127.0.0.0/8) where one real sshd listens: every
"container" is this machine, and each member binds its own container's address.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from blocks.loaders import PREFECT_LOADERS
from dbtier.providers.base import resolve_addresses
from dbtier.providers.proxmox import ssh_settings, with_leases
from dbtier.spec import ClusterSpec, load_spec, pending_host
from dbtier.engines.postgres.topology import client_dsn, etcd_members, pg_members
from tests.clusters import TEST_PORT_BASE, listening, rest_json, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec
from dbtier.lab.pve import PveDouble, running_pve_double
from tests.pve_blocks import save_blocks
from tests.sshd import SSHServer, running_sshd

pytestmark = pytest.mark.cluster
BLOCK = 11
SSHD_PORT = TEST_PORT_BASE + 100 * BLOCK + 90
ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
VMIDS = (361, 362, 363)
NODES = ("pve1", "pve2", "pve3")
DHCP_VMID = VMIDS[1]


@pytest.fixture(scope="module")
def pve() -> Iterator[PveDouble]:
    """Three nodes; DHCP hands CT 362 the address 127.0.0.12, half a second after it starts."""
    with running_pve_double(nodes=NODES, task_seconds=0.05, leases={DHCP_VMID: f"{ADDRESSES[1]}/8"}) as double:
        double.state.dhcp_delay = 0.5
        yield double


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    with running_sshd(SSHD_PORT, ADDRESSES) as server:
        yield server


@pytest.fixture(scope="module")
def spec() -> Iterator[ClusterSpec]:
    root = shared_tmpdir("dbtier-pve-spread-")
    containers = [
        {"vmid": VMIDS[0], "node": NODES[0], "address": f"{ADDRESSES[0]}/8"},
        {"vmid": VMIDS[1], "node": NODES[1], "address": "dhcp"},
        {"vmid": VMIDS[2], "node": NODES[2], "address": f"{ADDRESSES[2]}/8"},
    ]
    proxmox = {"credentials_block": "itest-pve-spread", "ssh_credentials_block": "itest-pve-spread-ssh",
               "layout": "per-member", "containers": containers, "cores": 1, "memory_mb": 1024, "rootfs_gb": 8,
               "ssh_port": SSHD_PORT, "task_timeout_s": 10, "dhcp_wait_s": 10}
    # Every "container" is this machine, so one fs repository is a mount they share.
    backup = {"repositories": [{"type": "fs", "shared": True}]}
    yield spec_for_tests("pvespread", block=BLOCK, data_root=root, provider="proxmox", proxmox=proxmox, backup=backup)
    shutil.rmtree(root, ignore_errors=True)


def by_ssh(spec: ClusterSpec) -> ClusterSpec:
    """The same three hosts as plain SSH hosts, whatever the double says: to stop everything by PID at the end."""
    proxmox = with_leases(spec, {1: ADDRESSES[1]}).proxmox
    assert proxmox is not None
    return spec.model_copy(update={"provider": "ssh", "ssh": ssh_settings(proxmox)})


@pytest.fixture(scope="module")
def three_members_in_three_containers(prefect_harness: None, pve: PveDouble, sshd: SSHServer,
                                      spec: ClusterSpec) -> Iterator[str]:
    """Provisioned as ``python -m flows.provision --spec FILE`` does; the spec file's path."""
    from flows.provision import main

    save_blocks(pve, "itest-pve-spread", sshd.private_key)
    with stopped_at_exit(by_ssh(spec)):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        assert main(["--spec", spec_file]) == 0
        yield spec_file


def test_before_its_container_runs_a_dhcp_member_has_a_placeholder_host(spec: ClusterSpec) -> None:
    assert [m.host for m in pg_members(spec)] == [ADDRESSES[0], pending_host(DHCP_VMID), ADDRESSES[2]]


def test_each_member_got_its_own_container_on_its_own_node(three_members_in_three_containers: str,
                                                           pve: PveDouble) -> None:
    assert sorted(pve.state.containers) == list(VMIDS)
    for index, (vmid, node) in enumerate(zip(VMIDS, NODES, strict=True)):
        ct = pve.container(vmid)
        assert ct is not None and (ct.node, ct.status, ct.config["hostname"]) == (node, "running", f"pvespread-{index}")
    net0 = [pve.state.containers[vmid].config["net0"] for vmid in VMIDS]
    assert net0[0].startswith(f"name=eth0,bridge=vmbr0,ip={ADDRESSES[0]}/8,")
    assert net0[1].startswith("name=eth0,bridge=vmbr0,ip=dhcp,")
    assert net0[2].startswith(f"name=eth0,bridge=vmbr0,ip={ADDRESSES[2]}/8,")


def test_the_dhcp_address_is_read_from_the_interfaces_and_used(three_members_in_three_containers: str,
                                                               pve: PveDouble) -> None:
    interfaces = ("GET", f"/nodes/{NODES[1]}/lxc/{DHCP_VMID}/interfaces")
    assert interfaces in pve.state.requests
    learned = resolve_addresses(load_spec(three_members_in_three_containers), loaders=PREFECT_LOADERS)
    assert [m.host for m in pg_members(learned)] == list(ADDRESSES)
    # Patroni's own view: every member registered at its container's address, pg1 at the DHCP lease
    cluster = rest_json(learned, pg_members(learned)[0], "/cluster")
    assert sorted((m["name"], m["host"]) for m in cluster["members"]) == [
        ("pg0", ADDRESSES[0]), ("pg1", ADDRESSES[1]), ("pg2", ADDRESSES[2])]


def test_members_and_etcd_bind_only_their_own_address(three_members_in_three_containers: str) -> None:
    learned = resolve_addresses(load_spec(three_members_in_three_containers), loaders=PREFECT_LOADERS)
    for m in pg_members(learned):
        assert listening(m.pg_port, m.host) and listening(m.rest_port, m.host), m.name
        assert not listening(m.pg_port, "127.0.0.1") and not listening(m.rest_port, "127.0.0.1"), m.name
    for e in etcd_members(learned):
        assert listening(e.client_port, e.host) and not listening(e.client_port, "127.0.0.1"), e.name


def test_status_and_dsn_from_the_command_line_find_the_lease(three_members_in_three_containers: str,
                                                             spec: ClusterSpec,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from dbtier.cli import main

    assert main(["status", "--spec", three_members_in_three_containers]) == 0
    out = capsys.readouterr().out
    assert "pvespread: " in out and "leader pg" in out, out
    assert sorted(line.split()[1] for line in out.splitlines() if line.startswith("pg")) == ["leader", "replica", "replica"]
    assert main(["dsn", "--spec", three_members_in_three_containers]) == 0
    base = spec.pg.ports.postgres
    assert f"@{ADDRESSES[0]}:{base},{ADDRESSES[1]}:{base + 1},{ADDRESSES[2]}:{base + 2}/" in capsys.readouterr().out


def test_a_backup_and_the_restore_drill_run_in_the_clusters_own_containers(three_members_in_three_containers: str,
                                                                           spec: ClusterSpec, pve: PveDouble) -> None:
    """The drill's throwaway copy borrows the first container (and its pinned host key); it creates none."""
    from blocks.hostkeys import load_pins
    from flows.backup import backup
    from flows.restore_drill import restore_drill

    assert [b["kind"] for b in backup(spec_path=three_members_in_three_containers, kind="full")["taken"]] == ["full"]
    drill = restore_drill(spec_path=three_members_in_three_containers)
    assert drill["passed"], drill["verdict"]
    assert "marker rows: 100 of 100 written before the target, 0 of 10 written after it" in drill["verdict"]
    assert sorted(pve.state.containers) == list(VMIDS)
    assert sum(1 for verb, path in pve.state.requests if verb == "POST" and path.endswith("/lxc")) == 3
    assert load_pins(f"{spec.name}-drill") == {}, "the copy trusts the keys pinned for its source's containers"
    assert len(load_pins(spec.name)) == 3
    assert not os.path.exists(os.path.join(spec.data_root, f"{spec.name}-drill")), "the throwaway copy is removed"


def test_second_provision_finds_the_cluster_at_the_lease_and_changes_nothing(
    three_members_in_three_containers: str, pve: PveDouble
) -> None:
    from flows.provision import provision

    result = provision(spec_path=three_members_in_three_containers)
    assert result["changed"] is False
    assert f"{ADDRESSES[1]}:" in result["dsn"]
    assert sum(1 for verb, path in pve.state.requests if verb == "POST" and path.endswith("/lxc")) == 3


def test_teardown_destroys_exactly_the_three_containers(three_members_in_three_containers: str, spec: ClusterSpec,
                                                       pve: PveDouble, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.teardown import main

    pve.add_container(120, "pve1", "web", tags="prod")  # someone else's
    pve.add_container(364, "pve3", "other-0", tags="dbtier;dbtier-other")  # another dbtier cluster's
    learned = resolve_addresses(load_spec(three_members_in_three_containers), loaders=PREFECT_LOADERS)
    assert main(["--spec", three_members_in_three_containers, "--wipe", "--destroy-hosts"]) == 0
    out = capsys.readouterr().out
    for index, (vmid, node) in enumerate(zip(VMIDS, NODES, strict=True)):
        assert f"CT {vmid} (pvespread-{index}) stopped and destroyed on {node}" in out, out
    assert sorted(pve.state.containers) == [120, 364]
    assert not os.path.exists(spec.cluster_dir)
    ports = [(m.host, p) for m in pg_members(learned) for p in (m.pg_port, m.rest_port)]
    ports += [(e.host, p) for e in etcd_members(learned) for p in (e.client_port, e.peer_port)]
    assert not [(host, port) for host, port in ports if listening(port, host)]
    # with its container gone, the DHCP member is back on its placeholder
    assert pending_host(DHCP_VMID) in client_dsn(resolve_addresses(load_spec(three_members_in_three_containers), loaders=PREFECT_LOADERS))
