"""A real OpenSSH server on a loopback port, with a key pair made for the test; stopped by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tests.clusters import listening

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SSHServer:
    port: int
    key_file: str
    public_key: str
    other_key_file: str  # a key the server does not accept
    host_key: str = ""  # the server's public host key line

    @property
    def other_public_key(self) -> str:
        """The public line of a key the server does not hold (neither as host key nor as a client's)."""
        with open(f"{self.other_key_file}.pub") as fh:
            return " ".join(fh.read().split()[:2])

    @property
    def private_key(self) -> str:
        with open(self.key_file) as fh:
            return fh.read()


def keygen(path: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)


@contextmanager
def running_sshd(port: int, addresses: Sequence[str] = ("127.0.0.1",)) -> Iterator[SSHServer]:
    """sshd -D on ``port`` of each loopback address (127.0.0.1 by default), accepting one generated key for root."""
    work = tempfile.mkdtemp(prefix="dbtier-sshd-")
    host_key, client_key, stranger = (os.path.join(work, n) for n in ("host_key", "client_key", "stranger_key"))
    for path in (host_key, client_key, stranger):
        keygen(path)
    authorized = os.path.join(work, "authorized_keys")
    with open(f"{client_key}.pub") as fh:
        public = fh.read()
    with open(authorized, "w") as fh:
        fh.write(public)
    config = os.path.join(work, "sshd_config")
    listen = "".join(f"ListenAddress {address}\n" for address in addresses)
    with open(config, "w") as fh:
        fh.write(
            f"Port {port}\n{listen}HostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "Subsystem sftp internal-sftp\n"
            f"UsePAM no\nStrictModes no\nPidFile {work}/sshd.pid\nLogLevel ERROR\nMaxStartups 50\nMaxSessions 50\n"
        )
    os.makedirs("/run/sshd", exist_ok=True)
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not all(listening(port, a) for a in addresses):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {server.stderr.read().decode() if server.stderr else ''}")
            time.sleep(0.05)
        with open(f"{host_key}.pub") as fh:
            host_line = " ".join(fh.read().split()[:2])
        yield SSHServer(port=port, key_file=client_key, public_key=public, other_key_file=stranger, host_key=host_line)
    finally:
        server.terminate()
        server.wait(15)
        shutil.rmtree(work, ignore_errors=True)
