"""The host firewall's ports come from the engine (Engine.firewall_hosts / firewall_ports): a MongoDB replica set's
hosts guard their mongod ports and nothing of PostgreSQL's; PostgreSQL's ports are what they were."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dbtier import firewall
from dbtier.engines.base import HostPorts, get_engine
from dbtier.spec import ClusterSpec, build_spec
from tests.unit.test_firewall import CONTROLLER, HOSTS, RULE, verdict

CLIENTS = "10.0.1.0/24"
NODE_EXPORTER = 9100  # make monitor's node exporter on each member host: every engine's
ADMIN = "192.168.7.0/24"
POSTGRES_PORTS = {5432, 5433, 5434, 8008, 8009, 8010, 2379, 2380, 2381, 2382, 2383, 2384, 9100, 9187, 9188, 9189}


def ssh_spec(engine: str, **fields: object) -> ClusterSpec:
    data: dict[str, object] = {"name": "orders", "provider": "ssh", "engine": engine,
                               "ssh": {"hosts": [{"address": h} for h in HOSTS], "key_file": "/k"},
                               "backup": {"repositories": [{"type": "fs", "shared": True}]}}
    data.update(fields)
    return build_spec(data, {})


def three_member_replica_set_with_client_and_admin_networks() -> ClusterSpec:
    return ssh_spec("mongodb", allowed_client_networks=[CLIENTS], firewall={"admin_networks": [ADMIN]})


def ports_in(text: str) -> set[int]:
    """Every port a rule of the file names."""
    found = (RULE.match(line.strip()) for line in text.splitlines())
    return {int(p) for m in found if m for p in m["ports"].split(", ")}


@pytest.mark.parametrize("host, port", [(h, 27017 + i) for i, h in enumerate(HOSTS)])
@pytest.mark.parametrize("source, want", [
    ("10.0.0.12", "accept"),     # a member (replication, heartbeats)
    ("10.0.0.13", "accept"),
    ("127.0.0.1", "accept"),     # loopback
    ("::1", "accept"),
    (CONTROLLER, "accept"),      # this machine
    ("192.168.7.3", "accept"),   # firewall.admin_networks
    ("10.0.1.77", "accept"),     # allowed_client_networks: applications
    ("10.0.2.9", "drop"),        # anyone else
    ("fd00::9", "drop"),
])
def test_a_replica_set_host_guards_its_mongod_port(host: str, port: int, source: str, want: str) -> None:
    text = firewall.ruleset(three_member_replica_set_with_client_and_admin_networks(), host, HOSTS, CONTROLLER)
    assert verdict(text, source, port) == want


@pytest.mark.parametrize("host, port", [(h, 27017 + i) for i, h in enumerate(HOSTS)])
def test_a_replica_set_host_names_only_its_own_mongod_port(host: str, port: int) -> None:
    text = firewall.ruleset(three_member_replica_set_with_client_and_admin_networks(), host, HOSTS, CONTROLLER)
    assert ports_in(text) == {port, NODE_EXPORTER}, "one member per host: its mongod port and its node exporter"
    assert not ports_in(text) & (POSTGRES_PORTS - {NODE_EXPORTER}), "nothing of PostgreSQL's"
    assert verdict(text, "10.0.2.9", 27017 + (HOSTS.index(host) + 1) % 3) == "accept", "another host's port: untouched"
    drop = [line.strip() for line in text.splitlines() if line.strip().endswith("drop")]
    assert drop == [f"tcp dport {{ {NODE_EXPORTER}, {port} }} counter drop"]
    # the node exporter is a control port: this machine (Prometheus) and the admins reach it, applications do not
    assert [verdict(text, source, NODE_EXPORTER) for source in (CONTROLLER, "192.168.7.3", "10.0.1.77", "10.0.2.9")] \
        == ["accept", "accept", "drop", "drop"]


def test_a_replica_set_firewalls_its_members_hosts() -> None:
    spec = three_member_replica_set_with_client_and_admin_networks()
    assert firewall.cluster_hosts(spec) == HOSTS
    assert get_engine(spec).firewall_ports(spec, "10.0.0.99") == HostPorts((), ())


def test_every_member_on_one_host_guards_all_their_ports() -> None:
    spec = build_spec({"provider": "ssh", "engine": "mongodb", "ssh": {"hosts": [{"address": "10.0.0.11"}],
                                                                       "key_file": "/k"},
                       "backup": {"repositories": [{"type": "fs", "shared": True}]}}, {})
    assert firewall.host_ports(spec, "10.0.0.11") == HostPorts((27017, 27018, 27019), (NODE_EXPORTER,))


@pytest.mark.parametrize("spec, host, want", [
    pytest.param(ClusterSpec(), "127.0.0.1",
                 HostPorts((5432, 5433, 5434),
                           (2379, 2380, 2381, 2382, 2383, 2384, 8008, 8009, 8010, 9187, 9188, 9189)),
                 id="local-default"),
    pytest.param(ClusterSpec(routing={"enabled": True}), "127.0.0.1",
                 HostPorts((5000, 5001, 5002, 5003, 5004, 5432, 5433, 5434, 6432, 6433, 6434),
                           (2379, 2380, 2381, 2382, 2383, 2384, 7000, 8008, 8009, 8010, 9187, 9188, 9189)),
                 id="local-routing-clients"),
    pytest.param(ClusterSpec(), "10.0.0.9", HostPorts((), ()), id="not-a-host-of-the-cluster"),
    pytest.param(ssh_spec("postgres"), "10.0.0.12", HostPorts((5433,), (2381, 2382, 8009, 9100, 9188)),
                 id="ssh-member-1"),
])
def test_postgres_ports_are_unchanged(spec: ClusterSpec, host: str, want: HostPorts) -> None:
    assert firewall.host_ports(spec, host) == want
    assert get_engine(spec).firewall_ports(spec, host) == want


def test_postgres_hosts_are_unchanged() -> None:
    assert firewall.cluster_hosts(ssh_spec("postgres")) == HOSTS
    assert firewall.cluster_hosts(ClusterSpec()) == ["127.0.0.1"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
                    reason="needs root, nft and unshare for a throwaway network namespace")
@pytest.mark.parametrize("fields", [{}, {"allowed_client_networks": ["10.0.0.0/24", "fd00:1::/64"],
                                         "firewall": {"admin_networks": ["fd00:9::/48", "10.0.0.11/32"]}}])
def test_nft_accepts_the_replica_sets_file(fields: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / "fw.nft"
    path.write_text(firewall.ruleset(ssh_spec("mongodb", **fields), HOSTS[0], HOSTS, CONTROLLER))
    done = subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
