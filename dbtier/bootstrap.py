"""The provision and teardown steps as plain functions: runner in, sentence out.

Tasks in ``tasks/`` wrap these one to one; nothing here imports Prefect, and
nothing here knows which provider runs the commands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from dbtier import procs
from dbtier.engines.base import ClusterStatus, Engine
from dbtier.errors import PreflightError, ProvisionError
from dbtier.procs import Service
from dbtier.providers.base import Provider, Runner
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec
from dbtier.supervisors import unit_name

T = TypeVar("T")
R = TypeVar("R")

if TYPE_CHECKING:
    from dbtier.ca_store import CAStore

MARKER = "dbtier-cluster.json"


def all_services(engine: Engine, spec: ClusterSpec) -> list[Service]:
    """What provision starts: consensus, members, routers, then the archivers when the cluster archives (none for
    PostgreSQL: its own archiver runs inside the postmaster)."""
    return (engine.consensus_services(spec) + engine.member_services(spec) + engine.router_services(spec)
            + (engine.archiver_services(spec) if engine.archives(spec) else []))


def with_exporters(engine: Engine, spec: ClusterSpec) -> list[Service]:
    """Every service of the cluster that may run on its hosts: the exporters ``make monitor`` starts, what provision
    starts, and archivers an earlier provision started before the spec stopped archiving."""
    idle = [] if engine.archives(spec) else engine.archiver_services(spec)
    return engine.exporter_services(spec) + all_services(engine, spec) + idle


def cluster_hosts(engine: Engine, spec: ClusterSpec) -> list[str]:
    return sorted({s.host for s in all_services(engine, spec)})


def _marker_owner(runner: Runner, spec: ClusterSpec) -> str | None:
    raw = runner.read_file(f"{spec.cluster_dir}/{MARKER}")
    if raw is None:
        return None
    try:
        return str(json.loads(raw)["name"])
    except (ValueError, KeyError, TypeError):
        return "(unreadable marker)"


def check_data_dir(runner: Runner, spec: ClusterSpec) -> str:
    """Refuse a non-empty cluster directory that another cluster (or nobody) owns."""
    entries = runner.list_dir(spec.cluster_dir)
    if not entries:
        return f"{spec.cluster_dir} is free"
    owner = _marker_owner(runner, spec)
    if owner == spec.name:
        return f"{spec.cluster_dir} belongs to cluster {spec.name}"
    whose = f"cluster {owner!r}" if owner else "no dbtier cluster"
    raise PreflightError(
        f"data_root: {spec.cluster_dir} is not empty and belongs to {whose}; "
        "choose another data_root or name, or move that directory away (dbtier will not initialise over it)"
    )


def is_initialised(engine: Engine, provider: Provider, spec: ClusterSpec) -> bool:
    """True when any host already holds this cluster's directory with its marker."""
    return any(_marker_owner(provider.runner(spec, h), spec) == spec.name for h in cluster_hosts(engine, spec))


def check_ports(engine: Engine, runner: Runner, spec: ClusterSpec, service: Service) -> None:
    """Every port of a service that is not running must be free (our own orphan postmaster excepted)."""
    if procs.running_pid(runner, service) is not None:
        return
    for field, port in service.ports:
        if not runner.port_in_use(port):
            continue
        owner_dir = engine.owned_port(spec, service, port)
        if owner_dir and _live_postmaster(runner, owner_dir) is not None:
            continue
        raise PreflightError(
            f"{field}: {runner.host}:{port} (for {service.name}) is already in use by another process; "
            f"stop that process or {other_ports_hint(spec, field)}"
        )


def other_ports_hint(spec: ClusterSpec, field: str) -> str:
    """How to move a cluster whose port is taken; a restored copy moves by its offset, not by its own ports.

    >>> other_ports_hint(ClusterSpec(), "postgres.ports.etcd")
    'choose other ports (e.g. DBTIER_POSTGRES__PORTS__ETCD=...)'
    >>> other_ports_hint(ClusterSpec(engine="mongodb"), "mongodb.port (member 1)")
    'choose other ports (e.g. DBTIER_MONGODB__PORT=...)'
    >>> other_ports_hint(ClusterSpec(name="pg-drill", hosts_of="pg"), "postgres.ports.etcd")[:64]
    'choose another offset for this copy of pg (restore --port-offset'
    """
    if spec.host_owner != spec.name:
        return (f"choose another offset for this copy of {spec.host_owner} (restore --port-offset N; "
                "for the restore drill backup.restore_drill.port_offset)")
    path = field.split(" ", 1)[0]  # "postgres.ports.postgres (member 0)": the spec field, without which member it is
    return f"choose other ports (e.g. DBTIER_{path.upper().replace('.', '__')}=...)"


def missing_binaries(engine: Engine, runner: Runner, spec: ClusterSpec) -> list[str]:
    """The programs a member host lacks (the engine's :meth:`~Engine.required_programs`), one line each, naming
    the spec field and the fix."""
    return [
        f"{field}: {path} is missing on {runner.host} or not executable by {spec.os_user!r}; "
        f"{engine.missing_program_fix(spec)}"
        for field, path in engine.required_programs(spec)
        if runner.run(["test", "-x", path], check=False).rc != 0
    ]


def prepare_hosts(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """Let the provider install what each host needs (a no-op for the local provider)."""
    return [provider.prepare_host(spec, host) for host in cluster_hosts(engine, spec)]


def preflight(engine: Engine, provider: Provider, spec: ClusterSpec, before_install: bool = False) -> list[str]:
    """Everything that must hold before a single process starts. Touches nothing.

    ``before_install``: the provider will install packages next, so missing programs are not an error yet.
    """
    problems: list[str] = []
    for host in cluster_hosts(engine, spec):
        problems += provider.check_host(spec, host)
        if not (before_install and provider.installs_packages(spec)):
            problems += missing_binaries(engine, provider.runner(spec, host), spec)
    if problems:
        raise PreflightError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    sentences = []
    for host in cluster_hosts(engine, spec):
        runner = provider.runner(spec, host)
        if before_install and provider.installs_packages(spec) and runner.list_dir(spec.cluster_dir) is None:
            continue  # a fresh host: nothing runs there and nothing can be in the way yet
        sentences.append(check_data_dir(runner, spec))
        for service in all_services(engine, spec):
            if service.host == host:
                check_ports(engine, runner, spec, service)
    sentences.append(f"ports of {len(all_services(engine, spec))} services are free or already ours")
    mismatch = engine.transport_problem(spec)
    if mismatch:
        raise PreflightError(mismatch)
    return sentences


def prepare_dirs(engine: Engine, provider: Provider, spec: ClusterSpec) -> str:
    """Create the cluster directory, its ownership marker and one directory per service."""
    for host in cluster_hosts(engine, spec):
        runner = provider.runner(spec, host)
        check_data_dir(runner, spec)
        runner.make_dirs(spec.cluster_dir, 0o750)
        if _marker_owner(runner, spec) is None:
            marker = {"name": spec.name, "engine": spec.engine, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            runner.write_file(f"{spec.cluster_dir}/{MARKER}", json.dumps(marker).encode(), 0o644)
        for service in all_services(engine, spec):
            if service.host == host:
                runner.make_dirs(service.pidfile.rsplit("/", 1)[0], 0o700)
    return f"data directories ready under {spec.cluster_dir}"


def write_member_files(engine: Engine, provider: Provider, spec: ClusterSpec, service: Service, passwords: Passwords) -> str:
    """Write a member's configuration files when their content changed (one read and one write per host)."""
    runner = provider.runner(spec, service.host)
    files = engine.member_files(spec, service, passwords)
    stale = [(path, content) for (path, content), now in zip(files.items(), runner.read_files(list(files)), strict=True)
             if now != content]
    runner.write_files([(path, content, engine.file_mode(spec, path)) for path, content in stale],
                       list(dict.fromkeys((path.rsplit("/", 1)[0], 0o700) for path, _ in stale)))
    changed = [path.rsplit("/", 1)[-1] for path, _ in stale]
    return f"{service.name}: wrote {', '.join(changed)}" if changed else f"{service.name}: configuration unchanged"


def apply_service_files(engine: Engine, provider: Provider, spec: ClusterSpec, service: Service,
                        passwords: Passwords) -> str:
    """Write a router's, pooler's or exporter's files; when they changed under a running one, it re-reads them (its
    reload signal) or is restarted (a router's connections drop: their clients reconnect)."""
    said = write_member_files(engine, provider, spec, service, passwords)
    if said.endswith("configuration unchanged"):
        return said
    reloaded = reload_service(provider, spec, service)
    return f"{said}; {reloaded}" if reloaded else said


def reload_service(provider: Provider, spec: ClusterSpec, service: Service) -> str | None:
    """Make a running service read its files again: its reload signal, or a restart when it has none (a
    router's connections drop: their clients reconnect). None when it is not running."""
    runner = provider.runner(spec, service.host)
    pid = procs.running_pid(runner, service)
    if pid is None:
        return None
    if service.reload_signal:
        runner.run(["kill", f"-{service.reload_signal}", str(pid)])
        return f"{service.name} re-read its files (SIG{service.reload_signal} to pid {pid})"
    supervisor = provider.supervisor(spec, service.host)
    stopped = supervisor.stop(runner, service, timeout=30)
    return f"{stopped}; restarted (pid {supervisor.start(runner, service)}): it has no reload that rereads them"


def ensure_certificates(provider: Provider, spec: ClusterSpec, store: CAStore, rotate: bool = False) -> list[str]:
    """The cluster CA (made on the first provision, kept in ``store``, reused after; its key never goes to a
    member) and each member's certificates (:func:`dbtier.tls.cert_plan`): those missing, foreign, expired,
    lacking a SAN or expiring within ``tls.renew_before_days`` are issued and written through the members'
    runners, valid ones kept. ``rotate``: every one issued anew. Sentences say what, never a key."""
    from dbtier import tls_files

    now = tls_files.now_utc()
    ca, said = tls_files.ensure_ca(store, spec, now)
    client = tls_files.write_client_ca(spec, ca.cert_pem)
    return [said, *([client] if client else []), *tls_files.ensure_certificates(provider, spec, ca, now, rotate)]


def certificates_problem(provider: Provider, spec: ClusterSpec, store: CAStore) -> str | None:
    """Why provision must issue certificates (no CA yet, or a member's certificate is bad), or None."""
    from dbtier import tls_files

    return tls_files.certificates_ok(provider, spec, store, tls_files.now_utc())


def ensure_running(provider: Provider, spec: ClusterSpec, service: Service) -> str:
    """Start ``service`` unless it already runs; return what happened."""
    runner = provider.runner(spec, service.host)
    pid = procs.running_pid(runner, service)
    if pid is not None:
        return f"{service.name} already running (pid {pid})"
    supervisor = provider.supervisor(spec, service.host)
    pid = supervisor.start(runner, service)
    how = f" by systemd unit {unit_name(spec.name, service.name)}" if supervisor.kind == "systemd" else ""
    return f"{service.name} started{how} (pid {pid})"


def start_exporters(engine: Engine, provider: Provider, spec: ClusterSpec, passwords: Passwords) -> list[str]:
    """Start the exporters on the cluster's hosts (``make monitor``), each after its files; one that runs re-reads
    files that changed. Refused in one line, before anything starts, when an exporter's port clashes with the
    spec or is taken on its host, or its program is missing there."""
    services = engine.exporter_services(spec)
    problems = engine.exporter_problems(spec)
    for service in services:
        runner = provider.runner(spec, service.host)
        if runner.run(["test", "-x", service.argv[0]], check=False).rc != 0:
            problems.append(f"{program_field(spec, service.argv[0])}: {service.argv[0]} is missing on "
                            f"{service.host} or not executable by {spec.os_user!r}; run 'make setup' there (or turn "
                            "monitoring.exporters.enabled off)")
    if problems:
        raise PreflightError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    for service in services:
        check_ports(engine, provider.runner(spec, service.host), spec, service)
    said = []
    for service in services:
        provider.runner(spec, service.host).make_dirs(service.pidfile.rsplit("/", 1)[0], 0o700)
        said.append(apply_service_files(engine, provider, spec, service, passwords))
        said.append(ensure_running(provider, spec, service))
    return said


def program_field(spec: ClusterSpec, program: str) -> str:
    """The spec field that names ``program`` (a ``binaries`` entry, in the engine's section or shared), or
    ``binaries`` when none does.

    >>> program_field(ClusterSpec(), "/usr/bin/prometheus-postgres-exporter")
    'postgres.binaries.postgres_exporter'
    >>> program_field(ClusterSpec(engine="mongodb"), "/usr/bin/prometheus-node-exporter")
    'binaries.node_exporter'
    """
    def walk(node: object, path: str) -> str | None:
        if not isinstance(node, dict):
            return None
        for key, value in node.items():
            here = f"{path}{key}"
            if path.endswith("binaries.") and value == program:
                return here
            found = walk(value, f"{here}.")
            if found:
                return found
        return None

    return walk(spec.model_dump(mode="json"), "") or "binaries"


def stop_services(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """Stop the exporters and routers first, then the archivers (each writes the slice it holds), then members
    (Patroni stops its postmaster), then the consensus store; by pid only. The services of a stage stop at once but
    the consensus store's, one by one: its leader hands leadership to a peer still up as it stops (measured on a
    lab of three hosts over SSH: the members stopped at once in 4.0 s, their stops adding up to 8.2 s; etcd's three,
    stopped at once, took 7.5 s, the last one waiting for peers that were stopping too)."""
    optional = {s.name for s in engine.exporter_services(spec)}
    if not engine.archives(spec):
        optional |= {s.name for s in engine.archiver_services(spec)}

    def stop(service: Service) -> list[str]:
        runner = provider.runner(spec, service.host)
        said = provider.supervisor(spec, service.host).stop(runner, service, timeout=60)
        if service.name in optional and said.startswith(f"{service.name} was not running"):
            return []  # only 'make monitor' starts exporters, only an archiving spec archivers: none to speak of
        sentences = [said]
        for _field, port in service.ports:
            owner_dir = engine.owned_port(spec, service, port)
            if owner_dir:
                sentences.append(_stop_orphan_postmaster(runner, spec, owner_dir, service.name))
        return sentences

    stages = [at_once(stop, engine.exporter_services(spec) + engine.router_services(spec)),
              at_once(stop, engine.archiver_services(spec)), at_once(stop, engine.member_services(spec)),
              [stop(service) for service in engine.consensus_services(spec)]]
    return [said for stage in stages for sentences in stage for said in sentences if said]


def at_once(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``work`` of each item, all at once in threads, the answers in the items' order; the first item's error is
    raised once every one has ended (none is left running).

    >>> at_once(lambda n: n * n, [1, 2, 3])
    [1, 4, 9]
    """
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(work, item) for item in items]
    return [future.result() for future in futures]


def _live_postmaster(runner: Runner, data_dir: str) -> int | None:
    """The pid of a postmaster running on ``data_dir`` (one Patroni left behind when it died), else None."""
    pid = procs.read_pid(runner, f"{data_dir}/postmaster.pid")
    return pid if pid is not None and procs.pid_matches(runner, pid, data_dir) else None


def _stop_orphan_postmaster(runner: Runner, spec: ClusterSpec, data_dir: str, name: str) -> str:
    pid = _live_postmaster(runner, data_dir)
    if pid is None:
        return ""
    return procs.stop_pid(runner, pid, data_dir, f"{name} postmaster", timeout=60)


def hosts_with_data(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """The cluster's hosts that hold its directory (whoever owns it)."""
    return [h for h in cluster_hosts(engine, spec) if provider.runner(spec, h).list_dir(spec.cluster_dir) is not None]


def check_owned(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """The hosts holding the cluster's directory, each carrying this cluster's marker; else a refusal (exit 2)."""
    hosts = hosts_with_data(engine, provider, spec)
    for host in hosts:
        owner = _marker_owner(provider.runner(spec, host), spec)
        if owner != spec.name:
            whose = f"cluster {owner!r}'s" if owner else "no dbtier cluster's"
            raise PreflightError(
                f"data_root: {host}:{spec.cluster_dir} carries {whose} marker, not cluster {spec.name}'s; "
                "nothing was stopped or deleted: check the spec's name and data_root"
            )
    return hosts


def check_wipe(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """The hosts whose cluster directory :func:`wipe` may delete: on every one it carries this cluster's
    marker and nothing of the cluster runs. Refuses (ProvisionError) before anything is deleted anywhere."""
    hosts = check_owned(engine, provider, spec)
    for host in hosts:
        runner = provider.runner(spec, host)
        still = [s.name for s in with_exporters(engine, spec) if s.host == host and procs.running_pid(runner, s)]
        if still:
            raise ProvisionError(f"not wiping {spec.cluster_dir}: {', '.join(still)} still running on {host}; "
                                 "nothing was deleted: stop them (teardown without --wipe) and run again")
    return hosts


def wipe(engine: Engine, provider: Provider, spec: ClusterSpec) -> str:
    """Remove the cluster directory (and its systemd units), only when it is ours and nothing of it runs
    (checked on every host before anything is removed)."""
    hosts = check_wipe(engine, provider, spec)
    if not hosts:
        return f"nothing to wipe: no {spec.cluster_dir} on {', '.join(cluster_hosts(engine, spec))}"

    def clear(host: str) -> list[str]:
        runner = provider.runner(spec, host)
        said = provider.supervisor(spec, host).remove(runner, [s for s in with_exporters(engine, spec) if s.host == host])
        runner.remove_tree(spec.cluster_dir)
        return said

    said = [line for lines in at_once(clear, hosts) for line in lines]  # each host at once
    return "; ".join([*said, f"wiped {spec.cluster_dir} on {', '.join(hosts)}"])


def running_services(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[str]:
    """Names of the services whose pid file points at a live process of theirs (exporters included)."""
    services = with_exporters(engine, spec)

    def running_on(host: str) -> set[str]:
        runner = provider.runner(spec, host)
        return {s.name for s in services if s.host == host and procs.running_pid(runner, s) is not None}

    running = set().union(*at_once(running_on, sorted({s.host for s in services})))  # each host at once
    return [s.name for s in services if s.name in running]


def pid_file_problems(engine: Engine, provider: Provider, spec: ClusterSpec) -> list[procs.PidMismatch]:
    """Services whose port is held by a process other than the one their pid file names (that pid dead, or
    another pid on the port), one sentence each. A port nobody listens on says nothing (the member is down:
    the engine's status tells that); a host whose sockets cannot be read is skipped."""
    problems: list[procs.PidMismatch] = []
    tables: dict[str, list[procs.Listener] | None] = {}
    for service in all_services(engine, spec):
        runner = provider.runner(spec, service.host)
        if service.host not in tables:
            tables[service.host] = procs.listeners(runner)
        table = tables[service.host]
        if table is None:
            continue
        pid = procs.read_pid(runner, service.pidfile)
        alive = pid is not None and procs.pid_matches(runner, pid, service.marker)
        for _field, port in service.ports:
            holders = procs.port_holders(table, service.host, port)
            if holders is None:
                continue
            legit = {pid} if alive and pid is not None else set()
            owner_dir = engine.owned_port(spec, service, port)
            postmaster = _live_postmaster(runner, owner_dir) if owner_dir else None
            if postmaster is not None:
                legit.add(postmaster)
            if not holders & legit:
                problems.append(procs.PidMismatch(service.name, pid, alive, port, holders))
                break
    return problems


def checked_status(engine: Engine, provider: Provider, spec: ClusterSpec) -> ClusterStatus:
    """The engine's status, with every service whose pid file does not match its port's process marked
    (the row says so, and the cluster is not healthy: teardown and drills act on the pid files)."""
    return engine.status(spec).with_pid_problems(pid_file_problems(engine, provider, spec))
