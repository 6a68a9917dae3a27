"""nftables rule sets for the network drills (pure: addresses in, text and argv out).

Every fault lives in one table of dbtier's own, ``inet dbtier_drill``, inside the network namespace of the
host it breaks; removing the fault is deleting that table. Rules only drop, so any other table on the host
keeps its meaning, and every rule counts what it dropped (the drill reports it).

Each fault is bounded on the host itself: installing it first starts a guard that deletes the table after
``guard_s`` seconds even if the flow that installed it dies (a transient systemd timer where systemd is the
host's init, else a detached ``sleep``); one guard per host, which the next install or the removal replaces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from dbtier.errors import DbtierError

TABLE = "dbtier_drill"
FAMILY = "inet"
GUARD_UNIT = "dbtier-drill-guard"
#: The drill's own way in: never dropped by the loss rules (the partition rules name addresses, not ports).
SPARED_PORTS = (22,)

#: Run as root on the host: ``$1`` the rule set, ``$2`` the guard's seconds, ``$3`` the guard's pid file.
#: The guard starts first: rules without a guard could outlive everything.
INSTALL_SCRIPT = r"""
set -eu
rules=$1; secs=$2; pidfile=$3
command -v nft >/dev/null || { echo "nft is not installed on this host" >&2; exit 127; }
remove="nft list table inet dbtier_drill >/dev/null 2>&1 && nft delete table inet dbtier_drill; rm -f $pidfile; true"
if test -d /run/systemd/system; then
  systemctl stop dbtier-drill-guard.timer dbtier-drill-guard.service >/dev/null 2>&1 || true
  systemctl reset-failed dbtier-drill-guard.timer dbtier-drill-guard.service >/dev/null 2>&1 || true
  systemd-run --quiet --unit=dbtier-drill-guard --description="dbtier drill guard: delete nft table inet dbtier_drill" \
    --on-active="${secs}s" --timer-property=AccuracySec=100ms /bin/sh -c "$remove"
  guard="systemd timer dbtier-drill-guard.timer"
else
  old=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$old" ] && grep -qa dbtier-drill-guard "/proc/$old/cmdline" 2>/dev/null; then kill -- "-$old" 2>/dev/null || true; fi
  setsid sh -c 'sleep "$1"; eval "$2"' dbtier-drill-guard "$secs" "$remove" </dev/null >/dev/null 2>&1 &
  echo $! >"$pidfile"
  guard="detached guard pid $!"
fi
printf '%s\n' "$rules" | nft -f -
echo "$guard"
"""

#: Run as root on the host: ``$1`` the guard's pid file. Stops the guard, deletes the table, says what it found.
REMOVE_SCRIPT = r"""
pidfile=$1
if test -d /run/systemd/system; then
  systemctl stop dbtier-drill-guard.timer dbtier-drill-guard.service >/dev/null 2>&1 || true
  systemctl reset-failed dbtier-drill-guard.timer dbtier-drill-guard.service >/dev/null 2>&1 || true
fi
old=$(cat "$pidfile" 2>/dev/null || true)
if [ -n "$old" ] && grep -qa dbtier-drill-guard "/proc/$old/cmdline" 2>/dev/null; then kill -- "-$old" 2>/dev/null || true; fi
rm -f "$pidfile"
if nft list table inet dbtier_drill >/dev/null 2>&1; then nft delete table inet dbtier_drill && echo removed; else echo absent; fi
"""

GUARD_PIDFILE = "/run/dbtier-drill-guard.pid"


class RuleError(DbtierError):
    """A fault the rules cannot express (an address that is not one, a port or share out of range)."""


# -- checking the input ----------------------------------------------------------------------------------


def split_families(addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """IPv4 and IPv6 literals apart, each sorted and without repeats.

    >>> split_families(["198.18.11.3", "fd00::2", "198.18.11.2", "198.18.11.3"])
    (['198.18.11.2', '198.18.11.3'], ['fd00::2'])
    >>> split_families(["db1.example"])
    Traceback (most recent call last):
    dbtier.drills.nft.RuleError: peers: 'db1.example' is not an IP address; a drill cuts addresses, so the spec must name its hosts by address
    """
    v4: set[ipaddress.IPv4Address] = set()
    v6: set[ipaddress.IPv6Address] = set()
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise RuleError(f"peers: {text!r} is not an IP address; a drill cuts addresses, so the spec must name "
                            "its hosts by address") from None
        (v4 if isinstance(ip, ipaddress.IPv4Address) else v6).add(ip)  # type: ignore[arg-type]
    return [str(a) for a in sorted(v4)], [str(a) for a in sorted(v6)]


def _ports(ports: Iterable[int]) -> str:
    chosen = sorted(set(ports))
    bad = [p for p in chosen if not 1 <= p <= 65535]
    if not chosen or bad:
        raise RuleError(f"ports: {bad or 'none'} given; name TCP ports between 1 and 65535")
    return _set(str(p) for p in chosen)


def _set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


# -- the rule sets -----------------------------------------------------------------------------------------


def ruleset(input_rules: Sequence[str], output_rules: Sequence[str], comment: str) -> str:
    """The whole table, replacing any earlier one of the same name in one transaction (``nft -f``).

    >>> print(ruleset(["ip saddr 198.18.11.3 counter drop"], [], "demo"))
    add table inet dbtier_drill
    delete table inet dbtier_drill
    table inet dbtier_drill {
      comment "dbtier drill: demo"
      chain input {
        type filter hook input priority filter - 10; policy accept;
        ip saddr 198.18.11.3 counter drop
      }
      chain output {
        type filter hook output priority filter - 10; policy accept;
      }
    }
    """
    def chain(name: str, rules: Sequence[str]) -> list[str]:
        head = f"    type filter hook {name} priority filter - 10; policy accept;"
        return [f"  chain {name} {{", head, *(f"    {r}" for r in rules), "  }"]

    safe = comment.replace('"', "'")
    return "\n".join([f"add table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}", f"table {FAMILY} {TABLE} {{",
                      f'  comment "dbtier drill: {safe}"', *chain("input", input_rules),
                      *chain("output", output_rules), "}"])


def _by_family(peers: Iterable[str], way: str, rest: str = "") -> list[str]:
    """One match per address family: ``ip saddr { ... }`` and ``ip6 saddr { ... }``, then ``rest``."""
    v4, v6 = split_families(peers)
    if not v4 and not v6:
        raise RuleError("peers: none given; name at least one address to cut the host from")
    return [f"{fam} {way} {_set(addrs)} {rest}counter drop" for fam, addrs in (("ip", v4), ("ip6", v6)) if addrs]


def partition(peers: Iterable[str], comment: str = "partition") -> str:
    """Cut the host from ``peers`` both ways; every other address (the clients) stays reachable.

    >>> text = partition(["198.18.11.3", "198.18.11.2"])
    >>> [line.strip() for line in text.splitlines() if "drop" in line]
    ['ip saddr { 198.18.11.2, 198.18.11.3 } counter drop', 'ip daddr { 198.18.11.2, 198.18.11.3 } counter drop']
    """
    peers = list(peers)
    return ruleset(_by_family(peers, "saddr"), _by_family(peers, "daddr"), comment)


def cut_ports(peers: Iterable[str], ports: Iterable[int], comment: str = "ports cut") -> str:
    """Cut only TCP conversations with ``peers`` that have one of ``ports`` at either end, both ways
    (the host's own listeners and its connections to the peers' listeners).

    >>> text = cut_ports(["198.18.11.3"], [2380, 2379])
    >>> [line.strip() for line in text.splitlines() if "drop" in line]  # doctest: +NORMALIZE_WHITESPACE
    ['ip saddr { 198.18.11.3 } tcp dport { 2379, 2380 } counter drop',
     'ip saddr { 198.18.11.3 } tcp sport { 2379, 2380 } counter drop',
     'ip daddr { 198.18.11.3 } tcp dport { 2379, 2380 } counter drop',
     'ip daddr { 198.18.11.3 } tcp sport { 2379, 2380 } counter drop']
    """
    peers, chosen = list(peers), _ports(ports)
    rules = {way: [r for end in ("dport", "sport") for r in _by_family(peers, way, f"tcp {end} {chosen} ")]
             for way in ("saddr", "daddr")}
    return ruleset(rules["saddr"], rules["daddr"], comment)


def packet_loss(percent: int, comment: str = "packet loss", spared_ports: Sequence[int] = SPARED_PORTS) -> str:
    """Drop ``percent`` % of the packets that cross the host's network interfaces (loopback left alone), both
    ways, except those of ``spared_ports`` (the drill's SSH).

    >>> text = packet_loss(10)
    >>> [line.strip() for line in text.splitlines() if "numgen" in line or "accept;" not in line and "th " in line]
    ['meta l4proto tcp th dport { 22 } accept', 'meta l4proto tcp th sport { 22 } accept', 'iifname != "lo" numgen random mod 100 < 10 counter drop', 'meta l4proto tcp th dport { 22 } accept', 'meta l4proto tcp th sport { 22 } accept', 'oifname != "lo" numgen random mod 100 < 10 counter drop']
    >>> packet_loss(0)
    Traceback (most recent call last):
    dbtier.drills.nft.RuleError: loss_percent: 0 is out of range; drop between 1 and 100 % of the packets
    """
    if not 1 <= percent <= 100:
        raise RuleError(f"loss_percent: {percent} is out of range; drop between 1 and 100 % of the packets")
    spared = [f"meta l4proto tcp th {end} {_ports(spared_ports)} accept" for end in ("dport", "sport")] \
        if spared_ports else []
    share = "" if percent == 100 else f"numgen random mod 100 < {percent} "  # numgen's range ends at 99
    return ruleset([*spared, f'iifname != "lo" {share}counter drop'],
                   [*spared, f'oifname != "lo" {share}counter drop'], comment)


# -- commands -------------------------------------------------------------------------------------------------


def install_argv(rules: str, guard_s: float, pidfile: str = GUARD_PIDFILE) -> list[str]:
    """The root command that starts the guard, then loads ``rules``; it prints which guard it started.

    >>> argv = install_argv("table inet dbtier_drill {}", 90.4)
    >>> argv[:2], argv[3:]
    (['sh', '-c'], ['sh', 'table inet dbtier_drill {}', '91', '/run/dbtier-drill-guard.pid'])
    """
    if guard_s <= 0:
        raise RuleError(f"guard_s: {guard_s:g} s; every fault needs a guard that ends it: give a positive time")
    return ["sh", "-c", INSTALL_SCRIPT, "sh", rules, str(int(-(-guard_s // 1))), pidfile]


def remove_argv(pidfile: str = GUARD_PIDFILE) -> list[str]:
    """The root command that stops the guard and deletes the table; it prints ``removed`` or ``absent``."""
    return ["sh", "-c", REMOVE_SCRIPT, "sh", pidfile]


def list_argv() -> list[str]:
    """The root command that prints the table (with its counters) as JSON."""
    return ["nft", "-j", "list", "table", FAMILY, TABLE]


def dropped_packets(listing: dict[str, object]) -> int:
    """Packets the table's rules dropped, from ``nft -j list table``'s document.

    >>> dropped_packets({"nftables": [{"rule": {"expr": [{"counter": {"packets": 7, "bytes": 420}}, {"drop": None}]}},
    ...                               {"rule": {"expr": [{"counter": {"packets": 2, "bytes": 80}}, {"drop": None}]}}]})
    9
    """
    total = 0
    items = listing.get("nftables", [])
    for item in items if isinstance(items, list) else []:
        rule = item.get("rule") if isinstance(item, dict) else None
        for expr in (rule or {}).get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict) and isinstance(counter.get("packets"), int):
                total += counter["packets"]
    return total
