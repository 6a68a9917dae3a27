"""The MongoDB suite's finder: which programs are found, and the skip reason for each missing combination."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from tests.mongod import HOW_TO_RUN, TOOLS, mongo_binaries, skip_reason, summary_line

NAMES = [name for name, _ in TOOLS]


def _program(directory: Path, name: str, executable: bool = True) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\necho db version v7.0.14\n")
    path.chmod(0o755 if executable else 0o644)
    return str(path)


@pytest.mark.parametrize("present", [set(c) for n in range(4) for c in itertools.combinations(NAMES, n)],
                         ids=lambda present: "+".join(sorted(present)) or "none")
def test_reason_names_each_program_missing_from_path(tmp_path: Path, present: set[str]) -> None:
    for name in present:
        _program(tmp_path / "bin", name)
    env = {"PATH": str(tmp_path / "bin")}
    missing = [(name, var) for name, var in TOOLS if name not in present]
    expected = "; ".join(f"{name} not on PATH and {var} unset" for name, var in missing)
    assert skip_reason(env) == (f"{expected}: {HOW_TO_RUN}" if missing else "")
    found = mongo_binaries(env)
    if missing:
        assert found is None
    else:
        assert found == {name: str(tmp_path / "bin" / name) for name in NAMES}


@pytest.mark.parametrize("variable_of", [None, *NAMES])
def test_variables_name_the_programs_instead_of_path(tmp_path: Path, variable_of: str | None) -> None:
    """Each variable set wins over PATH; an empty PATH leaves the others missing."""
    env = {"PATH": ""}
    for name, var in TOOLS:
        if variable_of in (None, name):
            env[var] = _program(tmp_path / "opt" / name, name)
    found = mongo_binaries(env)
    if variable_of is None:
        assert found == {name: env[var] for name, var in TOOLS}
        assert skip_reason(env) == ""
    else:
        assert found is None
        reason = skip_reason(env)
        assert reason.endswith(HOW_TO_RUN)
        assert all(f"{name} not on PATH and {var} unset" in reason for name, var in TOOLS if name != variable_of)
        assert variable_of + " not on PATH" not in reason


def test_a_variable_naming_no_executable_is_refused_not_looked_up(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    for name in NAMES:
        _program(bindir, name)
    env = {"PATH": str(bindir), "DBTIER_TEST_MONGOD": _program(tmp_path / "x", "mongod", executable=False),
           "DBTIER_TEST_MONGODUMP": str(tmp_path / "nowhere")}
    assert mongo_binaries(env) is None
    assert skip_reason(env) == (f"DBTIER_TEST_MONGOD={env['DBTIER_TEST_MONGOD']} is not an executable file; "
                                f"DBTIER_TEST_MONGODUMP={tmp_path / 'nowhere'} is not an executable file: {HOW_TO_RUN}")


def test_default_environment_is_the_process_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for _, var in TOOLS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert mongo_binaries() is None
    assert skip_reason().startswith("mongod not on PATH and DBTIER_TEST_MONGOD unset; mongodump not on PATH")
    for name in NAMES:
        _program(tmp_path, name)
    assert mongo_binaries() == {name: os.path.join(str(tmp_path), name) for name in NAMES}


@pytest.mark.parametrize(("outcomes", "found", "line"), [
    ({}, False, ""),
    ({"skipped": 9}, False, "MongoDB integration suite: skipped (mongod not on PATH and DBTIER_TEST_MONGOD unset; "),
    ({"passed": 8, "failed": 1}, True, "MongoDB integration suite: ran against {bin}/mongod (db version v7.0.14): "
                                       "1 failed, 8 passed"),
    ({"skipped": 9}, True, "MongoDB integration suite: skipped (every test of it was skipped)"),
])
def test_summary_line(tmp_path: Path, outcomes: dict[str, int], found: bool, line: str) -> None:
    bindir = tmp_path / "bin"
    if found:
        for name in NAMES:
            _program(bindir, name)
    said = summary_line(outcomes, {"PATH": str(bindir)}, lambda mongod: ("v7.0.14", "db version v7.0.14"))
    assert said.startswith(line.format(bin=bindir))
    assert "\n" not in said
