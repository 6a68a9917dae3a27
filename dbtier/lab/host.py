"""One lab host: this machine's root seen through an overlay, booted with systemd as PID 1 in namespaces of its own.

The launcher (``python -m dbtier.lab.host CONFIG``) is a small detached process per host. Its child:

- joins the host's own cgroup (``/sys/fs/cgroup/unified/<name>``: freezing it pauses the whole host,
  ``cgroup.kill`` is a power loss);
- makes a mount namespace and, still as this machine's root, mounts the host's file system: ``/`` an
  overlay whose writes land in the host's own ``upper`` directory (its disk: it survives a power loss),
  fresh tmpfs on ``/run`` and ``/tmp``, and the lab's own directory hidden (no host reads another's disk);
- makes a user namespace (identity-mapped 0-65535: root inside, refused what belongs to the machine);
- makes a network namespace owned by that user namespace (so root inside may run ``nft`` there), into which
  the launcher moves one end of a veth pair whose other end is on the lab's bridge; ``eth0`` gets the host's
  address and no default route;
- makes PID, mount, cgroup and UTS namespaces and execs systemd, which boots ``multi-user.target`` with the
  host's own ``/etc``: only its sshd on port 22 and what dbtier enables there later.

When PID 1 dies, the namespaces die with it: sockets, firewall rules, the veth pair. Booting again from the
same directory is a reboot from the same disk.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CGROUP_ROOT = Path("/sys/fs/cgroup/unified")  # this machine's cgroup2 hierarchy (hybrid layout)
ID_RANGE = "0 0 65536\n"


@dataclass(frozen=True)
class HostConfig:
    """What the launcher needs to boot one host (written as JSON next to its disk)."""

    name: str  #: hostname inside
    base: str  #: the host's directory: upper/ (its disk), work/, root/ (the mount point), console.log
    cgroup: str  #: absolute path of its cgroup
    hide: str  #: a directory of this machine hidden inside (the lab's own)
    bridge: str | None = None  #: the lab's bridge; None: share this machine's network (the test sandbox)
    veth: str = ""  #: name of the veth end on the bridge
    address: str = ""  #: the host's address with prefix, 198.18.x.y/24
    target: str = "multi-user.target"
    share: str = ""  #: a directory of this machine bound in at the same path (the test sandbox's data root); "" none

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> HostConfig:
        return cls(**json.loads(Path(path).read_text()))


#: As this machine's root, in a mount namespace of the launcher's own: the host's file system.
PREPARE = r"""
set -eu
B=$1; HIDE=$2; SHARE=$3
R=$B/root
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/upper,workdir=$B/work" "$R"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
# systemd as PID 1 writes to /dev/console: the host's console log, not this machine's console
if [ -f "$B/console.log" ]; then mount --bind "$B/console.log" "$R/dev/console"; fi
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mkdir -p "$R/run/sshd"
if [ -n "$HIDE" ] && [ -d "$R$HIDE" ]; then mount -t tmpfs -o mode=700,size=1m tmpfs "$R$HIDE"; fi
if [ -n "$SHARE" ]; then mkdir -p "$R$SHARE"; mount --bind "$SHARE" "$R$SHARE"; fi
"""

#: As root of the user namespace, PID 1 of the new PID namespace: /proc and cgroups of its own, then systemd.
BOOT = r"""
set -eu
R=$1/root; NAME=$2; TARGET=$3
hostname "$NAME"
mount -t proc proc "$R/proc"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
exec chroot "$R" /usr/bin/env -i container=dbtier-lab PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --unit="$TARGET" --log-target=console --log-level=warning
"""


def _network(config: HostConfig, pid: int) -> None:
    """Give the namespace of ``pid`` its eth0 on the bridge (run by the launcher, this machine's root)."""
    peer = f"{config.veth}p"
    ns = f"/proc/{pid}/ns/net"
    steps = [
        ["ip", "link", "add", config.veth, "type", "veth", "peer", "name", peer],
        ["ip", "link", "set", peer, "netns", str(pid)],
        ["ip", "link", "set", config.veth, "master", str(config.bridge), "up"],
        ["nsenter", f"--net={ns}", "ip", "link", "set", peer, "name", "eth0"],
        # the same MAC at every boot, as a machine keeps its NIC's: the bridge's and the other hosts' neighbour
        # entries stay right, where a new MAC left them pointing at the dead one for ~30 s after a power loss
        ["nsenter", f"--net={ns}", "ip", "link", "set", "eth0", "address", host_mac(config.address)],
        ["nsenter", f"--net={ns}", "ip", "addr", "add", config.address, "dev", "eth0"],
        ["nsenter", f"--net={ns}", "ip", "link", "set", "eth0", "up"],
        ["nsenter", f"--net={ns}", "ip", "link", "set", "lo", "up"],
    ]
    for argv in steps:
        subprocess.run(argv, check=True, capture_output=True)


def host_mac(interface: str) -> str:
    """A locally administered unicast MAC made of the host's IPv4 address.

    >>> host_mac("198.18.10.11/24")
    '02:db:c6:12:0a:0b'
    """
    octets = [int(part) for part in interface.split("/")[0].split(".")]
    return ":".join(f"{b:02x}" for b in [0x02, 0xDB, *octets])


def _fail(what: str) -> None:
    os.write(2, f"{what}: {os.strerror(ctypes.get_errno())}\n".encode())
    os._exit(1)


def launch(config: HostConfig) -> None:
    """The launcher: fork the child that becomes the host, set up what only this machine's root may, wait for it."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        os.close(go_w)
        Path(config.cgroup, "cgroup.procs").write_text(str(os.getpid()))
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNS) != 0:
            _fail("unshare(CLONE_NEWNS)")
        if subprocess.run(["bash", "-c", PREPARE, "prepare", config.base, config.hide, config.share]).returncode:
            os._exit(1)
        if libc.unshare(CLONE_NEWUSER) != 0:
            _fail("unshare(CLONE_NEWUSER)")
        os.write(ready_w, b"u")
        if os.read(go_r, 1) != b"m":
            os._exit(1)
        if config.bridge is not None:
            if libc.unshare(CLONE_NEWNET) != 0:
                _fail("unshare(CLONE_NEWNET)")
            os.write(ready_w, b"n")
            if os.read(go_r, 1) != b"v":
                os._exit(1)
        os.execv("/usr/bin/unshare", ["unshare", "--pid", "--mount", "--cgroup", "--uts", "--fork",
                                      "--kill-child=SIGKILL", "bash", "-c", BOOT, "boot", config.base, config.name,
                                      config.target])
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) != b"u":
        os.waitpid(child, 0)
        sys.exit(1)
    Path(f"/proc/{child}/uid_map").write_text(ID_RANGE)
    Path(f"/proc/{child}/gid_map").write_text(ID_RANGE)
    os.write(go_w, b"m")
    if config.bridge is not None:
        if os.read(ready_r, 1) != b"n":
            os.waitpid(child, 0)
            sys.exit(1)
        try:
            _network(config, child)
        except subprocess.CalledProcessError as err:
            sys.stderr.write(f"{config.name}: network: {' '.join(err.cmd)}: {err.stderr.decode().strip()}\n")
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            sys.exit(1)
        os.write(go_w, b"v")
    # Die with the child, and let a TERM to this launcher reach it (its death kills the namespaces).
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


def remove_cgroup(path: Path) -> None:
    """Remove a cgroup and the ones systemd made under it, deepest first (empty once the host died)."""
    if not path.exists():
        return
    for sub in [*sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True), path]:
        _rmdir_when_released(sub)


def _rmdir_when_released(group: Path, timeout: float = 15.0) -> None:
    """``rmdir`` a cgroup; the kernel answers EBUSY while its killed processes are still being torn down."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def cgroup_pids(cgroup: Path) -> list[int]:
    """Every process in ``cgroup`` and below it."""
    pids: list[int] = []
    for group in [cgroup, *cgroup.rglob("*")] if cgroup.exists() else []:
        procs = group / "cgroup.procs"
        if group.is_dir() and procs.exists():
            pids.extend(int(p) for p in procs.read_text().split())
    return pids


if __name__ == "__main__":
    launch(HostConfig.load(sys.argv[1]))
