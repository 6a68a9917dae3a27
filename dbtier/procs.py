"""Detached processes tracked by pid files, through any :class:`Runner`.

A service is started as ``setsid -f sh -c 'echo $$ > PIDFILE; exec ARGV'`` so
that it outlives the flow run, is re-parented to init, and its pid file holds
the real program's pid. Liveness is checked against ``/proc/PID/cmdline`` so a
recycled pid is never mistaken for (or killed as) ours.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dbtier.errors import DbtierError, ProvisionError
from dbtier.providers.base import Runner

LAUNCH_SCRIPT = 'pidfile=$1; log=$2; shift 2; echo $$ > "$pidfile"; exec "$@" >>"$log" 2>&1 </dev/null'


@dataclass(frozen=True)
class Service:
    """One long-running process of the cluster, as data."""

    name: str
    kind: str
    host: str
    argv: list[str]
    pidfile: str
    logfile: str
    marker: str
    ports: list[tuple[str, int]]
    env: dict[str, str] = field(default_factory=dict)
    #: The signal that makes it re-read its configuration files; None: it needs a restart.
    reload_signal: str | None = None
    #: It runs as root (it changes the host's network), only under systemd; the database OS user otherwise.
    as_root: bool = False
    #: Commands systemd runs as root before starting it (``ExecStartPre``).
    pre_start: list[list[str]] = field(default_factory=list)


def launch_command(argv: Sequence[str], pidfile: str, logfile: str) -> list[str]:
    """The argv that runs ``argv`` in the foreground, writing its pid and log (a systemd unit's command).

    >>> launch_command(["etcd", "--name", "e0"], "/d/e0.pid", "/d/e0.log")[4:]
    ['/d/e0.pid', '/d/e0.log', 'etcd', '--name', 'e0']
    """
    return ["/bin/sh", "-c", LAUNCH_SCRIPT, "sh", pidfile, logfile, *argv]


def launch_argv(argv: Sequence[str], pidfile: str, logfile: str) -> list[str]:
    """The argv that starts ``argv`` detached, writing its pid and log.

    >>> launch_argv(["etcd", "--name", "e0"], "/d/e0.pid", "/d/e0.log")[:3]
    ['setsid', '-f', '/bin/sh']
    """
    return ["setsid", "-f", *launch_command(argv, pidfile, logfile)]


def read_pid(runner: Runner, pidfile: str) -> int | None:
    raw = runner.read_file(pidfile)
    if raw is None:
        return None
    text = raw.decode(errors="replace").strip().splitlines()
    return int(text[0]) if text and text[0].isdigit() else None


def pid_matches(runner: Runner, pid: int, marker: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line holds ``marker``."""
    stat = runner.read_file(f"/proc/{pid}/stat")
    if stat is None:
        return False
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    if state == [b"Z"]:
        return False
    cmdline = runner.read_file(f"/proc/{pid}/cmdline") or b""
    return marker.encode() in cmdline


def _wait_ports_free(runner: Runner, service: Service, timeout: float = 5.0) -> None:
    """Until nothing listens on ``service``'s ports (at most ``timeout``): a process that exits loses its command
    line first and its last threads, which hold its sockets, a moment later (measured: an exporter's port stayed
    open after its pid no longer matched), so a start right after a stop could not bind."""
    deadline = time.monotonic() + timeout
    for _field, port in service.ports:
        while runner.port_in_use(port) and time.monotonic() < deadline:
            time.sleep(0.05)


def running_pid(runner: Runner, service: Service) -> int | None:
    """The pid of ``service`` when it runs, else None."""
    pid = read_pid(runner, service.pidfile)
    if pid is not None and pid_matches(runner, pid, service.marker):
        return pid
    return None


def start(runner: Runner, service: Service, env: Mapping[str, str] | None = None, wait: float = 10.0) -> int:
    """Start ``service`` detached and return its pid (the one in its pid file)."""
    runner.run(["rm", "-f", service.pidfile])
    runner.run(launch_argv(service.argv, service.pidfile, service.logfile), env={**service.env, **(env or {})})
    return wait_started(runner, service, wait)


def wait_started(runner: Runner, service: Service, wait: float = 10.0, where: str = "") -> int:
    """The pid of ``service`` once its pid file names a live process; else a one-line error with its log's tail."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = running_pid(runner, service)
        if pid is not None:
            return pid
        time.sleep(0.05)
    tail = (runner.read_file(service.logfile) or b"").decode(errors="replace").strip().splitlines()[-3:]
    how = f" ({where})" if where else ""
    raise ProvisionError(f"{service.name} did not start{how}; last log lines: {' | '.join(tail) or '(empty)'}")


def stop(runner: Runner, service: Service, timeout: float = 30.0) -> str:
    """Stop ``service`` by its pid: SIGTERM, then SIGKILL after ``timeout``. Returns a sentence."""
    pid = running_pid(runner, service)
    if pid is None:
        return f"{service.name} was not running"
    said = stop_pid(runner, pid, service.marker, service.name, timeout)
    _wait_ports_free(runner, service)
    return said


def stop_pid(runner: Runner, pid: int, marker: str, name: str, timeout: float = 30.0) -> str:
    started = time.monotonic()
    runner.run(["kill", "-TERM", str(pid)], check=False)
    while time.monotonic() - started < timeout:
        if not pid_matches(runner, pid, marker):
            return f"{name} (pid {pid}) stopped after {time.monotonic() - started:.1f} s"
        time.sleep(0.1)
    runner.run(["kill", "-KILL", str(pid)], check=False)
    deadline = time.monotonic() + 10
    while pid_matches(runner, pid, marker):
        if time.monotonic() > deadline:
            raise ProvisionError(f"{name} (pid {pid}) survived SIGKILL for 10 s; check it by hand")
        time.sleep(0.05)
    return f"{name} (pid {pid}) did not stop within {timeout:.0f} s and was killed"


def stop_child(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process this one started, by its Popen handle: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


#: A listening socket: local address, port, and the pids that hold it (empty: the runner's user cannot see them).
Listener = tuple[str, int, frozenset[int]]

_WILDCARDS = frozenset({"0.0.0.0", "*", "::", "[::]"})


def parse_listeners(ss_out: str) -> list[Listener]:
    """The listening TCP sockets in ``ss -Htlnp`` output.

    >>> parse_listeners('LISTEN 0 4096 127.0.0.1:2379 0.0.0.0:* users:(("etcd",pid=41,fd=7))\\n'
    ...                 'LISTEN 0 128 [::]:22 [::]:*\\n')
    [('127.0.0.1', 2379, frozenset({41})), ('[::]', 22, frozenset())]
    """
    found: list[Listener] = []
    for line in ss_out.splitlines():
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[3]:
            continue
        address, _, port = parts[3].rpartition(":")
        if port.isdigit():
            pids = frozenset(int(p) for p in re.findall(r"pid=(\d+)", " ".join(parts[5:])))
            found.append((address.split("%")[0], int(port), pids))
    return found


def listeners(runner: Runner) -> list[Listener] | None:
    """The host's listening TCP sockets (``ss``); None when they cannot be read there."""
    try:
        done = runner.run(["ss", "-Htlnp"], check=False, timeout=20)
    except DbtierError:
        return None
    return parse_listeners(done.out) if done.rc == 0 else None


def port_holders(table: list[Listener], host: str, port: int) -> frozenset[int] | None:
    """The pids listening on ``host``'s ``port`` (on its address or a wildcard one); None when nobody listens.
    ``host`` a name rather than an address: any socket on the port counts.

    >>> table = [("127.0.0.11", 5432, frozenset({7})), ("0.0.0.0", 8008, frozenset({8}))]
    >>> port_holders(table, "127.0.0.11", 5432), port_holders(table, "127.0.0.12", 5432), port_holders(table, "h", 8008)
    (frozenset({7}), None, frozenset({8}))
    """
    try:
        ipaddress.ip_address(host.strip("[]"))
        named = False
    except ValueError:
        named = True
    matching = [pids for address, p, pids in table
                if p == port and (named or address in _WILDCARDS or address.strip("[]") == host.strip("[]"))]
    return frozenset().union(*matching) if matching else None


@dataclass(frozen=True)
class PidMismatch:
    """A service's port held by a process other than the one its pid file names."""

    service: str
    pid: int | None
    alive: bool
    port: int
    holders: frozenset[int]

    def _held(self) -> str:
        return f"pid {', '.join(str(p) for p in sorted(self.holders))}" if self.holders else "another user's process"

    @property
    def sentence(self) -> str:
        """
        >>> PidMismatch("etcd0", 41, False, 2379, frozenset({77})).sentence
        'etcd0: its pid file names pid 41, which is not running; port 2379 is held by pid 77'
        >>> PidMismatch("etcd0", None, False, 2379, frozenset()).sentence
        "etcd0: its pid file names no pid; port 2379 is held by another user's process"
        >>> PidMismatch("etcd0", 41, True, 2379, frozenset({77, 78})).sentence
        'etcd0: its pid file names pid 41, but port 2379 is held by pid 77, 78'
        """
        if self.pid is None:
            return f"{self.service}: its pid file names no pid; port {self.port} is held by {self._held()}"
        if self.alive:
            return f"{self.service}: its pid file names pid {self.pid}, but port {self.port} is held by {self._held()}"
        return f"{self.service}: its pid file names pid {self.pid}, which is not running; port {self.port} is held by {self._held()}"

    @property
    def cell(self) -> str:
        """
        >>> PidMismatch("etcd0", 41, False, 2379, frozenset({77})).cell, PidMismatch("pg0", None, False, 5432, frozenset()).cell
        ('pid 41 dead; port 2379: pid 77', "no pid; port 5432: another user's process")
        """
        named = "no pid" if self.pid is None else f"pid {self.pid} {'alive' if self.alive else 'dead'}"
        return f"{named}; port {self.port}: {self._held()}"
