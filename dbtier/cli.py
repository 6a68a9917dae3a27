"""The ``dbtier`` command: one front door for every flow, and fast answers without a flow run.

    dbtier provision | teardown | backup | restore | restore-drill | drill | archive-health | rotate-certs | serve
                                             each runs its flow (the same as python -m flows.<name>)
    dbtier status [--spec FILE] [--json]     exit 0 only when healthy (no flow run)
    dbtier dsn [--route rw|ro|sync|direct] [--pooled] [--spec FILE]
                                             a connection string (no password): through HAProxy's route
                                             (default rw), through PgBouncer with --pooled; direct: the
                                             multi-host DSN that needs no router
    dbtier password [--role app] [--spec FILE]
    dbtier host-keys [--forget HOST:PORT]    the SSH host keys pinned for the cluster
    dbtier certs [--spec FILE]               the members' certificates; exit 1 when one is bad or expiring
    dbtier ca [--spec FILE]                  the cluster CA's certificate (path and PEM) for clients
    dbtier blocks register                   make dbtier's block types creatable in the Prefect UI
    dbtier lab up | status | down            a lab of separate hosts on this machine (root; see dbtier lab --help)

``dbtier VERB --help`` shows a verb's options and their defaults.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from dbtier.arguments import Parser
from dbtier.errors import DbtierError

#: The module that answers the verbs that run no flow (status, dsn, password, host-keys, blocks): named, not
#: imported, as the flow modules are, so the library never imports blocks/ (they read the Prefect API).
ANSWERS = "blocks.verbs"

#: The verbs that run a flow: each hands its arguments to that module's own ``main(argv)`` (the same
#: options, defaults and exit codes as ``python -m <module>``).
FLOW_VERBS: dict[str, tuple[str, str]] = {
    "provision": ("flows.provision", "bring up or complete the cluster; 0 healthy, 1 failed, 2 refused"),
    "teardown": ("flows.teardown", "stop every process by pid (--wipe: delete the data too)"),
    "backup": ("flows.backup", "pgBackRest backup into every repository, verify, retention, catalog"),
    "restore": ("flows.restore", "point-in-time restore into a new cluster (or --in-place)"),
    "restore-drill": ("flows.restore_drill", "restore into a throwaway copy, check it, remove it"),
    "drill": ("flows.failover_drill", "a failover drill under write load (--scenario NAME)"),
    "archive-health": ("flows.archive_health", "WAL archiving lag, failures and pgbackrest check"),
    "rotate-certs": ("flows.rotate_certs", "new certificates for every member and service, reloaded in place"),
    "monitor": ("flows.monitoring", "Prometheus, Alertmanager and node exporter for the cluster on this machine"),
    "serve": ("deployments.serve", "serve one cluster's scheduled deployments (--list prints the plan)"),
}
#: Verbs handed to a module's own ``main(argv)`` that run no flow.
MODULE_VERBS: dict[str, tuple[str, str]] = {
    "lab": ("dbtier.lab.cli", "a lab of separate hosts on this machine: up, status, down (root)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dbtier", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dbtier {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB", parser_class=Parser)
    for verb, (module, text) in FLOW_VERBS.items():
        sub.add_parser(verb, help=f"{text} (= python -m {module})", add_help=False)
    for verb, (_module, text) in MODULE_VERBS.items():
        sub.add_parser(verb, help=text, add_help=False)
    for name, text in (
        ("status", "member table and health, without a flow run; exit 0 only when healthy"),
        ("dsn", "a connection string (no password in it): rw, the primary through HAProxy (the default); ro, "
                "replicas (the primary when none is healthy); sync, the synchronous standby; direct, the libpq "
                "multi-host DSN; --pooled goes through PgBouncer (rw and ro)"),
        ("password", "print one of the cluster's passwords (from its Prefect Secret block)"),
        ("host-keys", "the SSH host keys pinned for the cluster; --forget HOST:PORT after a rebuild"),
        ("certs", "each member's certificates as the members hold them: subject, SANs, expiry; exit 1 when one "
                  "is missing, expired, foreign or about to expire"),
        ("ca", "write the cluster CA's certificate to the work directory; print its path and PEM (for clients)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--spec", help="cluster spec YAML (default: deployments/clusters/default.yaml or $DBTIER_SPEC)")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "dsn":
            cmd.add_argument("--route", choices=["rw", "ro", "sync", "direct"], default=None,
                             help="which route (default: rw; direct when the cluster runs without routers)")
            cmd.add_argument("--pooled", action="store_true", help="through PgBouncer (rw and ro routes)")
        if name == "password":
            cmd.add_argument("--role", default="app", metavar="ROLE",
                             help="whose secret (default: app): for PostgreSQL superuser, replication, rewind, app, "
                                  "monitoring, restapi, etcd_root, etcd or pgbouncer; for MongoDB superuser (its "
                                  "root user), app or keyfile")
        if name == "host-keys":
            cmd.add_argument("--forget", nargs="+", metavar="HOST[:PORT]", help="forget these hosts' pinned keys")
    blocks = sub.add_parser("blocks", help="register dbtier's block types with the Prefect API (for the UI)",
                            description="Register ClusterSpecBlock, S3Repository, SSHCredentials and ProxmoxCredentials "
                            "with the Prefect API (PREFECT_API_URL), so they can be created from the UI.")
    blocks.add_argument("action", choices=["register"], help="what to do with the block types")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbtier")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
        return "unknown"


def run_flow_verb(verb: str, argv: list[str]) -> int:
    """Run ``dbtier VERB ...`` through the flow module's own ``main(argv)``; its usage says ``dbtier VERB``."""
    module = importlib.import_module({**FLOW_VERBS, **MODULE_VERBS}[verb][0])
    saved, sys.argv[0] = sys.argv[0], f"dbtier {verb}"  # argparse names the program after argv[0]
    try:
        code: int = module.main(argv)
        return code
    finally:
        sys.argv[0] = saved


def main(argv: list[str] | None = None) -> int:
    """``dbtier`` alone prints the help and exits 0; an unknown verb is one line, exit 2."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # as flows/__init__.py
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")  # as flows/__init__.py
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        build_parser().print_help()
        return 0
    if argv[0] in FLOW_VERBS or argv[0] in MODULE_VERBS:
        return run_flow_verb(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:  # they read the Prefect API (input too: one line when it does not answer), so they live beside the blocks
        code: int = importlib.import_module(ANSWERS).answer(args)
        return code
    except DbtierError as err:
        print(f"dbtier: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
