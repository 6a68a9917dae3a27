"""Power over whole hosts, as a hypervisor or a lab has it: pause, resume, cut, boot.

Drills that act on a host rather than on a process (``host-freeze``, ``host-crash``) need
this; a provider offers it through :meth:`dbtier.providers.base.Provider.power` (the proxmox
provider through the PVE API, the ssh provider on a ``dbtier lab``), or not at all. Every
method takes the host's address as the spec names it and returns a sentence saying what it did.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class HostPower(ABC):
    """Whole-host faults for one set of hosts."""

    @abstractmethod
    def freeze(self, host: str) -> str:
        """Stop every process of ``host`` at once, like a paused VM (its network stays up)."""

    @abstractmethod
    def thaw(self, host: str) -> str:
        """Let a frozen ``host`` run again."""

    @abstractmethod
    def kill(self, host: str) -> str:
        """Power loss: every process of ``host`` and its kernel state (sockets, firewall rules) gone at once;
        its disk stays."""

    @abstractmethod
    def boot(self, host: str, timeout: float = 180) -> str:
        """Boot a killed ``host`` from its disk; return once its sshd answers (its enabled units start)."""
