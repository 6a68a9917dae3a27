"""Who keeps a service running on its host: a detached process, or a systemd unit.

Hosts without systemd (this machine, most containers in CI) run every service as a
detached process with a pid file (:mod:`dbtier.procs`). Hosts that run systemd get
one unit per service, ``dbtier-<cluster>-<service>.service``, with
``Restart=on-failure``, enabled so the cluster comes back when the host reboots.
The unit's command is the same launch script, so it writes the same pid file and
log: status, drills and teardown find a service the same way under both.

The choice is per host (``ssh.services: auto | systemd | processes``); ``auto``
uses systemd where it runs as the host's init (``/run/systemd/system`` exists,
which is systemd's own test).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from dbtier import procs
from dbtier.errors import CommandFailed, ProvisionError
from dbtier.procs import Service
from dbtier.providers.base import Runner

if TYPE_CHECKING:
    from dbtier.providers.ssh import SSHRunner

UNIT_DIR = "/etc/systemd/system"
#: systemd's own test for "booted with systemd" (sd_booted(3)).
SYSTEMD_MARK = "/run/systemd/system"
UNIT_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


# -- pure: unit names and unit files ---------------------------------------------------------------


def unit_name(cluster: str, service: str) -> str:
    """
    >>> unit_name("orders", "etcd0")
    'dbtier-orders-etcd0.service'
    """
    return f"dbtier-{cluster}-{service}.service"


def systemd_quote(arg: str) -> str:
    """One command-line word as systemd reads it: double-quoted, with ``$`` and ``%`` kept literal.

    systemd expands ``$NAME`` and ``%x`` specifiers in ``ExecStart=``; ``$$`` and ``%%`` are the
    literal characters.

    >>> systemd_quote("plain")
    '"plain"'
    >>> systemd_quote('echo $$ > "$1" 100%')
    '"echo $$$$ > \\\\"$$1\\\\" 100%%"'
    """
    escaped = (arg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("$", "$$").replace("%", "%%"))
    return f'"{escaped}"'


def exec_line(argv: Sequence[str]) -> str:
    """
    >>> exec_line(["/bin/sh", "-c", "exec $0"])
    '"/bin/sh" "-c" "exec $$0"'
    """
    return " ".join(systemd_quote(a) for a in argv)


def render_unit(cluster: str, os_user: str, service: Service, env: Mapping[str, str] | None = None) -> str:
    """The unit file of ``service``: the launch script (pid file, log) as its command, restarted on failure.

    Patroni's unit stops only Patroni (``KillMode=process``): Patroni shuts its postmaster down
    itself, and a Patroni that systemd restarts finds its postmaster still running.

    >>> svc = Service("pg0", "patroni", "h", ["/opt/p", "/d/patroni.yml"], "/d/p.pid", "/d/p.log", "/d/patroni.yml", [])
    >>> text = render_unit("orders", "dbtier", svc)
    >>> [line for line in text.splitlines() if line.startswith(("User=", "Restart=", "KillMode=", "WantedBy="))]
    ['User=dbtier', 'Restart=on-failure', 'KillMode=process', 'WantedBy=multi-user.target']
    """
    environment = " ".join(systemd_quote(f"{k}={v}") for k, v in {**UNIT_ENV, **service.env, **(env or {})}.items())
    lines = [
        f"# Written by dbtier for cluster {cluster}. 'dbtier teardown' stops and disables it; '--wipe' removes it.",
        "[Unit]",
        f"Description=dbtier {cluster}: {service.kind} {service.name}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={'root' if service.as_root else os_user}",
        f"Group={'root' if service.as_root else os_user}",
        "WorkingDirectory=/",
        f"Environment={environment}",
        *(f"ExecStartPre={exec_line(command)}" for command in service.pre_start),
        f"ExecStart={exec_line(procs.launch_command(service.argv, service.pidfile, service.logfile))}",
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=60",
        "LimitNOFILE=65536",
    ]
    if service.kind == "patroni":
        lines.append("KillMode=process")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


# -- the interface -----------------------------------------------------------------------------------


class Supervisor(ABC):
    """Starts and stops the services of one host. Every method returns a sentence (or a pid)."""

    kind: str

    @abstractmethod
    def start(self, runner: Runner, service: Service) -> int:
        """Start ``service`` (it does not run) and return its pid once its pid file names a live process."""

    @abstractmethod
    def stop(self, runner: Runner, service: Service, timeout: float) -> str:
        """Stop ``service`` and keep it stopped (a reboot does not bring it back)."""

    def keep_down(self, runner: Runner, service: Service) -> str:
        """After a fault killed ``service``, keep it down until something starts it again."""
        return ""

    def remove(self, runner: Runner, services: Iterable[Service]) -> list[str]:
        """Forget ``services`` for good (the cluster is wiped); they no longer run."""
        return []


class Processes(Supervisor):
    """Detached processes with pid files; nothing restarts them."""

    kind = "processes"

    def start(self, runner: Runner, service: Service) -> int:
        if service.as_root:
            raise ProvisionError(f"{service.host}: {service.name} ({service.kind}) runs as root, which dbtier does only "
                                 "under systemd, and this host does not run systemd; drop what needs it from the "
                                 "spec (postgres.routing.vip for keepalived)")
        return procs.start(runner, service)

    def stop(self, runner: Runner, service: Service, timeout: float) -> str:
        return procs.stop(runner, service, timeout=timeout)


class Systemd(Supervisor):
    """One systemd unit per service, installed and driven as root through an SSH runner."""

    kind = "systemd"

    def __init__(self, root: SSHRunner, cluster: str, os_user: str) -> None:
        self.root = root
        self.cluster = cluster
        self.os_user = os_user

    def _unit(self, service: Service) -> str:
        return unit_name(self.cluster, service.name)

    def _systemctl(self, *args: str, check: bool = True) -> int:
        try:
            return self.root.run_as_root(["systemctl", *args], timeout=120).rc
        except CommandFailed as err:
            if check:
                tail = (err.err or err.out).strip().splitlines()
                raise ProvisionError(f"{self.root.host}: 'systemctl {' '.join(args)}' exited {err.rc}: "
                                     f"{tail[-1] if tail else '(no output)'}") from None
            return err.rc

    def install(self, service: Service) -> bool:
        """Write the unit when it differs from what is there; True when systemd had to reload."""
        path = f"{UNIT_DIR}/{self._unit(service)}"
        text = render_unit(self.cluster, self.os_user, service)
        if self.root.read_file(path) == text.encode():
            return False
        self.root.write_root_file(path, text.encode(), mode=0o644)
        self._systemctl("daemon-reload")
        return True

    def start(self, runner: Runner, service: Service) -> int:
        self.install(service)
        runner.run(["rm", "-f", service.pidfile])
        unit = self._unit(service)
        self._systemctl("reset-failed", unit, check=False)
        self._systemctl("enable", "--quiet", unit)
        self._systemctl("start", unit)
        return procs.wait_started(runner, service, wait=15.0, where=f"systemd unit {unit}")

    def _known(self, service: Service) -> bool:
        return self.root.read_file(f"{UNIT_DIR}/{self._unit(service)}") is not None

    def stop(self, runner: Runner, service: Service, timeout: float) -> str:
        if not self._known(service):  # started as a detached process before systemd was used here
            return procs.stop(runner, service, timeout=timeout)
        pid = procs.running_pid(runner, service)
        began = time.monotonic()
        # --no-block: the stop job runs while we watch the pid, so a stuck job cannot hold teardown up.
        self._systemctl("disable", "--quiet", "--now", "--no-block", self._unit(service))
        if pid is None:
            return f"{service.name} was not running (unit {self._unit(service)} disabled)"
        while time.monotonic() - began < timeout:
            if not procs.pid_matches(runner, pid, service.marker):
                return f"{service.name} (pid {pid}) stopped by systemd after {time.monotonic() - began:.1f} s"
            time.sleep(0.1)
        # systemd has not stopped it in time: finish by pid (SIGTERM, then SIGKILL).
        return procs.stop_pid(runner, pid, service.marker, service.name, timeout=10)

    def keep_down(self, runner: Runner, service: Service) -> str:
        """A killed unit waits RestartSec before systemd restarts it; a stop job cancels that restart."""
        if not self._known(service):
            return ""
        self._systemctl("stop", "--no-block", self._unit(service), check=False)
        return f"systemd's restart of {self._unit(service)} cancelled (the member stays down, as after a host crash)"

    def remove(self, runner: Runner, services: Iterable[Service]) -> list[str]:
        units = [self._unit(s) for s in services if self._known(s)]
        if not units:
            return []
        self._systemctl("disable", "--quiet", "--now", "--no-block", *units, check=False)
        self.root.run_as_root(["rm", "-f", "--", *(f"{UNIT_DIR}/{u}" for u in units)])
        self._systemctl("daemon-reload")
        self._systemctl("reset-failed", *units, check=False)
        return [f"{self.root.host}: removed systemd units {', '.join(units)}"]


def systemd_runs(root: SSHRunner) -> bool:
    """True when systemd is the host's init (its own test: ``/run/systemd/system`` exists)."""
    return root.run_as_root(["sh", "-c", f"test -d {SYSTEMD_MARK} && echo yes || echo no"], timeout=30).out.strip() == "yes"
