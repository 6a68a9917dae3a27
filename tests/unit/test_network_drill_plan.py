"""Which network and host drills a cluster can run, and the one line for those it cannot (pure, plus the local
provider)."""

from __future__ import annotations

from typing import Any

import pytest

from dbtier.drills.preflight import runnable_drills
from dbtier.engines.postgres import network
from dbtier.engines.postgres.engine import PostgresEngine
from dbtier.providers.local import LocalProvider
from dbtier.spec import ClusterSpec


def lab_spec(hosts: int = 3, members: int = 3, **extra: Any) -> ClusterSpec:
    """A cluster spread over ``hosts`` SSH hosts at 198.18.11.2..., as on a ``dbtier lab``."""
    return ClusterSpec.model_validate({
        "provider": "ssh", "members": members,
        "ssh": {"hosts": [{"address": f"198.18.11.{2 + i}"} for i in range(hosts)], "key_file": "/k"},
        "backup": {"repositories": [{"type": "fs", "shared": True}]}, **extra,
    })


@pytest.mark.parametrize(
    ("spec", "scenario", "why"),
    [
        (lab_spec(), "partition-primary", None),
        (lab_spec(), "crash", None),
        (ClusterSpec(), "crash", None),
        (ClusterSpec(), "partition-replica",
         "scenario: partition-replica needs members on separate hosts (pg0, pg1, pg2 all on 127.0.0.1): "
         "try `dbtier lab up`"),
        (lab_spec(hosts=2), "lossy-network",
         "scenario: lossy-network needs members on separate hosts (pg0, pg1, pg2 on 2 hosts): try `dbtier lab up`"),
        (lab_spec(members=1, etcd_members=1), "host-crash",
         "scenario: host-crash needs at least 2 members and 3 etcd members (the cluster has 1 and 1): "
         "set members and etcd_members"),
    ],
)
def test_placement(spec: ClusterSpec, scenario: str, why: str | None) -> None:
    assert network.placement_refusal(spec, scenario) == why


@pytest.mark.parametrize(
    ("host", "peers"),
    [("198.18.11.2", ["198.18.11.3", "198.18.11.4"]), ("198.18.11.4", ["198.18.11.2", "198.18.11.3"])],
)
def test_a_partition_cuts_every_other_host_of_the_cluster(host: str, peers: list[str]) -> None:
    assert network.other_hosts(lab_spec(), host) == peers
    # five etcd members on three hosts: still one address per host
    assert network.other_hosts(lab_spec(etcd_members=5), host) == peers


def test_etcd_minority_cuts_every_etcd_port() -> None:
    assert network.etcd_ports(lab_spec(ports={"etcd": 3379})) == [3379, 3380, 3381, 3382, 3383, 3384]


def test_drill_all_on_the_local_provider_skips_each_network_and_host_drill_in_one_line() -> None:
    names = ["switchover", "crash", *network.NETWORK_SCENARIOS, *network.HOST_SCENARIOS]
    runnable, skipped = runnable_drills(PostgresEngine(), LocalProvider(), ClusterSpec(), names)
    assert runnable == ["switchover", "crash"]
    assert len(skipped) == len(network.NETWORK_SCENARIOS) + len(network.HOST_SCENARIOS)
    assert skipped[0] == ("skipped partition-replica: needs members on separate hosts (pg0, pg1, pg2 all on "
                          "127.0.0.1): try `dbtier lab up`")
    assert all("\n" not in line for line in skipped)


def test_a_provider_without_root_or_power_on_separate_hosts_is_named() -> None:
    # a placement the drills accept, handed to a provider that has neither root on the hosts nor power
    spec = lab_spec()
    provider = LocalProvider()
    assert network.cannot_run(spec, "partition-primary", provider) == (
        "scenario: partition-primary needs root on each member's own host, which provider local does not give: "
        "try `dbtier lab up`")
    assert network.cannot_run(spec, "host-freeze", provider) == (
        "scenario: host-freeze needs power over whole hosts (freeze, power loss, boot), which provider local does "
        "not have: run it on a `dbtier lab` or a proxmox cluster")


@pytest.mark.parametrize(
    ("lines", "story"),
    [
        (["x INFO: running pg_rewind from host=198.18.11.3 port=5433", "x INFO: pg_rewind exit code=0"],
         "pg0 rejoined through pg_rewind (exit code 0)"),
        (["x INFO: pg_rewind exit code=1"], "pg_rewind on pg0 exited 1"),
        (["x ERROR: Failed to rewind from healthy primary: pg1"], "pg0 failed to rewind: Failed to rewind from "
                                                                 "healthy primary: pg1"),
    ],
)
def test_rewind_story(lines: list[str], story: str) -> None:
    assert network.rewind_story("pg0", lines) == story
