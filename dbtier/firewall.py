"""The cluster's own host firewall: one nftables table per cluster on each host of the cluster's own (pure: spec,
host and addresses in, text and argv out).

On a host of the ssh or proxmox provider, ``inet dbtier_fw_<cluster>`` lets only the right sources reach the
ports of the members that live there. The engine names the hosts and each host's ports
(:meth:`~dbtier.engines.base.Engine.firewall_hosts`, :meth:`~dbtier.engines.base.Engine.firewall_ports`); this
module reads no engine's fields:

- client ports (PostgreSQL's, its routes and PgBouncer's; MongoDB's mongod): member addresses, loopback, the
  controller (the machine that runs dbtier), ``firewall.admin_networks`` and ``allowed_client_networks``;
- control ports (Patroni's REST API, etcd client and peer, the exporters): the same but for the client networks.

Every other port, and every other table (the drills' ``inet dbtier_drill``, the host's own), keeps its meaning: the
chain's policy is accept and its only drop names the cluster's ports. The rules live in a file
(:func:`rules_path`) that starts by deleting the table, so ``nft -f`` of it replaces the table in one transaction
(never two copies of a rule); where systemd is the host's init, a oneshot unit (:func:`unit_name`) loads it again at
boot. A host reached at a loopback address is this machine, shared with everything else on it: it gets no firewall.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dbtier.engines.base import HostPorts, get_engine
from dbtier.errors import ProvisionError
from dbtier.spec import ClusterSpec

FAMILY = "inet"
RULES_DIR = "/etc/dbtier"
UNIT_DIR = "/etc/systemd/system"
NFT = "/usr/sbin/nft"
LOOPBACK = ("127.0.0.0/8", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FirewallError(ProvisionError):
    """The host firewall could not be rendered, loaded or removed (the host is named)."""


# -- names ------------------------------------------------------------------------------------------------------


def table_name(cluster: str) -> str:
    """The cluster's table: an nft identifier (cluster names never hold ``_``, so no two clusters share one).

    >>> table_name("orders-eu")
    'dbtier_fw_orders_eu'
    """
    return f"dbtier_fw_{cluster.replace('-', '_')}"


def rules_path(cluster: str) -> str:
    """
    >>> rules_path("orders-eu")
    '/etc/dbtier/firewall-orders-eu.nft'
    """
    return f"{RULES_DIR}/firewall-{cluster}.nft"


def unit_name(cluster: str) -> str:
    """
    >>> unit_name("orders-eu")
    'dbtier-firewall-orders-eu.service'
    """
    return f"dbtier-firewall-{cluster}.service"


# -- who reaches what -------------------------------------------------------------------------------------------


def host_ports(spec: ClusterSpec, host: str) -> HostPorts:
    """The cluster's ports on ``host``, as its engine says (:meth:`Engine.firewall_ports`; PostgreSQL's are in
    :mod:`dbtier.engines.postgres.pg_firewall`).

    >>> host_ports(ClusterSpec(engine="mongodb"), "127.0.0.1")
    HostPorts(clients=(27017, 27018, 27019), control=())
    >>> host_ports(ClusterSpec(engine="mongodb"), "127.0.0.1")
    HostPorts(clients=(27017, 27018, 27019), control=())
    """
    return get_engine(spec).firewall_ports(spec, host)


def cluster_hosts(spec: ClusterSpec) -> list[str]:
    """Every host a service of the cluster listens on, as the spec names it (an address or a DNS name), as its
    engine says."""
    return get_engine(spec).firewall_hosts(spec)


def is_loopback(address: str) -> bool:
    """A host reached at such an address is this machine (it shares this machine's network).

    >>> is_loopback("127.0.0.12"), is_loopback("::1"), is_loopback("localhost"), is_loopback("10.0.0.1")
    (True, True, True, False)
    """
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def controller_address(ssh_connection: str, host: str) -> str:
    """The controller's address from the first field of the host's ``$SSH_CONNECTION`` (an IPv4 address seen
    through an IPv6 socket comes back as IPv4).

    >>> controller_address("198.18.14.1 51234 198.18.14.11 22", "198.18.14.11")
    '198.18.14.1'
    >>> controller_address("::ffff:10.0.0.5", "db1")
    '10.0.0.5'
    >>> controller_address("", "db1")
    Traceback (most recent call last):
    dbtier.firewall.FirewallError: firewall.controller: db1 did not say where this machine's SSH session comes from (no SSH_CONNECTION); set firewall.controller to the address the hosts see this machine at
    """
    first = (ssh_connection.split() or [""])[0]
    try:
        ip = ipaddress.ip_address(first)
    except ValueError:
        raise FirewallError(f"firewall.controller: {host} did not say where this machine's SSH session comes from "
                            f"({'no SSH_CONNECTION' if not first else repr(first)}); set firewall.controller to the "
                            "address the hosts see this machine at") from None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


@dataclass(frozen=True)
class Sources:
    """Who reaches the cluster's ports on a host: ``control`` every port, ``clients`` the client ports only."""

    control: tuple[Network, ...]
    clients: tuple[Network, ...]


def _networks(items: Iterable[str], field: str) -> list[Network]:
    nets: list[Network] = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise FirewallError(f"{field}: {item!r} is not an IP address or network; the firewall matches "
                                "addresses, so name the hosts by address (or set firewall.enabled: false)") from None
    return nets


def _collapsed(nets: Iterable[Network]) -> tuple[Network, ...]:
    """Each family merged into disjoint networks (an nft interval set refuses overlaps), IPv4 first."""
    nets = list(nets)
    v4 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))
    return (*v4, *v6)


def sources(spec: ClusterSpec, members: Iterable[str], controller: str) -> Sources:
    """``members``: the addresses of every host of the cluster; ``controller``: the machine that runs dbtier.

    >>> found = sources(ClusterSpec(allowed_client_networks=["198.18.14.0/24"]), ["198.18.14.12", "198.18.14.11"],
    ...                 "198.18.14.1")
    >>> [str(n) for n in found.control]
    ['127.0.0.0/8', '198.18.14.1/32', '198.18.14.11/32', '198.18.14.12/32', '::1/128']
    >>> [str(n) for n in found.clients]
    ['127.0.0.0/8', '198.18.14.0/24', '::1/128']
    """
    control = [*_networks(LOOPBACK, "firewall"), *_networks(members, "hosts"),
               *_networks([controller], "firewall.controller"),
               *_networks(spec.firewall.admin_networks, "firewall.admin_networks")]
    clients = [*control, *_networks(spec.allowed_client_networks, "allowed_client_networks")]
    return Sources(_collapsed(control), _collapsed(clients))


# -- the rules --------------------------------------------------------------------------------------------------


def _set(items: Iterable[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def _accepts(nets: Sequence[Network], ports: Sequence[int]) -> list[str]:
    """One accept per address family that has sources: ``ip saddr { ... } tcp dport { ... } accept``."""
    if not ports:
        return []
    rules = []
    for family, version in (("ip", 4), ("ip6", 6)):
        chosen = [n for n in nets if n.version == version]
        if chosen:
            rules.append(f"{family} saddr {_set(chosen)} tcp dport {_set(ports)} accept")
    return rules


def input_rules(ports: HostPorts, found: Sources) -> list[str]:
    """The input chain's rules: loopback, then the accepts, then the one drop of the cluster's ports.

    >>> found = Sources(tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.11/32", "::1/128")),
    ...                 tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/24", "127.0.0.0/8", "::1/128")))
    >>> for rule in input_rules(HostPorts((5432,), (2379, 2380, 8008)), found):
    ...     print(rule)
    iif "lo" accept
    ip saddr { 127.0.0.0/8, 10.0.0.11/32 } tcp dport { 2379, 2380, 5432, 8008 } accept
    ip6 saddr { ::1/128 } tcp dport { 2379, 2380, 5432, 8008 } accept
    ip saddr { 10.0.0.0/24, 127.0.0.0/8 } tcp dport { 5432 } accept
    ip6 saddr { ::1/128 } tcp dport { 5432 } accept
    tcp dport { 2379, 2380, 5432, 8008 } counter drop

    Without control ports the clients' accept covers every source (the client sources hold the control ones):

    >>> for rule in input_rules(HostPorts((27017,), ()), found):
    ...     print(rule)
    iif "lo" accept
    ip saddr { 10.0.0.0/24, 127.0.0.0/8 } tcp dport { 27017 } accept
    ip6 saddr { ::1/128 } tcp dport { 27017 } accept
    tcp dport { 27017 } counter drop
    """
    every = ports.every
    if not every:
        return []
    wider = found.clients != found.control
    control = _accepts(found.control, every) if ports.control or not wider else []
    clients = _accepts(found.clients, ports.clients) if wider else []
    return ['iif "lo" accept', *control, *clients, f"tcp dport {_set(every)} counter drop"]


def ruleset(spec: ClusterSpec, host: str, members: Iterable[str], controller: str) -> str:
    """The file ``nft -f`` loads on ``host``: it deletes the cluster's table and makes it anew, in one transaction.

    >>> text = ruleset(ClusterSpec(name="orders", provider="local"), "127.0.0.1", ["127.0.0.1"], "127.0.0.1")
    >>> print("\\n".join(text.splitlines()[:7]))
    # dbtier firewall of cluster orders on 127.0.0.1; 'dbtier teardown' removes it
    add table inet dbtier_fw_orders
    delete table inet dbtier_fw_orders
    table inet dbtier_fw_orders {
      comment "dbtier firewall of cluster orders"
      chain input {
        type filter hook input priority filter; policy accept;
    """
    table = table_name(spec.name)
    rules = input_rules(host_ports(spec, host), sources(spec, members, controller))
    return "\n".join([
        f"# dbtier firewall of cluster {spec.name} on {host}; 'dbtier teardown' removes it",
        f"add table {FAMILY} {table}",
        f"delete table {FAMILY} {table}",
        f"table {FAMILY} {table} {{",
        f'  comment "dbtier firewall of cluster {spec.name}"',
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        *(f"    {r}" for r in rules),
        "  }",
        "}",
        "",
    ])


def render_unit(cluster: str) -> str:
    """The oneshot unit that loads the rules at boot, before the network and after nftables.service (whose
    ``flush ruleset`` would delete them).

    >>> [line for line in render_unit("orders").splitlines() if line.startswith(("ExecStart=", "WantedBy="))]
    ['ExecStart=/usr/sbin/nft -f /etc/dbtier/firewall-orders.nft', 'WantedBy=sysinit.target']
    """
    return "\n".join([
        f"# Written by dbtier for cluster {cluster}: its host firewall. 'dbtier teardown' removes it.",
        "[Unit]",
        f"Description=dbtier {cluster}: host firewall (nft table {FAMILY} {table_name(cluster)})",
        "DefaultDependencies=no",
        "Wants=network-pre.target",
        "Before=network-pre.target shutdown.target",
        "After=nftables.service",
        "Conflicts=shutdown.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={NFT} -f {rules_path(cluster)}",
        "",
        "[Install]",
        "WantedBy=sysinit.target",
        "",
    ])


def rule_count(listing: dict[str, object]) -> int:
    """Rules in the table, from ``nft -j list table``'s document.

    >>> rule_count({"nftables": [{"metainfo": {}}, {"table": {}}, {"chain": {}}, {"rule": {}}, {"rule": {}}]})
    2
    """
    items = listing.get("nftables", [])
    return sum(1 for item in items if isinstance(item, dict) and "rule" in item) if isinstance(items, list) else 0


# -- commands (run as root on the host) -------------------------------------------------------------------------

#: The first field of the session's SSH_CONNECTION: this shell's own, or (under sudo, which drops it) that of the
#: nearest ancestor that has it (the login shell).
LEARN_SCRIPT = r"""
c=${SSH_CONNECTION:-}
p=$$
while [ -z "$c" ] && [ "${p:-1}" -gt 1 ]; do
  p=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status 2>/dev/null)
  [ -n "$p" ] || break
  c=$(tr '\0' '\n' </proc/$p/environ 2>/dev/null | sed -n 's/^SSH_CONNECTION=//p')
done
echo "$c"
"""

#: ``$1`` table, ``$2`` rules file, ``$3`` rules, ``$4`` unit name, ``$5`` unit text. Loads the rules first (a
#: failed load changes nothing: the old table and file stay), then keeps the file and, under systemd, the unit.
#: Prints ``systemd`` or ``no-systemd``, then the table as JSON.
APPLY_SCRIPT = r"""
set -eu
table=$1; file=$2; rules=$3; unit=$4; text=$5
command -v nft >/dev/null || { echo "nft is not installed on this host" >&2; exit 127; }
mkdir -p -m 755 "$(dirname "$file")"
tmp="$file.dbtier-tmp"
trap 'rm -f "$tmp"' EXIT
printf '%s' "$rules" >"$tmp"
nft -f "$tmp"
chmod 644 "$tmp"; mv -f "$tmp" "$file"
if test -d /run/systemd/system; then
  path=/etc/systemd/system/$unit
  if ! printf '%s' "$text" | cmp -s - "$path"; then
    printf '%s' "$text" >"$path.dbtier-tmp"; chmod 644 "$path.dbtier-tmp"; mv -f "$path.dbtier-tmp" "$path"
    systemctl daemon-reload
  fi
  systemctl enable --quiet "$unit"
  echo systemd
else
  echo no-systemd
fi
nft -j list table inet "$table"
"""

#: ``$1`` table, ``$2`` rules file, ``$3`` unit name. Prints what it removed: ``table``, ``file``, ``unit``.
REMOVE_SCRIPT = r"""
table=$1; file=$2; unit=$3
path=/etc/systemd/system/$unit
if test -e "$path"; then
  if test -d /run/systemd/system; then systemctl disable --quiet "$unit" >/dev/null 2>&1 || true; fi
  rm -f "$path"
  if test -d /run/systemd/system; then systemctl daemon-reload; systemctl reset-failed "$unit" >/dev/null 2>&1 || true; fi
  echo unit
fi
if test -e "$file"; then rm -f "$file"; echo file; fi
if command -v nft >/dev/null && nft list table inet "$table" >/dev/null 2>&1; then nft delete table inet "$table"; echo table; fi
true
"""


def learn_argv() -> list[str]:
    return ["sh", "-c", LEARN_SCRIPT]


def apply_argv(cluster: str, rules: str) -> list[str]:
    """
    >>> argv = apply_argv("orders", "add table inet dbtier_fw_orders")
    >>> argv[:2], argv[3:6], argv[6]
    (['sh', '-c'], ['sh', 'dbtier_fw_orders', '/etc/dbtier/firewall-orders.nft'], 'add table inet dbtier_fw_orders')
    """
    return ["sh", "-c", APPLY_SCRIPT, "sh", table_name(cluster), rules_path(cluster), rules, unit_name(cluster),
            render_unit(cluster)]


def list_argv(cluster: str) -> list[str]:
    """The root command that prints the cluster's table as JSON (it fails when there is none)."""
    return ["nft", "-j", "list", "table", FAMILY, table_name(cluster)]


def remove_argv(cluster: str) -> list[str]:
    return ["sh", "-c", REMOVE_SCRIPT, "sh", table_name(cluster), rules_path(cluster), unit_name(cluster)]


def removed_sentence(cluster: str, host: str, said: Iterable[str]) -> str:
    """
    >>> removed_sentence("orders", "db1", ["unit", "file", "table"])
    'db1: firewall removed: nft table inet dbtier_fw_orders, /etc/dbtier/firewall-orders.nft, unit dbtier-firewall-orders.service'
    >>> removed_sentence("orders", "db1", [])
    'db1: no firewall of orders to remove'
    """
    found = set(said)
    parts = [what for key, what in (("table", f"nft table {FAMILY} {table_name(cluster)}"),
                                    ("file", rules_path(cluster)), ("unit", f"unit {unit_name(cluster)}"))
             if key in found]
    return f"{host}: firewall removed: {', '.join(parts)}" if parts else f"{host}: no firewall of {cluster} to remove"
