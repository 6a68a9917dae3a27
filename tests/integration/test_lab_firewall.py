"""The host firewall on a lab of four hosts: three carry the cluster, the fourth is a machine outside it.

Runbook: ``dbtier lab up`` (hosts with their own network, disk and systemd), provision one member per host with
``allowed_client_networks`` this machine's /32 only (its app connections must pass pg_hba); then from the outside host PostgreSQL, Patroni's REST
API and etcd of a member do not answer, while a member host and this machine (the controller) reach them; a second
provision replaces the table (no rule piles up), ``firewall.enabled: false`` removes it, the next provision brings
it back; a drill's fault table lives beside it; a member host powered off and booted again has it again; teardown removes table, file and unit.

What crosses between the hosts is checked on the lab's addresses too: from this machine PostgreSQL refuses a
connection in clear and takes one verified against the cluster CA (pg_stat_ssl says TLS); a client trusting another
CA is refused by PostgreSQL, Patroni and etcd; the replicas stream to the leader over TLS; from another member host
Patroni's REST API refuses a restart without the REST login (401, nothing restarts) and gives no answer over plain
HTTP, and etcd answers no plain HTTP and writes nothing for a client without a user.
"""

from __future__ import annotations

import base64
import datetime
import json
import shlex
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from blocks.passwords import load_passwords
from dbtier import certs
from dbtier.engines.postgres import etcd_auth
from dbtier.engines.postgres.control_plane import etcd_root_login
from dbtier.engines.postgres.pg_roles import MONITORING_USER
from dbtier.engines.postgres.engine import connect
from dbtier.engines.postgres.patroni_health import role_holder
from dbtier.lab.lab import LabState
from dbtier.spec import ClusterSpec, load_spec
from dbtier.tls import tls_paths
from dbtier.engines.postgres.topology import PgMember, client_dsn, etcd_members, pg_member, pg_members
from dbtier.workdir import ca_cert_file
from tests.clusters import rest_json
from tests.lab import lab_spec_file, on_host, running_lab, unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(unavailable() is not None, reason=f"lab: {unavailable()}")]
NAME, SUBNET = "fwlab", "198.18.14.0/24"
MEMBERS = ["198.18.14.11", "198.18.14.12", "198.18.14.13"]
OUTSIDE = "fwlab-4"  # 198.18.14.14: in the lab's subnet, outside the cluster and its client networks
PORTS = (5432, 8008, 2379)  # pg0's PostgreSQL and REST API, etcd0's client port: all on the first member
TABLE = "inet dbtier_fw_fwlab"
FILES = ("/etc/dbtier/firewall-fwlab.nft", "/etc/systemd/system/dbtier-firewall-fwlab.service")


@pytest.fixture(scope="module")
def the_lab() -> Iterator[LabState]:
    with running_lab(NAME, SUBNET, hosts=4) as state:
        yield state


@pytest.fixture(scope="module")
def spec_file(the_lab: LabState, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The lab's ssh spec on the first three hosts; clients only from this machine's address on the lab."""
    return lab_spec_file(the_lab, "ssh", tmp_path_factory.mktemp(NAME), members=3,
                         allowed_client_networks=[f"{the_lab.plan.gateway}/32"])


@pytest.fixture(scope="module")
def provisioned(spec_file: str) -> dict[str, Any]:
    from flows.provision import provision

    return provision(spec_path=spec_file)


def reaches(state: LabState, from_host: str, address: str, port: int) -> bool:
    """A TCP connection from inside ``from_host`` to ``address:port`` completes within 3 s."""
    done = on_host(state, from_host, f"timeout 3 bash -c 'echo > /dev/tcp/{address}/{port}' && echo open || echo shut")
    return done.stdout.strip() == "open"


def from_here(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=3).close()
    except OSError:
        return False
    return True


def rules_on(state: LabState, host: str) -> int | None:
    """Rules in the cluster's table on ``host`` (None: no table)."""
    done = on_host(state, host, f"nft -j list table {TABLE}")
    if done.returncode != 0:
        return None
    return sum(1 for item in json.loads(done.stdout)["nftables"] if "rule" in item)


def test_provision_loads_a_firewall_on_each_member_and_none_elsewhere(provisioned: dict[str, Any],
                                                                     the_lab: LabState) -> None:
    said = provisioned["firewall"]
    assert [line.split(" rules on ")[1] for line in said] == MEMBERS
    counts = {rules_on(the_lab, h) for h in MEMBERS}
    assert len(counts) == 1 and said[0] == f"firewall: {counts.pop()} rules on {MEMBERS[0]}"
    assert rules_on(the_lab, OUTSIDE) is None
    listed = on_host(the_lab, MEMBERS[0], "systemctl is-enabled dbtier-firewall-fwlab.service").stdout.strip()
    assert listed == "enabled"


def test_the_outside_host_reaches_no_port_of_the_cluster(provisioned: dict[str, Any], the_lab: LabState) -> None:
    assert [p for p in PORTS if reaches(the_lab, OUTSIDE, MEMBERS[0], p)] == []
    assert reaches(the_lab, OUTSIDE, MEMBERS[0], 22), "everything else of the host is untouched"


def test_a_member_and_the_controller_reach_every_port(provisioned: dict[str, Any], the_lab: LabState) -> None:
    assert [p for p in PORTS if not reaches(the_lab, "fwlab-2", MEMBERS[0], p)] == []
    assert [p for p in PORTS if not from_here(MEMBERS[0], p)] == []


# -- what crosses between the hosts is TLS, and the control planes need their logins ------------------


@pytest.fixture(scope="module")
def spec(spec_file: str) -> ClusterSpec:
    return load_spec(spec_file)


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another CA's certificate: what a stray client trusts."""
    other = certs.make_ca("impostor", datetime.datetime.now(datetime.timezone.utc), 30)
    path = tmp_path_factory.mktemp("impostor") / "ca.crt"
    path.write_bytes(other.cert_pem)
    return str(path)


def pg_conninfo(member: PgMember, user: str, database: str, tls: str) -> str:
    return f"host={member.host} port={member.pg_port} user={user} dbname={database} connect_timeout=5 {tls}"


def curl(state: LabState, host: str, *args: str) -> tuple[str, str]:
    """curl inside ``host``: the HTTP status (``000``: no HTTP answer) and the body with curl's own error."""
    argv = " ".join(shlex.quote(a) for a in ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", *args])
    done = on_host(state, host, argv)
    body, _, status = done.stdout.rpartition("\n")
    return status.strip(), body + done.stderr


def member_on(spec: ClusterSpec, host: str) -> PgMember:
    return next(m for m in pg_members(spec) if m.host == host)


def leader_and_a_replica(spec: ClusterSpec) -> tuple[PgMember, PgMember]:
    doc = rest_json(spec, pg_members(spec)[0], "/cluster")
    leader = role_holder(doc, "leader")
    replica = next(m["name"] for m in doc["members"] if m["role"] != "leader")
    return pg_member(spec, str(leader)), pg_member(spec, replica)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_from_the_controller_postgres_takes_only_tls_verified_with_the_cluster_ca(
        provisioned: dict[str, Any], spec: ClusterSpec, the_lab: LabState) -> None:
    member, password = pg_members(spec)[0], load_passwords(spec).app
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        connect(pg_conninfo(member, spec.app.user, spec.app.database, "sslmode=disable"), password)
    verified = f"sslmode=verify-full sslrootcert={ca_cert_file(spec.name)}"
    with connect(pg_conninfo(member, spec.app.user, spec.app.database, verified), password) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
        assert conn.execute("SELECT host(inet_client_addr())").fetchone()[0] == the_lab.plan.gateway, \
            "the session came over the lab's network from this machine"


def test_a_client_trusting_another_ca_is_refused_by_every_service(provisioned: dict[str, Any], spec: ClusterSpec,
                                                                  foreign_ca: str) -> None:
    member, etcd = pg_members(spec)[1], etcd_members(spec)[1]
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connect(pg_conninfo(member, spec.app.user, spec.app.database,
                            f"sslmode=verify-full sslrootcert={foreign_ca}"), load_passwords(spec).app)
    for url in (f"{member.rest_url}/health", f"{etcd.client_url}/version"):
        with pytest.raises(requests.exceptions.SSLError, match="certificate verify failed"):
            requests.get(url, verify=foreign_ca, timeout=5)
    assert requests.get(f"{etcd.client_url}/version", verify=ca_cert_file(spec.name), timeout=5).ok, \
        "the cluster CA's own clients get in"


def test_replication_between_the_hosts_runs_over_tls(provisioned: dict[str, Any], spec: ClusterSpec) -> None:
    encrypted = "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid WHERE s.ssl"
    with connect(client_dsn(spec, MONITORING_USER, "postgres"), load_passwords(spec).monitoring) as conn:
        leader = str(conn.info.host)
        deadline, streams = time.monotonic() + 30, conn.execute(encrypted).fetchone()[0]
        while streams != 2 and time.monotonic() < deadline:
            time.sleep(1)
            streams = conn.execute(encrypted).fetchone()[0]
        peers = sorted(r[0] for r in conn.execute("SELECT host(client_addr) FROM pg_stat_replication"))
    assert leader in MEMBERS, "the leader, at its lab address"
    assert streams == 2, "both replicas stream over TLS"
    assert peers == sorted(set(MEMBERS) - {leader}), "from the other two hosts"


def test_patroni_rest_from_another_host_refuses_a_restart_without_the_login_and_plain_http(
        provisioned: dict[str, Any], spec: ClusterSpec, the_lab: LabState) -> None:
    _, replica = leader_and_a_replica(spec)
    caller = next(h for h in MEMBERS if h != replica.host)  # a member host: the firewall lets it in
    ca = tls_paths(member_on(spec, caller).dir, "patroni").ca  # the CA copy on the calling host
    started = rest_json(spec, replica, "/patroni")["postmaster_start_time"]
    url = f"https://{replica.host}:{replica.rest_port}/restart"
    for login in ([], ["-u", "dbtier:not-the-password"]):
        status, body = curl(the_lab, caller, "--cacert", ca, "-X", "POST", "-d", "{}", *login, url)
        assert status == "401", body
    time.sleep(3)  # a restart, had it been accepted, would have begun by now
    after = rest_json(spec, replica, "/patroni")
    assert (after["postmaster_start_time"], after["state"]) == (started, "running"), "nothing restarted"
    status, body = curl(the_lab, caller, f"http://{replica.host}:{replica.rest_port}/health")
    assert status == "000", f"no HTTP answer in clear: {body}"


def test_etcd_from_another_host_answers_no_plain_http_and_no_write_without_a_user(
        provisioned: dict[str, Any], spec: ClusterSpec, the_lab: LabState) -> None:
    etcd, caller = etcd_members(spec)[0], MEMBERS[1]
    ca, key = tls_paths(member_on(spec, caller).dir, "etcd").ca, f"/dbtier/{spec.name}/probe"
    status, body = curl(the_lab, caller, f"http://{etcd.host}:{etcd.client_port}/version")
    assert status == "000", f"no HTTP answer in clear: {body}"
    status, body = curl(the_lab, caller, "--cacert", ca, f"https://{etcd.host}:{etcd.client_port}/version")
    assert status == "200" and "etcdserver" in body, "over TLS it answers what needs no user"
    put = json.dumps({"key": b64(key), "value": b64("x")})
    status, body = curl(the_lab, caller, "--cacert", ca, "-X", "POST", "-d", put,
                        f"https://{etcd.host}:{etcd.client_port}/v3/kv/put")
    assert status in ("400", "401") and "user name is empty" in body, (status, body)
    root = etcd_auth.Gateway(spec, etcd)
    root.login(etcd_root_login(load_passwords(spec)))
    assert not root.call("kv/range", {"key": b64(key)}).get("kvs"), "nothing was written"


def test_provision_again_replaces_the_table_and_enabled_false_removes_it(provisioned: dict[str, Any],
                                                                       spec_file: str, the_lab: LabState,
                                                                       tmp_path: Path) -> None:
    import yaml

    from flows.provision import provision

    before = rules_on(the_lab, MEMBERS[1])
    again = provision(spec_path=spec_file)
    assert again["changed"] is False and again["firewall"] == provisioned["firewall"]
    assert rules_on(the_lab, MEMBERS[1]) == before, "no rule piles up"
    tables = on_host(the_lab, MEMBERS[1], "nft list tables").stdout.split("\n")
    assert tables.count("table inet dbtier_fw_fwlab") == 1

    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({**yaml.safe_load(Path(spec_file).read_text()), "firewall": {"enabled": False}}))
    assert provision(spec_path=str(off))["firewall"] == [f"firewall: none on {h}" for h in MEMBERS]
    assert [h for h in MEMBERS if rules_on(the_lab, h) is not None] == []
    assert reaches(the_lab, OUTSIDE, MEMBERS[0], 8008), "off means off"
    assert provision(spec_path=spec_file)["firewall"] == provisioned["firewall"]
    assert not reaches(the_lab, OUTSIDE, MEMBERS[0], 8008)


def test_a_drills_fault_table_lives_beside_it(provisioned: dict[str, Any], spec_file: str, the_lab: LabState) -> None:
    from dbtier.drills import nft
    from dbtier.engines.postgres import network
    from dbtier.providers.base import get_provider
    from dbtier.spec import load_spec

    spec = load_spec(spec_file)
    root = get_provider(spec).root_runner(spec, MEMBERS[2])
    assert root is not None
    before = rules_on(the_lab, MEMBERS[2])
    network.install(root, nft.cut_ports([the_lab.plan.host(OUTSIDE).address], [9]), guard_s=60)
    try:
        tables = on_host(the_lab, MEMBERS[2], "nft list tables").stdout.split("\n")
        assert {"table inet dbtier_drill", "table inet dbtier_fw_fwlab"} <= set(tables)
    finally:
        network.remove(root)
    assert rules_on(the_lab, MEMBERS[2]) == before, "the drill's removal leaves the firewall alone"


def test_a_member_host_booted_again_has_its_firewall(provisioned: dict[str, Any], the_lab: LabState) -> None:
    from dbtier.lab.power import LabPower

    leader_host = MEMBERS[int(str(provisioned["leader"]).removeprefix("pg"))]
    host = next(h for h in reversed(MEMBERS) if h != leader_host)  # a replica: no failover on the way
    before = rules_on(the_lab, host)
    power = LabPower(NAME)
    power.kill(host)
    power.boot(host)
    assert rules_on(the_lab, host) == before, "loaded at boot by its unit"
    etcd = 2379 + 2 * MEMBERS.index(host)  # the client port of the host's etcd member, started by systemd
    deadline = time.monotonic() + 60
    while not from_here(host, etcd) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert from_here(host, etcd), "the member's etcd is back and the controller reaches it"
    assert not reaches(the_lab, OUTSIDE, host, etcd), "the outside host still does not"


def test_teardown_removes_the_table_the_file_and_the_unit(provisioned: dict[str, Any], spec_file: str,
                                                          the_lab: LabState) -> None:
    from flows.teardown import teardown

    said = teardown(spec_path=spec_file, wipe=True)
    assert [s for s in said if "firewall" in s] == [
        f"{h}: firewall removed: nft table {TABLE}, {FILES[0]}, unit dbtier-firewall-fwlab.service" for h in MEMBERS]
    for host in MEMBERS:
        assert rules_on(the_lab, host) is None
        assert on_host(the_lab, host, f"ls {' '.join(FILES)} 2>/dev/null | wc -l").stdout.strip() == "0"
