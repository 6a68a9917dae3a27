"""The proxmox provider end to end on a lab: the lab's hosts are the containers of its PVE API double.

Runbook: ``dbtier lab up`` (lab ``tpve``, 198.18.12.0/24), provision the lab's own proxmox spec (containers
901-903, one member each, found or created through the PVE API), a second provision changes nothing, ``dbtier
status`` is healthy; host keys are pinned on first use and a pin that does not match is refused; a power loss on
the primary's container (PVE ``status/stop``, then ``status/start``: the lab host killed and booted from its disk)
loses no acknowledged write; a full backup lands in the lab's S3, archiving is healthy, the restore drill passes;
``teardown --wipe --destroy-hosts`` leaves no container of the cluster and no cluster data on the hosts.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbtier.lab import lab
from dbtier.lab.lab import LabState
from dbtier.lab.plan import HOST_DATA_ROOT
from dbtier.spec import ClusterSpec, DrillSettings
from tests.lab import bucket_keys, lab_spec_file, running_lab, unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(unavailable() is not None, reason=f"lab: {unavailable()}")]
NAME, SUBNET = "tpve", "198.18.12.0/24"
CLUSTER = f"{NAME}pve"  # the name the lab's proxmox spec gives its cluster
ADDRESSES = ("198.18.12.11", "198.18.12.12", "198.18.12.13")
VMIDS = (901, 902, 903)
FAST = DrillSettings(rto_budget_s=40, rejoin_budget_s=90, settle_s=1.0, tail_s=0.5, healthy_timeout_s=120)


@pytest.fixture(scope="module")
def the_lab() -> Iterator[LabState]:
    with running_lab(NAME, SUBNET) as state:
        first = dict(state.launchers)
        yield state
    for pid in first.values():  # launchers this process started and another (the PVE double) killed: reap them
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@pytest.fixture(scope="module")
def spec_file(the_lab: LabState, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The lab's own proxmox spec, with Patroni's fast test timing; the lab's blocks saved."""
    return lab_spec_file(the_lab, "proxmox", tmp_path_factory.mktemp(NAME))


@pytest.fixture(scope="module")
def provisioned(spec_file: str) -> str:
    from flows.provision import provision

    provision(spec_path=spec_file)
    return spec_file


def dbtier(*argv: str) -> subprocess.CompletedProcess[str]:
    """``dbtier ARGV`` as a user types it, against this session's Prefect API."""
    import prefect.settings

    env = {**os.environ, "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value())}
    return subprocess.run([".venv/bin/dbtier", *argv], capture_output=True, text=True, env=env, timeout=600)


def on_host(state: LabState, address: str, command: str) -> str:
    done = subprocess.run(lab.ssh_argv(state, state.plan.host(address), command), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def containers(spec: ClusterSpec) -> dict[int, Any]:
    """The PVE API's containers, by vmid, as the provider's token sees them."""
    from blocks.loaders import PREFECT_LOADERS
    from dbtier.providers import proxmox_api as pve
    from dbtier.providers.proxmox import ProxmoxProvider

    assert spec.proxmox is not None
    return {ct.vmid: ct for ct in pve.list_containers(ProxmoxProvider(spec.proxmox, PREFECT_LOADERS).client())}


def cluster_on_disk(state: LabState, address: str) -> Path:
    """``/srv/dbtier/<cluster>`` as the host's own disk holds it (readable whether the host runs or not)."""
    return state.host_dir(state.plan.host(address)) / "upper" / HOST_DATA_ROOT.lstrip("/") / CLUSTER


def running_units(address: str) -> list[str]:
    found = lab.status(NAME)
    assert found is not None
    return next(h["services"] for h in found["hosts"] if h["address"] == address)


def test_provision_puts_one_member_in_each_container_and_a_second_changes_nothing(the_lab: LabState,
                                                                                    provisioned: str) -> None:
    from dbtier.engines.base import get_engine
    from dbtier.providers import proxmox_api as pve
    from dbtier.spec import load_spec
    from dbtier.engines.postgres.topology import etcd_members, pg_members
    from flows.provision import provision

    spec = load_spec(provisioned)
    assert [m.host for m in pg_members(spec)] == list(ADDRESSES)
    assert [m.host for m in etcd_members(spec)] == list(ADDRESSES)
    assert get_engine(spec).status(spec).health.healthy
    found = containers(spec)
    for index, vmid in enumerate(VMIDS):
        ct = found[vmid]
        assert (ct.node, ct.hostname, ct.status) == (f"pve{index + 1}", f"{CLUSTER}-{index}", "running")
        assert pve.owned_by(ct.tags, CLUSTER) and set(pve.owner_tags(CLUSTER)) <= set(ct.tags)
    for index, address in enumerate(ADDRESSES):  # each container runs its own members, as enabled systemd units
        units = running_units(address)
        assert {f"dbtier-{CLUSTER}-pg{index}.service", f"dbtier-{CLUSTER}-etcd{index}.service"} <= set(units), units
        assert on_host(the_lab, address, f"systemctl is-enabled dbtier-{CLUSTER}-pg{index}") == "enabled"
        listed = sorted(on_host(the_lab, address, f"ls -A {HOST_DATA_ROOT}/{CLUSTER}").split())
        on_disk = sorted(p.name for p in cluster_on_disk(the_lab, address).iterdir())
        assert listed and listed == on_disk, f"the cluster lives on the host's own disk: {listed} {on_disk}"
    assert provision(spec_path=provisioned)["changed"] is False
    assert sorted(containers(spec)) == sorted(found), "the second provision created no container"
    done = dbtier("status", "--spec", provisioned)
    assert done.returncode == 0 and "healthy" in done.stdout, done.stdout + done.stderr


def test_host_keys_are_pinned_on_first_use_and_a_wrong_pin_is_refused_in_one_line(the_lab: LabState,
                                                                                   provisioned: str) -> None:
    from blocks.hostkeys import load_pins, save_pins
    from dbtier.providers.hostkeys import fingerprint

    keys = {h.address: lab.host_key_line(the_lab, h) for h in the_lab.plan.hosts}
    pins = load_pins(CLUSTER)
    assert pins == keys, "each container's key was pinned on the first connection"
    listed = dbtier("host-keys", "--spec", provisioned).stdout.splitlines()
    assert listed == [f"{a}  ssh-ed25519  {fingerprint(keys[a])}  (pinned on first use)" for a in ADDRESSES]

    one, two = ADDRESSES[0], ADDRESSES[1]
    save_pins(CLUSTER, {**pins, two: pins[one]})  # as if the host at .12 had been replaced by another
    try:
        refused = dbtier("provision", "--spec", provisioned)
        assert refused.returncode == 2 and refused.stdout == "", refused.stdout + refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert refused.stderr.startswith(f"dbtier: error: ssh.hosts: {two}:22 presented host key "
                                         f"{fingerprint(keys[two])}, not {fingerprint(keys[one])} pinned on first use")
        assert f"dbtier host-keys --spec FILE --forget {two}:22" in refused.stderr
        # the fix the line gives, for a host rebuilt on purpose: forget the pin; the next connection pins again
        forgot = dbtier("host-keys", "--spec", provisioned, "--forget", f"{two}:22")
        assert forgot.returncode == 0 and "pin forgotten" in forgot.stdout, forgot.stdout + forgot.stderr
        assert two not in load_pins(CLUSTER)
        assert dbtier("status", "--spec", provisioned).returncode == 0
        assert load_pins(CLUSTER) == keys
    finally:
        save_pins(CLUSTER, pins)


def pid1_started(state: LabState, address: str) -> str:
    """When the host's init started (clock ticks since this machine booted: the host's PID 1 is its own)."""
    return on_host(state, address, "cut -d' ' -f22 /proc/1/stat; cat /proc/1/comm")


def test_a_power_loss_on_the_primarys_container_loses_no_acknowledged_write(
        the_lab: LabState, provisioned: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbtier.engines.base import get_engine
    from dbtier.spec import load_spec
    from dbtier.engines.postgres.topology import pg_member
    from flows.failover_drill import failover_drill

    spec = load_spec(provisioned)
    leader = get_engine(spec).status(spec).health.leader
    assert leader is not None
    victim = the_lab.plan.host(pg_member(spec, leader).host)
    launchers = dict(LabState.load(NAME).launchers)  # type: ignore[union-attr]
    booted = {a: pid1_started(the_lab, a) for a in ADDRESSES}

    monkeypatch.setenv("DBTIER_WORK_DIR", str(tmp_path))
    (verdict,) = failover_drill(scenario="host-crash", spec_path=provisioned, settings=FAST)
    assert verdict["passed"], verdict["reasons"]
    assert verdict["leader_changed"] and verdict["lost_writes"] == 0 and verdict["split_brain"] == []
    assert verdict["rejoin_s"] is not None

    after = LabState.load(NAME)
    assert after is not None
    assert after.launchers[victim.name] != launchers[victim.name], "the PVE double booted the host again"
    assert {h: p for h, p in after.launchers.items() if h != victim.name} == \
        {h: p for h, p in launchers.items() if h != victim.name}, "the other hosts ran on"
    now = {a: pid1_started(the_lab, a) for a in ADDRESSES}
    assert now[victim.address] != booted[victim.address] and now[victim.address].endswith("systemd")
    assert all(now[a] == booted[a] for a in ADDRESSES if a != victim.address)
    index = victim.index - 1
    assert {f"dbtier-{CLUSTER}-pg{index}.service", f"dbtier-{CLUSTER}-etcd{index}.service"} <= \
        set(running_units(victim.address)), "its members came back through their enabled units"
    assert containers(spec)[VMIDS[index]].status == "running"
    assert get_engine(spec).status(spec).health.healthy
    with contextlib.suppress(ChildProcessError):  # the launcher this process started, killed by the double
        os.waitpid(launchers[victim.name], os.WNOHANG)


def test_a_full_backup_in_the_labs_s3_archive_health_and_the_restore_drill(provisioned: str, the_lab: LabState) -> None:
    from flows.archive_health import archive_health
    from flows.backup import backup
    from flows.restore_drill import restore_drill

    taken = backup(spec_path=provisioned, kind="full")["taken"]
    assert [b["kind"] for b in taken] == ["full"]
    keys = bucket_keys(the_lab, f"{CLUSTER}/backup/")
    assert any(taken[0]["label"] in k for k in keys), "the backup is in the lab's bucket"
    assert archive_health(spec_path=provisioned)["healthy"] is True
    drill = restore_drill(spec_path=provisioned)
    assert drill["passed"] and drill["copy"] == f"{CLUSTER}-drill (removed)", drill


def test_teardown_with_destroy_hosts_leaves_no_container_and_no_data(the_lab: LabState, provisioned: str) -> None:
    from blocks.hostkeys import load_pins
    from dbtier.providers import proxmox_api as pve
    from dbtier.spec import load_spec
    from flows.teardown import teardown

    spec = load_spec(provisioned)
    said = teardown(spec_path=provisioned, wipe=True, destroy_hosts=True)
    left = containers(spec)
    assert not any(pve.owned_by(ct.tags, CLUSTER) for ct in left.values()) and not set(VMIDS) & set(left), said
    assert load_pins(CLUSTER) == {}, "the destroyed containers' host keys are forgotten"
    found = lab.status(NAME)
    assert found is not None and [h["state"] for h in found["hosts"]] == ["down"] * 3, "a destroyed container is off"
    for address in ADDRESSES:  # what each host's own disk holds of the cluster
        data = cluster_on_disk(the_lab, address)
        assert not data.exists() or (data.is_dir() and not any(data.iterdir())), f"{address}: {list(data.iterdir())}"
