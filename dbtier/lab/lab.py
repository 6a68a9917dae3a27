"""Bringing a lab up and down, and acting on its hosts (root only).

Everything a lab makes is recorded in its state file *before* it is made, so a ``down`` after an
interrupted ``up`` removes it all: launcher processes (by PID, checked against their command line),
cgroups, the bridge, veth ends, the S3 server, the lab's directory. A second ``down`` finds nothing.

Layout on this machine, ``/var/lib/dbtier-lab/<name>/`` (``DBTIER_LAB_ROOT`` moves it)::

    lab.json                 the state: plan, PIDs, what was made
    public/                  what hosts and flows read: S3 CA, the ready specs
    private/                 hidden inside the hosts: the lab's key pair, each host's disk (hosts/<host>/upper)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbtier.errors import DbtierError, Refused
from dbtier.lab import plan as plans
from dbtier.lab.host import CGROUP_ROOT, HostConfig, cgroup_pids, remove_cgroup
from dbtier.lab.plan import LabHost, LabPlan

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
NEEDED = ("ip", "nft", "unshare", "nsenter", "ssh-keygen", "/usr/sbin/sshd", "/lib/systemd/systemd")


class LabError(DbtierError):
    """A lab could not be brought up, acted on or down."""


def lab_root() -> Path:
    return Path(os.environ.get("DBTIER_LAB_ROOT", "/var/lib/dbtier-lab"))


@dataclass
class LabState:
    """What a lab is and what of it was made; saved as ``lab.json`` after every step."""

    name: str
    subnet: str
    hosts: int
    launchers: dict[str, int] = field(default_factory=dict)  #: host name -> launcher PID
    s3_pid: int | None = None
    pve_pid: int | None = None
    bridge_made: bool = False
    ready: bool = False  #: set once up has finished: every part made and answering
    created: float = field(default_factory=time.time)

    @property
    def plan(self) -> LabPlan:
        return plans.plan_lab(self.name, self.hosts, self.subnet)

    @property
    def dir(self) -> Path:
        return lab_root() / self.name

    @property
    def public(self) -> Path:
        return self.dir / "public"

    @property
    def private(self) -> Path:
        return self.dir / "private"

    @property
    def key_file(self) -> str:
        return str(self.private / "id_ed25519")

    @property
    def ca_file(self) -> str:
        return str(self.public / "s3-ca.pem")

    def host_dir(self, host: LabHost) -> Path:
        return self.private / "hosts" / host.name

    def cgroup(self, host: LabHost) -> Path:
        return CGROUP_ROOT / f"dbtier-lab-{self.name}-{host.index}"

    def launcher_args(self, host: LabHost) -> tuple[str, str]:
        """The arguments that tell this host's launcher from any other lab's (see :func:`holds_args`)."""
        return "dbtier.lab.host", str(self.host_dir(host) / "host.json")

    @property
    def s3_args(self) -> tuple[str, str, str]:
        return "dbtier.lab.s3", "--bind", self.plan.gateway

    @property
    def pve_args(self) -> tuple[str, str]:
        return "--lab", self.name

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.dir / "lab.json")

    @classmethod
    def load(cls, name: str) -> LabState | None:
        path = lab_root() / plans.check_name(name) / "lab.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


# -- small helpers ---------------------------------------------------------------------------------------------


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip() or f'exit {done.returncode}'}")
    return done


def holds_args(cmdline: bytes, marker: tuple[str, ...]) -> bool:
    r"""True when the arguments ``marker`` appear in a row in ``cmdline`` (as ``/proc/PID/cmdline`` holds it).

    A marker names one lab's own process (its host's config file, its lab's name), not just the kind: PIDs wrap
    on a busy machine, and another lab's launcher under a stale PID must never be taken for this one's.

    >>> line = b"python\0-m\0dbtier.lab.host\0/l/tnet/hosts/tnet-1/host.json\0"
    >>> holds_args(line, ("dbtier.lab.host", "/l/tnet/hosts/tnet-1/host.json"))
    True
    >>> holds_args(line, ("dbtier.lab.host", "/l/tnet/hosts/tnet-2/host.json"))
    False
    >>> holds_args(b"python\0-m\0dbtier.lab.pve\0--lab\0tnet2\0", ("--lab", "tnet"))
    False
    >>> holds_args(b"", ("--lab", "tnet"))
    False
    """
    args = cmdline.decode(errors="replace").split("\0")
    width = len(marker)
    return any(tuple(args[i:i + width]) == marker for i in range(len(args) - width + 1))


def pid_runs(pid: int | None, marker: tuple[str, ...]) -> bool:
    """True when ``pid`` runs with ``marker`` among its arguments (so a reused PID is never signalled)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return holds_args(cmdline, marker)


def _stop_pid(pid: int | None, marker: tuple[str, ...], grace: float = 10) -> None:
    if not pid_runs(pid, marker):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_runs(pid, marker) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if pid_runs(pid, marker):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def _addresses_in_use() -> list[str]:
    done = _run(["ip", "-j", "-4", "addr"], check=False)
    used: list[str] = []
    for link in json.loads(done.stdout or "[]"):
        used.extend(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []))
    return used


def ssh_argv(state: LabState, host: LabHost, command: str, timeout: int = 10) -> list[str]:
    return ["ssh", "-i", state.key_file, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={timeout}",
            f"root@{host.address}", command]


def check_machine() -> None:
    """Refuse, in one line, a machine the lab cannot run on."""
    if os.geteuid() != 0:
        raise Refused("dbtier lab: needs root (it makes network namespaces, a bridge and overlay mounts); run it with sudo")
    missing = [n for n in NEEDED if not (shutil.which(n) or Path(n).exists())]
    if missing:
        raise Refused(f"dbtier lab: missing {', '.join(missing)}; run `make setup` (it installs them)")
    if not (CGROUP_ROOT / "cgroup.procs").exists():
        raise Refused(f"dbtier lab: no cgroup2 hierarchy at {CGROUP_ROOT}")


# -- up ---------------------------------------------------------------------------------------------------------


def up(name: str = "lab", hosts: int = 3, subnet: str | None = None, progress: Any = print) -> LabState:
    """Bring a lab up (or find it up): bridge, hosts booted with their sshd answering, S3, the ready specs."""
    check_machine()
    plans.check_name(name)
    existing = LabState.load(name)
    if existing is not None:
        if existing.ready and all(pid_runs(existing.launchers.get(h.name), existing.launcher_args(h))
                                  for h in existing.plan.hosts):
            progress(f"lab {name} is already up")
            return existing
        raise Refused(f"lab {name}: a lab of that name is partly up (an interrupted up, or a host down); "
                      f"run `dbtier lab down --name {name}` first")
    chosen = plans.check_subnet(subnet) if subnet else plans.free_subnet(_addresses_in_use())
    state = LabState(name=name, subnet=chosen, hosts=hosts)
    lab = state.plan  # validates name, size and subnet before anything is made
    if _link_exists(lab.bridge):
        raise Refused(f"lab {name}: interface {lab.bridge} exists but no lab state does; remove it with "
                      f"`ip link del {lab.bridge}`")
    state.save()
    try:
        _make_bridge(state)
        _make_keys(state)
        for host in lab.hosts:
            _make_disk(state, host)
        _start_s3(state)
        progress(f"lab {name}: S3 at https://{lab.gateway}:{plans.S3_PORT}")
        for host in lab.hosts:
            boot_host(state, host, wait=False)
        for host in lab.hosts:
            wait_ssh(state, host)
            progress(f"lab {name}: {host.name} booted at {host.address}")
        _start_pve(state)
        progress(f"lab {name}: PVE API double at https://{lab.gateway}:{plans.PVE_PORT} (the hosts are its containers)")
        _write_specs(state)
        state.ready = True
        state.save()
    except BaseException:
        progress(f"lab {name}: up failed; `dbtier lab down --name {name}` removes what was made")
        raise
    return state


def _make_bridge(state: LabState) -> None:
    lab = state.plan
    state.bridge_made = True
    state.save()
    _run(["ip", "link", "add", lab.bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{lab.gateway}/{lab.prefix}", "dev", lab.bridge])
    _run(["ip", "link", "set", lab.bridge, "up"])
    # The machine never forwards for the lab: its hosts reach only each other and this machine.
    Path(f"/proc/sys/net/ipv4/conf/{lab.bridge}/forwarding").write_text("0\n")


def _make_keys(state: LabState) -> None:
    state.private.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.public.mkdir(parents=True, exist_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dbtier-lab-{state.name}", "-f", state.key_file])
    from dbtier.lab.s3 import make_cert

    cert, key = make_cert(str(state.private / "s3"), [state.plan.gateway])
    shutil.copy(cert, state.ca_file)
    os.chmod(state.ca_file, 0o644)


def _opaque_dir(path: Path) -> None:
    """A directory of the host's own that hides what this machine has at the same path."""
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def _make_disk(state: LabState, host: LabHost) -> None:
    """The host's own disk (overlay upper dir) with its sshd, keys and units, before its first boot."""
    base = state.host_dir(host)
    for sub in ("upper", "work", "root"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    upper = base / "upper"
    key = base / "ssh_host_ed25519_key"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key)])
    authorized = Path(f"{state.key_file}.pub").read_text()
    for path, (text, mode) in plans.host_files(host, key.read_text(), authorized).items():
        target = upper / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
    (upper / "etc" / "machine-id").write_text(os.urandom(16).hex() + "\n")
    units = upper / "etc" / "systemd" / "system"
    for wants in ("multi-user.target.wants", "sysinit.target.wants", "sockets.target.wants", "timers.target.wants"):
        _opaque_dir(units / wants)
    (units / "multi-user.target.wants" / "dbtier-lab-sshd.service").symlink_to(
        "/etc/systemd/system/dbtier-lab-sshd.service")
    for unit in plans.MASKED:
        (units / unit).symlink_to("/dev/null")
    _opaque_dir(upper / plans.HOST_DATA_ROOT.lstrip("/"))
    # root's own home: not this machine's dotfiles (its .bashrc runs `pyenv init`, whose rehash lock made every
    # SSH command of a host wait 60 s)
    _opaque_dir(upper / "root")
    (upper / "root").chmod(0o700)


def boot_host(state: LabState, host: LabHost, wait: bool = True) -> int:
    """Start the host's launcher (detached); with ``wait``, return once its sshd runs a command."""
    base = state.host_dir(host)
    cgroup = state.cgroup(host)
    if cgroup.exists():
        remove_cgroup(cgroup)
    cgroup.mkdir()
    config = HostConfig(name=host.name, base=str(base), cgroup=str(cgroup), hide=str(state.private),
                        bridge=state.plan.bridge, veth=host.veth, address=host.interface)
    config.save(base / "host.json")
    with open(base / "console.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", *state.launcher_args(host)], cwd=REPO_ROOT,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state.launchers[host.name] = proc.pid
    state.save()
    if wait:
        wait_ssh(state, host, launcher=proc)
    return proc.pid


def wait_ssh(state: LabState, host: LabHost, limit: float = 180, launcher: subprocess.Popen[bytes] | None = None) -> None:
    """Until a command over the host's sshd completes and systemd has finished booting."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        gone = _launcher_gone(state, host, launcher)
        if gone is not None:
            raise LabError(f"lab {state.name}: {host.name} stopped while booting ({gone}): {_console_tail(state, host)}")
        try:
            done = subprocess.run(ssh_argv(state, host, "systemctl is-system-running --wait || true"),
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0 and done.stdout.strip() in ("running", "degraded"):
            return
        time.sleep(0.3)
    raise LabError(f"lab {state.name}: {host.name} did not boot within {limit:.0f} s: {_console_tail(state, host)}")


def _console_tail(state: LabState, host: LabHost) -> str:
    tail = (state.host_dir(host) / "console.log").read_text(errors="replace")[-1500:]
    return " ".join(tail.split()) or "nothing on its console"


def _launcher_gone(state: LabState, host: LabHost, launcher: subprocess.Popen[bytes] | None) -> str | None:
    """None while the host's launcher runs; else how it ended, as far as this process can tell."""
    if launcher is not None:
        return None if launcher.poll() is None else f"its launcher exited: {exit_cause(launcher.returncode)}"
    pid = state.launchers.get(host.name)
    if pid_runs(pid, state.launcher_args(host)):
        return None
    reaped, status = 0, 0
    if pid:  # the launcher is this process's child when this process booted it (a drill's power-on)
        with contextlib.suppress(ChildProcessError):
            reaped, status = os.waitpid(pid, os.WNOHANG)
    how = exit_cause(os.waitstatus_to_exitcode(status)) if reaped else "its exit status is not known here"
    return f"its launcher (pid {pid}) is gone: {how}"


def exit_cause(code: int | None) -> str:
    """A process's end in words, from a Popen-style return code.

    >>> exit_cause(1), exit_cause(-15), exit_cause(0)
    ('exit status 1', 'killed by SIGTERM', 'exit status 0')
    """
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _start_s3(state: LabState) -> None:
    from dbtier.lab.s3 import wait_ready

    lab = state.plan
    log_path = state.private / "s3" / "s3.log"
    argv = [sys.executable, "-m", *state.s3_args, "--port", str(plans.S3_PORT),
            "--cert", str(state.private / "s3" / "s3.pem"), "--key", str(state.private / "s3" / "s3.key")]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    state.s3_pid = proc.pid
    state.save()
    try:
        wait_ready(proc, str(log_path), plans.S3_PORT, lab.gateway)
    except RuntimeError as err:
        raise LabError(f"lab {state.name}: S3: {' '.join(str(err).split())}") from None


def pve_connection(state: LabState) -> dict[str, Any] | None:
    """What the PVE double wrote for its clients (the fields of a ProxmoxCredentials block), once it answers."""
    path = state.private / "pve" / "pve-api.json"
    return json.loads(path.read_text()) if path.exists() else None


def _start_pve(state: LabState, limit: float = 60) -> None:
    lab = state.plan
    (state.private / "pve").mkdir(parents=True, exist_ok=True)
    nodes = ",".join(f"pve{h.index}" for h in lab.hosts)
    argv = [sys.executable, "-m", "dbtier.lab.pve", "--listen", f"{lab.gateway}:{plans.PVE_PORT}",
            "--state-dir", str(state.private / "pve"), "--nodes", nodes,
            "--backend", "dbtier.lab.power:backend_for", *state.pve_args]
    with open(state.private / "pve" / "pve.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    state.pve_pid = proc.pid
    state.save()
    deadline = time.monotonic() + limit
    while pve_connection(state) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (state.private / "pve" / "pve.log").read_text(errors="replace")[-800:]
            raise LabError(f"lab {state.name}: the PVE API double did not start: {' '.join(tail.split())}")
        time.sleep(0.1)


def host_key_line(state: LabState, host: LabHost) -> str:
    pub = (state.host_dir(host) / "ssh_host_ed25519_key.pub").read_text().split()
    return " ".join(pub[:2])


def _write_specs(state: LabState) -> None:
    lab = state.plan
    keys = {h.name: host_key_line(state, h) for h in lab.hosts}
    spec = plans.ssh_spec(lab, state.key_file, keys, state.ca_file, cluster=state.name)
    (state.public / "ssh-spec.yaml").write_text(
        f"# The lab {state.name}'s hosts over SSH: one member per host, backups in the lab's S3.\n"
        + yaml.safe_dump(spec, sort_keys=False))
    (state.public / "proxmox-spec.yaml").write_text(
        f"# The lab {state.name}'s hosts as containers of its PVE API double: one member per container.\n"
        + yaml.safe_dump(plans.proxmox_spec(lab, state.key_file, cluster=f"{state.name}pve"), sort_keys=False))
    (state.public / "s3.json").write_text(json.dumps(s3_settings(state), indent=2))


def s3_settings(state: LabState) -> dict[str, Any]:
    """What an S3Repository block for the lab's S3 holds (moto accepts any key)."""
    from dbtier.lab.s3 import ACCESS_KEY, SECRET_KEY

    return {"bucket": plans.S3_BUCKET, "endpoint": state.plan.gateway, "port": plans.S3_PORT, "uri_style": "path",
            "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "ca_file": state.ca_file}


# -- acting on hosts -----------------------------------------------------------------------------------------


def host_running(state: LabState, host: LabHost) -> bool:
    return pid_runs(state.launchers.get(host.name), state.launcher_args(host))


def freeze(state: LabState, host: LabHost) -> str:
    (state.cgroup(host) / "cgroup.freeze").write_text("1\n")
    return f"{host.name}: every process frozen (cgroup.freeze)"


def thaw(state: LabState, host: LabHost) -> str:
    (state.cgroup(host) / "cgroup.freeze").write_text("0\n")
    return f"{host.name}: running again"


def kill(state: LabState, host: LabHost) -> str:
    """Power loss: every process of the host killed at once; its namespaces (sockets, rules, veth) die with them."""
    cgroup = state.cgroup(host)
    if cgroup.exists():
        (cgroup / "cgroup.kill").write_text("1\n")
        deadline = time.monotonic() + 15
        while cgroup_pids(cgroup) and time.monotonic() < deadline:
            time.sleep(0.05)
    pid = state.launchers.get(host.name)
    deadline = time.monotonic() + 10
    while pid_runs(pid, state.launcher_args(host)) and time.monotonic() < deadline:
        assert pid is not None
        _reap(pid)
        time.sleep(0.05)
    _stop_pid(pid, state.launcher_args(host), grace=2)
    remove_cgroup(cgroup)
    if _link_exists(host.veth):
        _run(["ip", "link", "del", host.veth], check=False)
    return f"{host.name}: powered off (every process killed at once)"


# -- down and status ------------------------------------------------------------------------------------------


def down(name: str = "lab", progress: Any = print) -> list[str]:
    """Remove everything the lab made; a lab that does not exist is a no-op."""
    check_machine()
    state = LabState.load(name)
    if state is None:
        leftovers = [f"dbtl-{name}"] if _link_exists(f"dbtl-{name}") else []
        if not leftovers:
            progress(f"lab {name}: nothing to take down")
            return []
    done: list[str] = []
    if state is not None:
        lab = state.plan
        for host in lab.hosts:
            if host.name in state.launchers or state.cgroup(host).exists():
                kill(state, host)
                done.append(f"{host.name} stopped")
        _stop_pid(state.s3_pid, state.s3_args)
        _stop_pid(state.pve_pid, state.pve_args)
        if _link_exists(lab.bridge):
            _run(["ip", "link", "del", lab.bridge])
            done.append(f"bridge {lab.bridge} removed")
        _unmount_below(state.dir)
        shutil.rmtree(state.dir, ignore_errors=True)
        done.append(f"{state.dir} removed")
    elif _link_exists(f"dbtl-{name}"):
        _run(["ip", "link", "del", f"dbtl-{name}"])
        done.append(f"bridge dbtl-{name} removed")
    for line in done:
        progress(f"lab {name}: {line}")
    return done


def _unmount_below(path: Path) -> None:
    """Mounts under ``path`` in this machine's own mount namespace (none expected: hosts mount in their own)."""
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        target = line.split()[1]
        if target.startswith(str(path)):
            _run(["umount", "-l", target], check=False)


def status(name: str = "lab") -> dict[str, Any] | None:
    """Hosts, addresses and what runs in each (None: no such lab)."""
    state = LabState.load(name)
    if state is None:
        return None
    lab = state.plan
    hosts = []
    for host in lab.hosts:
        running = host_running(state, host)
        services: list[str] = []
        if running:
            done = subprocess.run(ssh_argv(state, host, "systemctl list-units --type=service --state=running "
                                                         "--no-legend --plain 'dbtier-*'", timeout=5),
                                  capture_output=True, text=True, timeout=30)
            services = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
        frozen = (state.cgroup(host) / "cgroup.freeze").exists() and \
            (state.cgroup(host) / "cgroup.freeze").read_text().strip() == "1"
        hosts.append({"name": host.name, "address": host.address,
                      "state": "frozen" if frozen else "running" if running else "down", "services": services})
    return {"name": name, "subnet": lab.subnet, "bridge": lab.bridge, "gateway": lab.gateway,
            "s3": f"https://{lab.gateway}:{plans.S3_PORT}" if pid_runs(state.s3_pid, state.s3_args) else None,
            "pve": f"https://{lab.gateway}:{plans.PVE_PORT}" if pid_runs(state.pve_pid, state.pve_args) else None,
            "ssh_spec": str(state.public / "ssh-spec.yaml"), "proxmox_spec": str(state.public / "proxmox-spec.yaml"),
            "key_file": state.key_file, "hosts": hosts}


def reachable(address: str, port: int = 22, timeout: float = 1.0) -> bool:
    with socket.socket() as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((address, port)) == 0
