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
The launcher is the lab's (:mod:`dbtier.lab.host`), without a network namespace of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dbtier.lab.host import CGROUP_ROOT, HostConfig, cgroup_pids, remove_cgroup
from dbtier.procs import stop_child
from tests.clusters import listening
from tests.sshd import SSHD, SSHServer, keygen

TARGET_UNIT = "dbtier-sandbox.target"
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


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


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
        if cgroup_pids(cgroup):
            continue  # alive: another run's sandbox
        remove_cgroup(cgroup)
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
    config = HostConfig(name="dbtier-sandbox", base=str(base), cgroup=str(cgroup), hide="", target=TARGET_UNIT,
                        share=share)
    config.save(base / "host.json")
    launcher = subprocess.Popen([sys.executable, "-m", "dbtier.lab.host", str(base / "host.json")],
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
        while cgroup_pids(cgroup):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of the systemd sandbox outlived it in {cgroup}")
            time.sleep(0.1)
        remove_cgroup(cgroup)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(keys, ignore_errors=True)
