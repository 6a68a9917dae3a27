"""The Proxmox provider: members in LXC containers that dbtier creates, reached over SSH.

The Proxmox API (:mod:`dbtier.providers.proxmox_api`, proxmoxer) only finds, creates, starts
and destroys containers. Everything inside a container goes through the SSH provider, so the
same bootstrap code serves every provider. A container with a static address in the spec is
placed before it exists (:func:`dbtier.topology.member_host`); one on DHCP is placed at
:func:`~dbtier.spec.pending_host` (treated as absent) until :func:`learn_leases` reads its address
from the PVE API once it runs.

Known LXC traps: an unprivileged container cannot change transparent huge pages, the I/O
scheduler of a block device or the ``kernel.shm*`` sysctls (they belong to the PVE host's
kernel). dbtier sets none of them; tune them on the host if a workload needs it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping, Sequence

from dbtier.errors import PreflightError, ProvisionError
from dbtier.power import HostPower
from dbtier.providers import proxmox_api as pve
from dbtier.providers.base import Completed, Provider, Runner
from dbtier.providers.loaders import FILE_LOADERS, Loaders, PVEToken, public_key_line
from dbtier.providers.ssh import SSHProvider, shared_provider
from dbtier.supervisors import Processes, Supervisor
from dbtier.spec import ClusterSpec, ProxmoxContainer, ProxmoxSettings, SSHHost, SSHSettings

# -- pure helpers ----------------------------------------------------------------------------------


def container_hostname(cluster: str, layout: str, index: int) -> str:
    """The hostname of container ``index``: the cluster's name, numbered when there is one per member.

    >>> container_hostname("orders", "single", 0), container_hostname("orders", "per-member", 2)
    ('orders', 'orders-2')
    """
    return cluster if layout == "single" else f"{cluster}-{index}"


def ssh_settings(settings: ProxmoxSettings) -> SSHSettings:
    """How the SSH provider reaches the containers: their addresses, the user and key of the spec."""
    return SSHSettings(
        hosts=[SSHHost(address=ct.ip, port=settings.ssh_port) for ct in settings.containers],
        user=settings.ssh_user,
        credentials_block=settings.ssh_credentials_block,
        key_file=settings.ssh_key_file,
        connect_timeout=settings.connect_timeout,
        install_packages=True,
    )


def container_plan(spec: ClusterSpec, index: int, public_key: str, *, storage: str, bridge: str,
                   template: str) -> pve.ContainerPlan:
    """The container ``containers[index]`` as the API creates it; the spec's storage, bridge and
    template win over the ones given (those of the credentials block)."""
    settings = _settings(spec)
    ct = settings.containers[index]
    return pve.ContainerPlan(
        hostname=container_hostname(spec.host_owner, settings.layout, index),
        cluster=spec.host_owner,
        ostemplate=settings.template or template,
        ssh_public_key=public_key,
        vmid=ct.vmid,
        storage=settings.storage or storage,
        bridge=settings.bridge or bridge,
        cores=settings.cores,
        memory_mb=settings.memory_mb,
        swap_mb=settings.swap_mb,
        rootfs_gb=settings.rootfs_gb,
        ipv4=None if ct.dhcp else pve.StaticIPv4(ct.address, ct.gateway),
    )


def container_of(spec: ClusterSpec, host: str) -> tuple[int, ProxmoxContainer]:
    """The index and entry of the container at address ``host``."""
    for index, ct in enumerate(_settings(spec).containers):
        if ct.ip == host:
            return index, ct
    raise ProvisionError(f"proxmox.containers: no container has the address {host}")


def with_leases(spec: ClusterSpec, leases: Mapping[int, str | None]) -> ClusterSpec:
    """``spec`` with ``leases`` (container index -> address, None: not known) as the addresses of its
    DHCP containers; the others keep theirs. Static containers are left as they are."""
    settings = _settings(spec)
    containers = [ct.model_copy(update={"lease": leases[i]}) if ct.dhcp and i in leases else ct
                  for i, ct in enumerate(settings.containers)]
    return spec.model_copy(update={"proxmox": settings.model_copy(update={"containers": containers})})


def _settings(spec: ClusterSpec) -> ProxmoxSettings:
    if spec.proxmox is None:  # pragma: no cover - the spec refuses provider proxmox without it
        raise PreflightError("proxmox: missing")
    return spec.proxmox


def wait_for_ssh(host: str, port: int, timeout: float, poll: float = 1.0) -> float:
    """Wait until ``host:port`` greets with an SSH banner; return the seconds it took."""
    began = time.monotonic()
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout)) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return time.monotonic() - began
        except OSError:
            pass
        if time.monotonic() - began >= timeout:
            raise ProvisionError(f"proxmox: {host}:{port} did not answer SSH within {timeout:g} s of the container "
                                 "starting; check its address, its bridge and that the template runs sshd")
        time.sleep(poll)


def learn_leases(spec: ClusterSpec, *, wait: bool = False, client: pve.Client | None = None,
                 loaders: Loaders = FILE_LOADERS) -> ClusterSpec:
    """``spec`` with the addresses its running DHCP containers hold, read from the PVE API (read-only).

    A container that does not exist or run (or is not this cluster's) stays pending. ``wait``: the
    containers have just started; wait up to ``dhcp_wait_s`` for each one's lease, else fail naming it.
    Without ``client``, the API token comes from ``loaders``.
    """
    settings = _settings(spec)
    if client is None:
        client = loaders.pve_token(settings).get_client()
    running = {ref.vmid: ref for ref in pve.list_containers(client)
               if ref.status == "running" and pve.owned_by(ref.tags, spec.host_owner)}
    leases: dict[int, str | None] = {}
    for index, ct in enumerate(settings.containers):
        if not ct.dhcp:
            continue
        ref = running.get(ct.vmid)
        if ref is None:
            leases[index] = None
        elif wait:
            leases[index] = pve.container_address(client, ref, timeout=settings.dhcp_wait_s)
        else:
            leases[index] = pve.read_address(client, ref)
    return with_leases(spec, leases)


# -- a container that does not run yet --------------------------------------------------------------


class AbsentHost(Runner):
    """The runner of a container that does not exist or run yet: nothing is there to read or stop.

    It lets the flows look before they create (inspect, preflight, teardown); any change fails.
    """

    def __init__(self, host: str, why: str) -> None:
        self.host = host
        self.why = why

    def _refuse(self) -> ProvisionError:
        return ProvisionError(f"{self.host}: {self.why}; provision creates and starts it first")

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120,
            check: bool = True) -> Completed:
        if check:
            raise self._refuse()
        return Completed(list(argv), 255, "", self.why)

    def read_file(self, path: str) -> bytes | None:
        return None

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        raise self._refuse()

    def make_dirs(self, path: str, mode: int = 0o700) -> None:
        raise self._refuse()

    def list_dir(self, path: str) -> list[str] | None:
        return None

    def remove_tree(self, path: str) -> None:
        return None

    def rename(self, path: str, new_path: str) -> None:
        raise self._refuse()

    def port_in_use(self, port: int) -> bool:
        return False


# -- the provider ----------------------------------------------------------------------------------


class ProxmoxProvider(Provider):
    """Members in the containers listed in ``spec.proxmox``; inside them, the SSH provider does the work.
    The API token, the SSH key and the host-key pins come from ``loaders``."""

    name = "proxmox"

    def __init__(self, settings: ProxmoxSettings, loaders: Loaders = FILE_LOADERS) -> None:
        self.settings = settings
        self.loaders = loaders
        self.ssh_settings = ssh_settings(settings)
        self.ssh: SSHProvider = shared_provider(self.ssh_settings, loaders)
        self._token: PVEToken | None = None
        self._client: pve.Client = None
        self._running: set[str] = set()  # addresses whose container is known to run

    # the token and its client, loaded once per provider (a provider lives for one task)

    def credentials(self) -> PVEToken:
        if self._token is None:
            self._token = self.loaders.pve_token(self.settings)
        return self._token

    def client(self) -> pve.Client:
        if self._client is None:
            self._client = self.credentials().get_client()
        return self._client

    def inner(self, spec: ClusterSpec) -> ClusterSpec:
        """``spec`` as the SSH provider reads it: its ``ssh`` section points at the containers."""
        return spec.model_copy(update={"ssh": ssh_settings(_settings(spec))})

    def _found(self, spec: ClusterSpec, host: str) -> pve.ContainerRef | None:
        index, ct = container_of(spec, host)
        hostname = container_hostname(spec.host_owner, self.settings.layout, index)
        return pve.find_container(self.client(), vmid=ct.vmid, hostname=hostname)

    def _is_running(self, spec: ClusterSpec, host: str) -> bool:
        if host not in self._running:
            found = self._found(spec, host)
            if found is not None and found.status == "running" and pve.owned_by(found.tags, spec.host_owner):
                self._running.add(host)
        return host in self._running

    # the Provider interface

    def runner(self, spec: ClusterSpec, host: str) -> Runner:
        _, ct = container_of(spec, host)
        if ct.pending:
            return AbsentHost(host, f"CT {ct.vmid} on {ct.node} does not run yet or has no DHCP address yet")
        if self._is_running(spec, host):
            return self.ssh.runner(self.inner(spec), host)
        return AbsentHost(host, f"CT {ct.vmid} on {ct.node} does not run yet")

    def supervisor(self, spec: ClusterSpec, host: str) -> Supervisor:
        """Inside a running container, as on any SSH host: systemd units where systemd is its init."""
        if isinstance(self.runner(spec, host), AbsentHost):
            return Processes()
        return self.ssh.supervisor(self.inner(spec), host)

    def check_host(self, spec: ClusterSpec, host: str) -> list[str]:
        """API reachable with this token, the node exists, the vmid is free or ours; then SSH when it runs."""
        index, ct = container_of(spec, host)
        where = f"proxmox.containers[{index}]"
        try:
            pve.check_node(self.client(), ct.node)
            found = self._found(spec, host)
        except pve.ProxmoxError as err:
            said = err.one_line()
            if err.status is None and said.startswith("node: "):  # not a node of the cluster: the spec names it
                return [f"{where}.{said.split('; fix')[0]}; use one of those nodes"]
            return [said]
        if found is None or found.status != "running":
            return []  # prepare_host creates or starts it
        if not pve.owned_by(found.tags, spec.host_owner):
            return [f"{where}: CT {found.vmid} ({found.hostname!r} on {found.node}) already exists and dbtier did not "
                    f"create it for cluster {spec.host_owner}; choose another vmid"]
        if ct.pending:
            return []  # running, its DHCP address not read yet: prepare_host waits for it
        self._running.add(host)
        return self.ssh.check_host(self.inner(spec), host)

    def host_names(self, spec: ClusterSpec, host: str) -> list[str]:
        """The hostname dbtier gave the container at ``host``."""
        index, _ = container_of(spec, host)
        return [container_hostname(spec.host_owner, self.settings.layout, index)]

    def installs_packages(self, spec: ClusterSpec) -> bool:
        return True

    def power(self, spec: ClusterSpec) -> HostPower:
        """Whole-container faults through the PVE API: suspend, resume, stop, start (then SSH answers)."""
        from dbtier.providers.proxmox_power import ProxmoxPower

        return ProxmoxPower(spec, self.client)

    def prepare_host(self, spec: ClusterSpec, host: str) -> str:
        """Find or create the container, start it, learn its DHCP address, wait for SSH, then set it up
        like any SSH host."""
        index, ct = container_of(spec, host)
        token = self.credentials()
        plan = container_plan(spec, index, public_key_line(self.loaders.ssh_key(self.ssh_settings)),
                              storage=token.storage, bridge=token.bridge, template=token.template)
        ref, said = pve.ensure_container(self.client(), ct.node, plan, timeout=self.settings.task_timeout_s)
        if ct.dhcp:
            host = pve.container_address(self.client(), ref, timeout=self.settings.dhcp_wait_s)
            spec = with_leases(spec, {index: host})
            said += f"; DHCP gave it {host}"
        waited = wait_for_ssh(host, self.settings.ssh_port, self.settings.ssh_wait_s)
        self._running.add(host)
        done = self.ssh.prepare_host(self.inner(spec), host)
        return f"{said}; SSH answered after {waited:.1f} s; {done}"

    def destroy_hosts(self, spec: ClusterSpec) -> list[str]:
        """Stop and destroy every container tagged for this cluster (never one without the tags), and none
        when it runs on another cluster's (a restored copy: ``hosts_of``)."""
        if spec.host_owner != spec.name:
            return [f"{spec.name} runs in the containers of cluster {spec.host_owner}: none destroyed "
                    f"(teardown of {spec.host_owner} with --destroy-hosts destroys them)"]
        said = pve.destroy_cluster_containers(self.client(), spec.name, timeout=self.settings.task_timeout_s)
        self._running.clear()
        if self.loaders.forget_pins(spec.name):  # new containers at these addresses will have new host keys
            said.append(f"forgot the SSH host keys pinned for {spec.name}'s containers")
        return said or [f"no container tagged {pve.owner_tags(spec.name)[1]} is left to destroy"]
