"""The local provider: every member is a detached process on this machine."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence

from dbtier.errors import CommandFailed, PreflightError
from dbtier.providers.base import Completed, Provider, Runner
from dbtier.spec import ClusterSpec


class LocalRunner(Runner):
    """Runs commands with subprocess as ``user`` (switching to it when dbtier runs as root)."""

    def __init__(self, user: str, host: str = "127.0.0.1") -> None:
        self.host = host
        self.user = user
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise PreflightError(
                f"os_user: no OS user {user!r} on this machine; run 'make setup' (it creates it) "
                "or set DBTIER_OS_USER to an existing unprivileged user"
            ) from None
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, entry.pw_dir
        self._switch = os.geteuid() == 0 and self.uid != 0
        if os.geteuid() != 0 and os.geteuid() != self.uid:
            current = pwd.getpwuid(os.geteuid()).pw_name
            raise PreflightError(
                f"os_user: dbtier runs as {current!r}, not root, so it cannot act as {user!r}; "
                f"set DBTIER_OS_USER={current} or run as root"
            )

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": self.home,
            "USER": self.user,
            "LOGNAME": self.user,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
        env.update(extra or {})
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> Completed:
        extra: dict[str, object] = {}
        if self._switch:
            extra = {"user": self.uid, "group": self.gid, "extra_groups": []}
        try:
            proc = subprocess.run(  # argv is built by dbtier, never a shell string
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=self._env(env),
                cwd="/",
                timeout=timeout,
                **extra,  # type: ignore[call-overload]
            )
        except FileNotFoundError:
            raise CommandFailed(argv, 127, "", f"{argv[0]}: not found") from None
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(argv, -1, "", f"timed out after {exc.timeout:.0f} s") from None
        done = Completed(list(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, proc.stdout, proc.stderr)
        return done

    def read_file(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError:
            return None

    def _own(self, path: str) -> None:
        if self._switch:
            os.chown(path, self.uid, self.gid)

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        directory = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".dbtier-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, mode)
            self._own(tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def make_dirs(self, path: str, mode: int = 0o700) -> None:
        path = path.rstrip("/") or "/"  # "a/b/" once, not as "a/b/" and then "a/b"
        missing = []
        head = path
        while head and head != "/" and not os.path.isdir(head):
            missing.append(head)
            head = os.path.dirname(head)
        for directory in reversed(missing):
            os.mkdir(directory, 0o755)
            self._own(directory)
        os.chmod(path, mode)
        self._own(path)

    def list_dir(self, path: str) -> list[str] | None:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return [os.path.basename(path)]

    def remove_tree(self, path: str) -> None:
        if os.path.isdir(path):
            shutil.rmtree(path)

    def rename(self, path: str, new_path: str) -> None:
        if os.path.lexists(new_path):
            raise FileExistsError(new_path)
        os.rename(path, new_path)

    def port_in_use(self, port: int) -> bool:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, port))
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return True
                raise
        return False


class LocalProvider(Provider):
    """All members on this machine, at ``spec.host`` (127.0.0.1 by default)."""

    name = "local"

    def runner(self, spec: ClusterSpec, host: str) -> Runner:
        return LocalRunner(spec.os_user, host)

    def check_host(self, spec: ClusterSpec, host: str) -> list[str]:
        LocalRunner(spec.os_user, host)  # refuses an unknown OS user, or one this process cannot act as
        return []
