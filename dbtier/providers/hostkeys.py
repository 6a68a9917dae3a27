"""Host keys of the cluster's SSH hosts: pinned on first use, or given in the spec; a changed key is refused.

A host's key is what tells dbtier it talks to the host it provisioned, not to whoever answers on
that address. Two ways to know it:

- ``ssh.hosts[i].host_key`` in the spec (``ssh-ed25519 AAAA...``, the line of the host's
  ``/etc/ssh/ssh_host_ed25519_key.pub``): only that key is accepted, from the first connection on;
- otherwise the key seen on the first connection is pinned for the cluster (kept where the provider's
  loaders say: a Prefect variable for the flows, ``blocks/hostkeys.py``; else a file in the work
  directory, :mod:`dbtier.providers.loaders`), and every later connection must present the same key.

A different key stops the run with one line that says how to forget the pin when the host was
rebuilt on purpose (``dbtier host-keys --forget HOST:PORT``).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import paramiko

from dbtier.errors import PreflightError
from dbtier.spec import SSHHost

DEFAULT_SSH_PORT = 22


# -- pure ------------------------------------------------------------------------------------------


def host_id(host: str, port: int) -> str:
    """The name a host's key is filed under, as in OpenSSH's known_hosts.

    >>> host_id("10.0.0.11", 22), host_id("127.0.0.1", 20490)
    ('10.0.0.11', '[127.0.0.1]:20490')
    """
    return host if port == DEFAULT_SSH_PORT else f"[{host}]:{port}"


def split_host_id(text: str) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` or ``[HOST]:PORT`` as typed by an operator.

    >>> split_host_id("10.0.0.11"), split_host_id("127.0.0.1:20490"), split_host_id("[127.0.0.1]:20490")
    (('10.0.0.11', 22), ('127.0.0.1', 20490), ('127.0.0.1', 20490))
    """
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host, int(port or DEFAULT_SSH_PORT)
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return text, DEFAULT_SSH_PORT


def spec_host_keys(hosts: Iterable[SSHHost]) -> dict[str, str]:
    """The keys the spec gives (``ssh.hosts[].host_key``), by host id: accepted alone, never stored."""
    return {host_id(h.address, h.port): h.host_key for h in hosts if h.host_key}


def key_line(key: paramiko.PKey) -> str:
    """A public key as one line (type and base64), the form pins and the spec use."""
    return f"{key.get_name()} {key.get_base64()}"


def parse_key_line(line: str, where: str = "host_key") -> paramiko.PKey:
    """The key of a ``TYPE BASE64 [comment]`` line; a one-line error naming ``where`` otherwise."""
    parts = line.split()
    if len(parts) < 2:
        raise PreflightError(f"{where}: {line!r} is not a public key line; write it like 'ssh-ed25519 AAAAC3Nz...'")
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except (ValueError, paramiko.SSHException, base64.binascii.Error):  # type: ignore[attr-defined]
        raise PreflightError(f"{where}: {parts[0]} {parts[1][:16]}... is not a public key this client can read; copy "
                             "the line of the host's /etc/ssh/ssh_host_ed25519_key.pub") from None


def fingerprint(line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a key line.

    >>> fingerprint("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILxHwVFeHadVAkbTPNI57EgmpWQ0TyVJLrsnHP9yADCh")
    'SHA256:4q8o3hPbQWtKvP61Dk3+PQCQTPJHpUnYxV9T4RyiYVc'
    """
    import hashlib

    digest = hashlib.sha256(base64.b64decode(line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def changed_key_message(host: str, port: int, got: str, expected: str, from_spec: bool) -> str:
    """
    >>> changed_key_message("10.0.0.11", 22, "SHA256:new", "SHA256:old", False).split(";")[0]
    'ssh.hosts: 10.0.0.11:22 presented host key SHA256:new, not SHA256:old pinned on first use'
    """
    where = f"ssh.hosts: {host}:{port}"
    if from_spec:
        return (f"{where} presented host key {got}, not the host_key of the spec ({expected}); check that the "
                "address reaches the right host, or correct host_key")
    return (f"{where} presented host key {got}, not {expected} pinned on first use; if the host was rebuilt on "
            f"purpose, forget the pin: dbtier host-keys --spec FILE --forget {host}:{port}")


# -- the pins of one cluster -------------------------------------------------------------------------


Loader = Callable[[str], dict[str, str]]
Saver = Callable[[str, dict[str, str]], None]


class HostKeyPins:
    """The host keys dbtier trusts for one cluster: the spec's, then those pinned on first use."""

    def __init__(self, cluster: str, load: Loader, save: Saver, fixed: Mapping[str, str] | None = None) -> None:
        self.cluster = cluster
        self._load = load
        self._save = save
        self.fixed = dict(fixed or {})
        self._lock = threading.Lock()

    def pinned(self) -> dict[str, str]:
        """The pins as stored now (read each time: a pin may have been forgotten since)."""
        with self._lock:
            return dict(self._load(self.cluster))

    def expected(self, host: str, port: int) -> tuple[str, bool] | None:
        """The key line ``host:port`` must present, and whether the spec gave it; None before first use."""
        name = host_id(host, port)
        if name in self.fixed:
            return self.fixed[name], True
        line = self.pinned().get(name)
        return (line, False) if line else None

    def pin(self, host: str, port: int, line: str) -> None:
        with self._lock:
            pinned = dict(self._load(self.cluster))
            pinned[host_id(host, port)] = line
            self._save(self.cluster, pinned)

    def prepare(self, client: paramiko.SSHClient, host: str, port: int) -> None:
        """Give ``client`` the key it must see for ``host:port``, or a policy that pins the first one."""
        known = self.expected(host, port)
        if known is not None:
            key = parse_key_line(known[0], "ssh.hosts.host_key" if known[1] else "pinned host key")
            client.get_host_keys().add(host_id(host, port), key.get_name(), key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(_PinFirst(self, host, port))

    def explain(self, host: str, port: int, err: paramiko.BadHostKeyException) -> PreflightError:
        known = self.expected(host, port)
        got = fingerprint(key_line(err.key))
        expected = fingerprint(known[0]) if known else fingerprint(key_line(err.expected_key))
        return PreflightError(changed_key_message(host, port, got, expected, bool(known and known[1])))


class _PinFirst(paramiko.MissingHostKeyPolicy):
    """The first key a host presents becomes its pin."""

    def __init__(self, pins: HostKeyPins, host: str, port: int) -> None:
        self.pins = pins
        self.host = host
        self.port = port

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        self.pins.pin(self.host, self.port, key_line(key))
        client.get_host_keys().add(hostname, key.get_name(), key)
