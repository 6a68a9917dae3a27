"""Where every engine's member ``index`` lives (pure): the one placement rule providers and engines share.

PostgreSQL's members, etcd's and their DSNs are :mod:`dbtier.engines.postgres.topology`; MongoDB's are
:mod:`dbtier.engines.mongodb.config`.
"""

from __future__ import annotations

from dbtier.spec import ClusterSpec


def member_host(spec: ClusterSpec, index: int) -> str:
    """The address of member ``index``: round-robin over the SSH hosts; the address of its Proxmox
    container (``containers[index]`` per member, ``containers[0]`` for the single layout): static, or
    the DHCP lease :func:`dbtier.providers.base.resolve_addresses` filled in, else a placeholder;
    else ``spec.host`` for all.
    """
    if spec.provider == "ssh" and spec.ssh is not None:
        return spec.ssh.hosts[index % len(spec.ssh.hosts)].address
    if spec.provider == "proxmox" and spec.proxmox is not None:
        containers = spec.proxmox.containers
        return containers[index % len(containers) if spec.proxmox.layout == "per-member" else 0].ip
    return spec.host
