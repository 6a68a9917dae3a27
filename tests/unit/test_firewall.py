"""The host firewall's rules (dbtier/firewall.py), read back as a packet would meet them; and the apply and remove
steps (dbtier/firewall_hosts.py) through a root runner that records what it is asked to run."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from dbtier import firewall, firewall_hosts
from dbtier.errors import CommandFailed, SpecError
from dbtier.firewall import FirewallError
from dbtier.providers.base import Completed, Provider, Runner
from dbtier.providers.local import LocalProvider
from dbtier.spec import ClusterSpec, build_spec

HOSTS = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
CONTROLLER = "10.0.0.5"
RULE = re.compile(r"^(?:(?P<fam>ip6?) saddr \{ (?P<nets>[^}]*) \} )?tcp dport \{ (?P<ports>[^}]*) \} (?:counter )?"
                  r"(?P<verdict>accept|drop)$")


def ssh_spec(**fields: object) -> ClusterSpec:
    data: dict[str, object] = {"name": "orders", "provider": "ssh",
                               "ssh": {"hosts": [{"address": h} for h in HOSTS], "key_file": "/k"},
                               "backup": {"repositories": [{"type": "fs", "shared": True}]}}
    data.update(fields)
    return build_spec(data, {})


def verdict(text: str, source: str, port: int) -> str:
    """What the input chain does with a TCP SYN from ``source`` (not on loopback) to ``port``: the first rule that
    matches decides; none: the chain's policy (accept)."""
    ip = ipaddress.ip_address(source)
    lines = [line.strip() for line in text.splitlines()]
    chain = lines[lines.index("chain input {") + 2:]
    for rule in chain[:chain.index("}")]:
        if rule == 'iif "lo" accept':
            continue
        found = RULE.match(rule)
        assert found, f"a rule the test cannot read: {rule}"
        if port not in {int(p) for p in found["ports"].split(", ")}:
            continue
        if found["fam"]:
            if found["fam"] != ("ip" if ip.version == 4 else "ip6"):
                continue
            if not any(ip in ipaddress.ip_network(n) for n in found["nets"].split(", ")):
                continue
        return found["verdict"]
    return "accept"


def rules_on(spec: ClusterSpec, host: str = HOSTS[0]) -> str:
    return firewall.ruleset(spec, host, HOSTS, CONTROLLER)


@pytest.mark.parametrize("source, port, want", [
    # PostgreSQL: members, loopback, the controller, the client networks
    ("10.0.0.12", 5432, "accept"),
    ("127.0.0.1", 5432, "accept"),
    (CONTROLLER, 5432, "accept"),
    ("10.0.1.77", 5432, "accept"),
    ("10.0.2.9", 5432, "drop"),
    # Patroni's REST API and etcd: not the client networks
    ("10.0.0.13", 8008, "accept"),
    (CONTROLLER, 2379, "accept"),
    ("127.0.0.1", 2380, "accept"),
    ("10.0.1.77", 8008, "drop"),
    ("10.0.1.77", 2379, "drop"),
    ("10.0.1.77", 2380, "drop"),
    ("10.0.2.9", 2379, "drop"),
    # IPv6: loopback only (no IPv6 source given)
    ("::1", 5432, "accept"),
    ("fd00::9", 5432, "drop"),
    # not the cluster's ports on this host: untouched
    ("10.0.2.9", 22, "accept"),
    ("10.0.2.9", 5433, "accept"),
    ("10.0.2.9", 8009, "accept"),
    ("10.0.2.9", 2381, "accept"),
])
def test_which_sources_reach_which_port(source: str, port: int, want: str) -> None:
    assert verdict(rules_on(ssh_spec(allowed_client_networks=["10.0.1.0/24"])), source, port) == want


@pytest.mark.parametrize("host, ports", [
    ("10.0.0.11", {5432, 8008, 2379, 2380, 9187, 9100}),  # member i on host i: its own ports (and exporters) only
    ("10.0.0.12", {5433, 8009, 2381, 2382, 9188, 9100}),
    ("10.0.0.13", {5434, 8010, 2383, 2384, 9189, 9100}),
])
def test_each_host_guards_only_the_ports_of_its_own_members(host: str, ports: set[int]) -> None:
    text = rules_on(ssh_spec(), host)
    drop = next(line.strip() for line in text.splitlines() if line.strip().endswith("drop"))
    assert {int(p) for p in RULE.match(drop)["ports"].split(", ")} == ports  # type: ignore[index]


@pytest.mark.parametrize("fields, source, port, want", [
    ({"firewall": {"admin_networks": ["192.168.7.0/24"]}}, "192.168.7.3", 8008, "accept"),
    ({"firewall": {"admin_networks": ["192.168.7.0/24"]}}, "192.168.7.3", 5432, "accept"),
    ({"allowed_client_networks": ["fd00:1::/64"]}, "fd00:1::20", 5432, "accept"),
    ({"allowed_client_networks": ["fd00:1::/64"]}, "fd00:1::20", 8008, "drop"),
    ({"allowed_client_networks": ["fd00:1::/64"]}, "fd00:2::20", 5432, "drop"),
    ({"allowed_client_networks": ["10.0.0.11/32"]}, "10.0.0.14", 5432, "drop"),
    ({"allowed_client_networks": ["0.0.0.0/0"]}, "203.0.113.9", 5432, "accept"),
    ({"allowed_client_networks": ["0.0.0.0/0"]}, "203.0.113.9", 2379, "drop"),
])
def test_admin_and_client_networks_of_both_families(fields: dict[str, object], source: str, port: int,
                                                     want: str) -> None:
    assert verdict(rules_on(ssh_spec(**fields)), source, port) == want


def test_overlapping_sources_are_merged_so_nft_takes_the_set() -> None:
    text = rules_on(ssh_spec(allowed_client_networks=["10.0.0.0/24", "10.0.0.11/32"]))
    assert "ip saddr { 10.0.0.0/24, 127.0.0.0/8 } tcp dport { 5432 } accept" in text


@pytest.mark.parametrize("cluster, table, path, unit", [
    ("orders", "dbtier_fw_orders", "/etc/dbtier/firewall-orders.nft", "dbtier-firewall-orders.service"),
    ("orders-eu", "dbtier_fw_orders_eu", "/etc/dbtier/firewall-orders-eu.nft", "dbtier-firewall-orders-eu.service"),
    ("a2", "dbtier_fw_a2", "/etc/dbtier/firewall-a2.nft", "dbtier-firewall-a2.service"),
])
def test_names_are_the_clusters_own(cluster: str, table: str, path: str, unit: str) -> None:
    assert (firewall.table_name(cluster), firewall.rules_path(cluster), firewall.unit_name(cluster)) == (table, path, unit)
    assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", table), "an nft identifier without quoting"
    assert table != "dbtier_drill", "never the drills' fault table"


def test_the_file_replaces_its_own_table_in_one_transaction_and_nothing_else() -> None:
    spec = ssh_spec()
    text = rules_on(spec)
    assert rules_on(spec) == text, "the same spec renders the same file"
    statements = [line for line in text.splitlines() if line and not line.startswith(("#", " ", "}"))]
    assert statements == ["add table inet dbtier_fw_orders", "delete table inet dbtier_fw_orders",
                          "table inet dbtier_fw_orders {"]
    assert "flush ruleset" not in text and "dbtier_drill" not in text
    assert "policy accept;" in text and text.count("drop") == 1
    other = firewall.ruleset(spec.model_copy(update={"name": "billing"}), HOSTS[0], HOSTS, CONTROLLER)
    assert "dbtier_fw_orders" not in other, "two clusters on one host have two tables"


def test_the_boot_unit_loads_the_file_before_the_network() -> None:
    text = firewall.render_unit("orders")
    assert "ExecStart=/usr/sbin/nft -f /etc/dbtier/firewall-orders.nft" in text
    assert {"Type=oneshot", "Before=network-pre.target shutdown.target", "After=nftables.service",
            "WantedBy=sysinit.target"} <= set(text.splitlines())


@pytest.mark.parametrize("seen, want", [
    ("198.18.14.1 40022 198.18.14.11 22", "198.18.14.1"),
    ("::ffff:198.18.14.1 40022 ::ffff:198.18.14.11 22", "198.18.14.1"),
    ("fd00::5 40022 fd00::11 22\n", "fd00::5"),
])
def test_the_controller_is_where_the_ssh_session_comes_from(seen: str, want: str) -> None:
    assert firewall.controller_address(seen, "db1") == want


@pytest.mark.parametrize("fields, message", [
    ({"firewall": {"controller": "ctl.example"}}, "firewall.controller: 'ctl.example' is not an IP address"),
    ({"firewall": {"admin_networks": ["10.0.0.0/33"]}}, "firewall.admin_networks: '10.0.0.0/33' is not a network"),
    ({"firewall": {"enable": False}}, "firewall.enable: is not a known field"),
])
def test_bad_firewall_settings_are_one_line(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as refused:
        ssh_spec(**fields)
    assert message in refused.value.one_line()


def test_a_host_named_by_dns_must_resolve_to_be_matched() -> None:
    with pytest.raises(FirewallError, match=r"^hosts: 'db1.example' is not an IP address"):
        firewall.ruleset(ssh_spec(), HOSTS[0], [*HOSTS, "db1.example"], CONTROLLER)


# -- apply and remove, through a root runner that records ------------------------------------------------------


class RecordingRoot:
    """Root on one host: answers the learning script with ``ssh_connection``, the apply script with a listing."""

    def __init__(self, host: str, ssh_connection: str = f"{CONTROLLER} 50000 10.0.0.11 22",
                 fail: CommandFailed | None = None) -> None:
        self.host = host
        self.ssh_connection = ssh_connection
        self.fail = fail
        self.ran: list[list[str]] = []

    def run_as_root(self, argv: Sequence[str], *, timeout: float = 900) -> Completed:
        self.ran.append(list(argv))
        script = argv[2] if len(argv) > 2 else ""
        if self.fail is not None and script == firewall.APPLY_SCRIPT:
            raise self.fail
        out = {firewall.LEARN_SCRIPT: f"{self.ssh_connection}\n",
               firewall.APPLY_SCRIPT: 'systemd\n{"nftables": [{"table": {}}, {"rule": {}}, {"rule": {}}]}\n',
               firewall.REMOVE_SCRIPT: "unit\nfile\ntable\n"}.get(script, "")
        return Completed(list(argv), 0, out, "")


class HostsOfOurOwn(Provider):
    name = "ssh"

    def __init__(self, roots: Mapping[str, RecordingRoot]) -> None:
        self.roots = roots

    def runner(self, spec: ClusterSpec, host: str) -> Runner:
        raise AssertionError("the firewall needs only root")

    def check_host(self, spec: ClusterSpec, host: str) -> list[str]:
        return []

    def root_runner(self, spec: ClusterSpec, host: str) -> RecordingRoot | None:
        return self.roots.get(host)


def by_address(host: str) -> list[str]:
    return [host]


def test_apply_learns_the_controller_on_each_host_and_says_how_many_rules() -> None:
    roots = {h: RecordingRoot(h) for h in HOSTS}
    said = firewall_hosts.apply(HostsOfOurOwn(roots), ssh_spec(), by_address)
    assert said[0] == ("firewall: 2 rules on 10.0.0.11 (nft table inet dbtier_fw_orders; "
                       "dbtier-firewall-orders.service loads it at boot)")
    assert len(said) == 3
    loaded = roots["10.0.0.12"].ran[1]
    assert loaded[4:6] == ["dbtier_fw_orders", "/etc/dbtier/firewall-orders.nft"]
    assert "ip saddr { 10.0.0.5/32, 10.0.0.11/32, 10.0.0.12/31, 127.0.0.0/8 } tcp dport { 2381, 2382, 5433, 8009, 9100, 9188 } " \
           "accept" in loaded[6], "adjacent members merged into one network"
    assert sum(line.endswith(" accept") for line in loaded[6].splitlines()) == 3, "no client networks: no second PostgreSQL rule"


def test_a_controller_in_the_spec_is_not_learned() -> None:
    roots = {h: RecordingRoot(h, ssh_connection="") for h in HOSTS}
    firewall_hosts.apply(HostsOfOurOwn(roots), ssh_spec(firewall={"controller": "10.9.9.9"}), by_address)
    assert [argv[2] for argv in roots[HOSTS[0]].ran] == [firewall.APPLY_SCRIPT]
    assert "10.9.9.9/32" in roots[HOSTS[0]].ran[0][6]


def test_a_host_that_cannot_say_where_the_controller_is_is_one_line() -> None:
    roots = {h: RecordingRoot(h, ssh_connection="") for h in HOSTS}
    with pytest.raises(FirewallError) as failed:
        firewall_hosts.apply(HostsOfOurOwn(roots), ssh_spec(), by_address)
    assert failed.value.one_line().startswith("firewall.controller: 10.0.0.11 did not say where")


def test_an_nft_failure_names_the_host_in_one_line() -> None:
    refused = CommandFailed(["sh"], 1, "", "/etc/dbtier/firewall-orders.nft:7:5-9: Error: syntax error\n  ^^^^\n")
    roots = {h: RecordingRoot(h, fail=refused if h == "10.0.0.12" else None) for h in HOSTS}
    with pytest.raises(FirewallError) as failed:
        firewall_hosts.apply(HostsOfOurOwn(roots), ssh_spec(), by_address)
    line = failed.value.one_line()
    assert line.startswith("10.0.0.12: loading the firewall's nft table failed (/etc/dbtier/firewall-orders.nft:7:5-9: "
                           "Error: syntax error)")
    assert "\n" not in str(failed.value)


def test_turned_off_it_removes_what_an_earlier_provision_left() -> None:
    roots = {h: RecordingRoot(h) for h in HOSTS}
    said = firewall_hosts.apply(HostsOfOurOwn(roots), ssh_spec(firewall={"enabled": False}), by_address)
    assert said[0] == ("firewall.enabled is false: 10.0.0.11: firewall removed: nft table inet dbtier_fw_orders, "
                       "/etc/dbtier/firewall-orders.nft, unit dbtier-firewall-orders.service")
    assert all(argv[2] == firewall.REMOVE_SCRIPT for root in roots.values() for argv in root.ran)


def test_the_local_provider_gets_none_in_one_line() -> None:
    said = firewall_hosts.apply(LocalProvider(), ClusterSpec(), by_address)
    assert len(said) == 1 and said[0].startswith("firewall: provider local runs every member on this machine")
    assert firewall_hosts.remove(LocalProvider(), ClusterSpec(), by_address) == []


def test_a_host_at_a_loopback_address_is_this_machine_and_gets_none() -> None:
    spec = build_spec({"provider": "ssh", "ssh": {"hosts": [{"address": "127.0.0.1"}], "key_file": "/k"}}, {})
    roots = {"127.0.0.1": RecordingRoot("127.0.0.1")}
    said = firewall_hosts.apply(HostsOfOurOwn(roots), spec, by_address)
    assert said == ["firewall: 127.0.0.1 is this machine (a loopback address), shared with everything else on it: "
                    "no firewall"]
    assert firewall_hosts.remove(HostsOfOurOwn(roots), spec, by_address) == []
    assert roots["127.0.0.1"].ran == [], "nothing runs as root on this machine"


# -- nft itself reads the file (in a network namespace of its own, checked only: nothing is loaded) ---------------


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
                    reason="needs root, nft and unshare for a throwaway network namespace")
@pytest.mark.parametrize("fields", [{}, {"allowed_client_networks": ["10.0.0.0/24", "fd00:1::/64"],
                                         "firewall": {"admin_networks": ["fd00:9::/48", "10.0.0.11/32"]}}])
def test_nft_accepts_the_file(fields: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / "fw.nft"
    path.write_text(rules_on(ssh_spec(**fields)))
    done = subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
