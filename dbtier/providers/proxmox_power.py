"""Whole-container faults through the PVE API, for the host drills of the proxmox provider.

Each :class:`~dbtier.power.HostPower` method is one power call on the container at the member's
address, its task (UPID) waited on:

======== =========================================== ==========
method   PVE API call                                 task type
======== =========================================== ==========
freeze   ``POST /nodes/{node}/lxc/{vmid}/status/suspend``  vzsuspend
thaw     ``POST /nodes/{node}/lxc/{vmid}/status/resume``   vzresume
kill     ``POST /nodes/{node}/lxc/{vmid}/status/stop``     vzstop
boot     ``POST /nodes/{node}/lxc/{vmid}/status/start``    vzstart
======== =========================================== ==========

``stop`` ends every process of the container at once (PVE: "abruptly"), which is power loss to its
members; ``boot`` then waits until the container's sshd answers. Only containers that carry the
cluster's dbtier tags are touched. PVE calls its container suspend experimental: try it on your PVE
version before a drill relies on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dbtier.power import HostPower
from dbtier.providers import proxmox_api as pve
from dbtier.providers.proxmox import container_hostname, container_of, wait_for_ssh
from dbtier.spec import ClusterSpec, ProxmoxSettings


@dataclass(frozen=True)
class PowerCall:
    """One HostPower method as the PVE API does it."""

    endpoint: str  # below /nodes/{node}/lxc/{vmid}/status/
    doing: str  # for the error line: "suspending CT 300 on pve1: ..."
    done: str  # for the sentence: "CT 300 (pg) on pve1 suspended in 0.2 s"


#: HostPower method -> PVE power call.
POWER_CALLS = {
    "freeze": PowerCall("suspend", "suspending", "suspended (every process paused)"),
    "thaw": PowerCall("resume", "resuming", "resumed"),
    "kill": PowerCall("stop", "stopping", "stopped at once (power cut)"),
    "boot": PowerCall("start", "starting", "started"),
}


def power_sentence(host: str, ct: pve.ContainerRef, call: PowerCall, seconds: float) -> str:
    """What one power call did.

    >>> power_sentence("10.0.0.5", pve.ContainerRef("pve1", 300, "pg", "running"), POWER_CALLS["kill"], 0.42)
    '10.0.0.5: CT 300 (pg) on pve1 stopped at once (power cut) in 0.4 s'
    """
    return f"{host}: CT {ct.vmid} ({ct.hostname}) on {ct.node} {call.done} in {seconds:.1f} s"


def post_power(client: pve.Client, ct: pve.ContainerRef, call: PowerCall, *, timeout: float,
               poll: float = 1.0) -> None:
    """Make the power call on ``ct`` and wait for its task to end (raise when it fails)."""
    with pve._api(f"{call.doing} CT {ct.vmid} on {ct.node}"):
        upid = getattr(client.nodes(ct.node).lxc(ct.vmid).status, call.endpoint).post()
    pve.wait_for_task(client, upid, timeout=timeout, poll=poll)


class ProxmoxPower(HostPower):
    """Power over the containers of ``spec`` (hosts named by their addresses, as the spec places members).

    ``client`` is called for the API client at the first call, so making this object does no I/O.
    """

    def __init__(self, spec: ClusterSpec, client: Callable[[], pve.Client], *, poll: float = 1.0) -> None:
        if spec.proxmox is None:
            raise pve.ProxmoxError("proxmox: missing; power over containers needs the spec's proxmox section")
        self.spec = spec
        self.settings: ProxmoxSettings = spec.proxmox
        self._client = client
        self._poll = poll

    def container(self, host: str) -> pve.ContainerRef:
        """The container at ``host``, only when it exists and dbtier created it for this cluster."""
        index, entry = container_of(self.spec, host)
        owner = self.spec.host_owner
        hostname = container_hostname(owner, self.settings.layout, index)
        found = pve.find_container(self._client(), vmid=entry.vmid)
        if found is None:
            raise pve.ProxmoxError(f"proxmox.containers[{index}]: CT {entry.vmid} ({hostname}) does not exist; "
                                   "provision creates it")
        if not pve.owned_by(found.tags, owner):
            raise pve.ProxmoxError(f"proxmox.containers[{index}]: CT {found.vmid} on {found.node} lacks the tags "
                                   f"{';'.join(pve.owner_tags(owner))}; dbtier powers only containers it created "
                                   "for the cluster (fix the vmid)")
        return found

    def _power(self, method: str, host: str) -> tuple[pve.ContainerRef, str]:
        call = POWER_CALLS[method]
        ct = self.container(host)
        began = time.monotonic()
        post_power(self._client(), ct, call, timeout=self.settings.task_timeout_s, poll=self._poll)
        return ct, power_sentence(host, ct, call, time.monotonic() - began)

    def freeze(self, host: str) -> str:
        return self._power("freeze", host)[1]

    def thaw(self, host: str) -> str:
        return self._power("thaw", host)[1]

    def kill(self, host: str) -> str:
        return self._power("kill", host)[1]

    def boot(self, host: str, timeout: float = 180) -> str:
        """Start the container, then wait (up to ``timeout`` s) for its address, on DHCP, and its sshd."""
        ct, said = self._power("boot", host)
        _, entry = container_of(self.spec, host)
        address = pve.container_address(self._client(), ct, timeout=timeout) if entry.dhcp else host
        if address != host:
            said += f"; DHCP gave it {address} this time (it had {host})"
        waited = wait_for_ssh(address, self.settings.ssh_port, timeout)
        return f"{said}; SSH answered after {waited:.1f} s"
