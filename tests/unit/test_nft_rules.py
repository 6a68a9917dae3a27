"""The network drills' nft rule sets and commands (pure): what each fault drops, and what it refuses."""

from __future__ import annotations

import pytest

from dbtier.drills import nft
from dbtier.drills.nft import RuleError


def drops(text: str) -> list[tuple[str, str]]:
    """(chain, rule) for every rule that drops or accepts, in order."""
    chain, found = "", []
    for line in text.splitlines():
        words = line.strip()
        if words.startswith("chain "):
            chain = words.split()[1]
        elif words.endswith(("drop", "accept")) and not words.startswith("type "):
            found.append((chain, words))
    return found


@pytest.mark.parametrize(
    ("peers", "want"),
    [
        (["198.18.11.3"], [("input", "ip saddr { 198.18.11.3 } counter drop"),
                           ("output", "ip daddr { 198.18.11.3 } counter drop")]),
        (["198.18.11.4", "198.18.11.3", "198.18.11.4"],
         [("input", "ip saddr { 198.18.11.3, 198.18.11.4 } counter drop"),
          ("output", "ip daddr { 198.18.11.3, 198.18.11.4 } counter drop")]),
        (["fd00::3", "198.18.11.3"], [("input", "ip saddr { 198.18.11.3 } counter drop"),
                                      ("input", "ip6 saddr { fd00::3 } counter drop"),
                                      ("output", "ip daddr { 198.18.11.3 } counter drop"),
                                      ("output", "ip6 daddr { fd00::3 } counter drop")]),
    ],
)
def test_a_partition_drops_only_the_peers_both_ways(peers: list[str], want: list[tuple[str, str]]) -> None:
    assert drops(nft.partition(peers)) == want


def test_cut_ports_drops_only_those_ports_of_those_peers_at_either_end() -> None:
    rules = drops(nft.cut_ports(["198.18.11.3"], [2382, 2379, 2379]))
    assert rules == [
        ("input", "ip saddr { 198.18.11.3 } tcp dport { 2379, 2382 } counter drop"),
        ("input", "ip saddr { 198.18.11.3 } tcp sport { 2379, 2382 } counter drop"),
        ("output", "ip daddr { 198.18.11.3 } tcp dport { 2379, 2382 } counter drop"),
        ("output", "ip daddr { 198.18.11.3 } tcp sport { 2379, 2382 } counter drop"),
    ]


@pytest.mark.parametrize(("percent", "spared"), [(10, (22,)), (100, (22, 2222)), (35, ())])
def test_packet_loss_spares_loopback_and_the_drills_ssh(percent: int, spared: tuple[int, ...]) -> None:
    rules = drops(nft.packet_loss(percent, spared_ports=spared))
    accepts = [r for _, r in rules if r.endswith("accept")]
    assert len(accepts) == (4 if spared else 0)
    assert all(r.startswith("meta l4proto tcp th ") for r in accepts)
    share = "" if percent == 100 else f"numgen random mod 100 < {percent} "
    assert [r for _, r in rules if r.endswith("drop")] == [
        f'iifname != "lo" {share}counter drop', f'oifname != "lo" {share}counter drop']
    # the spared ports come first in each chain, so they are never dropped
    assert [c for c, r in rules if r.endswith("accept")] == (["input"] * 2 + ["output"] * 2 if spared else [])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nft.partition([]), "peers: none given; name at least one address to cut the host from"),
        (lambda: nft.partition(["db1"]), "peers: 'db1' is not an IP address; a drill cuts addresses, so the spec "
                                         "must name its hosts by address"),
        (lambda: nft.cut_ports(["198.18.11.3"], []), "ports: none given; name TCP ports between 1 and 65535"),
        (lambda: nft.cut_ports(["198.18.11.3"], [2379, 70000]),
         "ports: [70000] given; name TCP ports between 1 and 65535"),
        (lambda: nft.packet_loss(101), "loss_percent: 101 is out of range; drop between 1 and 100 % of the packets"),
        (lambda: nft.install_argv("x", 0), "guard_s: 0 s; every fault needs a guard that ends it: give a positive time"),
    ],
)
def test_faults_the_rules_cannot_express_are_refused_in_one_line(make: object, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        make()  # type: ignore[operator]
    assert caught.value.one_line() == message


def test_every_rule_set_replaces_the_drills_own_table_and_nothing_else() -> None:
    for text in (nft.partition(["198.18.11.3"]), nft.cut_ports(["198.18.11.3"], [2379]), nft.packet_loss(5)):
        lines = text.splitlines()
        assert lines[:3] == ["add table inet dbtier_drill", "delete table inet dbtier_drill",
                             "table inet dbtier_drill {"]
        assert sum(1 for line in lines if line.startswith(("table", "add table", "delete table"))) == 3
        assert all("policy accept" in line for line in lines if line.strip().startswith("type filter"))


@pytest.mark.parametrize(("guard_s", "seconds"), [(90.0, "90"), (90.2, "91"), (0.5, "1")])
def test_the_guard_is_started_before_the_rules_and_rounds_up(guard_s: float, seconds: str) -> None:
    argv = nft.install_argv("RULES", guard_s, pidfile="/run/x.pid")
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "RULES", seconds, "/run/x.pid"]
    script = argv[2]
    assert script.index("systemd-run") < script.index("nft -f -")
    assert script.index("setsid") < script.index("nft -f -")
    assert "--on-active=" in script


def test_removal_stops_the_guard_and_deletes_only_the_table() -> None:
    script = nft.remove_argv("/run/x.pid")[2]
    assert "nft delete table inet dbtier_drill" in script
    assert "systemctl stop dbtier-drill-guard.timer" in script
    assert "flush ruleset" not in script and "flush ruleset" not in nft.INSTALL_SCRIPT


@pytest.mark.parametrize(
    ("listing", "dropped"),
    [
        ({"nftables": []}, 0),
        ({"nftables": [{"metainfo": {}}, {"rule": {"expr": [{"counter": {"packets": 3, "bytes": 1}}, {"drop": None}]}},
                       {"rule": {"expr": [{"accept": None}]}}]}, 3),
        ({"nftables": "garbage"}, 0),
    ],
)
def test_dropped_packets_add_up_the_counters(listing: dict[str, object], dropped: int) -> None:
    assert nft.dropped_packets(listing) == dropped
