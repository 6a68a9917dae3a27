"""The seam between the PVE test double and real hosts: what a container's lifecycle does to its host.

Without a backend the double's containers are records in memory. Given one (``dbtier lab`` hands in its
hosts), a container created with a static address ``ip=A/NN`` is the lab host at ``A``, and the power
actions of the API act on that host:

=========================================  ===========================
API call                                   backend call
=========================================  ===========================
``POST /nodes/{node}/lxc`` (create)        ``authorize`` the ``ssh-public-keys``; ``boot`` when ``start=1``
``POST .../status/start``                  ``boot``
``POST .../status/stop``, ``/shutdown``    ``kill`` (power loss)
``POST .../status/suspend``                ``freeze``
``POST .../status/resume``                 ``thaw``
``DELETE .../lxc/{vmid}`` (destroy)        ``kill``, and the container is gone
``GET .../status/current`` and lists       ``running``: the host's real state
=========================================  ===========================

Each call runs as the body of the PVE task the request returns (the task is ``running`` until it
returns; an exception ends the task ``stopped`` with the exception's text as its exit status).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class HostBackend(Protocol):
    """The hosts a double serves as its containers, named as the backend names them."""

    def host_at(self, address: str) -> str | None:
        """The host that has the IPv4 ``address`` (no prefix), or None when no host has it."""
        ...

    def authorize(self, host: str, public_key: str) -> None:
        """Add the OpenSSH public key lines ``public_key`` to ``host``'s root ``authorized_keys`` (idempotent)."""
        ...

    def boot(self, host: str) -> None:
        """Boot ``host`` from its disk; return once its init runs (not waiting for its services). Nothing
        happens when it runs already."""
        ...

    def kill(self, host: str) -> None:
        """Power loss: every process of ``host`` gone at once, its disk kept. Nothing happens when it is down."""
        ...

    def freeze(self, host: str) -> None:
        """Stop every process of ``host`` at once, like a paused VM."""
        ...

    def thaw(self, host: str) -> None:
        """Let a frozen ``host`` run again."""
        ...

    def running(self, host: str) -> bool:
        """True when ``host`` is up (a frozen host is up)."""
        ...
