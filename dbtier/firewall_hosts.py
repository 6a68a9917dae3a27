"""Loading and removing the cluster's host firewall (:mod:`dbtier.firewall`) as root on each of its hosts.

Only hosts of the cluster's own get one: those a provider gives root on (:meth:`Provider.root_runner`) and that
are not this machine (a loopback address). The controller's address is ``firewall.controller`` or, by default,
what each host's SSH session says it comes from. Every step returns sentences.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

from dbtier import firewall
from dbtier.errors import CommandFailed
from dbtier.firewall import FirewallError
from dbtier.providers.base import Completed, Provider, RootRunner
from dbtier.spec import ClusterSpec

Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """The addresses of ``host``: itself when it is one, else what this machine's resolver says."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as err:
        raise FirewallError(f"hosts: {host} does not resolve ({err.strerror}); name it by address, or set "
                            "firewall.enabled: false") from None
    return sorted({str(info[4][0]) for info in infos})


def _own_root(provider: Provider, spec: ClusterSpec, host: str, resolver: Resolver) -> RootRunner | str:
    """Root on ``host``, or the sentence that says why it gets no firewall (a host that does not run yet has none
    to give, and is not resolved)."""
    shared = f"firewall: {host} is this machine (a loopback address), shared with everything else on it: no firewall"
    if firewall.is_loopback(host):
        return shared
    root = provider.root_runner(spec, host)
    if root is None:
        return f"firewall: {host} is not a host of the cluster's own under provider {provider.name}: no firewall"
    return shared if any(firewall.is_loopback(a) for a in resolver(host)) else root


def _run(root: RootRunner, argv: list[str], doing: str) -> Completed:
    try:
        return root.run_as_root(argv, timeout=120)
    except CommandFailed as err:
        said = [line.strip() for line in (err.err or err.out).splitlines() if line.strip()]
        why = next((line for line in said if "Error:" in line), said[-1] if said else f"exit code {err.rc}")
        raise FirewallError(f"{root.host}: {doing} the firewall's nft table failed ({why}); the host needs nftables "
                            "(scripts/host-setup.sh installs it), or set firewall.enabled: false") from None


def _controller(spec: ClusterSpec, root: RootRunner) -> str:
    if spec.firewall.controller:
        return spec.firewall.controller
    return firewall.controller_address(_run(root, firewall.learn_argv(), "learning the controller for").out, root.host)


def apply(provider: Provider, spec: ClusterSpec, resolver: Resolver = resolve) -> list[str]:
    """Load the cluster's table on each host of its own (replacing the one there); with ``firewall.enabled``
    false, remove one left from before. One sentence per host."""
    if not spec.firewall.enabled:
        return [f"firewall.enabled is false: {s}" for s in remove(provider, spec, resolver)]
    if provider.name == "local":
        return ["firewall: provider local runs every member on this machine, shared with everything else on it: no "
                "host firewall (it guards the hosts of the ssh and proxmox providers)"]
    roots = {h: _own_root(provider, spec, h, resolver) for h in firewall.cluster_hosts(spec)}
    members = sorted({a for h in roots for a in resolver(h)})
    said = []
    for host, root in roots.items():
        if isinstance(root, str):
            said.append(root)
            continue
        rules = firewall.ruleset(spec, host, members, _controller(spec, root))
        done = _run(root, firewall.apply_argv(spec.name, rules), "loading")
        boot, _, listing = done.out.strip().partition("\n")
        try:
            count = firewall.rule_count(json.loads(listing))
        except ValueError:
            raise FirewallError(f"{host}: 'nft -j list table' did not print JSON after loading the firewall; "
                                "check the host's nftables") from None
        table = f"{firewall.FAMILY} {firewall.table_name(spec.name)}"
        kept = f"{firewall.unit_name(spec.name)} loads it at boot" if boot == "systemd" else \
            "no systemd here: provision loads it again after a reboot"
        said.append(f"firewall: {count} rules on {host} (nft table {table}; {kept})")
    return said


def remove(provider: Provider, spec: ClusterSpec, resolver: Resolver = resolve) -> list[str]:
    """Delete the cluster's table, its rules file and its unit on each host of its own; one sentence per such host."""
    said = []
    for host in firewall.cluster_hosts(spec):
        root = _own_root(provider, spec, host, resolver)
        if isinstance(root, str):
            continue
        done = _run(root, firewall.remove_argv(spec.name), "removing")
        said.append(firewall.removed_sentence(spec.name, host, done.out.split()))
    return said


def status(provider: Provider, spec: ClusterSpec, resolver: Resolver = resolve) -> list[str]:
    """``firewall: N rules on <host>`` (or ``none``) for each host of the cluster's own; changes nothing."""
    said = []
    for host in firewall.cluster_hosts(spec):
        root = _own_root(provider, spec, host, resolver)
        if isinstance(root, str):
            continue
        try:
            listing = root.run_as_root(firewall.list_argv(spec.name), timeout=60).out
            said.append(f"firewall: {firewall.rule_count(json.loads(listing))} rules on {host}")
        except (CommandFailed, ValueError):
            said.append(f"firewall: none on {host}")
    return said
