"""The remote paths on a lab of three separate hosts, through the lab's own ssh spec.

Runbook: ``dbtier lab up`` (hosts with their own network, disk and systemd), provision one member per host
with routing on (HAProxy on every host, PgBouncer beside every member) and a virtual IP (keepalived), a second
provision changes nothing; every host's routes and the virtual IP lead to the leader; drills, during which the
virtual IP follows the new leader and is never held by two hosts at once; a backup into the lab's S3 from
whichever host is primary, archive health, a point-in-time restore into a new cluster on the lab hosts,
teardown (the virtual IP is gone); then ``lab down`` leaves nothing. The machine that runs the flows holds no
cluster data.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from dbtier.lab import lab
from dbtier.lab.lab import LabState
from dbtier.lab.plan import HOST_DATA_ROOT
from tests.clusters import RESTORE_OFFSET, one_member
from tests.lab import bucket_keys, lab_spec_file, on_host, running_lab, unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(unavailable() is not None, reason=f"lab: {unavailable()}")]
NAME, SUBNET = "tlab", "198.18.10.0/24"
HOSTS = ["198.18.10.11", "198.18.10.12", "198.18.10.13"]
VIP = "198.18.10.100"


@pytest.fixture(scope="module")
def the_lab() -> Iterator[LabState]:
    with running_lab(NAME, SUBNET) as state:
        yield state


@pytest.fixture(scope="module")
def spec_file(the_lab: LabState, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The lab's own ssh spec, with Patroni's fast test timing, routing and a virtual IP."""
    return lab_spec_file(the_lab, "ssh", tmp_path_factory.mktemp(NAME),
                         routing={"enabled": True, "vip": {"address": VIP, "interface": "eth0"}})


@pytest.fixture(scope="module")
def provisioned(spec_file: str) -> str:
    from flows.provision import provision

    provision(spec_path=spec_file)
    return spec_file


def test_hosts_are_separate_machines(the_lab: LabState) -> None:
    found = lab.status(NAME)
    assert found is not None
    assert [h["state"] for h in found["hosts"]] == ["running"] * 3
    assert [h["address"] for h in found["hosts"]] == ["198.18.10.11", "198.18.10.12", "198.18.10.13"]
    one = on_host(the_lab, "tlab-1", "hostname; ip route; touch /srv/dbtier/only-on-1; cat /proc/1/comm").stdout.split("\n")
    assert one[0] == "tlab-1"
    assert one[1].startswith("198.18.10.0/24 dev eth0") and "default" not in " ".join(one), "no route leaves the lab"
    assert one[2] == "systemd"
    two = on_host(the_lab, "tlab-2", f"ls -A /srv/dbtier; ls -A {the_lab.private} 2>&1 | wc -l; "
                                     "timeout 3 bash -c 'echo > /dev/tcp/198.18.10.11/22' && echo reach")
    assert "only-on-1" not in two.stdout, "a host's disk is its own"
    assert two.stdout.split("\n")[0:2] == ["0", "reach"], "the lab's keys are hidden; the other hosts are reachable"
    assert not Path("/srv/dbtier/only-on-1").exists(), "nothing a host writes lands on this machine"
    cut = on_host(the_lab, "tlab-1", "timeout 3 bash -c 'echo > /dev/tcp/192.0.2.1/80' 2>&1 || true")
    assert "Network is unreachable" in cut.stdout


def test_provision_is_healthy_and_idempotent_with_one_member_per_host(provisioned: str) -> None:
    from dbtier.providers.base import get_provider
    from dbtier.spec import load_spec
    from dbtier.engines.base import get_engine
    from dbtier.engines.postgres.topology import pg_members
    from flows.provision import provision
    from blocks.loaders import PREFECT_LOADERS

    spec = load_spec(provisioned)
    assert {m.host for m in pg_members(spec)} == {"198.18.10.11", "198.18.10.12", "198.18.10.13"}
    assert get_engine(spec).status(spec).health.healthy
    assert provision(spec_path=provisioned)["changed"] is False
    assert get_provider(spec, PREFECT_LOADERS).supervisor(spec, "198.18.10.11").__class__.__name__ == "Systemd"
    done = subprocess.run([".venv/bin/dbtier", "status", "--spec", provisioned], capture_output=True, text=True)
    assert done.returncode == 0 and "healthy" in done.stdout, done.stdout + done.stderr


def vip_holders(state: LabState) -> list[str]:
    """The lab hosts that hold the virtual IP now."""
    return [h for h in HOSTS if f" {VIP}/" in on_host(state, h, "ip -4 -o addr show dev eth0").stdout]


@contextmanager
def vip_watch(state: LabState, spec_file: str) -> Iterator[list[tuple[float, str, bool]]]:
    """Every 0.1 s on each host, from inside it: (time, host, holds the virtual IP); and every 0.2 s from here,
    (time, "leader", ...) rows naming the host of the member Patroni calls leader. The watchers are ssh
    clients of this machine, stopped by PID on the way out (their remote loop ends with the connection)."""
    from dbtier.engines.postgres import faults
    from dbtier.engines.postgres.patroni_health import role_holder
    from dbtier.spec import load_spec
    from dbtier.engines.postgres.topology import pg_member

    spec = load_spec(spec_file)
    samples: list[tuple[float, str, bool]] = []
    done = threading.Event()

    def leaders() -> None:
        while not done.is_set():
            name = role_holder(faults.cluster_doc(spec, timeout=0.5), "leader")
            if name:
                samples.append((time.time(), f"leader {pg_member(spec, name).host}", True))
            time.sleep(0.2)

    leader_thread = threading.Thread(target=leaders, daemon=True)
    leader_thread.start()
    loop = (f"while :; do if ip -4 -o addr show dev eth0 | grep -q ' {VIP}/'; then h=1; else h=0; fi; "
            "echo $(date +%s.%N) $h; sleep 0.1; done")
    watchers = []
    for host in HOSTS:
        proc = subprocess.Popen(lab.ssh_argv(state, state.plan.host(host), loop), stdout=subprocess.PIPE, text=True)

        def read(proc: subprocess.Popen[str] = proc, host: str = host) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                moment, held = line.split()
                samples.append((float(moment), host, held == "1"))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        watchers.append((proc, thread))
    try:
        time.sleep(1)
        yield samples
    finally:
        done.set()
        leader_thread.join(timeout=5)
        for proc, thread in watchers:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            thread.join(timeout=5)


def holding_spans(samples: list[tuple[float, str, bool]]) -> list[tuple[str, float, float]]:
    """(host, first, last sample) of each unbroken run of samples in which a host held the address."""
    spans: list[tuple[str, float, float]] = []
    for host in HOSTS:  # the leader rows ("leader <host>") are not a host's own
        run: list[float] = []
        for moment, _, held in sorted(s for s in samples if s[1] == host):
            if held:
                run.append(moment)
            elif run:
                spans.append((host, run[0], run[-1]))
                run = []
        if run:
            spans.append((host, run[0], run[-1]))
    return sorted(spans, key=lambda span: span[1])


def overlaps(spans: list[tuple[str, float, float]]) -> list[str]:
    return [f"{a[0]} ({a[1]:.1f}-{a[2]:.1f}) and {b[0]} ({b[1]:.1f}-{b[2]:.1f})"
            for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] != b[0] and b[1] <= a[2]]


def test_every_hosts_routes_and_the_virtual_ip_lead_to_the_leader(provisioned: str, the_lab: LabState) -> None:
    from psycopg import connect

    from blocks.passwords import load_passwords
    from dbtier.engines.postgres import faults
    from dbtier.engines.postgres import pg_routes
    from dbtier.engines.postgres.routing import routed_dsn, routers
    from dbtier.spec import load_spec
    from dbtier.engines.postgres.topology import pg_member

    spec = load_spec(provisioned)
    passwords = load_passwords(spec)
    leader = pg_member(spec, pg_routes.roles(faults.cluster_doc(spec))[0] or "")
    deadline = time.monotonic() + 30
    while vip_holders(the_lab) != [leader.host]:
        assert time.monotonic() < deadline, f"the virtual IP is on {vip_holders(the_lab)}, the leader on {leader.host}"
        time.sleep(0.5)
    assert routed_dsn(spec, "rw").startswith(f"postgresql://app@{VIP}:"), "the printed DSN names the virtual IP"
    with connect(routed_dsn(spec, "rw"), password=passwords.app, autocommit=True) as conn:
        assert conn.execute("SELECT host(inet_server_addr()), pg_is_in_recovery()").fetchone() == (leader.host, False)
    with connect(routed_dsn(spec, "ro"), password=passwords.app, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    assert [r.host for r in routers(spec)] == HOSTS, "one HAProxy on every host"
    for router in routers(spec):
        landing = pg_routes.land(spec, passwords, router, "rw", pooled=True)
        assert landing.member == leader.name, landing.cell
    done = subprocess.run([".venv/bin/dbtier", "status", "--spec", provisioned], capture_output=True, text=True)
    views = [line for line in done.stdout.splitlines() if line.startswith("router")]
    assert len(views) == 3 and all(f"rw -> {leader.name};" in line for line in views), done.stdout


def test_a_wrong_pinned_host_key_is_refused_in_one_line(provisioned: str, tmp_path: Path) -> None:
    from dbtier.errors import PreflightError
    from dbtier.providers.base import get_provider
    from dbtier.spec import load_spec

    data = yaml.safe_load(Path(provisioned).read_text())
    data["ssh"]["hosts"][1]["host_key"] = data["ssh"]["hosts"][0]["host_key"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    spec = load_spec(str(bad))
    with pytest.raises(PreflightError) as refused:
        get_provider(spec).check_host(spec, "198.18.10.12")
    assert refused.value.one_line().startswith("ssh.hosts: 198.18.10.12:22 presented host key SHA256:")
    assert "not the host_key of the spec" in refused.value.one_line()
    assert get_provider(spec).check_host(spec, "198.18.10.11") == [], "the host whose key matches is reached"


@pytest.mark.parametrize("scenario", ["switchover", "crash"])
def test_drills_on_the_lab_lose_no_acknowledged_write_and_the_vip_follows(provisioned: str, scenario: str,
                                                                         tmp_path: Path, the_lab: LabState,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from dbtier.spec import DrillSettings
    from flows.failover_drill import failover_drill

    from dbtier.spec import load_spec
    from dbtier.engines.postgres.topology import pg_member

    monkeypatch.setenv("DBTIER_WORK_DIR", str(tmp_path))
    fast = DrillSettings(rto_budget_s=40, rejoin_budget_s=90, settle_s=1.0, tail_s=0.5, healthy_timeout_s=120)
    with vip_watch(the_lab, provisioned) as samples:
        (verdict,) = failover_drill(scenario=scenario, spec_path=provisioned, settings=fast)
        new_host = pg_member(load_spec(provisioned), str(verdict["leader_after"])).host
        deadline = time.monotonic() + 20
        while not any(s[1] == new_host and s[2] for s in samples[-9:]):
            assert time.monotonic() < deadline, f"the virtual IP did not reach the new leader's host {new_host}"
            time.sleep(0.2)
        time.sleep(0.5)
    assert verdict["passed"], verdict["reasons"]
    assert verdict["leader_changed"] and verdict["split_brain"] == [] and verdict["lost_writes"] == 0
    assert any(note.startswith("the writer wrote through router0's rw route") for note in verdict["notes"])
    spans = holding_spans(list(samples))
    assert overlaps(spans) == [], "two hosts held the virtual IP at once"
    old_span, new_span = spans[-2], spans[-1]
    assert old_span[0] != new_host and new_span[0] == new_host, spans
    promoted = min(t for t, who, _ in samples if who == f"leader {new_host}")
    start = spans[0][1]
    print(f"{scenario}: the virtual IP left {old_span[0]} at +{old_span[2] - start:.1f} s and reached {new_host} at "
          f"+{new_span[1] - start:.1f} s ({new_span[1] - old_span[2]:.1f} s without a holder), "
          f"{new_span[1] - promoted:.1f} s after Patroni named {verdict['leader_after']} leader")
    assert new_span[1] - promoted < 15, "the virtual IP follows the new leader within seconds"
    logs = list(tmp_path.rglob("writes.jsonl"))
    assert len(logs) == 1 and logs[0].stat().st_size > 0, "the writer's log is kept where the flow runs"


def test_backup_into_the_labs_s3_and_a_pitr_restore_into_a_new_cluster(provisioned: str, the_lab: LabState) -> None:
    from psycopg import connect

    from blocks.passwords import load_passwords
    from dbtier import bootstrap
    from dbtier.backup.restore import derive_target
    from dbtier.engines.base import get_engine
    from dbtier.providers.base import get_provider
    from dbtier.engines.postgres.topology import client_dsn
    from dbtier.spec import ClusterSpec, load_spec
    from tests.clusters import write_spec
    from flows.archive_health import archive_health
    from flows.backup import backup
    from flows.restore import restore
    from blocks.loaders import PREFECT_LOADERS

    spec = load_spec(provisioned)
    taken = backup(spec_path=provisioned, kind="full")["taken"]
    assert [b["kind"] for b in taken] == ["full"]
    keys = bucket_keys(the_lab, f"{NAME}/backup/")
    assert any(taken[0]["label"] in k for k in keys), "the backup is in the lab's bucket"
    assert archive_health(spec_path=provisioned)["healthy"] is True

    with connect(client_dsn(spec), password=load_passwords(spec).app, autocommit=True) as conn:
        conn.execute("CREATE TABLE lab_events (id int PRIMARY KEY)")
        conn.execute("INSERT INTO lab_events SELECT g FROM generate_series(1, 25) g")
        target_time = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.3)
        conn.execute("INSERT INTO lab_events SELECT g FROM generate_series(26, 40) g")
    # One member and one etcd member: the restore across the lab's network is what this proves (the local suites
    # restore into three members); a third of the copy's bring-up time.
    derived = derive_target(spec, f"{NAME}-pitr", RESTORE_OFFSET)
    copy = ClusterSpec.model_validate(one_member(derived))
    copy_file = write_spec(copy, str(Path(provisioned).with_name("pitr.yaml")))
    provider = get_provider(copy, PREFECT_LOADERS)
    try:
        restore(spec_path=provisioned, target=target_time.isoformat(sep=" "), target_spec_path=copy_file)
        with connect(client_dsn(copy), password=load_passwords(copy).app) as conn:
            assert conn.execute("SELECT count(*) FROM lab_events").fetchone()[0] == 25
        hosts = {s.host for s in bootstrap.all_services(get_engine(copy), copy)}
        assert hosts == {"198.18.10.11"}, "the copy runs on a lab host"
    finally:
        bootstrap.stop_services(get_engine(copy), provider, copy)
        if bootstrap.is_initialised(get_engine(copy), provider, copy):
            bootstrap.wipe(get_engine(copy), provider, copy)
    assert not Path(HOST_DATA_ROOT).exists(), "this machine holds no cluster data"


def test_teardown_then_lab_down_leaves_nothing(provisioned: str, the_lab: LabState) -> None:
    from flows.teardown import teardown

    teardown(spec_path=provisioned, wipe=True)
    assert vip_holders(the_lab) == [], "keepalived stopped: no host holds the virtual IP"
    assert on_host(the_lab, "tlab-1", f"ls -A {HOST_DATA_ROOT}/{NAME} 2>/dev/null | wc -l").stdout.strip() == "0"
    launchers = [(the_lab.launchers.get(h.name), the_lab.launcher_args(h)) for h in the_lab.plan.hosts]
    lab.down(NAME, progress=lambda _line: None)
    assert lab.down(NAME, progress=lambda _line: None) == [], "a second down is a no-op"
    assert not any(lab.pid_runs(pid, args) for pid, args in launchers)
    assert subprocess.run(["ip", "link", "show", the_lab.plan.bridge], capture_output=True).returncode != 0
    assert not the_lab.dir.exists()
    assert not any(the_lab.plan.bridge in line or str(the_lab.dir) in line
                   for line in Path("/proc/self/mounts").read_text().splitlines())
    assert not any(Path("/sys/fs/cgroup/unified").glob(f"dbtier-lab-{NAME}-*"))
    assert os.path.exists("/proc/self")  # the machine is still here
