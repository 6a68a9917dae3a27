"""etcd, the consensus store under Patroni: argv rendering (pure) and quorum checks."""

from __future__ import annotations

import time

from dbtier.errors import ClusterUnhealthy
from dbtier.procs import Service
from dbtier.spec import ClusterSpec
from dbtier.tls import tls_paths
from dbtier.engines.postgres.topology import EtcdMember, etcd_members


def etcd_argv(spec: ClusterSpec, member: EtcdMember) -> list[str]:
    """The command line of one etcd member.

    >>> argv = etcd_argv(ClusterSpec(etcd_members=1, members=1), etcd_members(ClusterSpec(members=1))[0])
    >>> argv[argv.index("--initial-cluster") + 1]
    'etcd0=https://127.0.0.1:2380'
    >>> "--peer-client-cert-auth" in argv, "--client-cert-auth" in argv
    (True, False)
    """
    everyone = etcd_members(spec)
    return [
        spec.pg.binaries.etcd,
        "--name", member.name,
        "--data-dir", member.data_dir,
        "--listen-client-urls", member.client_url,
        "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url,
        "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in everyone),
        "--initial-cluster-token", f"dbtier-{spec.name}",
        "--initial-cluster-state", "new",
        "--logger", "zap",
        "--log-outputs", "stderr",
        *tls_arguments(spec, member),
    ]


def tls_arguments(spec: ClusterSpec, member: EtcdMember) -> list[str]:
    """etcd's TLS: clients (Patroni, dbtier) verify the member's ``etcd`` certificate and log in with a
    password (RBAC, :mod:`dbtier.engines.postgres.etcd_auth`); peers present their certificate to each other and each
    checks it against the cluster CA. etcd reads its certificate files on every new connection, so new
    leaves of the same CA need no restart (a new CA does)."""
    if not spec.tls.enabled:
        return []
    files = tls_paths(member.dir, "etcd")
    return [
        # No --trusted-ca-file on the client side: etcd 3.4 then asks every client for a certificate.
        "--cert-file", files.cert, "--key-file", files.key,
        "--peer-cert-file", files.cert, "--peer-key-file", files.key, "--peer-trusted-ca-file", files.ca,
        "--peer-client-cert-auth",
    ]


def etcd_services(spec: ClusterSpec) -> list[Service]:
    return [
        Service(
            name=m.name,
            kind="etcd",
            host=m.host,
            argv=etcd_argv(spec, m),
            pidfile=f"{m.dir}/etcd.pid",
            logfile=f"{m.dir}/etcd.log",
            marker=m.data_dir,
            ports=[("postgres.ports.etcd", m.client_port), ("postgres.ports.etcd", m.peer_port)],
        )
        for m in etcd_members(spec)
    ]


def member_states(spec: ClusterSpec) -> dict[str, str]:
    """Each etcd member's role as it reports it through etcd3gw: ``leader``, ``follower`` or ``down``."""
    from etcd3gw.client import Etcd3Client

    from dbtier.engines.postgres.control_plane import http_session

    states: dict[str, str] = {}
    leaders: set[str] = set()
    session = http_session(spec)
    for member in etcd_members(spec):
        client = Etcd3Client(host=member.host, port=member.client_port, protocol=member.scheme, timeout=2,
                             api_path="/v3/", session=session)
        try:
            status = client.status()
        except Exception:  # noqa: BLE001 - any failure means this member is not serving
            states[member.name] = "down"
            continue
        leader = str(status.get("leader", "0"))
        me = str(status.get("header", {}).get("member_id", ""))
        states[member.name] = "leader" if leader == me else ("follower" if leader != "0" else "no leader")
        leaders.add(leader)
    return states


def judge_quorum(states: dict[str, str]) -> tuple[bool, str]:
    """Healthy when every member answers and exactly one is the leader.

    >>> judge_quorum({"etcd0": "leader", "etcd1": "follower", "etcd2": "follower"})
    (True, 'etcd quorum healthy: 3 members, leader etcd0')
    >>> judge_quorum({"etcd0": "leader", "etcd1": "down", "etcd2": "follower"})
    (False, 'etcd members not answering: etcd1')
    """
    down = [name for name, state in states.items() if state == "down"]
    if down:
        return False, f"etcd members not answering: {', '.join(down)}"
    leaders = [name for name, state in states.items() if state == "leader"]
    if len(leaders) != 1 or any(state == "no leader" for state in states.values()):
        return False, "etcd members do not agree on a leader yet"
    return True, f"etcd quorum healthy: {len(states)} members, leader {leaders[0]}"


def quorum_report(spec: ClusterSpec) -> tuple[bool, str]:
    return judge_quorum(member_states(spec))


def wait_for_quorum(spec: ClusterSpec, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while True:
        ok, sentence = quorum_report(spec)
        if ok:
            return f"{sentence} after {time.monotonic() - started:.1f} s"
        if time.monotonic() > deadline:
            raise ClusterUnhealthy(f"{sentence} after {timeout:.0f} s; see the etcd*.log files under {spec.cluster_dir}")
        time.sleep(0.2)
