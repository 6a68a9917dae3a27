"""A fake host whose files are the real ones (under a test's tmp_path) and which runs no program: each test module
says how its commands answer (:meth:`FileRunner.answer`). What it ran and the mode of each file written are kept
for the test to check."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from dbtier.providers.base import Completed, Provider, Runner
from dbtier.spec import ClusterSpec
from dbtier.supervisors import Supervisor


class FileRunner(Runner):
    def __init__(self, host: str, fail: str | None = None) -> None:
        self.host, self.fail = host, fail
        self.commands: list[list[str]] = []
        self.modes: dict[str, int] = {}

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120,
            check: bool = True) -> Completed:
        self.commands.append(list(argv))
        return self.answer(list(argv))

    def answer(self, argv: list[str]) -> Completed:
        if argv[:2] == ["tar", "-xzf"]:  # unpacking shipped code (dbtier.runtime.ship): really, into the real files
            import tarfile

            with tarfile.open(argv[2]) as tar:
                tar.extractall(argv[argv.index("-C") + 1], filter="data")
            return Completed(argv, 0, "", "")
        raise AssertionError(f"unexpected command {argv}")

    def read_file(self, path: str) -> bytes | None:
        return Path(path).read_bytes() if os.path.isfile(path) else None

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        Path(path).write_bytes(data)
        self.modes[path] = mode

    def make_dirs(self, path: str, mode: int = 0o700) -> None:
        os.makedirs(path, mode, exist_ok=True)

    def list_dir(self, path: str) -> list[str] | None:
        return sorted(os.listdir(path)) if os.path.isdir(path) else None

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def rename(self, path: str, new_path: str) -> None:
        os.rename(path, new_path)

    def port_in_use(self, port: int) -> bool:
        return False


class FileProvider(Provider):
    """One :attr:`runner_class` per host, each told ``fail`` (what its failing command says)."""

    name = "local"
    runner_class: type[FileRunner] = FileRunner

    def __init__(self, fail: str | None = None) -> None:
        self.runners: dict[str, FileRunner] = {}
        self.fail = fail

    def runner(self, spec: ClusterSpec, host: str) -> FileRunner:
        return self.runners.setdefault(host, self.runner_class(host, self.fail))

    def check_host(self, spec: ClusterSpec, host: str) -> list[str]:
        return []

    def supervisor(self, spec: ClusterSpec, host: str) -> Supervisor:
        raise AssertionError("nothing is supervised")
