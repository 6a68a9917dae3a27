"""What a lab is made of, computed from its name, size and subnet (pure: no I/O).

Names stay short because Linux interface names are 15 bytes at most: the bridge is ``dbtl-<name>``,
host ``i``'s veth end ``dbtl<name><i>``. Addresses come from 198.18.0.0/15 (RFC 2544's range for
network tests): the bridge takes ``.1`` of the lab's /24, host ``i`` takes ``.10+i``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from dbtier.errors import Refused

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,7}$")
MAX_HOSTS = 9
#: Where the cluster's files live on each lab host: a directory of the host's own disk only.
HOST_DATA_ROOT = "/srv/dbtier"
S3_PORT = 9000
PVE_PORT = 8006
S3_BUCKET = "dbtier-lab"


@dataclass(frozen=True)
class LabHost:
    """One host of a lab."""

    index: int
    name: str
    address: str  #: without prefix
    prefix: int
    veth: str

    @property
    def interface(self) -> str:
        return f"{self.address}/{self.prefix}"


@dataclass(frozen=True)
class LabPlan:
    """A lab: its bridge, its subnet and its hosts."""

    name: str
    subnet: str
    hosts: tuple[LabHost, ...]

    @property
    def bridge(self) -> str:
        return f"dbtl-{self.name}"

    @property
    def gateway(self) -> str:
        """The machine's own address on the bridge (where the flows, S3 and the PVE double are reached)."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def host(self, key: str) -> LabHost:
        """The host called ``key`` or at address ``key``."""
        found = next((h for h in self.hosts if key in (h.name, h.address)), None)
        if found is None:
            raise Refused(f"lab {self.name}: no host {key!r}; its hosts are "
                          f"{', '.join(f'{h.name} ({h.address})' for h in self.hosts)}")
        return found


def check_name(name: str) -> str:
    """
    >>> check_name("lab")
    'lab'
    >>> check_name("My_Lab")
    Traceback (most recent call last):
    dbtier.errors.Refused: --name: 'My_Lab' is not a lab name; use 1-8 lower-case letters or digits, starting with a letter
    """
    if not NAME_PATTERN.match(name):
        raise Refused(f"--name: {name!r} is not a lab name; use 1-8 lower-case letters or digits, starting with a letter")
    return name


def check_subnet(subnet: str) -> str:
    """A /24 to /28 inside 198.18.0.0/15.

    >>> check_subnet("198.18.3.0/24")
    '198.18.3.0/24'
    >>> check_subnet("10.0.0.0/24")
    Traceback (most recent call last):
    dbtier.errors.Refused: --subnet: 10.0.0.0/24 is outside 198.18.0.0/15, the range reserved for network tests; pick one inside it
    """
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as err:
        raise Refused(f"--subnet: {subnet!r} is not a network ({err}); give one like 198.18.0.0/24") from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(LAB_RANGE):
        raise Refused(f"--subnet: {subnet} is outside {LAB_RANGE}, the range reserved for network tests; "
                      "pick one inside it")
    if not 24 <= net.prefixlen <= 28:
        raise Refused(f"--subnet: {subnet} must be a /24 to /28")
    return str(net)


def free_subnet(used: list[str]) -> str:
    """The first /24 of 198.18.0.0/15 that overlaps none of ``used`` (addresses or networks on this machine).

    >>> free_subnet(["198.18.0.1/24", "10.0.0.2/8"])
    '198.18.1.0/24'
    >>> free_subnet([])
    '198.18.0.0/24'
    """
    taken = [ipaddress.ip_network(u, strict=False) for u in used]
    for candidate in LAB_RANGE.subnets(new_prefix=24):
        if not any(candidate.overlaps(t) for t in taken if t.version == 4):
            return str(candidate)
    raise Refused("--subnet: every /24 of 198.18.0.0/15 is in use on this machine; give one with --subnet")


def plan_lab(name: str, hosts: int, subnet: str) -> LabPlan:
    """
    >>> lab = plan_lab("lab", 3, "198.18.0.0/24")
    >>> lab.bridge, lab.gateway, [(h.name, h.address, h.veth) for h in lab.hosts]
    ('dbtl-lab', '198.18.0.1', [('lab-1', '198.18.0.11', 'dbtllab1'), ('lab-2', '198.18.0.12', 'dbtllab2'), ('lab-3', '198.18.0.13', 'dbtllab3')])
    >>> plan_lab("lab", 12, "198.18.0.0/24")
    Traceback (most recent call last):
    dbtier.errors.Refused: --hosts: 12 is out of range; a lab has 1 to 9 hosts
    """
    check_name(name)
    net = ipaddress.ip_network(check_subnet(subnet))
    if not 1 <= hosts <= MAX_HOSTS:
        raise Refused(f"--hosts: {hosts} is out of range; a lab has 1 to {MAX_HOSTS} hosts")
    addresses = list(net.hosts())
    if len(addresses) < 10 + hosts:
        raise Refused(f"--subnet: {subnet} is too small for {hosts} hosts; use a /24")
    return LabPlan(name, str(net), tuple(
        LabHost(i, f"{name}-{i}", str(addresses[9 + i]), net.prefixlen, f"dbtl{name}{i}") for i in range(1, hosts + 1)
    ))


# -- the files each host boots with -------------------------------------------------------------------------


SSHD_CONFIG = """Port 22
ListenAddress {address}
HostKey /etc/dbtier-lab/ssh_host_ed25519_key
AuthorizedKeysFile /etc/dbtier-lab/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
UsePAM no
LogLevel ERROR
MaxStartups 50
MaxSessions 50
"""

SSHD_UNIT = """[Unit]
Description=the lab host's sshd
After=network.target
[Service]
ExecStartPre=/usr/bin/mkdir -p /run/sshd
ExecStart=/usr/sbin/sshd -D -e -f /etc/dbtier-lab/sshd_config
Restart=on-failure
[Install]
WantedBy=multi-user.target
"""

#: Units of this machine's own /etc and /lib that a lab host must not start (masked in its own /etc).
MASKED = ("getty.target", "systemd-logind.service", "dbus.service", "dbus.socket", "systemd-timesyncd.service",
          "systemd-pstore.service", "e2scrub_reap.service", "postgresql.service", "etcd.service", "ssh.service",
          "ssh.socket", "cron.service", "systemd-networkd.service", "systemd-resolved.service", "remote-fs.target",
          "systemd-update-utmp-runlevel.service", "systemd-ask-password-wall.path", "systemd-user-sessions.service",
          "dev-mqueue.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount",
          "sys-fs-fuse-connections.mount")


def host_files(host: LabHost, host_key: str, authorized_key: str) -> dict[str, tuple[str, int]]:
    """The files written into a host's own disk before its first boot: path -> (text, mode)."""
    return {
        "/etc/hostname": (f"{host.name}\n", 0o644),
        "/etc/hosts": (f"127.0.0.1 localhost\n{host.address} {host.name}\n", 0o644),
        "/etc/dbtier-lab/sshd_config": (SSHD_CONFIG.format(address=host.address), 0o644),
        "/etc/dbtier-lab/ssh_host_ed25519_key": (host_key, 0o600),
        "/etc/dbtier-lab/authorized_keys": (authorized_key, 0o644),
        "/etc/systemd/system/dbtier-lab-sshd.service": (SSHD_UNIT, 0o644),
    }


def ssh_spec(lab: LabPlan, key_file: str, host_keys: dict[str, str], ca_file: str, cluster: str = "lab") -> dict[str, Any]:
    """A ready spec for ``provider: ssh``: one member per host, backups in the lab's S3, host keys pinned."""
    return {
        "name": cluster,
        "provider": "ssh",
        "members": len(lab.hosts),
        "data_root": HOST_DATA_ROOT,
        "ssh": {
            "hosts": [{"address": h.address, "port": 22, "host_key": host_keys[h.name]} for h in lab.hosts],
            "user": "root",
            "key_file": key_file,
            "lab": lab.name,
        },
        "allowed_client_networks": [lab.subnet],
        "postgres": {"synchronous_mode": True},
        "backup": {
            "repositories": [{"type": "s3", "block": s3_block_name(lab.name), "path": f"/{cluster}"}],
        },
    }


def proxmox_spec(lab: LabPlan, key_file: str, cluster: str) -> dict[str, Any]:
    """A ready spec for ``provider: proxmox``: the lab's PVE double, whose containers are the lab's hosts."""
    return {
        "name": cluster,
        "provider": "proxmox",
        "members": len(lab.hosts),
        "data_root": HOST_DATA_ROOT,
        "proxmox": {
            "credentials_block": pve_block_name(lab.name),
            "layout": "per-member",
            "containers": [{"vmid": 900 + h.index, "node": f"pve{h.index}", "address": h.interface}
                           for h in lab.hosts],
            "ssh_key_file": key_file,
        },
        "allowed_client_networks": [lab.subnet],
        "postgres": {"synchronous_mode": True},
        "backup": {
            "repositories": [{"type": "s3", "block": s3_block_name(lab.name), "path": f"/{cluster}"}],
        },
    }


def pve_block_name(lab: str) -> str:
    """
    >>> pve_block_name("lab")
    'lab-lab-pve'
    """
    return f"lab-{lab}-pve"


def s3_block_name(lab: str) -> str:
    """
    >>> s3_block_name("lab")
    'lab-lab-s3'
    """
    return f"lab-{lab}-s3"
