"""A MongoDB replica set as a dbtier engine: its first slice maps the spec to mongod services and files.

A replica set elects its primary by itself, so it has no consensus services. Bootstrap's other steps
(initiate, users, status, replication check, certificate reload) are not built yet: each refuses in one
line (:class:`StepNotBuilt`) rather than pretending.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from dbtier.engines.base import ClusterStatus, Engine
from dbtier.engines.mongodb.config import MongoMember, MongoSettings, mongo_members, mongod_service, render_mongod_conf
from dbtier.errors import ProvisionError
from dbtier.procs import Service
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from dbtier.topology import member_host

if TYPE_CHECKING:
    from dbtier.providers.base import Provider

#: The primary's priority; every other member has 1, so member 0 is preferred while it is healthy.
FIRST_PRIORITY = 2.0


class StepNotBuilt(ProvisionError):
    """A bootstrap step the MongoDB engine does not implement yet."""


def not_built(step: str) -> NoReturn:
    """Refuse ``step`` in one line."""
    raise StepNotBuilt(f"engine mongodb: {step} is not built yet; use engine: postgres for a cluster you need today")


def mongo_settings(spec: ClusterSpec) -> MongoSettings:
    """The spec's ``mongodb:`` section (and ``members``, ``tls``, ``binaries.mongod``) as config.py's settings.

    >>> s = mongo_settings(ClusterSpec(engine="mongodb", members=3))
    >>> s.replset, s.ports, s.priorities, s.binary
    ('rs0', (27017, 27018, 27019), (2.0, 1.0, 1.0), '/usr/bin/mongod')
    """
    section = spec.mongodb
    return MongoSettings(
        replset=section.replset,
        ports=tuple(section.port + i for i in range(spec.members)),
        priorities=tuple(FIRST_PRIORITY if i == 0 else 1.0 for i in range(spec.members)),
        election_timeout_ms=section.election_timeout_ms,
        oplog_slice_s=section.oplog_slice_s,
        oplog_size_mb=section.oplog_size_mb,
        tls=spec.tls.enabled,
        binary=spec.binaries.mongod,
    )


def members(spec: ClusterSpec) -> list[MongoMember]:
    """One member per ``spec.members``, on the host PostgreSQL's member of the same index gets
    (:func:`dbtier.topology.member_host`), its files under ``<cluster_dir>/mongo<i>``.

    >>> [(m.name, m.address, m.dir) for m in members(ClusterSpec(engine="mongodb", members=2, data_root="/d"))]
    [('mongo0', '127.0.0.1:27017', '/d/dbtier/mongo0'), ('mongo1', '127.0.0.1:27018', '/d/dbtier/mongo1')]
    """
    hosts = [member_host(spec, i) for i in range(spec.members)]
    return mongo_members(spec.cluster_dir, hosts, mongo_settings(spec))


class MongoEngine(Engine):
    name = "mongodb"

    def required_programs(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        return [("binaries.mongod", spec.binaries.mongod)]

    def missing_program_fix(self, spec: ClusterSpec) -> str:
        return "install MongoDB's server there (make setup does not), or set binaries.mongod to where its mongod is"

    def consensus_services(self, spec: ClusterSpec) -> list[Service]:
        return []  # a replica set elects by itself

    def member_services(self, spec: ClusterSpec) -> list[Service]:
        """One mongod per member; its port is named by the spec field it comes from."""
        settings = mongo_settings(spec)
        return [replace(mongod_service(m, settings), ports=[(f"mongodb.port (member {m.index})", m.port)])
                for m in members(spec)]

    def member_files(self, spec: ClusterSpec, service: Service, passwords: Passwords) -> dict[str, bytes]:
        """mongod.conf. The keyfile it names is left out: no secret role holds its content yet
        (dbtier.secrets.ROLES), so it is written by the step that creates that secret, once built."""
        settings = mongo_settings(spec)
        member = next((m for m in members(spec) if m.name == service.name), None)
        if member is None:
            return {}
        return {member.config: render_mongod_conf(member, settings).encode()}

    def owned_port(self, spec: ClusterSpec, service: Service, port: int) -> str | None:
        return None  # no orphan mongod is adopted: a port in use is refused

    def wait_consensus(self, spec: ClusterSpec, timeout: float) -> str:
        return "no consensus store: the replica set elects its primary itself"

    def secure_consensus(self, spec: ClusterSpec, passwords: Passwords) -> str:
        return "no consensus store to secure"

    def status(self, spec: ClusterSpec) -> ClusterStatus:
        not_built("status")

    def prepare_replicas(self, spec: ClusterSpec, passwords: Passwords, timeout: float,
                         provider: Provider | None = None) -> str:
        not_built("replica-set initiation")

    def app_database_present(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> bool:
        not_built("the application user check")

    def create_app_database(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> str:
        not_built("the application user")

    def verify_replication(self, spec: ClusterSpec, passwords: Passwords, timeout: float) -> str:
        not_built("the replication check")

    def reload_certificates(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> list[str]:
        not_built("certificate reload")
