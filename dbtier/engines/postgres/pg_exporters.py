"""The exporters of a PostgreSQL cluster, on its hosts (pure: spec in, services and files out).

``make monitor`` runs them when ``monitoring.exporters.enabled`` is on (off by default for now) beside what they
watch, supervised like the members (systemd units on hosts with systemd, detached processes with pid files
elsewhere), as the database OS user:

    postgres-exporter  one per member, on ``monitoring.exporters.postgres + index``; it logs in to its own member
                       over TCP as the ``monitoring`` role (``pg_monitor``), verifying the member's certificate
                       against the cluster CA when TLS is on; its password is a 0600 file (DATA_SOURCE_PASS_FILE)
    node-exporter      one per member host on ``monitoring.exporters.node``, but none on the monitoring stack's own
                       host (the stack runs one there already, with dbtier's own metrics)

Each listens on its host's address only and speaks plain HTTP (the Debian exporters' TLS is experimental); the
host firewall lets only the controller and ``admin_networks`` reach those ports (:mod:`dbtier.firewall`).

PgBouncer's exporter is dbtier's own (:mod:`dbtier.engines.postgres.pgbouncer_exporter`; Debian 12's fails on PgBouncer
1.18): one process beside the monitoring stack, on ``monitoring.host:monitoring.exporters.pgbouncer``, which
Prometheus asks for each PgBouncer in turn. It logs in to each console over the network, as clients do, as
``monitoring`` (a console stats user), over TLS verifying the cluster CA; the password is in a 0600 pgpass file
beside the stack.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from dbtier.engines.postgres.pg_roles import MONITORING_USER
from dbtier.monitoring.stack import GO_ENV, host_node_exporters
from dbtier.procs import Service
from dbtier.engines.postgres.routing import bouncers
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec, port_plan
from dbtier.tls import tls_paths
from dbtier.engines.postgres.topology import pg_members, pgpass_entry

KINDS = ("postgres-exporter", "node-exporter")
#: The scrape job of each kind.
JOBS = {"postgres-exporter": "postgres", "node-exporter": "node"}


@dataclass(frozen=True)
class Exporter:
    name: str
    kind: str
    host: str
    port: int
    dir: str  #: its files, pid file and log
    target: tuple[str, int] | None = None  #: what it watches (host, port): a member's PostgreSQL, a PgBouncer
    ca: str = ""  #: the cluster CA's copy on its host (its member's), which it verifies ``target`` with

    @property
    def job(self) -> str:
        return JOBS[self.kind]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def password_file(self) -> str:
        return f"{self.dir}/monitoring.pass"


def exporters(spec: ClusterSpec) -> list[Exporter]:
    """Every exporter on the cluster's hosts, none when ``monitoring.exporters.enabled`` is false.

    >>> on = {"exporters": {"enabled": True}}
    >>> [(e.name, e.address) for e in exporters(ClusterSpec(members=2, etcd_members=1, routing={"enabled": True}, monitoring=on))]
    [('pg0-exporter', '127.0.0.1:9187'), ('pg1-exporter', '127.0.0.1:9188')]
    >>> [(e.name, e.address) for e in exporters(ClusterSpec(members=1, etcd_members=1, provider="ssh", monitoring=on,
    ...                                                     ssh={"key_file": "/k", "hosts": [{"address": "10.0.0.5"}]}))]
    [('pg0-exporter', '10.0.0.5:9187'), ('node-10.0.0.5', '10.0.0.5:9100')]
    >>> exporters(ClusterSpec(monitoring={"exporters": {"enabled": False}}))
    []
    """
    settings = spec.monitoring.exporters
    if not settings.enabled:
        return []
    members = pg_members(spec)
    found = [Exporter(f"{m.name}-exporter", "postgres-exporter", m.host, settings.postgres + m.index,
                      f"{m.dir}/postgres-exporter", (m.host, m.pg_port), tls_paths(m.dir, "postgres").ca)
             for m in members]
    found += [Exporter(f"node-{h}", "node-exporter", h, settings.node, f"{spec.cluster_dir}/node-exporter")
              for h in dict.fromkeys(m.host for m in members) if h != spec.monitoring.host]
    return found


def bouncer_exporter(spec: ClusterSpec) -> tuple[str, int] | None:
    """Where dbtier's PgBouncer exporter listens (beside the monitoring stack), None without exporters or PgBouncers.

    >>> bouncer_exporter(ClusterSpec(routing={"enabled": True}, monitoring={"exporters": {"enabled": True}}))
    ('127.0.0.1', 9127)
    >>> bouncer_exporter(ClusterSpec(monitoring={"exporters": {"enabled": True}})) is None
    True
    """
    if not spec.monitoring.exporters.enabled or not bouncers(spec):
        return None
    return spec.monitoring.host, spec.monitoring.exporters.pgbouncer


def port_problems(spec: ClusterSpec) -> list[str]:
    """An exporter's port that the cluster (on any host: hosts share the port layout), the monitoring stack (on its
    host) or another exporter (on its host) already uses, one line each.

    >>> problem = port_problems(ClusterSpec(monitoring={"exporters": {"enabled": True, "postgres": 5433}}))[0]
    >>> problem  # doctest: +NORMALIZE_WHITESPACE
    'monitoring.exporters.postgres: pg0-exporter would listen on 127.0.0.1:5433, which is postgres.ports.postgres
    (member 1); choose another port'
    >>> port_problems(ClusterSpec(monitoring={"exporters": {"enabled": True, "postgres": 9090}}))
    ['monitoring.exporters.postgres: pg0-exporter would listen on 127.0.0.1:9090, which is monitoring.ports.prometheus; choose another port']
    >>> port_problems(ClusterSpec(routing={"enabled": True}, monitoring={"exporters": {"enabled": True, "pgbouncer": 9188}}))
    ['monitoring.exporters.pgbouncer: pgbouncer-exporter would listen on 127.0.0.1:9188, which is pg1-exporter; choose another port']
    >>> port_problems(ClusterSpec())
    []
    """
    cluster = {port: field for field, port in port_plan(spec)}
    stack = {port: f"monitoring.ports.{name}" for name, port in spec.monitoring.ports.model_dump().items()}
    listeners = [(e.name, e.job, e.host, e.port) for e in exporters(spec)]
    beside_stack = bouncer_exporter(spec)
    if beside_stack:
        listeners.append(("pgbouncer-exporter", "pgbouncer", *beside_stack))
    problems, seen = [], dict[tuple[str, int], str]()
    for name, job, host, port in listeners:
        clash = seen.get((host, port)) or cluster.get(port) or (stack.get(port) if host == spec.monitoring.host else None)
        if clash:
            problems.append(f"monitoring.exporters.{job}: {name} would listen on {host}:{port}, which is {clash}; "
                            "choose another port")
        seen[(host, port)] = name
    return problems


def exporter_service(spec: ClusterSpec, e: Exporter) -> Service:
    """``e`` as a service: its argv, and an environment that names files, never a secret."""
    binaries = spec.pg.binaries
    env: dict[str, str] = {}
    if e.kind == "postgres-exporter":
        assert e.target is not None
        host, port = e.target
        query = f"sslmode=verify-full&sslrootcert={e.ca}" if spec.tls.enabled else "sslmode=disable"
        env = {"DATA_SOURCE_URI": f"{host}:{port}/postgres?{query}&connect_timeout=3",
               "DATA_SOURCE_USER": MONITORING_USER, "DATA_SOURCE_PASS_FILE": e.password_file}
        # the database and bgwriter collectors hold a second connection, a backend of ~3.5 MiB on the member, for
        # figures no rule or panel reads (measured with 0.11: two backends per exporter, one without them)
        argv = [binaries.postgres_exporter, f"--web.listen-address={e.address}", "--log.level=warn",
                "--no-collector.database", "--no-collector.bgwriter"]
    else:
        (service,) = host_node_exporters(spec, [e.host])  # every engine's hosts get the same one
        return service
    return Service(name=e.name, kind=e.kind, host=e.host, argv=argv, pidfile=f"{e.dir}/{e.kind}.pid",
                   logfile=f"{e.dir}/{e.kind}.log", marker=argv[1], ports=[(f"monitoring.exporters.{e.job}", e.port)],
                   env=GO_ENV | env)


def exporter_files(e: Exporter, passwords: Passwords) -> dict[str, bytes]:
    """The files ``e`` reads (mode 0600): the monitoring role's password, for PostgreSQL's exporter."""
    return {e.password_file: passwords.monitoring.encode()} if e.kind == "postgres-exporter" else {}


def _bouncer_exporter_paths(root: str) -> tuple[str, str]:
    return f"{root}/pgbouncer-exporter.json", f"{root}/pgbouncer-exporter.pgpass"


def bouncer_exporter_service(spec: ClusterSpec, root: str) -> list[Service]:
    """dbtier's PgBouncer exporter as a service beside the monitoring stack (files under ``root``), run by this
    Python; none when :func:`bouncer_exporter` is None.

    >>> [s.argv[1:] for s in bouncer_exporter_service(ClusterSpec(routing={"enabled": True},
    ...                                               monitoring={"exporters": {"enabled": True}}), "/w/m")]
    [['-m', 'dbtier.engines.postgres.pgbouncer_exporter', '--config=/w/m/pgbouncer-exporter.json', '--listen=127.0.0.1:9127']]
    """
    listen = bouncer_exporter(spec)
    if listen is None:
        return []
    config, _ = _bouncer_exporter_paths(root)
    marker = f"--config={config}"
    return [Service(name="pgbouncer-exporter", kind="pgbouncer-exporter", host=listen[0],
                    argv=[sys.executable, "-m", "dbtier.engines.postgres.pgbouncer_exporter", marker, f"--listen={listen[0]}:{listen[1]}"],
                    pidfile=f"{root}/pgbouncer-exporter.pid", logfile=f"{root}/pgbouncer-exporter.log", marker=marker,
                    ports=[("monitoring.exporters.pgbouncer", listen[1])])]


def bouncer_exporter_files(spec: ClusterSpec, root: str, ca_file: str, passwords: Passwords) -> dict[str, bytes]:
    """Its config (the PgBouncers it may scrape, psql, TLS) and its pgpass file (mode 0600, as every file here).

    >>> import json
    >>> pw = Passwords(monitoring="p:w")
    >>> files = bouncer_exporter_files(ClusterSpec(members=1, etcd_members=1, routing={"enabled": True},
    ...                                            monitoring={"exporters": {"enabled": True}}), "/w/m", "/w/ca.crt", pw)
    >>> files["/w/m/pgbouncer-exporter.pgpass"]
    b'127.0.0.1:6432:pgbouncer:monitoring:p\\\\:w\\n'
    >>> json.loads(files["/w/m/pgbouncer-exporter.json"])["targets"], json.loads(files["/w/m/pgbouncer-exporter.json"])["sslmode"]
    (['127.0.0.1:6432'], 'verify-full')
    """
    if bouncer_exporter(spec) is None:
        return {}
    config, passfile = _bouncer_exporter_paths(root)
    found = bouncers(spec)
    lines = [pgpass_entry(b.host, str(b.port), "pgbouncer", MONITORING_USER, passwords.monitoring) for b in found]
    settings = {"psql": f"{spec.pg.binaries.pg_bin_dir}/psql", "user": MONITORING_USER, "passfile": passfile,
                "sslmode": "verify-full" if spec.tls.enabled else "disable",
                "sslrootcert": ca_file if spec.tls.enabled else "", "targets": [f"{b.host}:{b.port}" for b in found]}
    return {config: (json.dumps(settings, indent=2) + "\n").encode(), passfile: ("\n".join(lines) + "\n").encode()}
