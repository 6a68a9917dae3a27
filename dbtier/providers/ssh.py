"""The SSH provider: members on existing hosts, reached with fabric.

Every file operation is a command (``cat``, ``mkdir``, ``install``...), so the same
bootstrap code serves this provider and the local one. Commands that act on the
cluster run as ``spec.os_user`` (``runuser`` when logged in as root, else ``sudo -n``);
the few that need root (host set-up, creating ``data_root``, wiping) run as root.
"""

from __future__ import annotations

import shlex
import socket
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dbtier.errors import CommandFailed, PreflightError, ProvisionError
from dbtier.providers.base import Completed, Provider, Runner
from dbtier.providers.hostkeys import HostKeyPins, spec_host_keys
from dbtier.providers.loaders import FILE_LOADERS, Loaders
from dbtier.power import HostPower
from dbtier.spec import ClusterSpec, SSHSettings
from dbtier.supervisors import Processes, Supervisor, Systemd, systemd_runs

HOST_SETUP = Path(__file__).resolve().parent.parent.parent / "scripts" / "host-setup.sh"
# Move an uploaded file into place, owned by the OS user, atomically; always remove the upload.
PLACE_SCRIPT = (
    'install -o "$1" -g "$1" -m "$2" "$3" "$4.dbtier-tmp" && mv -f "$4.dbtier-tmp" "$4"; rc=$?; rm -f "$3"; exit $rc'
)
LIST_SCRIPT = 'test -d "$1" || exit 3; ls -A1 -- "$1"'
#: Each readable file as ``+`` and its base64 on one line, any other as ``-`` (:meth:`SSHRunner.read_files`).
READ_SCRIPT = 'for p; do if out=$(base64 -w0 -- "$p" 2>/dev/null); then printf "+%s\\n" "$out"; else echo -; fi; done'
#: Directories (``d mode parent path``), then files uploaded into ``$1`` (``f mode name path``) put in place, owned
#: by ``$2``; the upload directory is removed whatever happens (:meth:`SSHRunner.write_files`).
WRITE_SCRIPT = (
    'up=$1; owner=$2; shift 2; ( set -e; while [ $# -gt 0 ]; do if [ "$1" = d ]; then mkdir -p -m 755 "$3"; '
    'install -d -o "$owner" -g "$owner" -m "$2" "$4"; else install -o "$owner" -g "$owner" -m "$2" "$up/$3" '
    '"$4.dbtier-tmp"; mv -f "$4.dbtier-tmp" "$4"; fi; shift 4; done ); rc=$?; rm -rf "$up"; exit $rc'
)


def parse_read_files(out: str, count: int, argv: Sequence[str]) -> list[bytes | None]:
    """The files :data:`READ_SCRIPT` printed, in order; a CommandFailed when it printed another number of them.

    >>> parse_read_files("+aGk=\\n-\\n+\\n", 3, [])
    [b'hi', None, b'']
    """
    import base64

    lines = out.split("\n")[:count]
    if len(lines) != count or any(line[:1] not in ("+", "-") for line in lines):
        raise CommandFailed(list(argv), 0, out[:200], f"expected {count} files, read {len(out.splitlines())} lines")
    return [base64.b64decode(line[1:]) if line.startswith("+") else None for line in lines]


def as_user_argv(argv: Sequence[str], login_user: str, os_user: str, env: Mapping[str, str]) -> list[str]:
    """The argv that runs ``argv`` as ``os_user`` with ``env``, given who logged in.

    >>> as_user_argv(["id"], "root", "dbtier", {"LANG": "C.UTF-8"})
    ['runuser', '-u', 'dbtier', '--', 'env', '-C', '/', 'LANG=C.UTF-8', 'id']
    >>> as_user_argv(["id"], "admin", "dbtier", {})
    ['sudo', '-n', '-H', '-u', 'dbtier', '--', 'env', '-C', '/', 'id']
    >>> as_user_argv(["id"], "dbtier", "dbtier", {})
    ['env', '-C', '/', 'id']
    """
    # Start in / : the login user's home (often /root) is not readable by os_user.
    command = ["env", "-C", "/", *(f"{k}={v}" for k, v in env.items()), *argv]
    if login_user == os_user:
        return command
    if login_user == "root":
        return ["runuser", "-u", os_user, "--", *command]
    return ["sudo", "-n", "-H", "-u", os_user, "--", *command]


def as_root_argv(argv: Sequence[str], login_user: str) -> list[str]:
    """
    >>> as_root_argv(["mkdir", "-p", "/x"], "admin")
    ['sudo', '-n', '--', 'mkdir', '-p', '/x']
    """
    return list(argv) if login_user == "root" else ["sudo", "-n", "--", *argv]


class SSHRunner(Runner):
    """Runs commands on one host over an SSH connection (fabric), as the cluster's OS user."""

    def __init__(self, host: str, port: int, settings: SSHSettings, os_user: str, connect_kwargs: dict[str, Any],
                 pins: HostKeyPins) -> None:
        from fabric import Connection

        self.host = host
        self.port = port
        self.login_user = settings.user
        self.os_user = os_user
        self.conn = Connection(
            host=host, port=port, user=settings.user, connect_timeout=settings.connect_timeout,
            connect_kwargs={**connect_kwargs, "allow_agent": False, "look_for_keys": False},
        )
        self.pins = pins
        pins.prepare(self.conn.client, host, port)  # the key it must present, or pin the first one
        self._lock = threading.Lock()  # one command at a time on this connection (tasks run in threads)

    def _connect_error(self, err: Exception) -> PreflightError:
        import paramiko

        if isinstance(err, paramiko.BadHostKeyException):
            return self.pins.explain(self.host, self.port, err)
        return describe_connect_error(self.host, self.port, self.login_user, err)

    def _exec(self, argv: Sequence[str], *, timeout: float, check: bool) -> Completed:
        command = shlex.join(argv)
        try:
            with self._lock:
                result = self.conn.run(
                    command, hide=True, warn=True, timeout=timeout, pty=False, in_stream=False
                )
        except Exception as err:  # noqa: BLE001 - paramiko/invoke raise many types; keep the evidence
            raise self._connect_error(err) from None
        done = Completed(list(argv), result.exited, result.stdout, result.stderr)
        if check and result.exited != 0:
            raise CommandFailed(argv, result.exited, result.stdout, result.stderr)
        return done

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> Completed:
        full_env = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", **(env or {})}
        return self._exec(as_user_argv(argv, self.login_user, self.os_user, full_env), timeout=timeout, check=check)

    def run_as_root(self, argv: Sequence[str], *, timeout: float = 900) -> Completed:
        return self._exec(as_root_argv(argv, self.login_user), timeout=timeout, check=True)

    def read_file(self, path: str) -> bytes | None:
        done = self.run(["cat", "--", path], check=False)
        return done.out.encode() if done.rc == 0 else None

    def upload(self, data: bytes) -> str:
        """Copy ``data`` over SFTP to a fresh file only the login user can read; return its path."""
        remote = f"/tmp/.dbtier-upload-{uuid.uuid4().hex}"
        self._put({remote: data})
        return remote

    def _put(self, files: Mapping[str, bytes], directory: str | None = None) -> None:
        """Copy each ``remote path: data`` over SFTP, only the login user able to read it; ``directory`` (mode 0700)
        first when given."""
        try:
            with self._lock:
                sftp = self.conn.sftp()
                if directory is not None:
                    sftp.mkdir(directory, 0o700)
                for remote, data in files.items():
                    with sftp.open(remote, "wb") as fh:
                        fh.chmod(0o600)  # before any byte is written: configs hold passwords
                        fh.write(data)
        except Exception as err:  # noqa: BLE001 - paramiko raises many types; keep the evidence
            raise self._connect_error(err) from None

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        remote = self.upload(data)
        self.run_as_root(["sh", "-c", PLACE_SCRIPT, "sh", self.os_user, f"{mode:o}", remote, path])

    def write_root_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` atomically, owned by root (a systemd unit)."""
        remote = self.upload(data)
        self.run_as_root(["sh", "-c", PLACE_SCRIPT, "sh", "root", f"{mode:o}", remote, path])

    def make_dirs(self, path: str, mode: int = 0o700) -> None:
        self.write_files([], [(path, mode)])

    def read_files(self, paths: Sequence[str]) -> list[bytes | None]:
        if not paths:
            return []
        done = self.run(["sh", "-c", READ_SCRIPT, "sh", *paths])
        return parse_read_files(done.out, len(paths), done.argv)

    def write_files(self, files: Sequence[tuple[str, bytes, int]], dirs: Sequence[tuple[str, int]] = ()) -> None:
        if not files and not dirs:
            return
        remote = f"/tmp/.dbtier-upload-{uuid.uuid4().hex}"
        argv = ["sh", "-c", WRITE_SCRIPT, "sh", remote, self.os_user]
        for path, mode in dirs:
            argv += ["d", f"{mode:o}", path.rsplit("/", 1)[0] or "/", path]
        for i, (path, _, mode) in enumerate(files):
            argv += ["f", f"{mode:o}", str(i), path]
        if files:
            self._put({f"{remote}/{i}": data for i, (_, data, _) in enumerate(files)}, directory=remote)
        self.run_as_root(argv)

    def list_dir(self, path: str) -> list[str] | None:
        done = self.run(["sh", "-c", LIST_SCRIPT, "sh", path], check=False)
        if done.rc == 3:
            return None
        if done.rc != 0:
            raise CommandFailed(done.argv, done.rc, done.out, done.err)
        return sorted(done.out.split())

    def remove_tree(self, path: str) -> None:
        if path.count("/") < 2:
            raise ProvisionError(f"refusing to remove {path!r}: too close to /")
        self.run_as_root(["rm", "-rf", "--", path])

    def rename(self, path: str, new_path: str) -> None:
        self.run_as_root(["mv", "--no-target-directory", "--no-clobber", "--", path, new_path])
        if self.run(["test", "-e", path], check=False).rc == 0:
            raise ProvisionError(f"{self.host}: {new_path} exists; {path} was not moved")

    def port_in_use(self, port: int) -> bool:
        done = self.run(["ss", "-Hltn", f"sport = :{port}"])
        return bool(done.out.strip())


def describe_connect_error(host: str, port: int, user: str, err: Exception) -> PreflightError:
    """One line that says what failed reaching a host and what to check."""
    import paramiko

    where = f"ssh.hosts: {host}:{port}"
    if isinstance(err, paramiko.AuthenticationException):
        return PreflightError(
            f"{where} refused the key for user {user!r}; check ssh.credentials_block or ssh.key_file "
            "and the host's authorized_keys"
        )
    if isinstance(err, (socket.timeout, TimeoutError)):
        return PreflightError(f"{where} did not answer within the connect timeout; check the address and firewall")
    if isinstance(err, (OSError, paramiko.SSHException)):
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        return PreflightError(f"{where} cannot be reached ({reason}); check the address, port and that sshd runs")
    return PreflightError(f"{where}: {type(err).__name__}: {err}")


class SSHProvider(Provider):
    """Members on the hosts listed in ``spec.ssh``, round-robin; keys and pins come from ``loaders``."""

    name = "ssh"

    def __init__(self, loaders: Loaders = FILE_LOADERS) -> None:
        self.loaders = loaders
        self._pins: dict[str, HostKeyPins] = {}
        self._runners: dict[tuple[str, int, str], SSHRunner] = {}
        self._systemd: dict[tuple[str, int], bool] = {}
        self._lock = threading.Lock()

    def _settings(self, spec: ClusterSpec) -> SSHSettings:
        if spec.ssh is None:  # pragma: no cover - the spec refuses provider ssh without it
            raise PreflightError("ssh: missing")
        return spec.ssh

    def pins(self, spec: ClusterSpec) -> HostKeyPins:
        """The host keys trusted for ``spec``'s cluster: the spec's ``host_key`` lines, then those pinned."""
        fixed = spec_host_keys(self._settings(spec).hosts)
        with self._lock:
            owner = spec.host_owner  # a restored copy trusts the keys pinned for its source's hosts
            if owner not in self._pins or self._pins[owner].fixed != fixed:
                self._pins[owner] = HostKeyPins(owner, self.loaders.load_pins, self.loaders.save_pins, fixed=fixed)
            return self._pins[owner]

    def runner(self, spec: ClusterSpec, host: str) -> SSHRunner:
        settings = self._settings(spec)
        port = host_port(settings, host)
        key = (host, port, spec.os_user)
        pins = self.pins(spec)
        with self._lock:
            if key not in self._runners or self._runners[key].pins is not pins:
                self._runners[key] = SSHRunner(host, port, settings, spec.os_user, self.loaders.ssh_key(settings), pins)
            return self._runners[key]

    def supervisor(self, spec: ClusterSpec, host: str) -> Supervisor:
        """systemd units where ``ssh.services`` says so (``auto``: where systemd is the host's init), else processes."""
        mode = self._settings(spec).services
        runner = self.runner(spec, host)
        if mode == "auto":
            key = (runner.host, runner.port)
            if key not in self._systemd:
                self._systemd[key] = systemd_runs(runner)
            use_systemd = self._systemd[key]
        else:
            use_systemd = mode == "systemd"
        return Systemd(runner, spec.name, spec.os_user) if use_systemd else Processes()

    def check_host(self, spec: ClusterSpec, host: str) -> list[str]:
        runner = self.runner(spec, host)
        runner.run_as_root(["true"], timeout=30)  # reachable, key accepted, root (or sudo -n) works
        if self._settings(spec).services == "systemd" and not systemd_runs(runner):
            return [f"ssh.services: systemd, but systemd is not the init of {host}; set services: auto or processes"]
        if self.installs_packages(spec):
            return []
        try:
            runner.run_as_root(["id", "-u", spec.os_user])
        except CommandFailed:
            return [f"os_user: no OS user {spec.os_user!r} on {host}; create it or set ssh.install_packages: true"]
        return []

    def installs_packages(self, spec: ClusterSpec) -> bool:
        return self._settings(spec).install_packages

    def power(self, spec: ClusterSpec) -> HostPower | None:
        """On a ``dbtier lab`` (``ssh.lab``), the lab's power over its hosts; existing hosts have none dbtier holds."""
        name = self._settings(spec).lab
        if name is None:
            return None
        from dbtier.lab.power import LabPower

        return LabPower(name)

    def prepare_host(self, spec: ClusterSpec, host: str) -> str:
        runner = self.runner(spec, host)
        if not self._settings(spec).install_packages:
            return f"{host}: package installation skipped (ssh.install_packages is false)"
        script = runner.upload(HOST_SETUP.read_bytes())
        try:
            # The engine picks the packages: Debian's PostgreSQL stack, or mongodb-org from MongoDB's repository.
            setup_env = [f"DBTIER_OS_USER={spec.os_user}", f"DBTIER_ENGINE={spec.engine}"]
            done = runner.run_as_root(["env", *setup_env, "bash", script], timeout=1800)
        finally:
            runner.run_as_root(["rm", "-f", script])
        last = (done.out.strip().splitlines() or ["set up"])[-1]
        return f"{host}: {last}"


def host_port(settings: SSHSettings, host: str) -> int:
    """The SSH port of ``host``, which must be one of ``ssh.hosts``.

    >>> from dbtier.spec import SSHHost
    >>> settings = SSHSettings(hosts=[SSHHost(address="10.0.0.11", port=2222)], key_file="/k")
    >>> host_port(settings, "10.0.0.11")
    2222
    >>> host_port(settings, "127.0.0.1")
    Traceback (most recent call last):
    ...
    dbtier.errors.PreflightError: ssh.hosts: 127.0.0.1 is not one of the spec's hosts (10.0.0.11:2222); add it to ssh.hosts, or ask for the runner of a member's host
    """
    for h in settings.hosts:
        if h.address == host:
            return h.port
    known = ", ".join(f"{h.address}:{h.port}" for h in settings.hosts)
    raise PreflightError(f"ssh.hosts: {host} is not one of the spec's hosts ({known}); add it to ssh.hosts, "
                         "or ask for the runner of a member's host")


_PROVIDERS: dict[tuple[str, Loaders], SSHProvider] = {}
_PROVIDERS_LOCK = threading.Lock()


def shared_provider(settings: SSHSettings, loaders: Loaders = FILE_LOADERS) -> SSHProvider:
    """One provider (so one connection per host) per SSH settings and loaders, for the life of the process."""
    key = (settings.model_dump_json(), loaders)
    with _PROVIDERS_LOCK:
        if key not in _PROVIDERS:
            _PROVIDERS[key] = SSHProvider(loaders)
        return _PROVIDERS[key]
