"""A 3-member cluster through the proxmox provider: the PVE API double holds the container,
and its static address 127.0.0.1 leads SSH to a real sshd on loopback. The "container" is this
machine booted as a systemd host (:mod:`tests.systemd_sandbox`), as an LXC container of a Debian
template is: so its members run as systemd units. (Where the sandbox cannot run, a plain sshd
stands in and the systemd test is skipped.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbtier.bootstrap import all_services
from dbtier.engines.base import get_engine
from dbtier.providers import proxmox_api as pve_api
from dbtier.spec import ClusterSpec, build_spec
from dbtier.supervisors import unit_name
from dbtier.engines.postgres.topology import etcd_members, pg_members
from tests.clusters import TEST_PORT_BASE, listening, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec
from dbtier.lab.pve import PveDouble, running_pve_double
from tests.pve_blocks import save_blocks
from tests.sshd import SSHServer, running_sshd
from tests.systemd_sandbox import available, booted_systemd

pytestmark = pytest.mark.cluster
SANDBOX_MISSING = available()
BLOCK = 5
SSHD_PORT = TEST_PORT_BASE + 100 * BLOCK + 90
VMID = 350
BAD_PORTS = {"postgres": 20550, "patroni": 20556, "etcd": 20570}


@pytest.fixture(scope="module")
def pve() -> Iterator[PveDouble]:
    with running_pve_double(nodes=("pve1", "pve2"), task_seconds=0.05) as double:
        yield double


@pytest.fixture(scope="module")
def pve_root() -> str:
    """The data root of the container's cluster, bound into the systemd host at the same path."""
    return shared_tmpdir("dbtier-pve-")


@pytest.fixture(scope="module")
def sshd(pve_root: str) -> Iterator[SSHServer]:
    with (running_sshd(SSHD_PORT) if SANDBOX_MISSING else booted_systemd(SSHD_PORT, share=pve_root)) as server:
        yield server


@pytest.fixture(scope="module")
def blocks_saved(prefect_harness: None, pve: PveDouble, sshd: SSHServer) -> None:
    """ProxmoxCredentials pointing at the double (trusting its CA), a wrong-token twin, and the SSH key."""
    save_blocks(pve, "itest-pve", sshd.private_key)
    save_blocks(pve, "itest-pve-wrong-token", sshd.private_key, token_secret="00000000-0000-0000-0000-000000000000")


def _pve_spec(data_root: str, name: str = "pvetest", **proxmox: Any) -> ClusterSpec:
    settings = {
        "credentials_block": "itest-pve",
        "ssh_credentials_block": "itest-pve-ssh",
        "layout": "single",
        "containers": [{"vmid": VMID, "node": "pve1", "address": "127.0.0.1/8"}],
        "cores": 2,
        "memory_mb": 2048,
        "rootfs_gb": 8,
        "ssh_port": SSHD_PORT,
        "task_timeout_s": 10,
        **proxmox,
    }
    return spec_for_tests(name, block=BLOCK, data_root=data_root, provider="proxmox", proxmox=settings)


@pytest.fixture(scope="module")
def spec(pve_root: str) -> ClusterSpec:
    return _pve_spec(pve_root)


@pytest.fixture(scope="module")
def create_requests() -> Iterator[list[dict[str, Any]]]:
    """The parameters of every container creation (the double, like PVE, does not keep ssh-public-keys)."""
    sent: list[dict[str, Any]] = []
    build: Callable[..., dict[str, Any]] = pve_api.create_params

    def recording(plan: pve_api.ContainerPlan, vmid: int) -> dict[str, Any]:
        params = build(plan, vmid)
        sent.append(params)
        return params

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pve_api, "create_params", recording)
        yield sent


@pytest.fixture(scope="module")
def three_members_in_one_container(blocks_saved: None, create_requests: list[dict[str, Any]],
                                   spec: ClusterSpec) -> Iterator[str]:
    """Provisioned as ``python -m flows.provision --spec FILE`` does (preflight, then the flow),
    with layout single; the spec file's path."""
    from flows.provision import main

    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        assert main(["--spec", spec_file]) == 0
        yield spec_file


def _creates(pve: PveDouble) -> int:
    return sum(1 for verb, path in pve.state.requests if verb == "POST" and path.endswith("/lxc"))


def test_the_double_holds_one_running_container_as_requested(
    three_members_in_one_container: str, pve: PveDouble, sshd: SSHServer, create_requests: list[dict[str, Any]]
) -> None:
    ct = pve.container(VMID)
    assert ct is not None and ct.status == "running" and ct.node == "pve1"
    assert list(pve.state.containers) == [VMID]
    assert pve_api.parse_tags(ct.config["tags"]) == ("dbtier", "dbtier-pvetest")
    assert (ct.config["hostname"], ct.config["cores"], ct.config["memory"], ct.config["swap"]) == ("pvetest", 2, 2048, 512)
    assert ct.config["net0"].startswith("name=eth0,bridge=vmbr0,ip=127.0.0.1/8,")
    assert ct.config["rootfs"] == f"local-lvm:vm-{VMID}-disk-0,size=8G"
    assert (ct.config["unprivileged"], ct.config["features"]) == (1, "nesting=1")
    [sent] = create_requests
    assert sent["ssh-public-keys"].split()[:2] == sshd.public_key.split()[:2]


def test_the_cluster_has_one_leader_and_two_streaming_replicas(three_members_in_one_container: str,
                                                              spec: ClusterSpec) -> None:
    status = get_engine(spec).status(spec)
    assert status.health.healthy, status.health.sentence
    members = [row for row in status.rows if row["role"] != "etcd"]
    assert sorted(row["role"] for row in members) == ["leader", "replica", "replica"]
    assert all(row["state"] == "streaming" for row in members if row["role"] == "replica")
    assert {m.host for m in pg_members(spec)} == {"127.0.0.1"}


@pytest.mark.skipif(SANDBOX_MISSING is not None, reason=f"systemd sandbox: {SANDBOX_MISSING}")
def test_inside_the_container_members_are_systemd_units_and_debians_etcd_is_disabled(
    three_members_in_one_container: str, spec: ClusterSpec
) -> None:
    from blocks.loaders import PREFECT_LOADERS
    from dbtier.providers.base import get_provider

    root = get_provider(spec, PREFECT_LOADERS).runner(spec, "127.0.0.1")
    units = [unit_name(spec.name, s.name) for s in all_services(get_engine(spec), spec)]
    said = root.run_as_root(["systemctl", "is-active", *units]).out.split()  # type: ignore[attr-defined]
    assert said == ["active"] * 6
    enabled = root.run_as_root(["sh", "-c", "systemctl is-enabled etcd.service || true"]).out.strip()  # type: ignore[attr-defined]
    assert enabled == "disabled"


def test_second_provision_changes_nothing_and_creates_no_container(three_members_in_one_container: str,
                                                                    pve: PveDouble) -> None:
    from flows.provision import provision

    before = _creates(pve)
    assert provision(spec_path=three_members_in_one_container)["changed"] is False
    assert _creates(pve) == before == 1
    assert list(pve.state.containers) == [VMID]


@pytest.mark.parametrize(
    ("proxmox", "words"),
    [
        ({"credentials_block": "itest-pve-wrong-token"},
         "listing Proxmox nodes: the Proxmox API rejected the token (401 authentication failure); check token_id"),
        ({"containers": [{"vmid": VMID + 1, "node": "pve9", "address": "127.0.0.1/8"}]},
         "proxmox.containers[0].node: 'pve9' is not a node of this Proxmox cluster (it has pve1, pve2)"),
    ],
    ids=["wrong-token", "unknown-node"],
)
def test_bad_proxmox_settings_give_one_line_and_start_nothing(
    three_members_in_one_container: str, pve: PveDouble, pve_root: str, capsys: pytest.CaptureFixture[str],
    proxmox: dict[str, Any], words: str
) -> None:
    """Refused by the command line's preflight, before Prefect, any container or any process starts."""
    from flows.provision import main

    root = os.path.join(pve_root, f"bad-{proxmox['containers'][0]['vmid'] if 'containers' in proxmox else 'token'}")
    os.makedirs(root, mode=0o755, exist_ok=True)  # inside the bound data root: what the host writes shows here
    data = _pve_spec(root, name="pvebad", **proxmox).model_dump(mode="json")
    data["postgres"]["ports"] = BAD_PORTS
    bad = build_spec(data, environ={})
    before = _creates(pve)
    assert main(["--spec", write_spec(bad, os.path.join(root, "spec.yaml"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dbtier: error: ") and err.count("\n") == 1 and words in err, err
    assert "00000000" not in err and pve.token_secret not in err
    assert _creates(pve) == before and list(pve.state.containers) == [VMID]
    assert not os.path.exists(bad.cluster_dir)
    ports = [m.pg_port for m in pg_members(bad)] + [m.rest_port for m in pg_members(bad)]
    assert not [p for p in ports + [e.client_port for e in etcd_members(bad)] if listening(p)]


def test_teardown_with_destroy_hosts_stops_everything_and_destroys_the_container(
    three_members_in_one_container: str, spec: ClusterSpec, pve: PveDouble
) -> None:
    from flows.teardown import teardown

    pve.add_container(120, "pve2", "web", tags="prod")  # someone else's: never touched
    from blocks.hostkeys import load_pins

    assert load_pins(spec.name), "provision pinned the container's host key"
    said = teardown(spec_path=three_members_in_one_container, wipe=True, destroy_hosts=True)
    assert f"CT {VMID} (pvetest) stopped and destroyed on pve1" in said
    assert f"forgot the SSH host keys pinned for {spec.name}'s containers" in said and load_pins(spec.name) == {}
    assert not os.path.exists(spec.cluster_dir)
    assert pve.container(VMID) is None and pve.container(120) is not None
    ports = [p for m in pg_members(spec) for p in (m.pg_port, m.rest_port)]
    ports += [p for e in etcd_members(spec) for p in (e.client_port, e.peer_port)]
    assert not [p for p in ports if listening(p)]


def test_destroy_hosts_on_another_provider_has_nothing_to_destroy(prefect_harness: None) -> None:
    from flows.teardown import teardown

    local = spec_for_tests("pvelocal", block=BLOCK, data_root=shared_tmpdir("dbtier-pve-local-"))
    said = teardown(spec_path=write_spec(local, os.path.join(local.data_root, "spec.yaml")), destroy_hosts=True)
    assert said[-1] == "provider local: dbtier did not create these hosts; nothing to destroy"
