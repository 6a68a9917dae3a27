"""Provision: bring up (or complete) an HA cluster (PostgreSQL with Patroni and etcd, or a MongoDB replica set),
then prove it replicates.

    python -m flows.provision [--spec deployments/clusters/default.yaml]
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from prefect import flow, get_run_logger, unmapped

from blocks.passwords import refuse_lost_passwords
from dbtier import bootstrap
from dbtier.engines.base import ClusterStatus, get_engine
from dbtier.health import format_table
from dbtier.providers.base import get_provider, resolve_addresses
from dbtier.errors import DbtierError
from dbtier.spec import ClusterSpec, load_spec
from blocks.lock import changes_cluster, cluster_lock
from blocks.loaders import PREFECT_LOADERS
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec, spec_warnings
from tasks.firewall import apply_firewall, firewall_status
from tasks.certs import reload_renewed_certificates
from tasks.metrics import record_certificate_metrics
from tasks.backup import configure_archiving, refuse_earlier_archive, start_archiving, wait_for_restore
from tasks.cluster import (
    configure_router,
    create_app_database,
    ensure_cluster_certificates,
    ensure_cluster_passwords,
    inspect_cluster,
    learn_addresses,
    preflight_checks,
    prepare_data_dirs,
    prepare_hosts,
    prepare_replicas,
    publish_member_table,
    secure_consensus,
    start_service,
    verify_replication,
    wait_for_consensus,
    wait_for_routes,
    wait_until_healthy,
    write_member_config,
)


@flow(name="provision", flow_run_name=run_name("provision"), log_prints=False)
@changes_cluster("provision")
def provision(spec_path: str | None = None, spec_block: str | None = None) -> dict[str, Any]:
    """Provision the cluster named by a spec file (or a stored spec block); idempotent."""
    spec = resolve_spec(spec_path, spec_block)
    logger = get_run_logger()
    consensus = get_engine(spec).consensus_services(spec)  # etcd's members, or none (a replica set elects itself)
    logger.info(
        "cluster %s: %d %s members%s, provider %s, data under %s", spec.name, spec.members, spec.engine,
        f", {len(consensus)} {consensus[0].kind} members" if consensus else "", spec.provider, spec.cluster_dir,
    )
    current = inspect_cluster(spec)
    if current["provisioned"]:
        logger.info("cluster %s is already healthy and provisioned; nothing changed", spec.name)
        apply_firewall(spec)  # a healthy cluster still gets the firewall its spec asks for now
        publish_member_table(spec, current["rows"], "already healthy; nothing changed")
        return _summary(spec, current["rows"], current["leader"], changed=False)

    spec, status = bring_up(spec)
    publish_member_table(spec, status.rows, f"healthy; leader {status.health.leader}")
    return _summary(spec, status.rows, status.health.leader, changed=True)


def bring_up(spec: ClusterSpec, source: ClusterSpec | None = None) -> tuple[ClusterSpec, ClusterStatus]:
    """The provision runbook (inside a flow run). With ``source``, the first member restores its backup.

    Returns the spec with the addresses the hosts got (DHCP) and the healthy cluster's status.
    """
    engine = get_engine(spec)
    prepare_hosts(spec)
    spec = learn_addresses(spec)
    preflight_checks(spec)
    apply_firewall(spec)  # before any service listens
    if engine.archives(spec):
        refuse_earlier_archive(spec)
    ensure_cluster_passwords(spec)
    prepare_data_dirs(spec)
    ensure_cluster_certificates(spec)
    record_certificate_metrics(spec)  # for the certificate-expiry alert
    configure_archiving(spec, source)
    consensus = [s.name for s in engine.consensus_services(spec)]
    members = [s.name for s in engine.member_services(spec)]
    start_service.map(unmapped(spec), consensus).result()
    wait_for_consensus(spec)
    secure_consensus(spec)
    write_member_config.map(unmapped(spec), members).result()
    start_service.map(unmapped(spec), members).result()
    if source is not None:
        wait_for_restore(spec)
    prepare_replicas(spec)
    wait_until_healthy(spec)
    create_app_database(spec)
    verify_replication(spec)
    if engine.archives(spec):
        start_archiving(spec)
    routers = engine.router_services(spec)
    configure_router.map(unmapped(spec), [s.name for s in routers]).result()
    # Root services first (keepalived's unit lets HAProxy bind the virtual IP), then the routers and poolers.
    start_service.map(unmapped(spec), [s.name for s in routers if s.as_root]).result()
    start_service.map(unmapped(spec), [s.name for s in routers if not s.as_root]).result()
    reload_renewed_certificates(spec)
    status = wait_until_healthy(spec)
    wait_for_routes(spec)
    return spec, status


def _summary(spec: ClusterSpec, rows: list[dict[str, Any]], leader: str | None, changed: bool) -> dict[str, Any]:
    engine = get_engine(spec)
    return {"cluster": spec.name, "leader": leader, "changed": changed, "members": rows,
            "dsn": engine.dsn(spec, "direct"), "dsns": engine.client_dsns(spec), "firewall": firewall_status(spec)}


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Provision a dbtier cluster (idempotent).\n\n"
                         "On hosts of the cluster's own (providers ssh and proxmox) it first loads the cluster's host\n"
                         "firewall, nft table inet dbtier_fw_<cluster>: PostgreSQL answers members, loopback, this\n"
                         "machine, firewall.admin_networks and allowed_client_networks; Patroni's REST API and etcd\n"
                         "the same but for the client networks; nothing else of the host changes. It is reloaded at\n"
                         "boot (dbtier-firewall-<cluster>.service); firewall.enabled: false removes it.")
    parser.add_argument("--plan", action="store_true",
                        help="print what provisioning would create (hosts, services and ports, files, secret blocks) "
                             "from the spec alone, secrets redacted; touches nothing (no host, no Prefect API)")
    parser.add_argument("--show-files", action="store_true",
                        help="with --plan: print each file's content too, passwords as <secret:ROLE>")
    args = parser.parse_args(argv)
    if args.plan or args.show_files:
        return print_plan(args.spec, args.show_files)

    def body(spec: ClusterSpec) -> int:
        # Refuse bad hosts, busy ports and foreign data dirs before Prefect or any process starts.
        spec = resolve_addresses(spec, loaders=PREFECT_LOADERS)
        bootstrap.preflight(get_engine(spec), get_provider(spec, PREFECT_LOADERS), spec, before_install=True)
        refuse_lost_passwords(spec, bootstrap.is_initialised(get_engine(spec), get_provider(spec, PREFECT_LOADERS), spec))
        with cluster_lock(spec.name, "provision"):  # a second changer is refused here, in one line
            result = provision(spec_path=args.spec)
        print()
        print(format_table(result["members"]))
        print()
        print(f"cluster {spec.name}: leader {result['leader']}" + ("" if result["changed"] else " (nothing changed)"))
        for line in result.get("firewall", []):
            print(line)
        dsns = [tuple(pair) for pair in result["dsns"]]
        for label, dsn in dsns:
            print(f"{label + ':':<16}{dsn}")
        cli = _dbtier_command()
        print(f"password: {cli} password --role app{_spec_flag(args.spec)}")
        print(f"connect:  {get_engine(spec).connect_hint(dsns[0][1], f'{cli} password{_spec_flag(args.spec)}')}")
        return EXIT_OK

    return run_edge(body, args.spec)


def print_plan(spec_path: str | None, show_files: bool) -> int:
    """``--plan``: the spec's plan on stdout; a bad spec is one line on stderr (exit 2), as for provision."""
    from dbtier.plan import provision_plan

    try:
        spec = load_spec(spec_path)
        for warning in spec_warnings(spec, spec_path):
            print(f"dbtier: warning: {warning}", file=sys.stderr)
        print("\n".join(provision_plan(get_engine(spec), spec, show_files)))
    except DbtierError as err:
        print(f"dbtier: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    return EXIT_OK


def _dbtier_command() -> str:
    """``dbtier`` when it is on PATH, else its path in this venv (``.venv/bin/dbtier``)."""
    if shutil.which("dbtier"):
        return "dbtier"
    return os.path.relpath(os.path.join(sys.prefix, "bin", "dbtier"))


def _spec_flag(path: str | None) -> str:
    return f" --spec {path}" if path else ""


if __name__ == "__main__":
    sys.exit(main())
