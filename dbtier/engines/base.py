"""The engine interface: what a database engine must tell bootstrap, status and teardown.

Bootstrap is the same runbook for every engine: start the consensus services
(etcd for PostgreSQL; none for a MongoDB replica set), write each member's
configuration, start the members, wait until healthy, create the application
user, verify. An engine supplies the data (services, files) and the checks.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbtier.errors import ClusterUnhealthy
from dbtier.health import Health
from dbtier.procs import PidMismatch, Service
from dbtier.secrets import Passwords, SecretRole
from dbtier.spec import ClusterSpec
from dbtier.tls import CertHolder

if TYPE_CHECKING:
    from datetime import datetime

    from dbtier.backup.archive import ArchiveVerdict
    from dbtier.backup.catalog import Catalog
    from dbtier.backup.drill import CopyChecks, Marker
    from dbtier.backup.repos import BackupSecrets, S3Target
    from dbtier.backup.restore import RestorePlan
    from dbtier.drills.verdict import DrillResult
    from dbtier.providers.base import Provider
    from dbtier.spec import DrillSettings


@dataclass(frozen=True)
class ClusterStatus:
    """What ``status`` reports: the verdict and one row per member."""

    health: Health
    rows: list[dict[str, Any]]

    def with_pid_problems(self, problems: list[PidMismatch]) -> ClusterStatus:
        """This status with a ``pid file`` column and a verdict problem per service whose pid file does not
        match the process on its port (not healthy then); itself when there is none.

        >>> ok = ClusterStatus(Health(True, "pg0"), [{"name": "pg0", "state": "running"}, {"name": "etcd0", "state": "leader"}])
        >>> ok.with_pid_problems([]) is ok
        True
        >>> bad = ok.with_pid_problems([PidMismatch("etcd0", 41, False, 2379, frozenset({77}))])
        >>> [row["pid file"] for row in bad.rows], bad.health.healthy, bad.health.problems
        (['ok', 'pid 41 dead; port 2379: pid 77'], False, ['etcd0: its pid file names pid 41, which is not running; port 2379 is held by pid 77'])
        """
        if not problems:
            return self
        cells = {p.service: p.cell for p in problems}
        rows = [{**row, "pid file": cells.get(str(row.get("name")), "ok")} for row in self.rows]
        health = Health(False, self.health.leader, [*self.health.problems, *(p.sentence for p in problems)])
        return ClusterStatus(health=health, rows=rows)

    def with_router_problems(self, disagreements: list[str]) -> ClusterStatus:
        """This status, not healthy when a router disagrees with the cluster about where a route goes.

        >>> ok = ClusterStatus(Health(True, "pg0"), [])
        >>> ok.with_router_problems([]) is ok
        True
        >>> ok.with_router_problems(["router0: HAProxy sends rw to no server"]).health.problems
        ['router0: HAProxy sends rw to no server']
        """
        if not disagreements:
            return self
        return ClusterStatus(Health(False, self.health.leader, [*self.health.problems, *disagreements]), self.rows)


@dataclass(frozen=True)
class ScrapeJob:
    """One Prometheus job of the cluster's: its targets (``host:port``), over HTTPS against the cluster CA or not.
    With ``via`` (``host:port`` of an exporter beside the stack) Prometheus asks that exporter for each target in
    turn (``/metrics?target=host:port``, the multi-target pattern) and labels the samples with the target."""

    job: str
    targets: list[str]
    tls: bool
    via: str = ""
    #: metric names (regular expressions) Prometheus drops at each scrape: what no rule or panel reads and costs
    #: memory (one series per label combination), but ``keep``'s names
    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    #: (label, regular expression): series whose label matches are dropped too
    drop_labels: tuple[tuple[str, str], ...] = ()



@dataclass(frozen=True)
class EngineAlerts:
    """The engine's alert rules (each :func:`dbtier.monitoring.alerts.rule`'s): its members' and its routers' (may
    be empty); what else means its archiving fails (PromQL, or-ed with dbtier's own ``dbtier_archive_ok == 0``), and
    how the shared archiving rules name its archive and its log."""

    members: list[dict[str, Any]]
    routing: list[dict[str, Any]] = field(default_factory=list)
    archive_failing: str = ""
    archive_what: str = "archiving"
    archived: str = "the archive"
    archive_log: str = "the archiver's log"


@dataclass(frozen=True)
class HostPorts:
    """The cluster's TCP ports on one host, as its host firewall (:mod:`dbtier.firewall`) guards them: ``clients``
    those ``allowed_client_networks`` reach too (a database's own port, a router's routes, a pooler's), ``control``
    those only the cluster's hosts, this machine and ``firewall.admin_networks`` reach (a consensus store, an HA
    manager's API, exporters). The cluster's hosts reach both.

    >>> HostPorts((5432,), (8008, 2379)).every
    (2379, 5432, 8008)
    """

    clients: tuple[int, ...]
    control: tuple[int, ...]

    @property
    def every(self) -> tuple[int, ...]:
        return tuple(sorted({*self.clients, *self.control}))

class Engine(ABC):
    name: str
    #: The cluster's secrets, each kept in a Prefect Secret block and handed to the engine in a Passwords
    secret_roles: tuple[SecretRole, ...]

    def file_mode(self, spec: ClusterSpec, path: str) -> int:
        """The mode a file of :meth:`member_files` is written with (0600 unless the program wants less)."""
        return 0o600

    @abstractmethod
    def consensus_services(self, spec: ClusterSpec) -> list[Service]:
        """Services that must form a quorum before any member starts (may be empty)."""

    @abstractmethod
    def member_services(self, spec: ClusterSpec) -> list[Service]:
        """The database members, one service each."""

    @abstractmethod
    def required_programs(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        """(spec field, path) of each program a member host must be able to execute before provisioning starts."""

    def missing_program_fix(self, spec: ClusterSpec) -> str:
        """What to do about a program of :meth:`required_programs` a host lacks (the end of preflight's line)."""
        return "run 'make setup' there (or let the provider install it)"

    def router_services(self, spec: ClusterSpec) -> list[Service]:
        """Routers and poolers in front of the members, started once the cluster is healthy (may be empty)."""
        return []

    def exporter_services(self, spec: ClusterSpec) -> list[Service]:
        """The Prometheus exporters on the cluster's hosts, which ``make monitor`` starts (may be empty); their
        files come from :meth:`member_files`."""
        return []

    def stack_services(self, spec: ClusterSpec, root: str) -> list[Service]:
        """Exporters that run beside the monitoring stack, on this machine, and reach the cluster over the network
        (may be empty); their files (under ``root``) come from :meth:`stack_service_files`."""
        return []

    def stack_service_files(self, spec: ClusterSpec, root: str, ca_file: str, passwords: Passwords) -> dict[str, bytes]:
        """path -> content (written mode 0600) of the files :meth:`stack_services` read; ``ca_file`` is the cluster
        CA's copy on this machine."""
        return {}

    def exporter_problems(self, spec: ClusterSpec) -> list[str]:
        """An exporter's port that clashes with the cluster's, the monitoring stack's or another exporter's, one
        line each naming the field (the spec alone: what listens on the hosts is checked when they start)."""
        return []

    def scrape_jobs(self, spec: ClusterSpec) -> list[ScrapeJob]:
        """What Prometheus scrapes of the cluster: its members' and routers' own endpoints and its exporters."""
        return []

    @abstractmethod
    def alert_rules(self, spec: ClusterSpec, thresholds: dict[str, float]) -> EngineAlerts:
        """The rules on what :meth:`scrape_jobs` scrapes (``thresholds``: :func:`dbtier.monitoring.alerts.thresholds`);
        the rules every engine shares (targets down, backups, drills, certificates, disks) are not the engine's."""

    @abstractmethod
    def dsn(self, spec: ClusterSpec, route: str | None = None, pooled: bool = False) -> str:
        """A connection string without a password (``dbtier dsn``): to ``route`` (None: the cluster's default; for
        every engine ``direct`` reaches the writable primary without a router), pooled or not. A route the cluster
        lacks raises :class:`~dbtier.errors.SpecError`, one line naming the option and the routes there are."""

    @abstractmethod
    def client_dsns(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        """(label, connection string without a password) of every way in that provision prints, the one to use
        first."""

    @abstractmethod
    def connect_hint(self, dsn: str, password_command: str) -> str:
        """A shell line that connects to ``dsn`` with the password ``password_command`` prints."""

    def wait_routes(self, spec: ClusterSpec, passwords: Passwords) -> str:
        """Block until every router sends each route where the cluster says it should (for as long as the engine's
        own settings say); return a sentence."""
        return "no routers: clients use the multi-host DSN"

    def router_views(self, spec: ClusterSpec) -> tuple[list[str], list[str]]:
        """(one line per router: where it sends each route now; each disagreement with the cluster's own view,
        as a problem). Nothing without routers."""
        return [], []

    @abstractmethod
    def firewall_hosts(self, spec: ClusterSpec) -> list[str]:
        """Every host a service of the cluster listens on, as the spec names it (an address or a DNS name), sorted:
        the hosts that get the cluster's host firewall, and the sources it accepts on every port."""

    @abstractmethod
    def firewall_ports(self, spec: ClusterSpec, host: str) -> HostPorts:
        """The cluster's ports on ``host`` (one of :meth:`firewall_hosts`, or another: nothing), split into the ones
        client networks reach and the control ones (see :class:`HostPorts`)."""

    @abstractmethod
    def cert_holders(self, spec: ClusterSpec, host_names: Callable[[str], Sequence[str]]) -> list[CertHolder]:
        """Every service that serves TLS, one certificate each (see :func:`dbtier.tls.cert_plan`); ``host_names``
        gives the names the provider knows for a host."""

    @abstractmethod
    def member_files(self, spec: ClusterSpec, service: Service, passwords: Passwords) -> dict[str, bytes]:
        """Configuration files a member (or router) needs before it starts: path -> content (written mode 0600)."""

    @abstractmethod
    def owned_port(self, spec: ClusterSpec, service: Service, port: int) -> str | None:
        """The data dir whose live postmaster/mongod may legitimately hold ``port`` for ``service``."""

    @abstractmethod
    def wait_consensus(self, spec: ClusterSpec) -> str:
        """Block until the consensus store has quorum (for as long as the engine's own settings say); return a
        sentence."""

    @abstractmethod
    def secure_consensus(self, spec: ClusterSpec, passwords: Passwords) -> str:
        """Give the consensus store its users and turn its auth on (idempotent); return a sentence."""

    @abstractmethod
    def status(self, spec: ClusterSpec) -> ClusterStatus:
        """The cluster's health and member table, read from the running members."""

    def wait_healthy(self, spec: ClusterSpec, timeout: float) -> ClusterStatus:
        """Poll :meth:`status` until healthy; raise :class:`ClusterUnhealthy` with the reasons after ``timeout``."""
        started = time.monotonic()
        while True:
            status = self.status(spec)
            if status.health.healthy:
                return status
            if time.monotonic() - started > timeout:
                raise ClusterUnhealthy(
                    f"cluster {spec.name} not healthy after {timeout:.0f} s ({status.health.sentence}); "
                    f"see the member log files under {spec.cluster_dir}"
                )
            time.sleep(0.5)

    @abstractmethod
    def prepare_replicas(self, spec: ClusterSpec, passwords: Passwords, timeout: float,
                         provider: Provider | None = None) -> str:
        """Once a primary accepts writes, do what lets replicas catch up at once; return a sentence."""

    @abstractmethod
    def app_database_present(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> bool:
        """True when the application user and database exist (and the roles beside them); ``provider`` reaches the
        leader's host (default: the library's own)."""

    @abstractmethod
    def create_app_database(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> str:
        """Create (or update) the application user and database; return a sentence."""

    @abstractmethod
    def verify_replication(self, spec: ClusterSpec, passwords: Passwords, timeout: float) -> str:
        """Write on the primary and read it back on every replica; return a sentence."""

    def transport_problem(self, spec: ClusterSpec) -> str | None:
        """Why the running members cannot be managed with the spec's transport (a cluster serving in clear while
        the spec asks for TLS, or the other way round), or None. By default: nothing to check."""
        return None

    def stale_certificates(self, spec: ClusterSpec, provider: Provider | None = None) -> list[str]:
        """The services serving another certificate than the one their member holds; by default none."""
        return []

    @abstractmethod
    def reload_certificates(self, spec: ClusterSpec, passwords: Passwords, provider: Provider | None = None) -> list[str]:
        """Make every running member read its configuration and certificate files again (see
        :func:`dbtier.tls.tls_paths`) without a restart and without a failover; one sentence per member.

        Which service needs what once it serves TLS: PostgreSQL reads ``ssl_cert_file`` / ``ssl_key_file`` /
        ``ssl_ca_file`` again on a reload; Patroni's REST API re-reads its ``certfile`` / ``keyfile`` when Patroni
        reloads (SIGHUP or ``POST /reload``); etcd 3.4 reads its certificate files at every new TLS handshake, so
        it needs neither a reload nor a restart. None of them needs a restart for new certificates (a new CA
        for etcd peers aside: etcd reads ``--peer-trusted-ca-file`` at start only).
        """

    # -- archiving: provision's backup steps (PostgreSQL: pgBackRest's WAL archive; MongoDB: oplog archivers) ----
    # ``secrets`` is what ``blocks.backup.load_backup_secrets`` resolved: each S3 repository's target (its keys
    # included) by repository number, and the cipher passphrase. Keep it out of argv, the environment and logs.

    @abstractmethod
    def archives(self, spec: ClusterSpec) -> bool:
        """True when the cluster archives its changes into ``backup.repositories``: provision then refuses an
        earlier cluster's archive and starts archiving. False for a copy that must not (the restore drill's)."""

    @abstractmethod
    def archiving_configured(self, provider: Provider, spec: ClusterSpec) -> bool:
        """True when :meth:`configure_archiving`'s files are on every host that needs them (a cluster without them
        is not fully provisioned yet)."""

    @abstractmethod
    def refuse_earlier_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """Before a new cluster starts (not initialised, not restored): raise :class:`~dbtier.errors.PreflightError`,
        one line naming the field and the fix, when a repository already holds an earlier cluster's archive of this
        name (a new cluster must not mix into it); else return a sentence. Changes nothing."""

    @abstractmethod
    def configure_archiving(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets, passwords: Passwords,
                            source: ClusterSpec | None = None,
                            source_secrets: BackupSecrets | None = None) -> list[str]:
        """Before the members start: write on each member host what archiving reads (and, with ``source``, what a
        restore of ``source``'s backup reads, ``source_secrets`` its repositories'); secret files mode 0600 in
        owner-only directories. Idempotent (provision retries it); one sentence per host or member."""

    @abstractmethod
    def start_archiving(self, provider: Provider, spec: ClusterSpec,
                        secrets: BackupSecrets | None = None) -> list[str]:
        """Once replication is verified: make the archive run and reach every repository; ``secrets`` is given when
        :meth:`archiver_services` is not empty (their S3 targets). Idempotent (provision retries it); sentences."""

    @abstractmethod
    def wait_for_restore(self, provider: Provider, spec: ClusterSpec, timeout: float) -> str:
        """After the members started on a restored backup (provision with a source): block until one is the
        primary and return a sentence; raise :class:`~dbtier.errors.RestoreFailed` naming why, fast when every
        member gave up, else after ``timeout``."""

    #: How a restore reaches its target. False: the members start on the restored data during bring-up
    #: (PostgreSQL: pgBackRest restores, :meth:`wait_for_restore` waits). True: bring-up starts an empty cluster
    #: and the restore flow then calls :meth:`restore_after_bring_up` (MongoDB: mongorestore into the new set).
    restores_after_bring_up: bool = False

    def restore_after_bring_up(self, provider: Provider, target: ClusterSpec, source: ClusterSpec, target_text: str,
                               secrets: BackupSecrets, passwords: Passwords) -> list[str]:
        """When :attr:`restores_after_bring_up`: restore ``source``'s backup (``secrets``: its repositories') to
        ``target_text`` into the healthy, empty ``target`` (``passwords``: the target's); sentences. Raise
        :class:`~dbtier.errors.RestoreError`, one line naming the member or the field. By default nothing to do."""
        return []

    #: True when a restore may replace the source's own data (``--in-place``, the source stopped); then
    #: :meth:`refuse_unarchived_tail` guards it. False: a restore goes into a new cluster only.
    restores_in_place: bool = False

    @abstractmethod
    def parse_restore_target(self, target_text: str) -> str:
        """The restore target in words (``latest``, a time, a backup's label: the engine's grammar), or a
        :class:`~dbtier.errors.RestoreError`, one line naming ``target`` and the fix. Pure: a typo is refused
        before any check reads anything."""

    @abstractmethod
    def check_restore_target(self, provider: Provider, target: ClusterSpec, source: ClusterSpec, target_text: str,
                             secrets: BackupSecrets, repo: int | None) -> tuple[str, str]:
        """Every check of ``target_text`` against ``source``'s backups (``secrets``: its repositories'; ``repo``:
        only that repository's backups), read from ``target``'s hosts before anything is written: (the target as
        the user reads it, what serves it). Raise :class:`~dbtier.errors.RestoreError`, one line naming ``target``
        and the fix."""

    def refuse_unarchived_tail(self, provider: Provider, source: ClusterSpec, target_text: str,
                               secrets: BackupSecrets, repo: int | None) -> str:
        """When :attr:`restores_in_place`, of the stopped source before an in-place restore: raise
        :class:`~dbtier.errors.RestoreError` when the restore would drop changes that reached no repository (the
        members' own log holds them); else a sentence. Never called otherwise: the restore refuses ``in_place``
        first, in one line, for an engine that does not restore in place."""
        raise NotImplementedError(f"engine {source.engine} does not restore in place (restores_in_place)")

    def settle_restore_target(self, provider: Provider, source: ClusterSpec, plan: RestorePlan,
                              secrets: BackupSecrets, repo: int | None) -> tuple[str, list[str]]:
        """After the source's flush (:meth:`flush_archive`): how ``plan``'s target will be restored (a sentence)
        and the options bring-up passes the restore tool (``restore_from.options``). By default the plan is
        exact: the engine restores after bring-up and reads its target there."""
        return f"{plan.described}: {plan.served_by}, once the new cluster is up", []

    def flush_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                      passwords: Passwords) -> str:
        """Of a running cluster, before a restore of it: push what it committed so far into the repositories (so
        'latest' is now), or wait for its archivers to; a sentence of what 'latest' holds. Raise a
        :class:`~dbtier.errors.DbtierError` when it cannot: the restore then uses what is archived."""
        return f"{spec.name}: nothing to flush"

    @abstractmethod
    def judge_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                      passwords: Passwords) -> ArchiveVerdict:
        """Archive health: is the cluster's continuous archive keeping up (within ``backup.archive_lag_limit_s``)
        and whole? Reads only; an unhealthy verdict names what is wrong in its sentence."""

    @abstractmethod
    def check_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """After a healthy verdict, prove the archive works end to end now (PostgreSQL: a fresh WAL file reaches
        every repository); a sentence, or a :class:`~dbtier.errors.BackupError` naming the member."""

    @abstractmethod
    def archived_clusters(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> list[str]:
        """The names of every cluster whose backups or archive the spec's repositories hold, this one's
        included when it has any, sorted (teardown's ``--drop-backups`` reads it first, and keeps a cipher
        block another cluster may need). Reads only."""

    def last_archived_time(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets,
                           passwords: Passwords) -> datetime | None:
        """When the cluster's continuous archive last received a change (the end of the restorable window the
        backup catalog shows), or None when unknown; raise a :class:`~dbtier.errors.DbtierError` naming the
        member that could not say."""
        return None

    @abstractmethod
    def drop_archive(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> str:
        """Delete everything of the cluster's own in every repository (backups and archive); its members must be
        stopped. Teardown's ``--drop-backups``, and the undo of a failed restore (the new cluster's own archive);
        a sentence. Nothing of another cluster is touched."""

    def archiver_services(self, spec: ClusterSpec, secrets: BackupSecrets | None = None) -> list[Service]:
        """Archiving processes of the cluster's own, supervised like its members (bootstrap lists, stops and wipes
        them with the rest; provision starts them only when :meth:`archives`); by default none. Without
        ``secrets`` a service may lack what only the blocks know (an S3 endpoint): it then identifies the process
        (pid file, marker, name) but must not be started."""
        return []

    def archiver_files(self, spec: ClusterSpec, service: Service, passwords: Passwords,
                       s3: S3Target | None = None) -> dict[str, bytes]:
        """The files an archiver of :meth:`archiver_services` reads (path to content, each written 0600), its
        repository's S3 keys from ``s3``: what :meth:`configure_archiving` writes, and ``--plan`` lists with
        placeholders for the secrets. By default none."""
        return {}

    # -- backups: the backup flow's steps (PostgreSQL: pgBackRest; MongoDB: mongodump into the repositories) ----
    # ``repo`` is a repository's number (1-based, pgBackRest's ``repoN``); ``secrets`` as above.

    @abstractmethod
    def backup_kinds(self, spec: ClusterSpec) -> tuple[str, ...]:
        """The backup kinds :meth:`take_backup` takes, ``full`` first (the backup flow refuses another)."""

    @abstractmethod
    def read_catalog(self, provider: Provider, spec: ClusterSpec, secrets: BackupSecrets) -> Catalog:
        """Every backup of the cluster in every repository, oldest first (stanza = the cluster's name)."""

    @abstractmethod
    def take_backup(self, provider: Provider, spec: ClusterSpec, kind: str, repo: int, secrets: BackupSecrets,
                    passwords: Passwords) -> str:
        """One backup of ``kind`` (one of :meth:`backup_kinds`) into repository ``repo``; a sentence. Not retried:
        a failure raises :class:`~dbtier.errors.BackupError`, one line naming the member and the fix."""

    @abstractmethod
    def verify_backup(self, provider: Provider, spec: ClusterSpec, repo: int, secrets: BackupSecrets) -> str:
        """Check what repository ``repo`` holds is whole; a sentence, or a BackupError naming what is not."""

    @abstractmethod
    def expire_backups(self, provider: Provider, spec: ClusterSpec, repo: int, keep_full: int, keep_diff: int,
                       secrets: BackupSecrets) -> None:
        """Remove from repository ``repo`` what retention no longer keeps: all but the newest ``keep_full`` fulls
        (and ``keep_diff`` differentials, where the engine has them)."""

    # -- the restore drill: its copy, its markers and its checks (PostgreSQL: .postgres.restore_drill; MongoDB:
    # .mongodb.restore_drill); the verdict is shared (dbtier.backup.drill) ------------------------------------------

    def copy_changes(self, spec: ClusterSpec) -> dict[str, Any]:
        """What a copy of the cluster on its hosts (a restore's new cluster, the restore drill's copy; ``spec``: the
        copy, on its own ports) must not share with it, in the form of :meth:`throwaway_changes`; nothing unless
        the engine says."""
        return {}

    @abstractmethod
    def throwaway_changes(self, spec: ClusterSpec) -> dict[str, Any]:
        """The settings that make ``spec`` (one member, the drill's ports) the restore drill's throwaway copy: no
        archiving of its own, nothing a single member cannot do; top-level spec fields, whole sections (its own
        engine section whole)."""

    @abstractmethod
    def write_restore_marker(self, spec: ClusterSpec, passwords: Passwords) -> Marker:
        """On the running cluster, as the application user: marker rows, then the target that holds them, then
        more rows after it; the :class:`~dbtier.backup.drill.Marker` says how many of each and the target."""

    @abstractmethod
    def check_restored_copy(self, provider: Provider, spec: ClusterSpec, marker: Marker,
                            passwords: Passwords) -> CopyChecks:
        """On the restored copy (``passwords``: the copy's): the marker rows counted by phase, and each of the
        engine's own checks as a sentence and whether it passed (a failed check is a finding, not an exception)."""

    @abstractmethod
    def restore_drill_budgets(self, spec: ClusterSpec) -> list[str]:
        """What :meth:`check_restored_copy`'s checks prove, one phrase each, for the verdict's "judged against"."""

    # -- failover drills: the failover-drill flow's steps (PostgreSQL: dbtier.engines.postgres.scenarios; MongoDB: .drill) ----

    @abstractmethod
    def drill_scenarios(self, spec: ClusterSpec) -> tuple[str, ...]:
        """The failover drills the engine runs, in the order ``drill-all`` runs them (each leaves the cluster
        healthy); the command line refuses any other name for this engine in one line."""

    @abstractmethod
    def drill_route(self, spec: ClusterSpec, settings: DrillSettings) -> str:
        """How the drill writer reaches the primary, as the drill's log says it (``through the replica set's
        URI``); a route the spec cannot give is refused here, one line naming the field (``drills.via``)."""

    def settle_s(self, spec: ClusterSpec) -> float:
        """How long a healthy cluster may look unhealthy after an ordinary blip (a drill's preflight waits this
        long, never the drill's own timeout). By default MongoDB's heartbeat interval, 2 s."""
        return 2.0

    def cannot_run_drill(self, provider: Provider, spec: ClusterSpec, scenario: str) -> str | None:
        """Why ``scenario`` cannot run on this cluster with this provider (a network drill without root on the
        members' own hosts, a host drill without power over them), one line starting ``scenario: <name> ``, or
        None. Reads nothing but the spec and the provider's abilities; by default every drill can run."""
        return None

    @abstractmethod
    def run_drill(self, provider: Provider, spec: ClusterSpec, scenario: str, settings: DrillSettings,
                  passwords: Passwords) -> DrillResult:
        """Run ``scenario`` (one of :meth:`drill_scenarios`) on the healthy cluster under a real write load and
        return its verdict and where its evidence is (verdict.json and the writer's log ``writes.jsonl``, in
        :func:`dbtier.workdir.drill_dir` on this machine). Every fault is undone before it returns, also when a
        wait fails; the cluster is healthy again after. Never retried: a drill breaks things on purpose."""


def get_engine(spec: ClusterSpec) -> Engine:
    """The engine the spec names."""
    if spec.engine == "postgres":
        from dbtier.engines.postgres.engine import PostgresEngine

        return PostgresEngine()
    if spec.engine == "mongodb":
        from dbtier.engines.mongodb.engine import MongoEngine

        return MongoEngine()
    raise NotImplementedError(f"engine {spec.engine!r}")  # pragma: no cover - the spec admits only known names
