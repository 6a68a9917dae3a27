"""The cluster CA and its certificates on a real three-member cluster (local provider, port block 21).

Provision makes the CA (its key in a Secret block, never on a member) and one certificate per member and
service; a second provision keeps them; `dbtier certs` reads what the members hold and names a foreign or
expired one in one line; provision replaces only those; rotate_certs issues new ones and reloads in place.
"""

from __future__ import annotations

import datetime
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from blocks.ca import PREFECT_CA_STORE
from dbtier import bootstrap, certs, procs, workdir
from dbtier.certs import Sans
from dbtier.engines.base import get_engine
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from dbtier.tls import CertNeed, cert_plan
from tests.clusters import provisioned_by_flow, shared_tmpdir, spec_for_tests, write_spec

pytestmark = pytest.mark.cluster
BLOCK = 21
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("certs", block=BLOCK, data_root=shared_tmpdir("dbtier-certs-"))


@pytest.fixture(scope="module")
def cluster_with_certificates(prefect_harness: None, spec: ClusterSpec) -> Iterator[str]:
    """three_node_cluster_with_certificates: provisioned through the flow, stopped by PID afterwards; the spec file."""
    with provisioned_by_flow(spec) as spec_file:
        yield spec_file


def plan(spec: ClusterSpec) -> list[CertNeed]:
    return cert_plan(spec)


def serials(spec: ClusterSpec) -> dict[str, int]:
    return {n.label: certs.describe(open(n.paths.cert, "rb").read()).serial for n in plan(spec)}


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=180, env=env,
                          check=False)


def write_as_member(spec: ClusterSpec, need: CertNeed, pem: bytes) -> None:
    get_provider(spec).runner(spec, need.host).write_file(need.paths.cert, pem, 0o644)


def test_every_member_holds_its_certificates_and_keys_0600_owned_by_the_db_user(
    cluster_with_certificates: str, spec: ClusterSpec
) -> None:
    owner = pwd.getpwnam(spec.os_user).pw_uid
    needs = plan(spec)
    assert len(needs) == 9
    for need in needs:
        key, cert, ca = (os.stat(p) for p in (need.paths.key, need.paths.cert, need.paths.ca))
        assert (key.st_mode & 0o777, key.st_uid) == (0o600, owner), need.label
        assert cert.st_uid == owner and ca.st_uid == owner, need.label
        assert os.stat(need.paths.dir).st_mode & 0o777 == 0o700, need.label
        assert open(need.paths.ca, "rb").read() == PREFECT_CA_STORE.load_cert(spec.name)


def test_openssl_verifies_each_against_the_ca_and_the_sans_are_loopbacks(
    cluster_with_certificates: str, spec: ClusterSpec
) -> None:
    for need in plan(spec):
        done = subprocess.run(["openssl", "verify", "-CAfile", need.paths.ca, need.paths.cert],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout.strip() == f"{need.paths.cert}: OK", done.stdout + done.stderr
        info = certs.describe(open(need.paths.cert, "rb").read())
        assert info.sans == Sans.of(["127.0.0.1", "localhost"]), need.label
        assert info.subject == f"CN=certs-{need.member}-{need.service},O=dbtier"
        assert 179 <= (info.not_after - datetime.datetime.now(datetime.timezone.utc)).days <= 180


def test_the_ca_key_is_in_its_secret_block_and_on_no_member(cluster_with_certificates: str, spec: ClusterSpec) -> None:
    from blocks.passwords import load_secret

    ca = PREFECT_CA_STORE.load(spec.name)
    assert ca is not None and load_secret(f"dbtier-{spec.name}-ca-key") == ca.key_pem.decode()
    body = ca.key_pem.decode().splitlines()[1]
    for top, _dirs, files in os.walk(spec.cluster_dir):
        for name in files:
            path = os.path.join(top, name)
            if os.path.isfile(path) and os.path.getsize(path) < 2_000_000:
                assert body.encode() not in open(path, "rb").read(), path


def test_a_second_provision_keeps_every_certificate(cluster_with_certificates: str, spec: ClusterSpec) -> None:
    from flows.provision import provision

    before = serials(spec)
    assert provision(spec_path=cluster_with_certificates)["changed"] is False
    said = bootstrap.ensure_certificates(get_provider(spec), spec, PREFECT_CA_STORE)
    assert said[0].startswith("cluster CA reused (CN=dbtier certs CA,O=dbtier, until ")
    assert said[-1] == "certificates of certs: 0 issued, 9 reused"
    assert serials(spec) == before


def test_dbtier_certs_lists_them_and_dbtier_ca_prints_the_ca(cluster_with_certificates: str, spec: ClusterSpec) -> None:
    done = cli("-m", "dbtier.cli", "certs", "--spec", cluster_with_certificates)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["member", "service", "subject", "SANs"]
    rows = [line.split()[:2] for line in lines[2:11]]
    assert rows == [["pg0", "postgres"], ["pg0", "patroni"], ["pg1", "postgres"], ["pg1", "patroni"],
                    ["pg2", "postgres"], ["pg2", "patroni"], ["etcd0", "etcd"], ["etcd1", "etcd"], ["etcd2", "etcd"]]
    assert all(line.rstrip().endswith(" ok") for line in lines[2:11]) and done.stderr == ""
    assert "IP:127.0.0.1, DNS:localhost" in lines[2] and lines[11].startswith("CA: CN=dbtier certs CA,O=dbtier, until ")

    shown = cli("-m", "dbtier.cli", "ca", "--spec", cluster_with_certificates)
    assert shown.returncode == 0, shown.stderr
    path, pem = shown.stdout.split("\n", 1)
    assert path == workdir.ca_cert_file(spec.name) and pem.encode() == PREFECT_CA_STORE.load_cert(spec.name)
    assert open(path, "rb").read() == pem.encode() and "PRIVATE" not in shown.stdout


def test_a_foreign_and_an_expired_certificate_are_named_in_one_line_each_then_replaced(
    cluster_with_certificates: str, spec: ClusterSpec
) -> None:
    from flows.provision import provision

    ca = PREFECT_CA_STORE.load(spec.name)
    assert ca is not None
    now = datetime.datetime.now(datetime.timezone.utc)
    needs = {n.label: n for n in plan(spec)}
    foreign, expired = needs["pg1 postgres"], needs["etcd0 etcd"]
    stranger = certs.make_ca("certs", now)  # the same name: only the signature tells
    write_as_member(spec, foreign, certs.issue(stranger, foreign.common_name, foreign.sans, now, 180).cert_pem)
    write_as_member(spec, expired, certs.issue(ca, expired.common_name, expired.sans, now - datetime.timedelta(days=10),
                                               1).cert_pem)
    before = serials(spec)

    done = cli("-m", "dbtier.cli", "certs", "--spec", cluster_with_certificates)

    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith(f"dbtier: pg1 postgres on 127.0.0.1: {foreign.paths.cert}: issued by "
                               "'CN=dbtier certs CA,O=dbtier', not by this cluster's CA"), lines[0]
    assert lines[1].startswith(f"dbtier: etcd0 etcd on 127.0.0.1: {expired.paths.cert}: expired on "), lines[1]
    assert all(f"run 'dbtier provision --spec {cluster_with_certificates}'" in line for line in lines)
    assert "Traceback" not in done.stderr

    assert provision(spec_path=cluster_with_certificates)["changed"] is True
    after = serials(spec)
    assert {k for k in after if after[k] != before[k]} == {"pg1 postgres", "etcd0 etcd"}
    assert get_engine(spec).stale_certificates(spec) == [], "the running services serve what provision installed"
    assert cli("-m", "dbtier.cli", "certs", "--spec", cluster_with_certificates).returncode == 0


def test_rotate_certs_issues_new_serials_and_the_cluster_keeps_its_leader(
    cluster_with_certificates: str, spec: ClusterSpec
) -> None:
    engine, provider = get_engine(spec), get_provider(spec)
    before, leader = serials(spec), engine.status(spec).health.leader
    pids = {s.name: procs.running_pid(provider.runner(spec, s.host), s) for s in bootstrap.all_services(engine, spec)}

    done = cli("-m", "flows.rotate_certs", "--spec", cluster_with_certificates)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "certificates of certs: 9 issued, 0 reused" in done.stdout
    assert done.stdout.count("PostgreSQL reloaded its configuration and certificates") == 3
    assert done.stdout.count("Patroni reloaded") == 3
    assert "every service serves the certificate its member holds (9 checked)" in done.stdout
    after = serials(spec)
    assert not {k for k in after if after[k] == before[k]}
    status = engine.status(spec)
    assert status.health.healthy and status.health.leader == leader
    assert {s.name: procs.running_pid(provider.runner(spec, s.host), s)
            for s in bootstrap.all_services(engine, spec)} == pids
    assert cli("-m", "dbtier.cli", "certs", "--spec", cluster_with_certificates).returncode == 0


def test_rotating_certs_under_the_drill_writer_loses_no_write_and_stalls_none_for_long(
    cluster_with_certificates: str, spec: ClusterSpec
) -> None:
    """Issue 12: the drill's own writer runs through the rotation; the drill's verdict counts and measures."""
    from blocks.passwords import load_passwords
    from dbtier.drills import writer
    from dbtier.engines.postgres import scenarios

    run = scenarios.Drill(spec, spec.drills, load_passwords(spec).app, "rotate-certs")
    leader = run.leader()
    with run.writing():
        rotated: list[subprocess.CompletedProcess[str]] = []
        started = run.fault("python -m flows.rotate_certs",
                            lambda: rotated.append(cli("-m", "flows.rotate_certs", "--spec", cluster_with_certificates)))
        finished = run.note("rotation done")
        run.healthy_then_tail()
    verdict = run.finish(started, leader, run.expect(False, max_gap_s=10.0, zero_loss=True)).verdict

    during = [a for a in writer.read_attempts(run.log) if a.ok and started <= a.sent and a.done <= finished]
    print(f"\nrotation under the writer: {verdict.acknowledged} writes acknowledged ({len(during)} during the "
          f"{finished - started:.1f} s rotation), longest gap {verdict.max_gap_s} s, {verdict.lost_writes} lost, "
          f"{verdict.failed_attempts} failed attempts")
    assert rotated[0].returncode == 0, rotated[0].stderr[-2000:]
    assert "certificates of certs: 9 issued, 0 reused" in rotated[0].stdout
    assert verdict.passed, verdict.reasons
    assert verdict.lost_writes == 0 and verdict.leader_after == leader and not verdict.leader_changed
    assert verdict.max_gap_s is not None and verdict.max_gap_s < 10.0
    assert len(during) > 10, "writes kept being acknowledged while the flow ran"


def test_the_ca_key_is_in_no_log_line_parameter_or_artifact(cluster_with_certificates: str, spec: ClusterSpec) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    ca = PREFECT_CA_STORE.load(spec.name)
    assert ca is not None
    names = ["provision certs", "rotate-certs certs"]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=names)))
        assert {r.name for r in runs} == set(names), [r.name for r in runs]
        messages: list[str] = []
        while True:  # page through every log line of those runs
            page = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])),
                                    limit=200, offset=len(messages))
            messages += [log.message for log in page]
            if len(page) < 200:
                break
        artifacts = client.read_artifacts(limit=100)
    assert len(messages) > 20 and any("certificates of certs: " in m for m in messages)
    published: list[Any] = [*messages, *(repr(r.parameters) for r in runs), *(f"{a.data} {a.description}" for a in artifacts)]
    body_lines = ca.key_pem.decode().splitlines()[1:-1]
    assert not [text for text in published for line in body_lines if line in str(text)]
    assert not [text for text in published if "PRIVATE KEY" in str(text)]


def test_a_cluster_without_a_ca_is_refused_in_one_line(prefect_harness: None, spec: ClusterSpec) -> None:
    other = spec_for_tests("certs-none", block=BLOCK, data_root=shared_tmpdir("dbtier-certs-none-"))
    spec_file = write_spec(other, os.path.join(other.data_root, "spec.yaml"))
    for argv in (["-m", "dbtier.cli", "certs", "--spec", spec_file], ["-m", "flows.rotate_certs", "--spec", spec_file]):
        done = cli(*argv)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("dbtier: error: "), done.stderr
        assert "certs-none" in lines[0] and "provision" in lines[0], lines[0]


#: Runs in its own process: the library issues a cluster's certificates with no Prefect at all.
NO_PREFECT = """
import json, sys
from dbtier.bootstrap import ensure_certificates
from dbtier.ca_store import FILE_CA_STORE
from dbtier.providers.base import get_provider
from dbtier.spec import load_spec
spec = load_spec(sys.argv[1])
said = ensure_certificates(get_provider(spec), spec, FILE_CA_STORE)
print(json.dumps({"said": said, "prefect": sorted(m for m in sys.modules if m.split(".")[0] == "prefect")}))
"""


def test_without_prefect_the_ca_lives_in_the_work_directory(tmp_path: Any) -> None:
    """As passwords and host keys do for runs without Prefect (test_without_prefect.py): no block, a file 0600."""
    import json

    lone = spec_for_tests("certs-lone", block=BLOCK, data_root=shared_tmpdir("dbtier-certs-lone-"), members=1)
    spec_file = write_spec(lone, os.path.join(lone.data_root, "spec.yaml"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBTIER_", "PREFECT_"))}
    env["DBTIER_WORK_DIR"] = str(tmp_path / "work")
    runs = [subprocess.run([sys.executable, "-c", NO_PREFECT, spec_file], capture_output=True, text=True, cwd=REPO,
                           env=env, timeout=120, check=False) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first, second = (json.loads(r.stdout) for r in runs)
    assert first["prefect"] == [] and first["said"][0].startswith("cluster CA made (")
    assert first["said"][-1] == "certificates of certs-lone: 3 issued, 0 reused"
    assert second["said"][-1] == "certificates of certs-lone: 0 issued, 3 reused"
    key = tmp_path / "work" / "certs-lone" / "ca" / "ca.key"
    assert os.stat(key).st_mode & 0o777 == 0o600 and b"PRIVATE KEY" in key.read_bytes()
    assert not [line for line in runs[0].stdout.splitlines() if "PRIVATE" in line]
