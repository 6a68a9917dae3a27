"""Tasks of the provision, status and teardown flows."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from blocks.ca import PREFECT_CA_STORE
from blocks.passwords import ensure_passwords, load_passwords
from blocks.loaders import PREFECT_LOADERS
from dbtier import bootstrap, workdir
from dbtier.errors import SecretError
from dbtier.engines.base import ClusterStatus, Engine, get_engine
from dbtier.monitoring.status import alerts_line
from dbtier.procs import Service
from dbtier.providers.base import Provider, get_provider, resolve_addresses
from dbtier.spec import ClusterSpec
from tasks import log_sentences


def _parts(spec: ClusterSpec) -> tuple[Engine, Provider]:
    return get_engine(spec), get_provider(spec, PREFECT_LOADERS)


def _service(spec: ClusterSpec, name: str) -> Service:
    return next(s for s in bootstrap.all_services(get_engine(spec), spec) if s.name == name)


@task(cache_policy=NONE)
def inspect_cluster(spec: ClusterSpec) -> dict[str, Any]:
    """Is everything already running, healthy and provisioned? Changes nothing."""
    engine, provider = _parts(spec)
    running = bootstrap.running_services(engine, provider, spec)  # the exporters too, when make monitor runs them
    wanted = [s.name for s in bootstrap.all_services(engine, spec)]
    status = engine.status(spec)
    up = [name for name in wanted if name in running]
    done = status.health.healthy and len(up) == len(wanted) and engine.archiving_configured(provider, spec)
    if done:
        try:
            passwords = load_passwords(spec)
        except SecretError:
            done = False  # ensure_cluster_passwords says what is wrong, in one line
        else:
            done = engine.app_database_present(spec, passwords, provider)
    certs_said = bootstrap.certificates_problem(provider, spec, PREFECT_CA_STORE) if done else None
    done = done and certs_said is None
    log_sentences(f"{len(up)} of {len(wanted)} services running; {status.health.sentence}"
                  + (f"; {certs_said}" if certs_said else ""))
    return {"provisioned": done, "rows": status.rows, "leader": status.health.leader}


@task(cache_policy=NONE, retries=1, retry_delay_seconds=5)
def prepare_hosts(spec: ClusterSpec) -> None:
    """Install what the hosts need (packages, OS user, runtime venv); idempotent."""
    engine, provider = _parts(spec)
    log_sentences(*bootstrap.prepare_hosts(engine, provider, spec))


@task(cache_policy=NONE)
def learn_addresses(spec: ClusterSpec) -> ClusterSpec:
    """``spec`` with the addresses the hosts just got (Proxmox containers on DHCP); read-only, waits for leases."""
    learned = resolve_addresses(spec, wait=True, loaders=PREFECT_LOADERS)
    if learned is not spec:
        log_sentences(f"hosts: {', '.join(bootstrap.cluster_hosts(get_engine(learned), learned))}")
    return learned


@task(cache_policy=NONE)
def preflight_checks(spec: ClusterSpec) -> None:
    engine, provider = _parts(spec)
    log_sentences(*bootstrap.preflight(engine, provider, spec))


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[1, 3])
def prepare_data_dirs(spec: ClusterSpec) -> None:
    engine, provider = _parts(spec)
    log_sentences(bootstrap.prepare_dirs(engine, provider, spec))


@task(cache_policy=NONE)
def ensure_cluster_passwords(spec: ClusterSpec) -> None:
    engine, provider = _parts(spec)
    log_sentences(*ensure_passwords(spec, initialised=bootstrap.is_initialised(engine, provider, spec)))


@task(cache_policy=NONE)
def ensure_cluster_certificates(spec: ClusterSpec) -> None:
    """The cluster CA (made once, its key in a Secret block) and every member's certificates (safe to repeat)."""
    _, provider = _parts(spec)
    log_sentences(*bootstrap.ensure_certificates(provider, spec, PREFECT_CA_STORE))


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[1, 3], task_run_name="start {name}")
def start_service(spec: ClusterSpec, name: str) -> str:
    """Start one service unless it runs (safe to repeat)."""
    _, provider = _parts(spec)
    sentence = bootstrap.ensure_running(provider, spec, _service(spec, name))
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE)
def wait_for_consensus(spec: ClusterSpec) -> None:
    engine, _ = _parts(spec)
    log_sentences(engine.wait_consensus(spec))


@task(cache_policy=NONE)
def secure_consensus(spec: ClusterSpec) -> None:
    """etcd's root and cluster users, the cluster's role on its own prefix, auth on (idempotent)."""
    engine, _ = _parts(spec)
    log_sentences(engine.secure_consensus(spec, load_passwords(spec)))


@task(cache_policy=NONE, task_run_name="configure {name}")
def write_member_config(spec: ClusterSpec, name: str) -> None:
    engine, provider = _parts(spec)
    log_sentences(bootstrap.write_member_files(engine, provider, spec, _service(spec, name), load_passwords(spec)))


@task(cache_policy=NONE, task_run_name="configure {name}")
def configure_router(spec: ClusterSpec, name: str) -> None:
    """A router's or pooler's files; one that runs re-reads them (or restarts) when they changed."""
    engine, provider = _parts(spec)
    log_sentences(bootstrap.apply_service_files(engine, provider, spec, _service(spec, name), load_passwords(spec)))


@task(cache_policy=NONE)
def wait_for_routes(spec: ClusterSpec) -> str:
    """Every route of every router lands where Patroni says (rw on the leader, ro on a replica...)."""
    engine, _ = _parts(spec)
    sentence = engine.wait_routes(spec, load_passwords(spec))
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE)
def prepare_replicas(spec: ClusterSpec) -> None:
    engine, provider = _parts(spec)
    log_sentences(engine.prepare_replicas(spec, load_passwords(spec), spec.timeouts.healthy, provider))


@task(cache_policy=NONE)
def wait_until_healthy(spec: ClusterSpec) -> ClusterStatus:
    engine, _ = _parts(spec)
    status = engine.wait_healthy(spec, spec.timeouts.healthy)
    log_sentences(status.health.sentence)
    return status


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[2, 5])
def create_app_database(spec: ClusterSpec) -> None:
    engine, provider = _parts(spec)
    log_sentences(engine.create_app_database(spec, load_passwords(spec), provider))


@task(cache_policy=NONE)
def verify_replication(spec: ClusterSpec) -> str:
    engine, _ = _parts(spec)
    sentence = engine.verify_replication(spec, load_passwords(spec), spec.timeouts.replica_read)
    log_sentences(sentence)
    return sentence


@task(cache_policy=NONE)
def read_status(spec: ClusterSpec) -> ClusterStatus:
    engine, provider = _parts(spec)
    status = bootstrap.checked_status(engine, provider, spec)
    log_sentences(status.health.sentence)
    return status


@task(cache_policy=NONE)
def read_router_views(spec: ClusterSpec) -> tuple[list[str], list[str]]:
    """Where each router sends each route, and where that disagrees with the cluster (logged as warnings)."""
    lines, problems = get_engine(spec).router_views(spec)
    log_sentences(*lines)
    for problem in problems:
        get_run_logger().warning("%s", problem)
    return lines, problems


@task(cache_policy=NONE)
def read_alerts(spec: ClusterSpec) -> str | None:
    """The alerts firing now in the cluster's Prometheus (None when no monitoring stack runs)."""
    line = alerts_line(spec)
    if line:
        get_run_logger().info("%s", line)
    return line


@task(cache_policy=NONE)
def publish_member_table(spec: ClusterSpec, rows: list[dict[str, Any]], headline: str) -> None:
    """The member table as a Prefect table artifact (key ``<cluster>-members``)."""
    label, dsn = get_engine(spec).client_dsns(spec)[0]
    create_table_artifact(
        key=f"{spec.name}-members",
        table=rows,
        description=f"**{spec.name}**: {headline}\n\n{label[:1].upper()}{label[1:]}: `{dsn}`",
    )


@task(cache_policy=NONE)
def stop_cluster(spec: ClusterSpec) -> list[str]:
    engine, provider = _parts(spec)
    sentences = bootstrap.stop_services(engine, provider, spec)
    log_sentences(*sentences)
    return sentences


@task(cache_policy=NONE)
def wipe_cluster(spec: ClusterSpec) -> str:
    """Delete the cluster's directory (and its systemd units), then its work directory on this machine (the
    drills' evidence); return what was done."""
    engine, provider = _parts(spec)
    said = bootstrap.wipe(engine, provider, spec)
    local = workdir.forget_cluster(spec.name)
    said += f"; {local}" if local else ""
    log_sentences(said)
    return said


@task(cache_policy=NONE)
def destroy_hosts(spec: ClusterSpec) -> list[str]:
    """Destroy the containers the proxmox provider created for this cluster (only those carrying its tags).

    Not retried: destroying is not a step to repeat blindly.
    """
    sentences = get_provider(spec, PREFECT_LOADERS).destroy_hosts(spec)
    log_sentences(*sentences)
    return sentences
