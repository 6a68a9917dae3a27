"""Network and host drills on a lab of three separate hosts, one member (PostgreSQL, Patroni, etcd) per host.

Runbook: ``dbtier lab up`` (lab ``tnet``, 198.18.11.0/24), provision the lab's ssh spec (synchronous mode), then
cut the network for real with nftables inside one host's namespace: a partitioned replica, an etcd member cut off
from the others, a primary's host losing packets, a partitioned primary (it must stop acknowledging writes before
the new primary's first, and rejoin once healed), then the whole-host faults where the provider has power over the
hosts. After each drill no rule and no guard is left on any host; ``lab down`` takes everything away.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbtier.lab.lab import LabState
from dbtier.spec import DrillSettings
from tests.lab import lab_spec_file, running_lab, unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(unavailable() is not None, reason=f"lab: {unavailable()}")]
NAME, SUBNET = "tnet", "198.18.11.0/24"
FAST = DrillSettings(rto_budget_s=40, rejoin_budget_s=90, settle_s=1.0, tail_s=0.5, healthy_timeout_s=120)


@pytest.fixture(scope="module")
def the_lab() -> Iterator[LabState]:
    with running_lab(NAME, SUBNET) as state:
        yield state


@pytest.fixture(scope="module")
def provisioned(the_lab: LabState, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The lab's own ssh spec (synchronous mode), with Patroni's fast test timing, provisioned."""
    from flows.provision import provision

    path = lab_spec_file(the_lab, "ssh", tmp_path_factory.mktemp(NAME))
    provision(spec_path=path)
    return path


def drill(spec_file: str, scenario: str, work: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from flows.failover_drill import failover_drill

    monkeypatch.setenv("DBTIER_WORK_DIR", str(work))
    (verdict,) = failover_drill(scenario=scenario, spec_path=spec_file, settings=FAST)
    return verdict


def assert_no_fault_left(spec_file: str) -> None:
    """No drill table and no guard on any host, asked as root over the drill's own SSH connections."""
    from blocks.loaders import PREFECT_LOADERS
    from dbtier.providers.base import get_provider
    from dbtier.spec import load_spec
    from dbtier.engines.postgres.topology import pg_members

    spec = load_spec(spec_file)
    provider = get_provider(spec, PREFECT_LOADERS)
    for member in pg_members(spec):
        root = provider.root_runner(spec, member.host)
        assert root is not None
        found = root.run_as_root(["sh", "-c", "nft list tables; systemctl list-units --all --no-legend "
                                              "'dbtier-drill-guard*'"], timeout=120).out
        assert "dbtier_drill" not in found and "dbtier-drill-guard" not in found, f"{member.host}: {found}"


def note(verdict: dict[str, Any], text: str) -> str:
    return next((n for n in verdict["notes"] if text in n), "")


def test_a_partitioned_replica_comes_back_and_the_leader_stays(provisioned: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = drill(provisioned, "partition-replica", tmp_path, monkeypatch)
    assert verdict["passed"], verdict["reasons"]
    assert not verdict["leader_changed"] and verdict["lost_writes"] == 0 and verdict["split_brain"] == []
    assert "nft table inet dbtier_drill deleted after dropping" in note(verdict, "deleted after dropping")
    assert_no_fault_left(provisioned)


def test_an_etcd_member_cut_off_from_the_others_stalls_no_write(provisioned: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = drill(provisioned, "etcd-minority", tmp_path, monkeypatch)
    assert verdict["passed"], verdict["reasons"]
    assert not verdict["leader_changed"] and verdict["lost_writes"] == 0
    assert_no_fault_left(provisioned)


def test_the_cluster_stays_writable_while_the_primarys_host_loses_packets(
        provisioned: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = drill(provisioned, "lossy-network", tmp_path, monkeypatch)
    assert verdict["passed"], verdict["reasons"]
    assert not verdict["leader_changed"] and verdict["lost_writes"] == 0
    assert "writes acknowledged while the fault held" in note(verdict, "while the fault held")
    assert_no_fault_left(provisioned)


def test_a_partitioned_primary_stops_before_the_new_one_starts_and_rejoins(
        provisioned: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = drill(provisioned, "partition-primary", tmp_path, monkeypatch)
    assert verdict["passed"], verdict["reasons"]
    assert verdict["leader_changed"] and verdict["lost_writes"] == 0 and verdict["split_brain"] == []
    assert verdict["old_primary_window"] == 0, "synchronous mode: no write on the old primary after the new one's first"
    assert verdict["rejoin_s"] is not None
    assert note(verdict, "pg_rewind"), verdict["notes"]
    probe = list(tmp_path.rglob("old-primary-probe.jsonl"))
    assert len(probe) == 1 and probe[0].stat().st_size > 0, "the probe wrote to the old primary"
    assert_no_fault_left(provisioned)


def test_in_asynchronous_mode_the_partitioned_primary_also_stops_first(
        provisioned: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patroni demotes a primary that cannot reach etcd (loop_wait + retry_timeout) before its leader key expires
    (ttl): the window is 0 without synchronous replication too; the writes it acknowledged alone are counted."""
    from blocks.passwords import load_passwords
    from dbtier.engines.postgres import faults
    from dbtier.engines.postgres.control_plane import rest_login
    from dbtier.spec import load_spec

    spec = load_spec(provisioned)
    login = rest_login(load_passwords(spec))
    faults.set_synchronous_mode(spec, False, login)
    try:
        verdict = drill(provisioned, "partition-primary", tmp_path, monkeypatch)
    finally:
        faults.set_synchronous_mode(spec, True, login)
    assert verdict["passed"], verdict["reasons"]
    assert verdict["budgets"]["max_old_primary_window"] is None and not verdict["budgets"]["zero_loss"]
    assert verdict["old_primary_window"] == 0 and verdict["split_brain"] == []
    assert_no_fault_left(provisioned)


@pytest.mark.parametrize("scenario", ["host-freeze", "host-crash"])
def test_whole_host_faults_where_the_provider_has_power(provisioned: str, scenario: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.loaders import PREFECT_LOADERS
    from dbtier.engines.postgres import network
    from dbtier.providers.base import get_provider
    from dbtier.spec import load_spec

    spec = load_spec(provisioned)
    why = network.cannot_run(spec, scenario, get_provider(spec, PREFECT_LOADERS))
    if why is not None:
        pytest.skip(why)
    verdict = drill(provisioned, scenario, tmp_path, monkeypatch)
    assert verdict["passed"], verdict["reasons"]
    assert verdict["leader_changed"] and verdict["lost_writes"] == 0 and verdict["split_brain"] == []
    assert verdict["old_primary_window"] == 0


def test_a_network_drill_named_on_the_local_provider_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([".venv/bin/dbtier", "drill", "--scenario", "partition-primary"], capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                       "PREFECT_HOME": str(tmp_path / "prefect")})
    assert done.returncode == 2
    assert done.stderr.strip() == ("dbtier: error: scenario: partition-primary needs members on separate hosts "
                                   "(pg0, pg1, pg2 all on 127.0.0.1): try `dbtier lab up`")
