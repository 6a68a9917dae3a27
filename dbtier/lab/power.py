"""The lab's hosts as a hypervisor sees them: whole-host faults for drills, and the PVE double's backend.

- :class:`LabPower` is the :class:`~dbtier.power.HostPower` the ssh provider offers for a spec whose
  ``ssh.lab`` names a lab (the lab's ssh spec does): freeze is ``cgroup.freeze`` of the host's cgroup,
  power loss is ``cgroup.kill`` (its namespaces die with it), boot starts its launcher again on the same disk.
- :class:`LabHosts` is the :class:`~dbtier.lab.pve.backend.HostBackend` the PVE double runs on when the lab
  serves its hosts as containers (``backend_for`` is the factory ``python -m dbtier.lab.pve`` is given).
"""

from __future__ import annotations

import os
from pathlib import Path

from dbtier.errors import Refused
from dbtier.lab import lab
from dbtier.lab.lab import LabState
from dbtier.lab.plan import LabHost
from dbtier.power import HostPower


def _state(name: str) -> LabState:
    state = LabState.load(name)
    if state is None:
        raise Refused(f"ssh.lab: no lab {name!r} on this machine; bring it up with `dbtier lab up --name {name}`")
    return state


class LabHosts:
    """A lab's hosts by name; every call reads the lab's state afresh (another process may have booted a host)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _host(self, key: str) -> tuple[LabState, LabHost]:
        state = _state(self.name)
        return state, state.plan.host(key)

    def host_at(self, address: str) -> str | None:
        state = _state(self.name)
        return next((h.name for h in state.plan.hosts if h.address == address), None)

    def authorize(self, host: str, public_key: str) -> None:
        state, found = self._host(host)
        path = _on_host(state, found, "/etc/dbtier-lab/authorized_keys")
        have = path.read_text() if path.exists() else ""
        lines = [line for line in public_key.splitlines() if line.strip() and line.strip() not in have]
        if lines:
            path.write_text(have + "".join(f"{line.strip()}\n" for line in lines))

    def boot(self, host: str) -> None:
        state, found = self._host(host)
        if not lab.host_running(state, found):
            lab.boot_host(state, found, wait=True)

    def kill(self, host: str) -> None:
        state, found = self._host(host)
        lab.kill(state, found)

    def freeze(self, host: str) -> None:
        state, found = self._host(host)
        lab.freeze(state, found)

    def thaw(self, host: str) -> None:
        state, found = self._host(host)
        lab.thaw(state, found)

    def running(self, host: str) -> bool:
        state, found = self._host(host)
        return lab.host_running(state, found)


def _on_host(state: LabState, host: LabHost, path: str) -> Path:
    """``path`` as the host sees it: through its PID 1's root while it runs, else on its disk."""
    for pid in lab.cgroup_pids(state.cgroup(host)):
        try:
            inside = os.readlink(f"/proc/{pid}/root") != "/"  # the launcher's child is not chrooted yet
        except OSError:
            continue
        if inside:
            return Path(f"/proc/{pid}/root{path}")
    return state.host_dir(host) / "upper" / path.lstrip("/")


def backend_for(name: str) -> LabHosts:
    """The factory ``python -m dbtier.lab.pve --backend dbtier.lab.power:backend_for --lab NAME`` calls."""
    _state(name)
    return LabHosts(name)


class LabPower(HostPower):
    """Whole-host faults on a lab's hosts, by the address the spec names."""

    def __init__(self, name: str) -> None:
        self.hosts = LabHosts(name)

    def _name(self, address: str) -> str:
        found = self.hosts.host_at(address)
        if found is None:
            raise Refused(f"ssh.lab: {address} is not a host of lab {self.hosts.name}")
        return found

    def freeze(self, host: str) -> str:
        state, found = self.hosts._host(self._name(host))
        return lab.freeze(state, found)

    def thaw(self, host: str) -> str:
        state, found = self.hosts._host(self._name(host))
        return lab.thaw(state, found)

    def kill(self, host: str) -> str:
        state, found = self.hosts._host(self._name(host))
        return lab.kill(state, found)

    def boot(self, host: str, timeout: float = 180) -> str:
        state, found = self.hosts._host(self._name(host))
        if lab.host_running(state, found):
            return f"{found.name}: already running"
        lab.boot_host(state, found, wait=False)
        lab.wait_ssh(state, found, limit=timeout)
        return f"{found.name}: booted from its disk"
