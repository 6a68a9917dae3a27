"""A 3-member cluster brought up through the ssh provider on a host that runs systemd.

The host is this machine seen through :mod:`tests.systemd_sandbox`: systemd as PID 1 of its own
namespaces, a real sshd on a loopback port, the test's data root bound in at the same path. So
every member runs as a systemd unit, and the drills, backups and restore drill run unchanged on it.
(The proxmox suite covers the ssh provider on a host without systemd: detached processes.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dbtier import procs
from dbtier.bootstrap import all_services
from dbtier.engines.base import get_engine
from dbtier.errors import PreflightError
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from dbtier.providers.hostkeys import fingerprint
from dbtier.supervisors import unit_name
from dbtier.engines.postgres.topology import pg_members
from blocks.hostkeys import forget_pins, load_pins, save_pins
from blocks.loaders import PREFECT_LOADERS
from tests.clusters import TEST_PORT_BASE, listening, rest_json, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec
from tests.sshd import SSHServer, running_sshd
from tests.systemd_sandbox import available, booted_systemd

pytestmark = pytest.mark.cluster
#: Without the sandbox (not root, no systemd installed) the suite runs against a plain sshd on this
#: machine (members as detached processes), and only the systemd tests are skipped.
SANDBOX_MISSING = available()
needs_systemd = pytest.mark.skipif(SANDBOX_MISSING is not None, reason=f"systemd sandbox: {SANDBOX_MISSING}")
BLOCK = 4
SSHD_PORT = TEST_PORT_BASE + 100 * BLOCK + 90


@pytest.fixture(scope="module")
def ssh_root() -> str:
    """The data root of every cluster of this module: bound into the systemd host at the same path."""
    return shared_tmpdir("dbtier-ssh-")


@pytest.fixture(scope="module")
def sshd(ssh_root: str) -> Iterator[SSHServer]:
    with (running_sshd(SSHD_PORT) if SANDBOX_MISSING else booted_systemd(SSHD_PORT, share=ssh_root)) as server:
        yield server


def _ssh_spec(sshd: SSHServer, data_root: str, **ssh: Any) -> ClusterSpec:
    settings = {"hosts": [{"address": "127.0.0.1", "port": ssh.pop("port", sshd.port)}], "user": "root", **ssh}
    if "key_file" not in settings:
        settings["credentials_block"] = "itest-ssh-key"
    return spec_for_tests("sshtest", block=BLOCK, data_root=data_root, provider="ssh", ssh=settings)


@pytest.fixture(scope="module")
def spec(sshd: SSHServer, ssh_root: str) -> ClusterSpec:
    return _ssh_spec(sshd, ssh_root)


def on_host(spec: ClusterSpec, *argv: str) -> str:
    """Run ``argv`` as root on the systemd host (through the provider's own SSH connection)."""
    return get_provider(spec, PREFECT_LOADERS).runner(spec, "127.0.0.1").run_as_root(list(argv)).out.strip()  # type: ignore[attr-defined]


def unit_state(spec: ClusterSpec, service: str) -> dict[str, str]:
    out = on_host(spec, "systemctl", "show", unit_name(spec.name, service),
                  "-p", "MainPID,User,ActiveState,UnitFileState,Restart,NRestarts")
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.fixture(scope="module")
def provisioned(prefect_harness: None, sshd: SSHServer, spec: ClusterSpec) -> Iterator[str]:
    """three_node_cluster_over_ssh, its key in an SSHCredentials block."""
    from pydantic import SecretStr

    from blocks.ssh import SSHCredentials
    from flows.provision import provision

    SSHCredentials(private_key=SecretStr(sshd.private_key)).save("itest-ssh-key", overwrite=True)
    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        provision(spec_path=spec_file)
        yield spec_file


def test_cluster_over_ssh_has_one_leader_and_streaming_replicas(provisioned: str, spec: ClusterSpec) -> None:
    members = rest_json(spec, pg_members(spec)[0], "/cluster")["members"]
    assert sorted(m["role"] for m in members) == ["leader", "replica", "replica"]
    assert all(m["state"] == "streaming" for m in members if m["role"] == "replica")
    assert get_engine(spec).status(spec).health.healthy


@needs_systemd
def test_every_member_runs_as_an_enabled_systemd_unit_of_the_database_user(provisioned: str, spec: ClusterSpec) -> None:
    provider = get_provider(spec, PREFECT_LOADERS)
    for service in all_services(get_engine(spec), spec):
        pid = procs.running_pid(provider.runner(spec, service.host), service)
        state = unit_state(spec, service.name)
        assert pid is not None, service.name
        assert state == {"MainPID": str(pid), "User": spec.os_user, "ActiveState": "active",
                         "UnitFileState": "enabled", "Restart": "on-failure", "NRestarts": "0"}, service.name
    assert os.stat(f"{spec.cluster_dir}/pg0/patroni.yml").st_mode & 0o777 == 0o600


@needs_systemd
def test_debians_etcd_unit_is_disabled_and_never_ran(provisioned: str, spec: ClusterSpec) -> None:
    """The sandbox starts with Debian's etcd.service enabled, as after installing the package."""
    assert on_host(spec, "sh", "-c", "systemctl is-enabled etcd.service || true") == "disabled"
    assert on_host(spec, "sh", "-c", "systemctl is-active etcd.service || true") == "inactive"


@needs_systemd
def test_systemd_restarts_a_member_that_dies(provisioned: str, spec: ClusterSpec) -> None:
    """Restart=on-failure: an etcd member killed by SIGKILL is back, under a new pid, without dbtier."""
    provider = get_provider(spec, PREFECT_LOADERS)
    etcd1 = next(s for s in all_services(get_engine(spec), spec) if s.name == "etcd1")
    runner = provider.runner(spec, etcd1.host)
    before = procs.running_pid(runner, etcd1)
    assert before is not None
    runner.run(["kill", "-KILL", str(before)])
    deadline = time.monotonic() + 30
    while procs.running_pid(runner, etcd1) in (None, before):
        assert time.monotonic() < deadline, "systemd did not restart etcd1 within 30 s"
        time.sleep(0.5)
    assert unit_state(spec, "etcd1")["NRestarts"] == "1"
    assert get_engine(spec).wait_healthy(spec, timeout=60).health.healthy


def test_second_provision_over_ssh_changes_nothing(provisioned: str, spec: ClusterSpec) -> None:
    from flows.provision import provision

    assert provision(spec_path=provisioned)["changed"] is False


@pytest.mark.parametrize("scenario", ["switchover", "crash"])
def test_drills_run_unchanged_on_the_ssh_cluster(provisioned: str, spec: ClusterSpec, scenario: str) -> None:
    from dbtier import workdir
    from dbtier.spec import DrillSettings
    from flows.failover_drill import failover_drill

    fast = DrillSettings(rto_budget_s=40, rejoin_budget_s=60, settle_s=1.0, tail_s=0.5, healthy_timeout_s=90)
    (verdict,) = failover_drill(scenario=scenario, spec_path=provisioned, settings=fast)
    assert verdict["passed"], verdict["reasons"]
    assert verdict["leader_changed"] and verdict["split_brain"] == []
    assert verdict["rto_s"] > 0 and verdict["rejoin_s"] is not None
    evidence = os.path.join(workdir.cluster_work_dir(spec.name), "drills")
    assert any(name.endswith(f"-{scenario}") for name in os.listdir(evidence)), "kept where the flow ran"
    assert on_host(spec, "sh", "-c", f"test -e {spec.cluster_dir}/drills && echo there || echo absent") == "absent"


def test_backups_and_the_restore_drill_run_unchanged_on_the_ssh_cluster(provisioned: str, spec: ClusterSpec) -> None:
    """pgBackRest commands, its config and the restored copy all go through the ssh runner."""
    from flows.archive_health import archive_health
    from flows.backup import backup
    from flows.restore_drill import restore_drill

    taken = backup(spec_path=provisioned, kind="full")["taken"]
    assert [b["kind"] for b in taken] == ["full"]
    assert archive_health(spec_path=provisioned)["healthy"] is True
    drill = restore_drill(spec_path=provisioned)
    assert drill["passed"], drill["verdict"]
    assert "marker rows: 100 of 100 written before the target, 0 of 10 written after it" in drill["verdict"]
    assert not os.path.exists(os.path.join(spec.data_root, "sshtest-drill")), "the throwaway copy is removed"
    assert load_pins("sshtest-drill") == {}, "the copy trusts the host key pinned for its source's host"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"port": SSHD_PORT + 1}, "ssh.hosts: 127.0.0.1:{port} cannot be reached"),
        ({"key_file": "WRONG"}, "ssh.hosts: 127.0.0.1:{sshd} refused the key for user 'root'"),
        ({"key_file": "/nonexistent/id_ed25519"}, "ssh.key_file: /nonexistent/id_ed25519 does not exist"),
        ({"key_file": "GOOD", "install_packages": False, "binaries": "/nonexistent/etcd"},
         "postgres.binaries.etcd: /nonexistent/etcd is missing on 127.0.0.1"),
        ({"host_key": "STRANGER"}, "ssh.hosts: 127.0.0.1:{sshd} presented host key {got}, not the host_key of the spec"),
        ({"pinned": "STRANGER"}, "ssh.hosts: 127.0.0.1:{sshd} presented host key {got}, not {pinned} pinned on first "
                                 "use; if the host was rebuilt on purpose, forget the pin: dbtier host-keys --spec FILE "
                                 "--forget 127.0.0.1:{sshd}"),
    ],
)
def test_bad_hosts_give_one_line_and_start_nothing(
    provisioned: str, sshd: SSHServer, ssh_root: str, settings: dict[str, Any], words: str
) -> None:
    """Unreachable host, wrong key, missing key file, a missing program: refused before anything starts."""
    from dbtier import bootstrap
    from dbtier.spec import build_spec

    settings = dict(settings)
    if settings.get("key_file") == "WRONG":
        settings["key_file"] = sshd.other_key_file
    elif settings.get("key_file") == "GOOD":
        settings["key_file"] = sshd.key_file
    etcd_bin = settings.pop("binaries", None)
    pinned = settings.pop("pinned", None)
    root = os.path.join(ssh_root, "bad")  # inside the bound data root: what the host writes shows here
    host_key = settings.pop("host_key", None)
    base = _ssh_spec(sshd, root, **settings)
    data = base.model_dump(mode="json")
    data["name"] = "sshbad"
    data["postgres"]["ports"] = {"postgres": 20450, "patroni": 20456, "etcd": 20470}
    if etcd_bin:
        data["postgres"]["binaries"]["etcd"] = etcd_bin
    if host_key:
        data["ssh"]["hosts"][0]["host_key"] = sshd.other_public_key
    bad = build_spec(data, environ={})
    if pinned:
        save_pins(bad.name, {f"[127.0.0.1]:{sshd.port}": sshd.other_public_key})
    try:
        with pytest.raises(PreflightError) as err:
            bootstrap.preflight(get_engine(bad), get_provider(bad, PREFECT_LOADERS), bad, before_install=True)
            bootstrap.prepare_hosts(get_engine(bad), get_provider(bad, PREFECT_LOADERS), bad)
            bootstrap.preflight(get_engine(bad), get_provider(bad, PREFECT_LOADERS), bad)
    finally:
        forget_pins(bad.name)
    message = err.value.one_line()
    assert words.format(port=SSHD_PORT + 1, sshd=sshd.port, got=fingerprint(sshd.host_key),
                        pinned=fingerprint(sshd.other_public_key)) in message, message
    assert "\n" not in str(err.value)
    assert not os.path.exists(bad.cluster_dir)
    assert not [p for p in (20450, 20451, 20452, 20460, 20461, 20462, 20470, 20471) if listening(p)]


def test_the_host_key_is_pinned_on_first_use_and_can_be_forgotten(
    provisioned: str, sshd: SSHServer, spec: ClusterSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    from dbtier.cli import main

    assert load_pins(spec.name) == {f"[127.0.0.1]:{sshd.port}": sshd.host_key}
    assert main(["host-keys", "--spec", provisioned]) == 0
    assert f"[127.0.0.1]:{sshd.port}  ssh-ed25519  {fingerprint(sshd.host_key)}  (pinned on first use)" in capsys.readouterr().out
    assert main(["host-keys", "--spec", provisioned, "--forget", f"127.0.0.1:{sshd.port}"]) == 0
    assert load_pins(spec.name) == {}
    assert main(["host-keys", "--spec", provisioned, "--forget", "10.9.9.9"]) == 1  # nothing pinned for it
    save_pins(spec.name, {f"[127.0.0.1]:{sshd.port}": sshd.host_key})


def test_teardown_over_ssh_stops_everything(provisioned: str, spec: ClusterSpec) -> None:
    from flows.teardown import teardown

    said = teardown(spec_path=provisioned, wipe=True)
    assert not os.path.exists(spec.cluster_dir)
    assert not [m.pg_port for m in pg_members(spec) if listening(m.pg_port)]
    if SANDBOX_MISSING is None:
        assert on_host(spec, "sh", "-c", f"ls /etc/systemd/system | grep -c '^dbtier-{spec.name}-' || true") == "0"
        assert on_host(spec, "systemctl", "list-units", "--all", "--plain", "--no-legend", f"dbtier-{spec.name}-*") == ""
        assert any("removed systemd units" in s for s in said), said
