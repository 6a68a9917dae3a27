"""What the double remembers: nodes, containers and tasks, plus the faults a test asks for.

Every handler takes the path parameters and the (already schema-checked) request parameters
and returns the ``data`` of PVE's answer, or raises :class:`ApiError` with PVE's status and
message. Tasks finish lazily: whoever looks at the state after a task's deadline sees it done.

With a :class:`~dbtier.lab.pve.backend.HostBackend`, a container bound to a host (``Container.host``)
reports the host's real state, and a task that acts on the host runs that action in a worker thread
(the task is ``running`` until it returns).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbtier.lab.pve.backend import HostBackend

Params = dict[str, str]


class ApiError(Exception):
    """An error answer: HTTP ``status``, PVE's one-line ``message``, optional ``errors`` map."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


@dataclass
class Container:
    vmid: int
    node: str
    config: dict[str, Any]
    status: str = "stopped"
    address: str | None = None
    host: str | None = None  # the backend's host this container is, when the double has a backend
    frozen: bool = False

    @property
    def name(self) -> str:
        return str(self.config.get("hostname", f"CT{self.vmid}"))

    def summary(self) -> dict[str, Any]:
        """One row of GET /nodes/{node}/lxc (and of /status/current)."""
        row: dict[str, Any] = {
            "vmid": self.vmid,
            "name": self.name,
            "status": self.status,
            "type": "lxc",
            "cpus": int(self.config.get("cores", 1)),
            "maxmem": int(self.config.get("memory", 512)) * 1024 * 1024,
            "maxswap": int(self.config.get("swap", 512)) * 1024 * 1024,
            "uptime": 1 if self.status == "running" else 0,
        }
        if "tags" in self.config:
            row["tags"] = self.config["tags"]
        if "lock" in self.config:
            row["lock"] = self.config["lock"]
        return row


@dataclass
class Task:
    upid: str
    node: str
    kind: str
    vmid: int
    started: float
    deadline: float | None
    exitstatus: str
    on_ok: Callable[[], None] | None = None
    on_error: Callable[[], None] | None = None
    settled: bool = False
    planned: float = 0.0  # when a task with work ends at the earliest (monotonic)

    def status(self, now: float) -> dict[str, Any]:
        fields = self.upid.split(":")
        data: dict[str, Any] = {
            "upid": self.upid, "node": self.node, "pid": int(fields[2], 16), "pstart": int(fields[3], 16),
            "starttime": int(fields[4], 16), "type": self.kind, "id": str(self.vmid), "user": fields[7],
        }
        if self.deadline is None or now < self.deadline:
            return {**data, "status": "running"}
        return {**data, "status": "stopped", "exitstatus": self.exitstatus}


@dataclass
class Faults:
    """What the next task(s) will do instead of succeeding."""

    fail_next: list[str] = field(default_factory=list)
    hang_next: int = 0


class PveState:
    """The cluster as the double sees it. All access goes through ``lock``."""

    def __init__(self, nodes: list[str], user: str, task_seconds: float = 0.1, subnet: str = "10.99.0.0/24",
                 leases: Mapping[int, str] | None = None, backend: HostBackend | None = None) -> None:
        self.lock = threading.RLock()
        self.backend = backend
        self.workers: list[threading.Thread] = []
        self.nodes = list(nodes)
        self.user = user
        self.task_seconds = task_seconds
        self.dhcp_delay = 0.0
        self.templates: set[str] | None = None
        self.storages: set[str] | None = {"local", "local-lvm"}
        self.faults = Faults()
        self.containers: dict[int, Container] = {}
        self.tasks: dict[str, Task] = {}
        self.requests: list[tuple[str, str]] = []
        self._hosts = itertools.islice(ipaddress.ip_network(subnet).hosts(), 99, None)  # .100 up
        # DHCP: what each container got (a reservation, else the next free address); kept across restarts
        self.leases: dict[int, str] = {vmid: ipaddress.IPv4Interface(a).with_prefixlen for vmid, a in (leases or {}).items()}
        self._pid = 4000

    # -- tasks ---------------------------------------------------------------------------------

    def new_task(self, node: str, kind: str, vmid: int, on_ok: Callable[[], None] | None = None,
                 on_error: Callable[[], None] | None = None, work: Callable[[], None] | None = None) -> str:
        """Start a task; the UPID has PVE's shape ``UPID:node:pid:pstart:starttime:type:id:user:``.

        ``work`` (an action on a backend host) runs in a worker thread unless a fault makes the task fail
        or hang; the task runs until it returns, and fails with its exception's text.
        """
        self._pid += 1
        now = time.time()
        upid = f"UPID:{node}:{self._pid:08X}:{self._pid * 7:08X}:{int(now):08X}:{kind}:{vmid}:{self.user}:"
        exitstatus = self.faults.fail_next.pop(0) if self.faults.fail_next else "OK"
        deadline: float | None = time.monotonic() + self.task_seconds
        if self.faults.hang_next:
            self.faults.hang_next -= 1
            deadline = None
        task = Task(upid, node, kind, vmid, now, deadline, exitstatus, on_ok, on_error)
        self.tasks[upid] = task
        if work is not None and deadline is not None and exitstatus == "OK":
            task.planned, task.deadline = deadline, None
            worker = threading.Thread(target=self._work, args=(task, work), name=f"pve-{kind}-{vmid}")
            self.workers = [w for w in self.workers if w.is_alive()] + [worker]
            worker.start()
        return upid

    def _work(self, task: Task, work: Callable[[], None]) -> None:
        try:
            work()
            exitstatus = "OK"
        except Exception as err:  # the task's failure, as PVE's task log ends
            exitstatus = " ".join(str(err).split()) or type(err).__name__
        with self.lock:
            task.exitstatus = exitstatus
            task.deadline = max(time.monotonic(), task.planned)

    def join_workers(self, timeout: float = 60) -> None:
        """Wait for the host actions still running (before the double stops)."""
        for worker in list(self.workers):
            worker.join(timeout)

    def settle(self) -> None:
        """Apply the effects of every task that has reached its deadline."""
        now = time.monotonic()
        for task in self.tasks.values():
            if task.settled or task.deadline is None or now < task.deadline:
                continue
            task.settled = True
            effect = task.on_ok if task.exitstatus == "OK" else task.on_error
            if effect:
                effect()
        for ct in self.containers.values():
            self._observe(ct)

    def _observe(self, ct: Container) -> None:
        """A bound container is as its host is: running or not, whatever the last task said."""
        if ct.host is None or self.backend is None:
            return
        if not self.backend.running(ct.host):
            ct.status, ct.address, ct.frozen = "stopped", None, False
        elif ct.status != "running":
            self.boot(ct)

    # -- containers -----------------------------------------------------------------------------

    def add_container(self, vmid: int, node: str, hostname: str, status: str = "running",
                      tags: str | None = None, **config: Any) -> Container:
        """Seed a container that exists before the test starts (someone else's, usually)."""
        conf = {"hostname": hostname, "cores": 1, "memory": 512, "swap": 512, **config}
        if tags is not None:
            conf["tags"] = tags
        ct = Container(vmid, node, conf, status)
        if status == "running":
            ct.address = self._address_for(ct)
        self.containers[vmid] = ct
        return ct

    def container(self, node: str, vmid: str) -> Container:
        ct = self.containers.get(int(vmid))
        if ct is None or ct.node != node:
            raise ApiError(500, f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist")
        return ct

    def _address_for(self, ct: Container) -> str:
        static = static_ip(str(ct.config.get("net0", "")))
        if static is not None:
            return static
        if ct.vmid not in self.leases:
            self.leases[ct.vmid] = f"{next(self._hosts)}/24"
        return self.leases[ct.vmid]

    def boot(self, ct: Container) -> None:
        ct.status = "running"
        ct.address = self._address_for(ct)
        ct.config["_booted"] = time.monotonic()

    def halt(self, ct: Container) -> None:
        ct.status = "stopped"
        ct.address = None
        ct.frozen = False


def static_ip(net0: str) -> str | None:
    """The static ``ip=`` (CIDR) of a ``net0`` value; None on DHCP or without one.

    >>> static_ip("name=eth0,bridge=vmbr0,ip=198.18.0.11/15,gw=198.18.0.1"), static_ip("name=eth0,ip=dhcp")
    ('198.18.0.11/15', None)
    """
    for part in net0.split(","):
        if part.startswith("ip=") and part != "ip=dhcp":
            return part[3:]
    return None


def mac_for(vmid: int) -> str:
    """A stable locally administered MAC address for a container."""
    return f"BC:24:11:{vmid >> 16 & 255:02X}:{vmid >> 8 & 255:02X}:{vmid & 255:02X}"


def new_digest() -> str:
    return os.urandom(20).hex()
