"""Authenticated control planes on a real cluster: Patroni REST's unsafe endpoints and etcd need credentials.

Runbook order: a cluster is provisioned; a restart without the REST login is refused and restarts nothing, with it
the member restarts; the health endpoints stay readable; etcd without a user writes, deletes and reads nothing of
the cluster; the cluster's user reaches its prefix, not another cluster's; patronictl on a member lists and
switches over; dbtier status and a switchover drill pass; no password reaches a log line of those runs.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
import requests

from blocks.passwords import load_passwords
from dbtier import bootstrap
from dbtier.engines.postgres import faults
from dbtier.drills.settings import DrillSettings
from dbtier.engines.postgres import etcd_auth
from dbtier.engines.base import get_engine
from dbtier.engines.postgres.control_plane import etcd_login, etcd_root_login, rest_login
from dbtier.errors import ControlPlaneError, DbtierError
from dbtier.engines.postgres.patroni_health import role_holder
from dbtier.providers.base import get_provider
from dbtier.secrets import Passwords, block_name
from dbtier.spec import ClusterSpec
from dbtier.tls import tls_paths
from dbtier.engines.postgres.topology import etcd_members, pg_member, pg_members
from dbtier.workdir import ca_cert_file
from tests.clusters import (rest_json, rest_request, run_log_lines, shared_tmpdir, spec_for_tests, stopped_at_exit,
                            write_spec)

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = DrillSettings(rto_budget_s=40, rejoin_budget_s=60, settle_s=1.0, tail_s=0.5, healthy_timeout_s=90)
#: The flow runs whose logs must hold no password: provision, the drill.
RUNS: list[UUID] = []


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("cpauth", block=22, data_root=shared_tmpdir("dbtier-cpauth-"))


@pytest.fixture(scope="module")
def secured_cluster(prefect_harness: None, spec: ClusterSpec) -> Iterator[str]:
    """three_node_cluster_with_authenticated_control_planes: provisioned through the flow, stopped by PID and
    wiped after."""
    from flows.provision import provision

    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        state = provision(spec_path=spec_file, return_state=True)
        assert state.is_completed(), state.message
        RUNS.append(state.state_details.flow_run_id)
        yield spec_file
    bootstrap.wipe(get_engine(spec), get_provider(spec), spec)


def passwords(spec: ClusterSpec) -> Passwords:
    return load_passwords(spec)


def member_doc(spec: ClusterSpec, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = rest_json(spec, pg_member(spec, name), "/patroni")
    return doc


def a_replica(spec: ClusterSpec) -> str:
    doc = faults.cluster_doc(spec)
    return next(m["name"] for m in (doc or {})["members"] if m["role"] != "leader")


def wait_healthy(spec: ClusterSpec) -> None:
    get_engine(spec).wait_healthy(spec, 90)


def etcdctl(spec: ClusterSpec, *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl with no user at all."""
    endpoint = etcd_members(spec)[0].client_url
    return subprocess.run(["etcdctl", f"--endpoints={endpoint}", f"--cacert={ca_cert_file(spec.name)}",
                           "--command-timeout=5s", *args],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})


def gateway_as(spec: ClusterSpec, login: Any) -> etcd_auth.Gateway:
    gateway = etcd_auth.Gateway(spec, etcd_members(spec)[1])
    gateway.login(login)
    return gateway


def b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


# -- Patroni REST ----------------------------------------------------------------------------------


def test_a_restart_without_the_rest_login_is_refused_and_restarts_nothing(secured_cluster: str,
                                                                           spec: ClusterSpec) -> None:
    name = a_replica(spec)
    started = member_doc(spec, name)["postmaster_start_time"]
    for auth in (None, ("dbtier", "not-the-password")):
        answer = rest_request(spec, pg_member(spec, name), "POST", "/restart", json={}, auth=auth, timeout=10)
        assert answer.status_code == 401, answer.text
    time.sleep(3)  # a restart, had it been accepted, would have begun by now
    assert member_doc(spec, name)["postmaster_start_time"] == started
    assert member_doc(spec, name)["state"] == "running"


def test_a_restart_with_the_rest_login_is_accepted(secured_cluster: str, spec: ClusterSpec) -> None:
    name = a_replica(spec)
    started = member_doc(spec, name)["postmaster_start_time"]
    answer = rest_request(spec, pg_member(spec, name), "POST", "/restart", json={},
                          auth=rest_login(passwords(spec)).as_basic_auth(), timeout=60)
    assert answer.status_code == 200, answer.text
    wait_healthy(spec)
    assert member_doc(spec, name)["postmaster_start_time"] != started


def test_the_health_endpoints_stay_readable_without_a_login(secured_cluster: str, spec: ClusterSpec) -> None:
    for member in pg_members(spec):
        assert rest_request(spec, member, "GET", "/health").status_code == 200
        cluster = rest_request(spec, member, "GET", "/cluster")
        assert cluster.status_code == 200 and len(cluster.json()["members"]) == 3


def test_a_config_change_without_the_login_is_refused_and_says_which_login(secured_cluster: str,
                                                                           spec: ClusterSpec) -> None:
    with pytest.raises(DbtierError) as refused:
        faults.set_synchronous_mode(spec, True, None)
    assert "401" in str(refused.value) and "dbtier-cpauth-restapi-password" in str(refused.value)
    assert faults.synchronous_mode(spec) is False


# -- etcd ------------------------------------------------------------------------------------------


def test_etcd_without_a_user_can_neither_write_nor_delete_nor_read_the_leader(secured_cluster: str,
                                                                              spec: ClusterSpec) -> None:
    leader_key = f"/dbtier/{spec.name}/leader"
    for args in (("put", "/dbtier/probe", "x"), ("del", "/dbtier/probe"), ("del", leader_key), ("get", leader_key)):
        done = etcdctl(spec, *args)
        assert done.returncode != 0 and "user name is empty" in done.stderr, (args, done.stdout, done.stderr)
    wrong = passwords(spec).replace(etcd_root="not-the-password")
    with pytest.raises(ControlPlaneError, match="^etcd member etcd0: auth is on and root refuses") as refused:
        etcd_auth.secure(spec, wrong)
    assert block_name(spec, "etcd_root") in str(refused.value) and "not-the-password" not in str(refused.value)
    assert role_holder(faults.cluster_doc(spec), "leader") is not None


def test_the_clusters_user_reaches_its_prefix_and_no_other_clusters(secured_cluster: str, spec: ClusterSpec) -> None:
    other = "/dbtier/othercluster/leader"
    root = gateway_as(spec, etcd_root_login(passwords(spec)))
    root.call("kv/put", {"key": b64(other), "value": b64("pg9")})
    try:
        mine = gateway_as(spec, etcd_login(spec, passwords(spec)))
        own = mine.call("kv/range", {"key": b64(f"/dbtier/{spec.name}/leader")})
        assert own.get("kvs"), own
        for method, body in (("kv/range", {"key": b64(other)}), ("kv/put", {"key": b64(other), "value": b64("x")}),
                             ("kv/put", {"key": b64("/dbtier/probe"), "value": b64("x")})):
            with pytest.raises(etcd_auth.EtcdRefused, match="permission denied"):
                mine.call(method, body)
    finally:
        root.call("kv/deleterange", {"key": b64(other)})


def test_securing_etcd_again_changes_nothing(secured_cluster: str, spec: ClusterSpec) -> None:
    said = etcd_auth.secure(spec, passwords(spec))
    assert "already in place, auth on" in said and f"reaches only /dbtier/{spec.name}/" in said


# -- patronictl on a member, dbtier's own calls ------------------------------------------------------


def patronictl(spec: ClusterSpec, *args: str) -> Any:
    member = pg_members(spec)[0]
    program = os.path.join(os.path.dirname(spec.pg.binaries.patroni), "patronictl")
    return get_provider(spec).runner(spec, member.host).run([program, "-c", member.config, *args], check=False,
                                                            timeout=90)


def test_patronictl_on_a_member_lists_and_switches_over(secured_cluster: str, spec: ClusterSpec) -> None:
    listed = patronictl(spec, "list", "-f", "json")
    assert listed.rc == 0, listed.err
    assert sorted(m["Member"] for m in json.loads(listed.out)) == ["pg0", "pg1", "pg2"]
    leader, candidate = role_holder(faults.cluster_doc(spec), "leader"), a_replica(spec)
    done = patronictl(spec, "switchover", "--leader", str(leader), "--candidate", candidate, "--force")
    assert done.rc == 0, done.out + done.err
    wait_healthy(spec)
    assert role_holder(faults.cluster_doc(spec), "leader") == candidate


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_ca(spec: ClusterSpec) -> dict[str, str]:
    """Another CA's certificate, and a leaf it issued for 127.0.0.1: what an impostor or a stray client has."""
    from dbtier import certs

    now = datetime.datetime.now(datetime.timezone.utc)
    other = certs.make_ca("impostor", now, 30)
    leaf = certs.issue(other, "impostor-etcd", certs.Sans.of(["127.0.0.1"]), now, 30)
    paths = {"ca": os.path.join(spec.data_root, "impostor-ca.crt"), "cert": os.path.join(spec.data_root, "impostor.crt"),
             "key": os.path.join(spec.data_root, "impostor.key")}
    for name, data in (("ca", other.cert_pem), ("cert", leaf.cert_pem), ("key", leaf.key_pem)):
        with open(paths[name], "wb") as fh:
            fh.write(data)
    return paths


def test_patroni_rest_answers_only_over_https(secured_cluster: str, spec: ClusterSpec) -> None:
    member = pg_members(spec)[0]
    assert member.rest_url.startswith("https://")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{member.host}:{member.rest_port}/health", timeout=5)
    # The switchover just before may leave this member restarting as a replica: /health says 503 until it runs.
    deadline, answer = time.monotonic() + 60, rest_request(spec, member, "GET", "/health")
    while answer.status_code != 200 and time.monotonic() < deadline:
        time.sleep(1)
        answer = rest_request(spec, member, "GET", "/health")
    assert answer.status_code == 200, f"health stays readable over TLS: {answer.status_code} {answer.text}"


def test_a_client_trusting_another_ca_reaches_no_service(secured_cluster: str, spec: ClusterSpec,
                                                         foreign_ca: dict[str, str]) -> None:
    member, etcd = pg_members(spec)[0], etcd_members(spec)[0]
    for url in (f"{member.rest_url}/health", f"{etcd.client_url}/version"):
        with pytest.raises(requests.exceptions.SSLError, match="certificate verify failed"):
            requests.get(url, verify=foreign_ca["ca"], timeout=5)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(f"host={member.host} port={member.pg_port} user=app dbname=app sslmode=verify-full "
                        f"sslrootcert={foreign_ca['ca']} connect_timeout=5", password=passwords(spec).app)
    assert requests.get(f"{etcd.client_url}/version", verify=ca_cert_file(spec.name), timeout=5).ok


def test_etcd_peers_need_a_certificate_of_the_cluster_ca(secured_cluster: str, spec: ClusterSpec,
                                                         foreign_ca: dict[str, str]) -> None:
    """The peer port answers a member's certificate only: no certificate, or another CA's, is turned away."""
    etcd = etcd_members(spec)[0]
    url, ca = f"{etcd.peer_url}/members", ca_cert_file(spec.name)
    own = tls_paths(etcd_members(spec)[1].dir, "etcd")
    answer = requests.get(url, verify=ca, cert=(own.cert, own.key), timeout=5)
    assert answer.ok and len(answer.json()) == 3, answer.text
    for cert in (None, (foreign_ca["cert"], foreign_ca["key"])):
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            requests.get(url, verify=ca, cert=cert, timeout=5).raise_for_status()


def test_patronictl_on_a_member_lists_the_cluster_over_tls(secured_cluster: str, spec: ClusterSpec) -> None:
    member = pg_members(spec)[1]
    done = subprocess.run([os.path.join(os.path.dirname(spec.pg.binaries.patroni), "patronictl"), "-c", member.config,
                           "list", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(row["Member"] for row in json.loads(done.stdout)) == ["pg0", "pg1", "pg2"]


def test_provision_with_tls_off_is_refused_in_one_line_over_a_cluster_serving_tls(secured_cluster: str,
                                                                                 spec: ClusterSpec) -> None:
    plain = spec.model_copy(update={"tls": spec.tls.model_copy(update={"enabled": False})})
    engine, provider = get_engine(plain), get_provider(plain)
    with pytest.raises(DbtierError, match=r"^tls.enabled: cluster cpauth runs with TLS \(pg0, pg1, pg2 answer HTTPS\)"):
        bootstrap.preflight(engine, provider, plain)
    assert bootstrap.preflight(get_engine(spec), provider, spec)[-1].startswith("ports of 6 services")


def test_dbtier_status_and_a_switchover_drill_pass(secured_cluster: str, spec: ClusterSpec) -> None:
    from flows.failover_drill import failover_drill

    status = subprocess.run([sys.executable, "-m", "dbtier.cli", "status", "--spec", secured_cluster],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    state = failover_drill(scenario="switchover", spec_path=secured_cluster, settings=FAST, return_state=True)
    RUNS.append(state.state_details.flow_run_id)
    (verdict,) = state.result()
    assert verdict["passed"] and verdict["leader_changed"], verdict["reasons"]


def test_no_password_reaches_a_log_line_of_those_runs(secured_cluster: str, spec: ClusterSpec) -> None:
    assert len(RUNS) == 2, "run the module as a whole: provision and the drill"
    lines = run_log_lines(RUNS)
    assert any("etcd RBAC of cpauth" in line for line in lines)
    for member in [*pg_members(spec), *etcd_members(spec)]:
        for name in os.listdir(member.dir):
            if name.endswith(".log"):
                with open(os.path.join(member.dir, name), errors="replace") as fh:
                    lines += fh.read().splitlines()
    leaked = [i for i, secret in enumerate(passwords(spec).values()) if any(secret in line for line in lines)]
    assert leaked == []
