"""A runner's batched file operations: many files read, or written with their directories, in one round trip.

The SSH runner's two shell scripts run here with ``sh`` directly (what the host runs, without the SSH hop); the
local runner's batches are its one-file operations in order.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from dbtier.errors import CommandFailed
from dbtier.providers.local import LocalRunner
from dbtier.providers.ssh import READ_SCRIPT, WRITE_SCRIPT, parse_read_files

ME = pwd.getpwuid(os.geteuid()).pw_name


def sh(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, text=True, check=False)


def test_the_read_script_gives_each_file_or_none_in_order(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"-----BEGIN CERTIFICATE-----\nMII\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "bin").write_bytes(bytes(range(256)))
    paths = [str(tmp_path / n) for n in ("a", "missing", "empty", "bin")] + [str(tmp_path)]
    done = sh(READ_SCRIPT, *paths)
    assert done.returncode == 0, done.stderr
    assert parse_read_files(done.stdout, len(paths), []) == [b"-----BEGIN CERTIFICATE-----\nMII\n", None, b"",
                                                             bytes(range(256)), None]


@pytest.mark.parametrize("out", ["", "+aGk=\n", "hi\n-\n"], ids=["nothing", "one-of-two", "garbage"])
def test_a_short_or_strange_answer_is_a_command_failure(out: str) -> None:
    with pytest.raises(CommandFailed):
        parse_read_files(out, 2, ["sh", "-c", "..."])


def _upload(tmp_path: Path, *contents: bytes) -> Path:
    up = tmp_path / "upload"
    up.mkdir(mode=0o700)
    for i, data in enumerate(contents):
        (up / str(i)).write_bytes(data)
    return up


def test_the_write_script_makes_the_directories_then_puts_each_file_in_place(tmp_path: Path) -> None:
    up = _upload(tmp_path, b"key", b"cert")
    tls = tmp_path / "member" / "tls"
    done = sh(WRITE_SCRIPT, str(up), ME, "d", "700", str(tls.parent), str(tls),
              "f", "600", "0", str(tls / "server.key"), "f", "644", "1", str(tls / "server.crt"))
    assert done.returncode == 0, done.stderr
    assert (tls / "server.key").read_bytes() == b"key" and (tls / "server.crt").read_bytes() == b"cert"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tls, tls / "server.key", tls / "server.crt")}
    assert modes == {"tls": 0o700, "server.key": 0o600, "server.crt": 0o644}
    assert not up.exists(), "the upload directory is removed"
    assert sorted(os.listdir(tls)) == ["server.crt", "server.key"], "no temporary file is left"


def test_a_failed_write_stops_there_and_still_removes_the_upload(tmp_path: Path) -> None:
    up = _upload(tmp_path, b"one", b"two")
    done = sh(WRITE_SCRIPT, str(up), ME, "f", "600", "0", str(tmp_path / "ok"),
              "f", "600", "1", str(tmp_path / "no-such-dir" / "two"))
    assert done.returncode != 0
    assert (tmp_path / "ok").read_bytes() == b"one" and not (tmp_path / "no-such-dir").exists()
    assert not up.exists()


def test_the_local_runner_batches_are_its_single_operations_in_order(tmp_path: Path) -> None:
    runner = LocalRunner(ME)
    target = tmp_path / "a" / "b"
    runner.write_files([(str(target / "x"), b"1", 0o600), (str(target / "y"), b"2", 0o640)], [(str(target), 0o750)])
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert [stat.S_IMODE((target / n).stat().st_mode) for n in ("x", "y")] == [0o600, 0o640]
    assert runner.read_files([str(target / "x"), str(target / "none"), str(target / "y")]) == [b"1", None, b"2"]
    assert runner.read_files([]) == []


def test_a_missing_exporter_is_refused_naming_the_spec_field_that_places_it() -> None:
    from dbtier import bootstrap
    from dbtier.engines.base import get_engine
    from dbtier.errors import PreflightError
    from dbtier.secrets import Passwords
    from dbtier.spec import ClusterSpec
    from tests.file_hosts import Completed, FileProvider, FileRunner

    class NothingInstalled(FileRunner):
        def answer(self, argv: list[str]) -> Completed:
            assert argv[:2] == ["test", "-x"], argv
            return Completed(argv, 1, "", "")

    class Hosts(FileProvider):
        runner_class = NothingInstalled

    spec = ClusterSpec(members=1, postgres={"etcd_members": 1}, monitoring={"exporters": {"enabled": True}})
    provider = Hosts()
    with pytest.raises(PreflightError) as info:
        bootstrap.start_exporters(get_engine(spec), provider, spec, Passwords())
    assert info.value.one_line().startswith("postgres.binaries.postgres_exporter: /usr/bin/prometheus-postgres-exporter "
                                            "is missing on 127.0.0.1 or not executable by 'dbtier'; run 'make setup'")
    assert all(c[:2] == ["test", "-x"] for r in provider.runners.values() for c in r.commands), "nothing started"
