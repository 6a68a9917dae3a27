"""The provider interface: where members live and how a command reaches them.

Bootstrap code only ever talks to a :class:`Runner`; it never knows whether the
command runs in a local subprocess, over SSH, or inside an LXC container.
A runner runs everything as the cluster's unprivileged OS user.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dbtier.spec import ClusterSpec

if TYPE_CHECKING:
    from dbtier.power import HostPower
    from dbtier.providers.loaders import Loaders
    from dbtier.supervisors import Supervisor


@dataclass(frozen=True)
class Completed:
    """What a finished command left behind."""

    argv: list[str]
    rc: int
    out: str
    err: str


class Runner(ABC):
    """Runs commands and moves files on one host, as the cluster's OS user."""

    host: str

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> Completed:
        """Run ``argv`` to completion; raise ``CommandFailed`` on a non-zero exit when ``check``."""

    @abstractmethod
    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist or cannot be read."""

    @abstractmethod
    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write ``data`` atomically, owned by the OS user, with ``mode``."""

    @abstractmethod
    def make_dirs(self, path: str, mode: int = 0o700) -> None:
        """Create ``path`` and its parents; the leaf is owned by the OS user."""

    def read_files(self, paths: Sequence[str]) -> list[bytes | None]:
        """Each file's bytes, or None where :meth:`read_file` gives None; a remote runner reads them in one round
        trip."""
        return [self.read_file(path) for path in paths]

    def write_files(self, files: Sequence[tuple[str, bytes, int]], dirs: Sequence[tuple[str, int]] = ()) -> None:
        """:meth:`make_dirs` for each ``(path, mode)`` of ``dirs``, then :meth:`write_file` for each ``(path, data,
        mode)`` of ``files``, in that order; a remote runner does them in one round trip."""
        for path, mode in dirs:
            self.make_dirs(path, mode)
        for path, data, mode in files:
            self.write_file(path, data, mode)

    @abstractmethod
    def list_dir(self, path: str) -> list[str] | None:
        """Names in a directory, or None when it does not exist."""

    @abstractmethod
    def remove_tree(self, path: str) -> None:
        """Remove ``path`` and everything below it (no error when absent)."""

    @abstractmethod
    def rename(self, path: str, new_path: str) -> None:
        """Move ``path`` to ``new_path`` on the same file system (atomic); ``new_path`` must not exist."""

    @abstractmethod
    def port_in_use(self, port: int) -> bool:
        """True when something listens on this host's ``port``."""


@runtime_checkable
class RootRunner(Protocol):
    """Runs commands as root on one host of its own (its own kernel and network namespace): what a fault
    on the host's network needs (``nft`` there). The SSH runner is one."""

    host: str

    def run_as_root(self, argv: Sequence[str], *, timeout: float = 900) -> Completed:
        """Run ``argv`` as root on the host; raise ``CommandFailed`` on a non-zero exit."""
        ...


class Provider(ABC):
    """Places members on hosts and hands out a runner per host."""

    name: str

    @abstractmethod
    def runner(self, spec: ClusterSpec, host: str) -> Runner:
        """A runner for ``host``, acting as ``spec.os_user``."""

    @abstractmethod
    def check_host(self, spec: ClusterSpec, host: str) -> list[str]:
        """Problems that stop the cluster from running on ``host`` (unreachable, missing user...), one line each."""

    def supervisor(self, spec: ClusterSpec, host: str) -> Supervisor:
        """Who keeps services running on ``host``: by default detached processes with pid files."""
        from dbtier.supervisors import Processes

        return Processes()

    def host_names(self, spec: ClusterSpec, host: str) -> list[str]:
        """DNS names ``host`` is known by, which its members' certificates carry beside its address: none by
        default (an SSH host's address may itself be a name)."""
        return []

    def installs_packages(self, spec: ClusterSpec) -> bool:
        """True when :meth:`prepare_host` installs what the hosts need (so a missing binary is not yet an error)."""
        return False

    def power(self, spec: ClusterSpec) -> HostPower | None:
        """Whole-host faults (freeze, power loss, boot) for the spec's hosts, where this provider has them."""
        return None

    def root_runner(self, spec: ClusterSpec, host: str) -> RootRunner | None:
        """Root on ``host`` itself, or None where this provider has no host of the member's own (local: every
        member shares this machine). By default: the host's runner, when it can act as root."""
        runner = self.runner(spec, host)
        return runner if isinstance(runner, RootRunner) else None

    def destroy_hosts(self, spec: ClusterSpec) -> list[str]:
        """Destroy the hosts this provider created for the cluster; by default it created none."""
        return [f"provider {self.name}: dbtier did not create these hosts; nothing to destroy"]

    def prepare_host(self, spec: ClusterSpec, host: str) -> str:
        """Install what ``host`` needs (packages, OS user, runtime venv); return a sentence."""
        return f"{host}: nothing to install (the {self.name} provider's hosts are set up by 'make setup')"


def get_provider(spec: ClusterSpec, loaders: Loaders | None = None) -> Provider:
    """The provider the spec names; its SDK is imported only when chosen.

    ``loaders`` say where SSH keys, host-key pins and PVE tokens come from: by default
    :data:`~dbtier.providers.loaders.FILE_LOADERS` (no Prefect); the tasks and flows hand in
    ``blocks.loaders.PREFECT_LOADERS``. The local provider needs none.
    """
    if spec.provider == "local":
        from dbtier.providers.local import LocalProvider

        return LocalProvider()
    from dbtier.providers.loaders import FILE_LOADERS

    if spec.provider == "ssh" and spec.ssh is not None:
        from dbtier.providers.ssh import shared_provider

        return shared_provider(spec.ssh, loaders or FILE_LOADERS)
    if spec.provider == "proxmox" and spec.proxmox is not None:
        from dbtier.providers.proxmox import ProxmoxProvider

        return ProxmoxProvider(spec.proxmox, loaders or FILE_LOADERS)
    raise NotImplementedError(f"provider {spec.provider!r}")  # pragma: no cover - the spec admits only known names


def resolve_addresses(spec: ClusterSpec, *, wait: bool = False, loaders: Loaders | None = None) -> ClusterSpec:
    """``spec`` with the addresses its hosts got at run time filled in, so topology places members there.

    Only Proxmox containers on DHCP have such addresses: they are read from the PVE API (read-only); one
    that does not run yet keeps a placeholder host that the provider treats as absent. ``wait``: the
    containers have just started, wait for their leases. Any other spec comes back as it is, without I/O.
    The API token comes from ``loaders`` (as for :func:`get_provider`).
    """
    if spec.provider == "proxmox" and spec.proxmox is not None and spec.proxmox.uses_dhcp:
        from dbtier.providers.loaders import FILE_LOADERS
        from dbtier.providers.proxmox import learn_leases

        return learn_leases(spec, wait=wait, loaders=loaders or FILE_LOADERS)
    return spec
