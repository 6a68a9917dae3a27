"""A replica set under the monitoring stack (pure): dbtier's exporter beside the stack (:mod:`.exporter`), its files,
the scrape job through it, and the members' alert rules."""

from __future__ import annotations

import json
import sys

from dbtier.engines.base import EngineAlerts, ScrapeJob
from dbtier.engines.mongodb.config import MongoMember
from dbtier.engines.mongodb.steps import MONITOR_USER
from dbtier.monitoring.alerts import rule
from dbtier.monitoring.stack import host_node_exporters
from dbtier.procs import Service
from dbtier.spec import ClusterSpec, port_plan

NAME = "mongodb-exporter"


def members_of(spec: ClusterSpec) -> list[MongoMember]:
    from dbtier.engines.mongodb.engine import members

    return members(spec)


def exporter_address(spec: ClusterSpec) -> tuple[str, int] | None:
    """Where the exporter listens (beside the monitoring stack); None with ``monitoring.exporters.enabled`` off.

    >>> exporter_address(ClusterSpec(engine="mongodb"))
    ('127.0.0.1', 9216)
    """
    if not spec.monitoring.exporters.enabled:
        return None
    return spec.monitoring.host, spec.monitoring.exporters.mongodb


def _paths(root: str) -> tuple[str, str]:
    return f"{root}/{NAME}.json", f"{root}/{NAME}.password"


def exporter_services(spec: ClusterSpec, root: str) -> list[Service]:
    """The exporter as a service beside the stack (its files under ``root``), run by this Python.

    >>> [s.argv[1:] for s in exporter_services(ClusterSpec(engine="mongodb"), "/w/m")]
    [['-m', 'dbtier.engines.mongodb.exporter', '--config=/w/m/mongodb-exporter.json', '--listen=127.0.0.1:9216']]
    """
    listen = exporter_address(spec)
    if listen is None:
        return []
    config, _ = _paths(root)
    marker = f"--config={config}"
    return [Service(name=NAME, kind=NAME, host=listen[0],
                    argv=[sys.executable, "-m", "dbtier.engines.mongodb.exporter", marker,
                          f"--listen={listen[0]}:{listen[1]}"],
                    pidfile=f"{root}/{NAME}.pid", logfile=f"{root}/{NAME}.log", marker=marker,
                    ports=[("monitoring.exporters.mongodb", listen[1])])]


def exporter_files(spec: ClusterSpec, members: list[MongoMember], root: str, ca_file: str,
                   password: str) -> dict[str, bytes]:
    """Its config (the members it may ask, the user, TLS against this machine's copy of the cluster CA) and the
    ``monitoring`` user's password file (mode 0600, as every file here).

    >>> from dbtier.engines.mongodb.engine import members
    >>> spec = ClusterSpec(engine="mongodb", members=2)
    >>> files = exporter_files(spec, members(spec), "/w/m", "/w/ca.crt", "pw")
    >>> json.loads(files["/w/m/mongodb-exporter.json"])["targets"], files["/w/m/mongodb-exporter.password"]
    ({'127.0.0.1:27017': 'mongo0', '127.0.0.1:27018': 'mongo1'}, b'pw\\n')
    """
    if exporter_address(spec) is None:
        return {}
    config, password_file = _paths(root)
    settings = {"user": MONITOR_USER, "password_file": password_file,
                "tls_ca_file": ca_file if spec.tls.enabled else "",
                "targets": {m.address: m.name for m in members}}
    return {config: (json.dumps(settings, indent=2) + "\n").encode(), password_file: f"{password}\n".encode()}


def host_exporters(spec: ClusterSpec, members: list[MongoMember]) -> list[Service]:
    """Node exporter on each member host but the monitoring stack's own
    (:func:`dbtier.monitoring.stack.host_node_exporters`)."""
    return host_node_exporters(spec, [m.host for m in members])


def scrape_jobs(spec: ClusterSpec, members: list[MongoMember]) -> list[ScrapeJob]:
    """Job ``mongodb``: every member, asked through the exporter; job ``node``: the member hosts' node exporters
    (none with the exporters off).

    >>> from dbtier.engines.mongodb.engine import members
    >>> [(j.job, j.targets, j.via) for j in scrape_jobs(ClusterSpec(engine="mongodb", members=1),
    ...                                                   members(ClusterSpec(engine="mongodb", members=1)))]
    [('mongodb', ['127.0.0.1:27017'], '127.0.0.1:9216')]
    """
    via = exporter_address(spec)
    if via is None:
        return []
    nodes = [f"{s.host}:{spec.monitoring.exporters.node}" for s in host_exporters(spec, members)]
    return [ScrapeJob("mongodb", [m.address for m in members], False, f"{via[0]}:{via[1]}"),
            *([ScrapeJob("node", nodes, False)] if nodes else [])]


def port_problems(spec: ClusterSpec) -> list[str]:
    """The exporter's port when the set (on any host: hosts share the port layout) or the stack uses it.

    >>> port_problems(ClusterSpec(engine="mongodb", monitoring={"exporters": {"mongodb": 27018}}))
    ['monitoring.exporters.mongodb: mongodb-exporter would listen on 127.0.0.1:27018, which is mongodb.port (member 1); choose another port']
    >>> port_problems(ClusterSpec(engine="mongodb", monitoring={"exporters": {"mongodb": 9093}}))
    ['monitoring.exporters.mongodb: mongodb-exporter would listen on 127.0.0.1:9093, which is monitoring.ports.alertmanager; choose another port']
    >>> port_problems(ClusterSpec(engine="mongodb"))
    []
    """
    listen = exporter_address(spec)
    if listen is None:
        return []
    cluster = {port: field for field, port in port_plan(spec)}
    stack = {port: f"monitoring.ports.{name}" for name, port in spec.monitoring.ports.model_dump().items()}
    problems = []
    clash = cluster.get(listen[1]) or stack.get(listen[1])
    if clash:
        problems.append(f"monitoring.exporters.mongodb: {NAME} would listen on {listen[0]}:{listen[1]}, which is "
                        f"{clash}; choose another port")
    node = spec.monitoring.exporters.node
    if cluster.get(node) and host_node_exporters(spec, [m.host for m in members_of(spec)]):
        problems.append(f"monitoring.exporters.node: node exporter would listen on {node} on the member hosts, which "
                        f"is {cluster[node]}; choose another port")
    return problems


def alert_rules(spec: ClusterSpec, t: dict[str, float]) -> EngineAlerts:
    """A member that does not answer, a set without a primary, a secondary too far behind (``mongodb.max_lag_s``).

    >>> [r["alert"] for r in alert_rules(ClusterSpec(engine="mongodb"), {"down_for_s": 30}).members]
    ['DbtierMongoMemberDown', 'DbtierMongoNoPrimary', 'DbtierMongoReplicationLag']
    """
    c = f'cluster="{spec.name}"'
    down = int(t["down_for_s"])
    status = f"dbtier status --spec <the {spec.name} spec>"
    members = [
        rule("DbtierMongoMemberDown", f'mongodb_up{{{c}}} == 0', down, "critical",
             "mongod of {{ $labels.member }} does not answer",
             f"{status}; <member dir>/mongod.log"),
        rule("DbtierMongoNoPrimary", f'max by (cluster) (mongodb_member_primary{{{c}}}) == 0', down, "critical",
             "replica set {{ $labels.cluster }} has no primary: writes fail",
             f"{status}; dbtier drill refuses until it is healthy"),
        rule("DbtierMongoReplicationLag", f'mongodb_replication_lag_seconds{{{c}}} > {spec.mongo.max_lag_s}', 120,
             "warning", "{{ $labels.member }} is {{ $value | humanizeDuration }} behind the primary",
             f"{status}: the lag column"),
    ]
    return EngineAlerts(members, archive_what="oplog archiving", archived="the oplog",
                        archive_log="<member dir>/oplog-archiver/oplog-archiver.log")
