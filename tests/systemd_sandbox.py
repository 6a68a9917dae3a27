"""A host that runs systemd as its init, for tests: this machine's own root seen through an overlay,
booted in user + PID + mount + cgroup namespaces, reached by a real sshd that systemd starts.

This machine has no systemd as PID 1, and booting it here for real would start this machine's
enabled services (Debian's etcd on 2379, sshd on 22) and clean its /tmp. The sandbox keeps every
one of those effects inside:

- user namespace, identity-mapped for uids/gids 0-65535: root inside, but the kernel refuses it
  what belongs to the real machine (sysctls, modules, the clock, binfmt);
- mount namespace: ``/`` is an overlay whose writes land in the sandbox's own directory; ``/run``
  and ``/tmp`` are fresh tmpfs; only ``share`` (the test's data root) is bound in from outside, at
  the same path, so the test reads what the cluster writes;
- PID namespace: systemd is PID 1 and everything it starts dies with it;
- cgroup namespace on a cgroup of its own: systemd manages that subtree only;
- systemd boots ``dbtier-sandbox.target``, which wants only the sandbox's sshd on a test port,
  never ``multi-user.target`` (whose wants include Debian's etcd).

The network is shared: services inside bind 127.0.0.1 on test ports, as anywhere else.
Stopped by PID (the launcher's ``unshare``; its death kills the namespace's init and so all of it).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dbtier.procs import stop_child
from tests.clusters import listening
from tests.sshd import SSHD, SSHServer, keygen

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CGROUP_ROOT = Path("/sys/fs/cgroup/unified")  # this machine's cgroup2 hierarchy (hybrid layout)
ID_RANGE = "0 0 65536\n"

#: As this machine's root, in a mount namespace of the launcher's own: the sandbox's file system.
PREPARE = r"""
set -eu
B=$1; SHARE=$2
R=$B/root
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/upper,workdir=$B/work" "$R"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mkdir -p "$R/run/sshd" "$R$SHARE"
mount --bind "$SHARE" "$R$SHARE"
"""

#: As root of the user namespace, PID 1 of the new PID namespace: /proc and cgroups of its own, then systemd.
BOOT = r"""
set -eu
R=$1/root
mount -t proc proc "$R/proc"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
exec chroot "$R" /usr/bin/env -i container=dbtier-sandbox PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --unit=dbtier-sandbox.target --log-target=console --log-level=warning
"""

TARGET = """[Unit]
Description=dbtier test sandbox
Wants=dbtier-sandbox-sshd.service
"""

SSHD_UNIT = """[Unit]
Description=the sandbox's sshd on a test port
[Service]
ExecStart={sshd} -D -e -f {config}
"""


def available() -> str | None:
    """Why the sandbox cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (to map users into the sandbox's user namespace)"
    if not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed"
    if not (CGROUP_ROOT / "cgroup.procs").exists():
        return f"no cgroup2 hierarchy at {CGROUP_ROOT}"
    return None


def _launch(base: str, cgroup: str, share: str) -> None:
    """The launcher (``python -m tests.systemd_sandbox``): a fresh single-threaded process.

    The child joins the sandbox's cgroup, makes a mount namespace and, still as this machine's root,
    mounts the sandbox's file system there (an overlay of / cannot be mounted from inside a user
    namespace: / has locked submounts). Then it makes a user namespace and waits until the parent
    has written its uid/gid maps; then ``unshare`` makes the other namespaces and runs the boot
    script as their PID 1, which execs systemd.
    """
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        os.close(mapped_w)
        Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        libc = ctypes.CDLL(None, use_errno=True)
        for flag, what in ((CLONE_NEWNS, "CLONE_NEWNS"), (CLONE_NEWUSER, "CLONE_NEWUSER")):
            if libc.unshare(flag) != 0:
                os.write(2, f"unshare({what}): {os.strerror(ctypes.get_errno())}\n".encode())
                os._exit(1)
            if flag == CLONE_NEWNS and subprocess.run(["bash", "-c", PREPARE, "prepare", base, share]).returncode:
                os._exit(1)
        os.write(ready_w, b"u")
        if os.read(mapped_r, 1) != b"m":
            os._exit(1)
        os.execv("/usr/bin/unshare", ["unshare", "--pid", "--mount", "--cgroup", "--fork", "--kill-child=SIGKILL",
                                      "bash", "-c", BOOT, "boot", base])
    os.close(ready_w)
    os.close(mapped_r)
    if os.read(ready_r, 1) != b"u":
        os.waitpid(child, 0)
        sys.exit(1)
    Path(f"/proc/{child}/uid_map").write_text(ID_RANGE)
    Path(f"/proc/{child}/gid_map").write_text(ID_RANGE)
    os.write(mapped_w, b"m")
    # Die with the child, and let a TERM to this launcher reach it (its death kills the namespace).
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _remove_cgroup(path: Path) -> None:
    """Remove a cgroup and the ones systemd made under it, deepest first (empty once the namespace died)."""
    if not path.exists():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    path.rmdir()


def _has_processes(cgroup: Path) -> bool:
    return any((p / "cgroup.procs").read_text().strip() for p in [cgroup, *cgroup.rglob("*")] if p.is_dir())


def sweep_dead_sandboxes() -> list[str]:
    """Remove what sandboxes of killed test runs left (their cgroup and directory), once nothing runs in them.

    A test run killed outright (SIGKILL, or SIGTERM, which Python does not turn into an exception)
    never reaches its ``finally``. Its namespaces died with it, but its cgroup and overlay directory
    stay behind.
    """
    swept = []
    for base in Path("/var/tmp").glob("dbtier-systemd-*"):
        cgroup = CGROUP_ROOT / base.name
        if time.time() - base.stat().st_mtime < 300:
            continue  # young: maybe another run's sandbox, still being set up (its cgroup still empty)
        if cgroup.exists() and _has_processes(cgroup):
            continue  # alive: another run's sandbox
        _remove_cgroup(cgroup)
        shutil.rmtree(base, ignore_errors=True)
        swept.append(base.name)
    return swept


def _wait_booted(port: int, client_key: str, launcher: subprocess.Popen[bytes], base: Path, limit: float = 180) -> None:
    """sshd listens early in the boot; wait until a command over it completes and systemd has finished booting
    (on a loaded machine the first sessions can take longer than the provider's 30 s reachability check)."""
    argv = ["ssh", "-i", client_key, "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "root@127.0.0.1",
            "systemctl is-system-running --wait || true"]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            break
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0 and done.stdout.strip() in ("running", "degraded"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the systemd sandbox did not finish booting: {(base / 'console.log').read_text()[-2000:]}")


@contextmanager
def booted_systemd(port: int, share: str) -> Iterator[SSHServer]:
    """A systemd host reached by sshd on 127.0.0.1:``port`` (root, a generated key); ``share`` is bound in."""
    sweep_dead_sandboxes()
    base = Path(tempfile.mkdtemp(prefix="dbtier-systemd-", dir="/var/tmp"))
    keys = Path(tempfile.mkdtemp(prefix="dbtier-systemd-keys-"))
    for sub in ("upper", "work", "root"):
        (base / sub).mkdir()
    etc = base / "upper" / "etc"
    # root's own home, not this machine's: its .bashrc runs `pyenv init`, whose rehash lock (created with
    # noclobber, which fails through the overlay) made the sandbox's first SSH commands wait 60 s
    home = base / "upper" / "root"
    home.mkdir(mode=0o700)
    os.setxattr(home, "trusted.overlay.opaque", b"y")
    host_key, client_key, stranger = (str(keys / n) for n in ("host_key", "client_key", "stranger_key"))
    for path in (host_key, client_key, stranger):
        keygen(path)
    inside = Path("/etc/dbtier-sandbox")
    _write(etc / "dbtier-sandbox" / "host_key", Path(host_key).read_text(), 0o600)
    _write(etc / "dbtier-sandbox" / "authorized_keys", Path(f"{client_key}.pub").read_text())
    _write(etc / "dbtier-sandbox" / "sshd_config", (
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {inside}/host_key\nAuthorizedKeysFile {inside}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "Subsystem sftp internal-sftp\nUsePAM no\nStrictModes no\nLogLevel ERROR\nMaxStartups 50\nMaxSessions 50\n"
    ))
    _write(etc / "systemd" / "system" / "dbtier-sandbox.target", TARGET)
    _write(etc / "systemd" / "system" / "dbtier-sandbox-sshd.service",
           SSHD_UNIT.format(sshd=SSHD, config=f"{inside}/sshd_config"))
    cgroup = CGROUP_ROOT / base.name
    cgroup.mkdir()
    log = open(base / "console.log", "wb")  # noqa: SIM115 - closed in finally
    launcher = subprocess.Popen([sys.executable, "-m", "tests.systemd_sandbox", str(base), str(cgroup), share],
                                stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            if launcher.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the systemd sandbox did not come up: {(base / 'console.log').read_text()[-2000:]}")
            time.sleep(0.1)
        _wait_booted(port, client_key, launcher, base)
        yield SSHServer(port=port, key_file=client_key, public_key=Path(f"{client_key}.pub").read_text(),
                        other_key_file=stranger, host_key=" ".join(Path(f"{host_key}.pub").read_text().split()[:2]))
    finally:
        stop_child(launcher, grace=15)
        log.close()
        deadline = time.monotonic() + 15
        while (cgroup / "cgroup.procs").exists() and _has_processes(cgroup):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of the systemd sandbox outlived it in {cgroup}")
            time.sleep(0.1)
        _remove_cgroup(cgroup)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(keys, ignore_errors=True)


if __name__ == "__main__":
    _launch(*sys.argv[1:4])
