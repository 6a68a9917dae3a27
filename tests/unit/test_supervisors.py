"""systemd units as dbtier writes them: names, quoting, the unit text (pure), and systemd's own verdict on it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dbtier.engines.base import get_engine
from dbtier.procs import LAUNCH_SCRIPT, Service
from dbtier.spec import build_spec
from dbtier.supervisors import exec_line, render_unit, systemd_quote, unit_name

SPEC = build_spec({"name": "orders"}, environ={})
SERVICES = get_engine(SPEC).member_services(SPEC) + get_engine(SPEC).consensus_services(SPEC)


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("plain", '"plain"'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("$HOME", '"$$HOME"'),
        ("${HOME}", '"$${HOME}"'),
        ("100%", '"100%%"'),
        ("%n", '"%%n"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("", '""'),
    ],
)
def test_systemd_quote_keeps_every_character_literal(arg: str, quoted: str) -> None:
    assert systemd_quote(arg) == quoted


@pytest.mark.parametrize(
    ("cluster", "service", "name"),
    [("orders", "etcd0", "dbtier-orders-etcd0.service"), ("bk-restored", "pg2", "dbtier-bk-restored-pg2.service")],
)
def test_unit_names(cluster: str, service: str, name: str) -> None:
    assert unit_name(cluster, service) == name


def _fields(text: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            fields.setdefault(key, []).append(value)
    return fields


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_unit_runs_the_launch_script_as_the_os_user_and_restarts_on_failure(service: Service) -> None:
    fields = _fields(render_unit("orders", "dbtier", service))
    assert fields["User"] == ["dbtier"] and fields["Group"] == ["dbtier"]
    assert fields["Restart"] == ["on-failure"] and fields["WantedBy"] == ["multi-user.target"]
    assert fields["ExecStart"] == [exec_line(["/bin/sh", "-c", LAUNCH_SCRIPT, "sh", service.pidfile,
                                              service.logfile, *service.argv])]
    # Patroni stops its own postmaster; a restarted Patroni must find it still running.
    assert fields.get("KillMode") == (["process"] if service.kind == "patroni" else None)


def test_unit_holds_no_secret() -> None:
    """Passwords live in the members' 0600 config files; a unit file is world-readable."""
    text = "".join(render_unit("orders", "dbtier", s) for s in SERVICES)
    assert "password" not in text.lower()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("broken", [False, True])
def test_systemd_analyze_accepts_the_units(tmp_path: Path, broken: bool) -> None:
    """systemd's own parser reads every unit without a complaint (and does complain about a broken one)."""
    for service in SERVICES:
        text = render_unit("orders", "dbtier", service)
        if broken:
            text = text.replace("Restart=on-failure", "Restart=sometimes")
        path = tmp_path / unit_name("orders", service.name)
        path.write_text(text)
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                              cwd=tmp_path)
        complaints = [line for line in done.stderr.splitlines() if path.name in line or "Failed" in line]
        if broken:
            assert complaints, done.stderr
        else:
            assert done.returncode == 0 and not complaints, done.stderr
