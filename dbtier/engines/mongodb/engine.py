"""A MongoDB replica set as a dbtier engine: its first slice maps the spec to mongod services and files.

A replica set elects its primary by itself, so it has no consensus services. Bootstrap's other steps
(initiate, users, status, replication check, certificate reload) are :mod:`.steps` over the wire; a step
not built refuses in one line (:class:`StepNotBuilt`) rather than pretending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from pymongo import MongoClient

from dbtier.engines.base import ClusterStatus, Engine, EngineAlerts, HostPorts, ScrapeJob
from dbtier.engines.mongodb import steps
from dbtier.engines.mongodb.config import (
    KEYFILE_MODE,
    MongoMember,
    MongoSettings,
    MongoUri,
    client_uri,
    mongo_members,
    mongod_service,
    new_keyfile,
    render_mongod_conf,
    write_uri,
)
from dbtier.engines.mongodb.rs import ClientTimeouts, member_client
from dbtier.errors import BackupError, ProvisionError
from dbtier.procs import Service
from dbtier.secrets import Passwords, SecretRole
from dbtier.spec import ClusterSpec
from dbtier.tls import CertHolder
from dbtier.topology import member_host

if TYPE_CHECKING:
    from datetime import datetime

    from bson import Timestamp

    from dbtier.backup.catalog import Catalog
    from dbtier.backup.archive import ArchiveVerdict
    from dbtier.backup.drill import CopyChecks, Marker
    from dbtier.backup.repos import BackupSecrets, S3Target
    from dbtier.drills.verdict import DrillResult
    from dbtier.providers.base import Provider
    from dbtier.spec import DrillSettings

#: The primary's priority; every other member has 1, so member 0 is preferred while it is healthy.
FIRST_PRIORITY = 2.0


class StepNotBuilt(ProvisionError):
    """A bootstrap step the MongoDB engine does not implement yet."""


def not_built(step: str) -> NoReturn:
    """Refuse ``step`` in one line."""
    raise StepNotBuilt(f"engine mongodb: {step} is not built yet; use engine: postgres for a cluster you need today")


def mongo_settings(spec: ClusterSpec) -> MongoSettings:
    """The spec's ``mongodb:`` section (and ``members``, ``tls``, ``binaries``) as config.py's settings.

    >>> s = mongo_settings(ClusterSpec(engine="mongodb", members=3))
    >>> s.replset, s.ports, s.priorities, s.binary
    ('rs0', (27017, 27018, 27019), (2.0, 1.0, 1.0), '/usr/bin/mongod')
    """
    section = spec.mongo
    return MongoSettings(
        replset=section.replset,
        ports=tuple(section.port + i for i in range(spec.members)),
        priorities=tuple(FIRST_PRIORITY if i == 0 else 1.0 for i in range(spec.members)),
        election_timeout_ms=section.election_timeout_ms,
        oplog_slice_s=section.oplog_slice_s,
        oplog_size_mb=section.oplog_size_mb,
        tls=spec.tls.enabled,
        binary=spec.mongo.binaries.mongod,
    )


def members(spec: ClusterSpec) -> list[MongoMember]:
    """One member per ``spec.members``, on the host PostgreSQL's member of the same index gets
    (:func:`dbtier.topology.member_host`), its files under ``<cluster_dir>/mongo<i>``.

    >>> [(m.name, m.address, m.dir) for m in members(ClusterSpec(engine="mongodb", members=2, data_root="/d"))]
    [('mongo0', '127.0.0.1:27017', '/d/dbtier/mongo0'), ('mongo1', '127.0.0.1:27018', '/d/dbtier/mongo1')]
    """
    hosts = [member_host(spec, i) for i in range(spec.members)]
    return mongo_members(spec.cluster_dir, hosts, mongo_settings(spec))


#: A replica set's secrets, made with the cluster: the ``root`` user's password (``superuser``), the application
#: user's (``app``), the key file the members authenticate each other with (``keyfile``, block
#: ``dbtier-<cluster>-keyfile``, written 0400 beside each member's mongod.conf); and the exporter's ``monitoring``
#: user's, made on the first provision that lacks it (a set made before it gets it then).
MONGODB_SECRETS: tuple[SecretRole, ...] = (
    SecretRole("superuser", core=True),
    SecretRole("app", core=True),
    SecretRole("keyfile", core=True, password=False, make=new_keyfile),
    SecretRole("monitoring"),
)


class MongoEngine(Engine):
    name = "mongodb"
    secret_roles = MONGODB_SECRETS

    def dsn(self, spec: ClusterSpec, route: str | None = None, pooled: bool = False) -> str:
        """The replica-set URI without a password: ``rw`` (the default) and ``direct`` for writes, ``ro`` for read
        scaling; no router, no pooler.

        >>> MongoEngine().dsn(ClusterSpec(engine="mongodb", members=2, tls={"enabled": False}), "ro")
        'mongodb://app@127.0.0.1:27017,127.0.0.1:27018/app?replicaSet=rs0&authSource=admin&readPreference=secondaryPreferred'
        >>> MongoEngine().dsn(ClusterSpec(engine="mongodb"), "sync")
        Traceback (most recent call last):
        ...
        dbtier.errors.SpecError: --route: a MongoDB replica set has the routes rw (writes), ro (read scaling) and direct (rw); sync is not one
        """
        from dbtier.errors import SpecError

        if pooled:
            raise SpecError("--pooled: a MongoDB replica set has no pooler (the driver pools its connections); "
                            "drop --pooled")
        if route not in (None, "rw", "ro", "direct"):
            raise SpecError("--route: a MongoDB replica set has the routes rw (writes), ro (read scaling) and direct "
                            f"(rw); {route} is not one")
        return client_uri(members(spec), mongo_settings(spec), spec.app.user, spec.app.database, reads=route == "ro",
                          tls_ca_file=_ca_file(spec))

    def client_dsns(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        return [("read-write URI", self.dsn(spec, "rw")), ("read-scaling URI", self.dsn(spec, "ro"))]

    def connect_hint(self, dsn: str, password_command: str) -> str:
        return f'mongosh "{dsn}" --password "$({password_command})"'

    def firewall_hosts(self, spec: ClusterSpec) -> list[str]:
        """The members' hosts (a replica set has no consensus services; its archivers listen on no port).

        >>> MongoEngine().firewall_hosts(ClusterSpec(engine="mongodb"))
        ['127.0.0.1']
        """
        return sorted({m.host for m in members(spec)})

    def firewall_ports(self, spec: ClusterSpec, host: str) -> HostPorts:
        """The mongod ports of the members on ``host``, all client ports: applications and the other members
        (replication, heartbeats, elections) reach a member at the same port, and the firewall accepts the
        cluster's hosts on every port anyway, so the port must admit ``allowed_client_networks`` too (dbtier's
        MongoDB exporter, beside the monitoring stack, reaches them there as a client of the controller). The one
        control port: the host's node exporter, where ``make monitor`` runs one.

        >>> MongoEngine().firewall_ports(ClusterSpec(engine="mongodb"), "127.0.0.1")
        HostPorts(clients=(27017, 27018, 27019), control=())
        >>> MongoEngine().firewall_ports(ClusterSpec(engine="mongodb"), "10.0.0.9").every
        ()
        """
        from dbtier.engines.mongodb import monitoring

        control = tuple(p for s in monitoring.host_exporters(spec, members(spec)) if s.host == host for _, p in s.ports)
        return HostPorts(tuple(sorted(m.port for m in members(spec) if m.host == host)), control)

    def cert_holders(self, spec: ClusterSpec, host_names: Callable[[str], Sequence[str]]) -> list[CertHolder]:
        """A ``mongod`` certificate per member, its key and certificate also in one PEM file
        (``net.tls.certificateKeyFile``, :attr:`MongoMember.tls_pem`)."""
        return [CertHolder(m.name, "mongod", m.host, m.dir, bundle=True) for m in members(spec)]

    def file_mode(self, spec: ClusterSpec, path: str) -> int:
        """0400 for the key file (mongod refuses one that others can read), 0600 for the rest."""
        return KEYFILE_MODE if path in {m.keyfile for m in members(spec)} else 0o600

    def required_programs(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        return [("mongodb.binaries.mongod", spec.mongo.binaries.mongod),
                ("mongodb.binaries.mongodump", spec.mongo.binaries.mongodump),
                ("binaries.python", spec.binaries.python)]  # the archivers' runtime (:mod:`dbtier.runtime`)

    def missing_program_fix(self, spec: ClusterSpec) -> str:
        return ("install MongoDB's server there (make setup does not), or set mongodb.binaries.mongod "
                "to where its mongod is")

    def consensus_services(self, spec: ClusterSpec) -> list[Service]:
        return []  # a replica set elects by itself

    def member_services(self, spec: ClusterSpec) -> list[Service]:
        """One mongod per member; its port is named by the spec field it comes from."""
        settings = mongo_settings(spec)
        return [replace(mongod_service(m, settings), ports=[(f"mongodb.port (member {m.index})", m.port)])
                for m in members(spec)]

    def member_files(self, spec: ClusterSpec, service: Service, passwords: Passwords) -> dict[str, bytes]:
        """mongod.conf and the key file it names (the ``keyfile`` secret, see :meth:`file_mode`)."""
        settings = mongo_settings(spec)
        member = next((m for m in members(spec) if m.name == service.name), None)
        if member is None:
            return {}
        return {member.config: render_mongod_conf(member, settings).encode(), member.keyfile: passwords.keyfile.encode()}

    def owned_port(self, spec: ClusterSpec, service: Service, port: int) -> str | None:
        return None  # no orphan mongod is adopted: a port in use is refused

    def wait_consensus(self, spec: ClusterSpec) -> str:
        return "no consensus store: the replica set elects its primary itself"

    def secure_consensus(self, spec: ClusterSpec, passwords: Passwords) -> str:
        return "no consensus store to secure"

    def status(self, spec: ClusterSpec) -> ClusterStatus:
        """``replSetGetStatus`` from the first member that answers, without credentials (see :mod:`.steps`)."""
        return steps.cluster_status(members(spec), client_factory(spec), lag_limit_s=spec.mongo.max_lag_s)

    def prepare_replicas(self, spec: ClusterSpec, passwords: Passwords, timeout: float,
                         provider: Provider | None = None) -> str:
        """``replSetInitiate`` on member 0 through the localhost exception (idempotent), then wait for it as primary."""
        return steps.initiate_replset(members(spec), mongo_settings(spec), client_factory(spec), timeout)

    def _primary(self, spec: ClusterSpec, passwords: Passwords) -> MongoMember:
        found = steps.cluster_status(members(spec), client_factory(spec), passwords.superuser,
                                     spec.mongo.max_lag_s).health.leader
        return next((m for m in members(spec) if m.name == found), members(spec)[0])

    def _oplog_window(self, spec: ClusterSpec,
                      passwords: Passwords) -> tuple[MongoMember, tuple[Timestamp, Timestamp] | None]:
        """The primary and its oplog's (oldest, newest) entry, read as root (None: the oplog is empty)."""
        from dbtier.engines.mongodb import rs

        primary = self._primary(spec, passwords)
        client = client_factory(spec)(primary, "root", passwords.superuser)
        try:
            return primary, rs.oplog_window(client, primary)
        finally:
            client.close()

    def app_database_present(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> bool:
        """Authenticated as root, ``usersInfo`` lists root and the application user (readWrite on its database)."""
        return steps.users_present(members(spec)[0], client_factory(spec), passwords.superuser, spec.app.user,
                                   spec.app.database, monitor=True)

    def create_app_database(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> str:
        """``root`` (``passwords.superuser``), the application user (``passwords.app``) and the exporter's
        ``monitoring`` user (``passwords.monitoring``, clusterMonitor), on the primary."""
        return steps.ensure_users(self._primary(spec, passwords), client_factory(spec), passwords.superuser,
                                  spec.app.user, passwords.app, spec.app.database, passwords.monitoring)

    def verify_replication(self, spec: ClusterSpec, passwords: Passwords, timeout: float) -> str:
        """A marker written with ``w: majority`` through the write URI, read back on every secondary directly."""
        ms = members(spec)
        uri = write_uri(ms, mongo_settings(spec), spec.app.user, passwords.app, spec.app.database, _ca_file(spec))
        return steps.verify_writes(ms, uri, set_client, client_factory(spec), spec.app.user, passwords.app,
                                   spec.app.database, timeout)

    def reload_certificates(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> list[str]:
        """``rotateCertificates`` (MongoDB 5.0+) on each member as root, when TLS is on."""
        return steps.rotate_certificates(members(spec), client_factory(spec), passwords.superuser, spec.tls.enabled)

    # -- monitoring: dbtier's exporter beside the stack (:mod:`.exporter`) ------------------------------------

    def exporter_services(self, spec: ClusterSpec) -> list[Service]:
        """Node exporter on each member host but the monitoring stack's own (``make monitor`` starts them)."""
        from dbtier.engines.mongodb import monitoring

        return monitoring.host_exporters(spec, members(spec))

    def stack_services(self, spec: ClusterSpec, root: str) -> list[Service]:
        """dbtier's MongoDB exporter, run by this Python beside the monitoring stack (files under ``root``)."""
        from dbtier.engines.mongodb import monitoring

        return monitoring.exporter_services(spec, root)

    def stack_service_files(self, spec: ClusterSpec, root: str, ca_file: str, passwords: Passwords) -> dict[str, bytes]:
        """Its config (the members, TLS) and the ``monitoring`` user's password file."""
        from dbtier.engines.mongodb import monitoring

        return monitoring.exporter_files(spec, members(spec), root, ca_file, passwords.monitoring)

    def exporter_problems(self, spec: ClusterSpec) -> list[str]:
        from dbtier.engines.mongodb import monitoring

        return monitoring.port_problems(spec)

    def scrape_jobs(self, spec: ClusterSpec) -> list[ScrapeJob]:
        """Every member, through the exporter beside the stack."""
        from dbtier.engines.mongodb import monitoring

        return monitoring.scrape_jobs(spec, members(spec))

    def alert_rules(self, spec: ClusterSpec, thresholds: dict[str, float]) -> EngineAlerts:
        from dbtier.engines.mongodb import monitoring

        return monitoring.alert_rules(spec, thresholds)

    # -- archiving: one oplog archiver per member into repository 1 (:mod:`.archiving`, :mod:`.archiver`) --------

    def archives(self, spec: ClusterSpec) -> bool:
        """Every member's oplog is archived, unless ``mongodb.oplog_archiving`` is off (the restore drill's copy)."""
        return bool(spec.backup.repositories) and spec.mongo.oplog_archiving

    def archiving_configured(self, provider: Provider, spec: ClusterSpec) -> bool:
        """Each archiver's URI file (its marker) on its member's host, when the set archives at all."""
        from dbtier.engines.mongodb.archiving import uri_file

        return not self.archives(spec) or all(
            provider.runner(spec, m.host).read_file(uri_file(m)) is not None for m in members(spec))

    def archiver_services(self, spec: ClusterSpec, secrets: BackupSecrets | None = None) -> list[Service]:
        """One archiver per member (:func:`.archiving.archiver_service`), into repository 1, its S3 target from
        ``secrets``. Without one an S3 archiver has no store options: it identifies the process, and would refuse
        to start (exit 2); :meth:`start_archiving` builds them with the secrets. Listed while ``oplog_archiving`` is
        off too (provision then starts none): archivers an earlier provision started are still stopped and wiped."""
        return [_archiver(spec, m, secrets) for m in members(spec)] if spec.backup.repositories else []

    def archiver_files(self, spec: ClusterSpec, service: Service, passwords: Passwords,
                       s3: S3Target | None = None) -> dict[str, bytes]:
        """An archiver's URI file (root's password, ``passwords.superuser``) and, for an S3 repository, its
        credentials file (:func:`.archiving.archiver_files`)."""
        from dbtier.engines.mongodb import archiving

        member = next((m for m in members(spec) if service.marker == f"--uri-file={archiving.uri_file(m)}"), None)
        return {} if member is None else archiving.archiver_files(spec, member, passwords.superuser, s3)

    def refuse_earlier_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """The fs repository's ``oplog/<cluster>/`` must hold no member's slices yet (an S3 one is not checked)."""
        from dbtier.backup.repos import fs_repo_path
        from dbtier.backup.settings import FsRepository
        from dbtier.engines.mongodb.dump import oplog_dir, repo_root
        from dbtier.errors import PreflightError

        unchecked = "" if all(isinstance(r, FsRepository) for r in spec.backup.repositories) else \
            "; S3 repositories are not checked yet"
        for n, repo in enumerate(spec.backup.repositories):
            if not isinstance(repo, FsRepository):
                continue
            where = oplog_dir(repo_root(fs_repo_path(spec, repo), False), spec.name)
            for host in sorted({m.host for m in members(spec)}):
                runner = provider.runner(spec, host)
                held = [name for name in runner.list_dir(where) or [] if runner.list_dir(f"{where}{name}")]
                if held:
                    raise PreflightError(
                        f"backup.repositories.{n}: {host}:{where} already holds oplog slices of an earlier cluster "
                        f"{spec.name} ({', '.join(sorted(held))}); move that directory away, or give this cluster "
                        "another name or repository path")
        return f"oplog archive of {spec.name}: new in the fs repository{unchecked}"

    def configure_archiving(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets, passwords: Passwords,
                            source: ClusterSpec | None = None,
                            source_secrets: BackupSecrets | None = None) -> list[str]:
        """Each member's archiver files (:func:`.archiving.archiver_files`: its URI file with root's password,
        ``passwords.superuser``, and the S3 credentials file for an S3 repository) written 0600 in its owner-only
        directory, and its archive's directory in an fs repository. With ``source`` (a restore) the same: these are
        the NEW set's own archivers; the restore itself runs after bring-up (:meth:`restore_after_bring_up`).
        First dbtier's own code goes to each host, for the archivers to run (:func:`dbtier.runtime.ship`)."""
        from dbtier import runtime
        from dbtier.backup.repos import fs_repo_path
        from dbtier.backup.settings import FsRepository
        from dbtier.engines.mongodb import archiving

        if not self.archives(spec):
            return [f"{spec.name}: no oplog archiver (mongodb.oplog_archiving is off)"]
        repo, code = archiving.repository(spec, 1), runtime.package_archive()
        said = [runtime.ship(provider.runner(spec, host), spec, host, code)
                for host in dict.fromkeys(m.host for m in members(spec))]
        for m in members(spec):
            runner = provider.runner(spec, m.host)
            runner.make_dirs(archiving.archiver_dir(m), 0o700)
            if isinstance(repo, FsRepository):
                runner.make_dirs(archiving.archive_location(fs_repo_path(spec, repo), False, spec.name, m.name), 0o700)
            files = archiving.archiver_files(spec, m, passwords.superuser, secrets.s3.get(1))
            for path, data in files.items():
                runner.write_file(path, data, archiving.FILE_MODE)
            said.append(f"{m.name}: oplog archiver files written on {m.host} ({', '.join(sorted(files))}, mode 0600)")
        return said

    def start_archiving(self, provider: Provider, spec: ClusterSpec,
                        secrets: BackupSecrets | None = None) -> list[str]:
        """Each member's archiver under the provider's supervisor (root exists by now); a running one stays."""
        from dbtier.bootstrap import ensure_running

        if not self.archives(spec):
            return [f"{spec.name}: no oplog archiver (mongodb.oplog_archiving is off)"]
        return [ensure_running(provider, spec, _archiver(spec, m, secrets, startable=True)) for m in members(spec)]

    def wait_for_restore(self, provider: Provider, spec: ClusterSpec, timeout: float) -> str:
        """Nothing to wait for: the new set starts empty; the restore runs after bring-up."""
        return f"{spec.name}: the replica set starts empty; the restore runs once it is up and its users exist"

    #: bring-up starts the new set empty (initiated, users made); mongorestore fills it afterwards.
    restores_after_bring_up = True

    def parse_restore_target(self, target_text: str) -> str:
        """dbtier's MongoDB targets (:func:`.pitr.parse_target`).

        >>> MongoEngine().parse_restore_target("latest")
        'latest (the newest archived oplog entry)'
        """
        from dbtier.engines.mongodb.pitr import describe, parse_target

        return describe(parse_target(target_text))

    def check_restore_target(self, provider: Provider, target: ClusterSpec, source: ClusterSpec, target_text: str,
                             secrets: BackupSecrets, repo: int | None) -> tuple[str, str]:
        """The plan the restore would follow now (:func:`.restore.check_target`); ``repo`` is refused: a restore
        reads every repository's dumps and repository 1's oplog archive."""
        from dbtier.engines.mongodb import restore
        from dbtier.errors import RestoreError

        if repo is not None:
            raise RestoreError("repo: a MongoDB restore reads the dumps of every repository and the oplog archive of "
                               "repository 1; drop --repo")
        return restore.check_target(provider, source, target_text, secrets)

    def flush_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                      passwords: Passwords) -> str:
        """Wait (at most ``oplog_slice_s`` + 15 s) until an archiver has shipped the primary's newest oplog entry
        (:func:`.restore.wait_archived`)."""
        from dbtier.engines.mongodb import restore

        primary, window = self._oplog_window(spec, passwords)
        if window is None:
            raise BackupError(f"{primary.label}: its oplog is empty; is the replica set initiated?")
        return restore.wait_archived(provider, spec, secrets, window[1], spec.mongo.oplog_slice_s + 15.0)

    def judge_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                      passwords: Passwords) -> ArchiveVerdict:
        """Every member's archive index, the newest dump and the primary's oplog bounds, judged by
        :func:`.archive_health.judge`."""
        import time

        from dbtier.engines.mongodb import archive_health, restore
        from dbtier.errors import DbtierError

        archives = restore.source_archives(provider, spec, secrets)
        dumps = restore.source_dumps(provider, spec, secrets)
        newest = max((held.record for held in dumps.values()), key=lambda r: r.oplog_end, default=None)
        try:
            window = self._oplog_window(spec, passwords)[1]
        except DbtierError:
            window = None  # the archive is judged anyway; the window warning needs a primary
        return archive_health.judge({name: a.records for name, a in archives.items()}, time.time(),
                                    spec.backup.archive_lag_limit_s,
                                    (newest.oplog_start, newest.oplog_end) if newest else None, window)

    def check_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """Each member's archiver runs (its supervisor says so); a stopped one is a BackupError naming it."""
        from dbtier.bootstrap import running_services

        if not self.archives(spec):
            raise BackupError("mongodb.oplog_archiving: off, so nothing archives this set's oplog; turn it on and "
                              "provision again")
        services = self.archiver_services(spec)
        running = set(running_services(self, provider, spec))
        stopped = [s.name for s in services if s.name not in running]
        if stopped:
            raise BackupError(f"{', '.join(stopped)}: not running; start them with python -m flows.provision "
                              "(it starts every archiver)")
        return f"{len(services)} oplog archiver(s) running: {', '.join(s.name for s in services)}"

    def archived_clusters(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> list[str]:
        """The sets with dumps or an oplog archive in the repositories (:func:`.backup.clusters_held`)."""
        from dbtier.engines.mongodb import backup

        return backup.clusters_held(provider, spec, secrets)

    def last_archived_time(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                           passwords: Passwords) -> datetime | None:
        """The newest end of an archived slice, over every member's archive (:func:`.restore.source_archives`)."""
        from datetime import datetime, timezone

        from dbtier.engines.mongodb import restore

        ends = [r.end.time for a in restore.source_archives(provider, spec, secrets).values() for r in a.records]
        return datetime.fromtimestamp(max(ends), tz=timezone.utc) if ends else None

    def drop_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """The set's dumps and oplog archive, from every repository (:func:`.backup.drop`)."""
        from dbtier.engines.mongodb import backup

        return backup.drop(provider, spec, secrets)

    def restore_after_bring_up(self, provider: Provider, target: ClusterSpec, source: ClusterSpec, target_text: str,
                               secrets: BackupSecrets, passwords: Passwords) -> list[str]:
        """``source``'s dump and archived oplog replayed to ``target_text`` into ``target``
        (:func:`.restore.restore_to_target`)."""
        from dbtier.engines.mongodb import restore

        return restore.restore_to_target(provider, target, source, target_text, secrets, passwords)

    # -- the restore drill: :mod:`.restore_drill` --------------------------------------------------------------

    def throwaway_changes(self, spec: ClusterSpec) -> dict[str, Any]:
        """No oplog archiver: the copy must not write an archive of its own.

        >>> MongoEngine().throwaway_changes(ClusterSpec(engine="mongodb"))["mongodb"]["oplog_archiving"]
        False
        """
        return {"mongodb": {**spec.mongo.model_dump(mode="json"), "oplog_archiving": False}}

    def _app_uri(self, spec: ClusterSpec, passwords: Passwords) -> MongoUri:
        return write_uri(members(spec), mongo_settings(spec), spec.app.user, passwords.app, spec.app.database,
                         _ca_file(spec))

    def write_restore_marker(self, spec: ClusterSpec, passwords: Passwords) -> Marker:
        """Documents of collection ``dbtier_restore_drill`` around one oplog entry, through the write URI (the
        target: ``ts:T:I`` of the last document before)."""
        from dbtier.engines.mongodb import restore_drill

        return restore_drill.write_marker(set_client, self._app_uri(spec, passwords), spec.app.database)

    def check_restored_copy(self, provider: Provider, spec: ClusterSpec, marker: Marker,
                            passwords: Passwords) -> CopyChecks:
        """The markers and ``validate`` as root on the copy's primary, then the application user through its URI."""
        from dbtier.engines.mongodb import restore_drill

        return restore_drill.check_copy(self._primary(spec, passwords), client_factory(spec), passwords.superuser,
                                        set_client, self._app_uri(spec, passwords), spec.app.user,
                                        spec.app.database, marker)

    def restore_drill_budgets(self, spec: ClusterSpec) -> list[str]:
        from dbtier.engines.mongodb import restore_drill

        return restore_drill.budgets(spec.app.user, spec.app.database)

    # -- backups: mongodump into each repository (:mod:`.backup`) -----------------------------------------------

    def backup_kinds(self, spec: ClusterSpec) -> tuple[str, ...]:
        """A dump is always whole: full only."""
        return ("full",)

    def read_catalog(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> Catalog:
        """Every dump's record in every repository (:func:`.backup.catalog`)."""
        from dbtier.engines.mongodb import backup

        return backup.catalog(provider, spec, secrets)

    def take_backup(self, provider: Provider, spec: ClusterSpec, kind: str, repo: int, secrets: BackupSecrets,
                    passwords: Passwords) -> str:
        """``mongodump --oplog`` from the primary's host as root (:func:`.backup.take`), the oplog's newest entry
        read before and after it."""
        from dbtier.engines.mongodb import backup, rs

        if kind not in self.backup_kinds(spec):
            raise BackupError(f"kind: engine mongodb takes no {kind} backup (a dump is whole); take a full")
        primary = self._primary(spec, passwords)
        client = client_factory(spec)(primary, "root", passwords.superuser)

        def newest() -> Timestamp:
            window = rs.oplog_window(client, primary)
            if window is None:
                raise BackupError(f"{primary.label}: its oplog is empty; is the replica set initiated?")
            return window[1]

        try:
            return backup.take(provider, spec, repo, secrets, passwords.superuser, primary, newest)
        finally:
            client.close()

    def verify_backup(self, provider: Provider, spec: ClusterSpec, repo: int, secrets: BackupSecrets) -> str:
        """Each dump's archive present with its recorded size (:func:`.backup.verify`)."""
        from dbtier.engines.mongodb import backup

        return backup.verify(provider, spec, repo, secrets)

    def expire_backups(self, provider: Provider, spec: ClusterSpec, repo: int, keep_full: int, keep_diff: int,
                       secrets: BackupSecrets) -> None:
        """All but the newest ``keep_full`` dumps removed (no differentials: ``keep_diff`` is unused)."""
        from dbtier.engines.mongodb import backup

        backup.expire(provider, spec, repo, keep_full, secrets)

    # -- failover drills: :mod:`.drill` over :mod:`.faults` and :mod:`.drill_writer` ---------------------------

    def drill_scenarios(self, spec: ClusterSpec) -> tuple[str, ...]:
        """crash, freeze, stepdown, secondary-loss and the w: 1 loss demonstration w1-loss (:data:`.faults.SCENARIOS`)."""
        from dbtier.engines.mongodb.faults import SCENARIOS

        return tuple(SCENARIOS)

    def drill_route(self, spec: ClusterSpec, settings: DrillSettings) -> str:
        """The replica set's write URI (no router; ``drills.via`` has nothing to choose)."""
        return "through the replica set's URI (direct to the members, w: majority)"

    def run_drill(self, provider: Provider, spec: ClusterSpec, scenario: str, settings: DrillSettings,
                  passwords: Passwords) -> DrillResult:
        """The runbook of :func:`.drill.run`: the writer as the application user, the status and step-down as root."""
        from dbtier.engines.mongodb import drill

        return drill.run(provider, spec, scenario, settings, passwords)


def _ca_file(spec: ClusterSpec) -> str | None:
    """This machine's copy of the cluster CA (the members' own ``tls/ca.crt`` live on their hosts)."""
    from dbtier.workdir import ca_cert_file

    return ca_cert_file(spec.name) if spec.tls.enabled else None


def client_factory(spec: ClusterSpec, timeouts: ClientTimeouts | None = None) -> steps.ClientFactory:
    """Direct clients of one member (TLS against the cluster CA when ``tls.enabled``)."""
    ca, timeouts = _ca_file(spec), timeouts or ClientTimeouts()

    def make(member: MongoMember, user: str | None, password: str | None) -> MongoClient[Any]:
        return member_client(member.host, member.port, username=user, password=password, tls_ca_file=ca,
                             timeouts=timeouts)

    return make


def set_client(uri: MongoUri) -> MongoClient[Any]:
    """A client of the whole set from a URI (the driver finds the primary)."""
    timeouts = ClientTimeouts()
    return MongoClient(uri.secret, serverSelectionTimeoutMS=timeouts.server_selection_ms,
                       connectTimeoutMS=timeouts.connect_ms, socketTimeoutMS=timeouts.socket_ms)


def _archiver(spec: ClusterSpec, member: MongoMember, secrets: BackupSecrets | None,
              startable: bool = False) -> Service:
    """``member``'s archiver into repository 1. ``startable``: refuse (BackupError) an S3 repository without its
    target; else such an archiver comes without its ``--s3-*`` options (its name, pid file and marker hold)."""
    from dbtier.backup.repos import S3Target
    from dbtier.backup.settings import S3RepositorySettings
    from dbtier.engines.mongodb import archiving

    target = secrets.s3.get(1) if secrets is not None else None
    if target is not None or startable or not isinstance(archiving.repository(spec, 1), S3RepositorySettings):
        return archiving.archiver_service(spec, member, target)
    service = archiving.archiver_service(spec, member, S3Target("", "", 0, "", "", "", ""))
    return replace(service, argv=[a for a in service.argv if not a.startswith("--s3-")])
