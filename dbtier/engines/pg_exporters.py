"""The exporters of a PostgreSQL cluster, on its hosts (pure: spec in, services and files out).

``make monitor`` runs them when ``monitoring.exporters.enabled`` is on (off by default for now) beside what they
watch, supervised like the members (systemd units on hosts with systemd, detached processes with pid files
elsewhere), as the database OS user:

    postgres-exporter  one per member, on ``monitoring.exporters.postgres + index``; it logs in to its own member
                       over TCP as the ``monitoring`` role (``pg_monitor``), verifying the member's certificate
                       against the cluster CA when TLS is on; its password is a 0600 file (DATA_SOURCE_PASS_FILE)
    pgbouncer-exporter one per PgBouncer, on ``monitoring.exporters.pgbouncer + index``; it reads the console's SHOW
                       commands as ``monitoring`` (a stats user), the password in a 0600 pgpass file
    node-exporter      one per member host on ``monitoring.exporters.node``, but none on the monitoring stack's own
                       host (the stack runs one there already, with dbtier's own metrics)

Each listens on its host's address only and speaks plain HTTP (the Debian exporters' TLS is experimental); the
host firewall lets only the controller and ``admin_networks`` reach those ports (:mod:`dbtier.firewall`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dbtier.engines.pg_roles import MONITORING_USER
from dbtier.procs import Service
from dbtier.routing import bouncers
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec, port_plan
from dbtier.tls import tls_paths
from dbtier.topology import pg_members

KINDS = ("postgres-exporter", "pgbouncer-exporter", "node-exporter")
#: The scrape job of each kind.
JOBS = {"postgres-exporter": "postgres", "pgbouncer-exporter": "pgbouncer", "node-exporter": "node"}


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
        return f"{self.dir}/monitoring.pass" if self.kind == "postgres-exporter" else f"{self.dir}/pgpass"


def exporters(spec: ClusterSpec) -> list[Exporter]:
    """Every exporter of the cluster, none when ``monitoring.exporters.enabled`` is false.

    >>> on = {"exporters": {"enabled": True, "pgbouncer_exporter": True}}
    >>> [(e.name, e.address) for e in exporters(ClusterSpec(members=2, etcd_members=1, routing={"enabled": True}, monitoring=on))]
    [('pg0-exporter', '127.0.0.1:9187'), ('pg1-exporter', '127.0.0.1:9188'), ('bouncer0-exporter', '127.0.0.1:9127'), ('bouncer1-exporter', '127.0.0.1:9128')]
    >>> [(e.name, e.address) for e in exporters(ClusterSpec(members=1, etcd_members=1, provider="ssh", monitoring=on,
    ...                                                     ssh={"key_file": "/k", "hosts": [{"address": "10.0.0.5"}]}))]
    [('pg0-exporter', '10.0.0.5:9187'), ('node-10.0.0.5', '10.0.0.5:9100')]
    >>> exporters(ClusterSpec())
    []
    """
    settings = spec.monitoring.exporters
    if not settings.enabled:
        return []
    members = pg_members(spec)
    found = [Exporter(f"{m.name}-exporter", "postgres-exporter", m.host, settings.postgres + m.index,
                      f"{m.dir}/postgres-exporter", (m.host, m.pg_port), tls_paths(m.dir, "postgres").ca)
             for m in members]
    found += [Exporter(f"{b.name}-exporter", "pgbouncer-exporter", b.host, settings.pgbouncer + b.member.index,
                       f"{b.dir}/exporter", (b.host, b.port), tls_paths(b.member.dir, "pgbouncer").ca)
              for b in bouncers(spec) if settings.pgbouncer_exporter]
    found += [Exporter(f"node-{h}", "node-exporter", h, settings.node, f"{spec.cluster_dir}/node-exporter")
              for h in dict.fromkeys(m.host for m in members) if h != spec.monitoring.host]
    return found


def port_problems(spec: ClusterSpec) -> list[str]:
    """An exporter's port that the cluster (on any host: hosts share the port layout), the monitoring stack (on its
    host) or another exporter (on its host) already uses, one line each.

    >>> port_problems(ClusterSpec(monitoring={"exporters": {"enabled": True, "postgres": 5433}}))[0]
    'monitoring.exporters.postgres: pg0-exporter would listen on 127.0.0.1:5433, which is ports.postgres (member 1); choose another port'
    >>> port_problems(ClusterSpec(monitoring={"exporters": {"enabled": True, "postgres": 9090}}))
    ['monitoring.exporters.postgres: pg0-exporter would listen on 127.0.0.1:9090, which is monitoring.ports.prometheus; choose another port']
    >>> port_problems(ClusterSpec())
    []
    """
    cluster = {port: field for field, port in port_plan(spec)}
    stack = {port: f"monitoring.ports.{name}" for name, port in spec.monitoring.ports.model_dump().items()}
    problems, seen = [], dict[tuple[str, int], str]()
    for e in exporters(spec):
        clash = seen.get((e.host, e.port)) or cluster.get(e.port) or (stack.get(e.port) if e.host == spec.monitoring.host else None)
        if clash:
            problems.append(f"monitoring.exporters.{e.job}: {e.name} would listen on {e.address}, which is {clash}; "
                            "choose another port")
        seen[(e.host, e.port)] = e.name
    return problems


def exporter_service(spec: ClusterSpec, e: Exporter) -> Service:
    """``e`` as a service: its argv, and an environment that names files, never a secret."""
    binaries = spec.binaries
    env: dict[str, str] = {}
    if e.kind == "postgres-exporter":
        assert e.target is not None
        host, port = e.target
        query = f"sslmode=verify-full&sslrootcert={e.ca}" if spec.tls.enabled else "sslmode=disable"
        env = {"DATA_SOURCE_URI": f"{host}:{port}/postgres?{query}&connect_timeout=3",
               "DATA_SOURCE_USER": MONITORING_USER, "DATA_SOURCE_PASS_FILE": e.password_file}
        argv = [binaries.postgres_exporter, f"--web.listen-address={e.address}", "--log.level=warn"]
    elif e.kind == "pgbouncer-exporter":
        assert e.target is not None
        host, port = e.target
        env = {"PGPASSFILE": e.password_file, "PGCONNECT_TIMEOUT": "3"}
        if spec.tls.enabled:
            env |= {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": e.ca}
        argv = [binaries.pgbouncer_exporter, "--host", e.host, "--port", str(e.port), "--pgbouncer-host", host,
                "--pgbouncer-port", str(port), "--pgbouncer-user", MONITORING_USER]
    else:
        argv = [binaries.node_exporter, f"--web.listen-address={e.address}", "--log.level=warn"]
    return Service(name=e.name, kind=e.kind, host=e.host, argv=argv, pidfile=f"{e.dir}/{e.kind}.pid",
                   logfile=f"{e.dir}/{e.kind}.log", marker=argv[1] if e.kind != "pgbouncer-exporter" else argv[0],
                   ports=[(f"monitoring.exporters.{e.job}", e.port)], env=env)


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def exporter_files(e: Exporter, passwords: Passwords) -> dict[str, bytes]:
    """The files ``e`` reads (mode 0600): the monitoring role's password, as its exporter wants it.

    >>> from dbtier.secrets import ROLES
    >>> pw = Passwords(**{r: "p:w" for r in ROLES})
    >>> routed = ClusterSpec(members=1, etcd_members=1, routing={"enabled": True},
    ...                      monitoring={"exporters": {"enabled": True, "pgbouncer_exporter": True}})
    >>> list(exporter_files(exporters(routed)[1], pw).values())
    [b'127.0.0.1:6432:pgbouncer:monitoring:p\\\\:w\\n']
    """
    if e.kind == "postgres-exporter":
        return {e.password_file: passwords.monitoring.encode()}
    if e.kind == "pgbouncer-exporter" and e.target is not None:
        host, port = e.target
        line = ":".join([host, str(port), "pgbouncer", MONITORING_USER, _pgpass_field(passwords.monitoring)])
        return {e.password_file: (line + "\n").encode()}
    return {}
