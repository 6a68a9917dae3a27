"""`dbtier <verb>`: one front door for every flow, through the real installed command (no cluster needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dbtier.cli import FLOW_VERBS

REPO = Path(__file__).resolve().parent.parent.parent
DBTIER = str(Path(sys.executable).parent / "dbtier")


def dbtier(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DBTIER_SPEC" and not k.startswith("DBTIER_")}
    return subprocess.run([DBTIER, *argv], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dbtier: error: "), lines[0]
    return lines[0]


def test_dbtier_alone_prints_the_help_listing_every_verb() -> None:
    done = dbtier()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: dbtier")
    for verb in [*FLOW_VERBS, "status", "dsn", "password", "host-keys", "blocks"]:
        assert f"\n    {verb}" in done.stdout, verb


def test_version() -> None:
    done = dbtier("--version")
    assert (done.returncode, done.stdout.strip()) == (0, "dbtier 0.1.0")


def test_an_unknown_verb_is_one_line_exit_2() -> None:
    done = dbtier("provison")
    assert done.returncode == 2 and done.stdout == ""
    line = one_error_line(done)
    assert "'provison'" in line and "provision" in line and line.endswith("see dbtier --help")


@pytest.mark.parametrize(
    ("verb", "shown"),
    [
        ("provision", ["--spec SPEC"]),
        ("teardown", ["--wipe", "--drop-backups"]),
        ("backup", ["--kind {auto,full,diff,incr}", "(default: auto)"]),
        ("restore", ["--target", "(default: latest)", "--port-offset", "(default: 100)"]),
        ("restore-drill", ["(default: marker)"]),
        ("drill", ["--scenario"]),
        ("archive-health", ["--spec SPEC"]),
        ("serve", ["--list", "never served unless named"]),
        ("password", ["(default: app)"]),
    ],
)
def test_each_verb_has_help_with_its_defaults(verb: str, shown: list[str]) -> None:
    done = dbtier(verb, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: dbtier {verb} "), done.stdout[:80]
    for text in shown:
        assert text in " ".join(done.stdout.split()), text


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["backup", "--kind", "weekly"], "--kind: invalid choice: 'weekly'"),
        (["drill"], "the following arguments are required: --scenario"),
        (["restore", "--port-offset", "many"], "--port-offset: invalid int value: 'many'"),
        (["blocks", "unregister"], "action: invalid choice: 'unregister'"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(argv: list[str], words: str) -> None:
    done = dbtier(*argv)
    assert done.returncode == 2 and done.stdout == ""
    assert words in one_error_line(done)


@pytest.mark.parametrize("verb", ["provision", "backup", "restore", "teardown"])
def test_a_verb_refuses_a_bad_spec_like_its_module(tmp_path: Path, verb: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("members: 9\n")
    done = dbtier(verb, "--spec", str(spec))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "members: Input should be less than or equal to 7" in one_error_line(done)
    module = subprocess.run([sys.executable, "-m", FLOW_VERBS[verb][0], "--spec", str(spec)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert (module.returncode, module.stderr) == (done.returncode, done.stderr)


def test_python_dash_m_keeps_its_options() -> None:
    done = subprocess.run([sys.executable, "-m", "flows.backup", "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0 and "--kind {auto,full,diff,incr}" in done.stdout
    assert done.stdout.startswith("usage: python -m flows.backup ")
    bad = subprocess.run([sys.executable, "-m", "flows.restore", "--bogus"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert bad.returncode == 2
    assert one_error_line(bad) == "dbtier: error: unrecognized arguments: --bogus; see python -m flows.restore --help"


def test_serve_without_a_spec_serves_the_default_cluster_only() -> None:
    done = dbtier("serve", "--list")
    assert done.returncode == 0, done.stderr
    head, *plan = done.stdout.strip().splitlines()
    assert head == ("cluster dbtier from deployments/clusters/default.yaml "
                    "(the default spec; --spec FILE serves another cluster):")
    assert [line.split(":")[0] for line in plan] == [
        "dbtier-drill-all-monthly", "dbtier-backup-nightly", "dbtier-archive-health", "dbtier-restore-drill-weekly"]
    assert "orders" not in done.stdout and "10.0.0" not in done.stdout


def test_serve_names_another_cluster_with_spec() -> None:
    done = dbtier("serve", "--list", "--spec", "deployments/clusters/ssh.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cluster orders from deployments/clusters/ssh.yaml:\n")
    assert "orders-drill-all-monthly: failover_drill at '0 3 1 * *', inactive (production: true" in done.stdout


@pytest.mark.parametrize(("spec", "role", "roles"), [
    ("default.yaml", "keyfile", "superuser, replication, rewind, app, monitoring, restapi, etcd_root, etcd, pgbouncer"),
    ("mongodb.yaml", "rewind", "superuser, app, keyfile, monitoring"),
])
def test_password_refuses_a_role_the_engine_does_not_have(spec: str, role: str, roles: str) -> None:
    """Each engine has its own secrets: a role of the other engine is one line naming the choices, before any
    Prefect API is asked (none answers on port 9)."""
    env_spec = str(REPO / "deployments" / "clusters" / spec)
    done = subprocess.run([DBTIER, "password", "--role", role, "--spec", env_spec], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert done.returncode == 2 and done.stdout == ""
    assert one_error_line(done).endswith(f"has no {role} secret; choose one of {roles}")


def test_the_password_help_names_every_engines_roles() -> None:
    from dbtier.engines.mongodb.engine import MONGODB_SECRETS
    from dbtier.engines.postgres.engine import POSTGRES_SECRETS

    shown = " ".join(dbtier("password", "--help").stdout.split())
    assert all(f" {role.name}" in shown for role in (*POSTGRES_SECRETS, *MONGODB_SECRETS))
