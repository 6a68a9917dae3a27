"""A host backend of flags for the PVE test double's own tests: it records every call and boots nothing.

The lab's real backend (``dbtier lab``) runs hosts; this one only says which of its hosts would run,
so a test can check what each API call asks of a host. ``backend_for(path)`` is the factory the
double's process takes (``--backend tests.fake_hosts:backend_for --lab PATH``): ``PATH`` is a JSON
map of host name -> address, and the calls are appended to ``PATH.calls``, one ``action host`` a line.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path


class FakeHosts:
    """Hosts named in ``addresses`` (name -> IPv4 address), all running at first unless ``down``."""

    def __init__(self, addresses: Mapping[str, str], *, down: bool = False, journal: Path | None = None) -> None:
        self.addresses = dict(addresses)
        self.up: set[str] = set() if down else set(addresses)
        self.frozen: set[str] = set()
        self.keys: dict[str, list[str]] = {name: [] for name in addresses}
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, str] = {}  # action -> the message it fails with, once
        self.gate: threading.Event | None = None  # when set to an Event, boot waits for it
        self.journal = journal
        self._lock = threading.Lock()

    def _record(self, action: str, host: str) -> None:
        if host not in self.addresses:
            raise KeyError(f"no host {host}")
        with self._lock:
            self.calls.append((action, host))
            if self.journal is not None:
                with self.journal.open("a") as handle:
                    handle.write(f"{action} {host}\n")
            failure = self.failures.pop(action, None)
        if failure is not None:
            raise RuntimeError(failure)

    # the HostBackend protocol

    def host_at(self, address: str) -> str | None:
        return next((name for name, a in self.addresses.items() if a == address), None)

    def authorize(self, host: str, public_key: str) -> None:
        self._record("authorize", host)
        self.keys[host] += [line for line in public_key.splitlines() if line not in self.keys[host]]

    def boot(self, host: str) -> None:
        self._record("boot", host)
        if self.gate is not None:
            self.gate.wait()
        self.up.add(host)

    def kill(self, host: str) -> None:
        self._record("kill", host)
        self.up.discard(host)
        self.frozen.discard(host)

    def freeze(self, host: str) -> None:
        self._record("freeze", host)
        self.frozen.add(host)

    def thaw(self, host: str) -> None:
        self._record("thaw", host)
        self.frozen.discard(host)

    def running(self, host: str) -> bool:
        return host in self.up


def backend_for(path: str) -> FakeHosts:
    """The factory of ``python -m dbtier.lab.pve --backend tests.fake_hosts:backend_for --lab PATH``."""
    addresses = json.loads(Path(path).read_text())
    return FakeHosts(addresses, journal=Path(f"{path}.calls"))
