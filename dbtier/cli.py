"""The ``dbtier`` command: one front door for every flow, and fast answers without a flow run.

    dbtier provision | teardown | backup | restore | restore-drill | drill | archive-health | serve
                                             each runs its flow (the same as python -m flows.<name>)
    dbtier status [--spec FILE] [--json]     exit 0 only when healthy (no flow run)
    dbtier dsn [--spec FILE]                 the read-write connection string (no password)
    dbtier password [--role app] [--spec FILE]
    dbtier host-keys [--forget HOST:PORT]    the SSH host keys pinned for the cluster
    dbtier blocks register                   make dbtier's block types creatable in the Prefect UI

``dbtier VERB --help`` shows a verb's options and their defaults.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from dbtier.arguments import Parser
from dbtier.errors import DbtierError
from dbtier.health import format_table
from dbtier.providers.base import resolve_addresses
from dbtier.secrets import ROLES
from dbtier.spec import ClusterSpec, load_spec
from dbtier.topology import client_dsn


def _status(args: argparse.Namespace) -> int:
    from dbtier.bootstrap import checked_status
    from dbtier.engines.base import get_engine
    from dbtier.providers.base import get_provider

    spec = resolve_addresses(load_spec(args.spec))
    current = checked_status(get_engine(spec), get_provider(spec), spec)  # pid files checked against the ports
    backups = _backup_line(spec)
    if args.json:
        print(json.dumps({"cluster": spec.name, "healthy": current.health.healthy,
                          "leader": current.health.leader, "problems": current.health.problems,
                          "members": current.rows, "backups": backups}, indent=2))
    else:
        print(format_table(current.rows))
        print(f"{spec.name}: {current.health.sentence}")
        print(backups)
    return 0 if current.health.healthy else 1


def _backup_line(spec: ClusterSpec) -> str:
    """The backup summary; it never changes status's exit code (archive health has its own flow)."""
    from datetime import datetime, timezone

    from dbtier.backup import ops
    from dbtier.backup.catalog import summarize
    from dbtier.providers.base import get_provider

    try:
        return summarize(ops.catalog(get_provider(spec), spec), datetime.now(timezone.utc))
    except DbtierError as err:
        return f"backups: unknown ({err.one_line()})"


def _dsn(args: argparse.Namespace) -> int:
    print(client_dsn(resolve_addresses(load_spec(args.spec))))
    return 0


def _password(args: argparse.Namespace) -> int:
    from blocks.passwords import load_passwords

    print(getattr(load_passwords(load_spec(args.spec)), args.role))
    return 0


def _host_keys(args: argparse.Namespace) -> int:
    """List the host keys pinned for the cluster, or forget some (a host rebuilt on purpose)."""
    from blocks.hostkeys import forget_pins, load_pins
    from dbtier.providers.hostkeys import fingerprint, host_id, spec_host_keys, split_host_id

    spec = load_spec(args.spec)
    if spec.provider == "local":
        print(f"cluster {spec.name} runs on this machine (provider local): no SSH host, no host key")
        return 0
    if args.forget:
        names = [host_id(*split_host_id(text)) for text in args.forget]
        gone = forget_pins(spec.host_owner, names)
        for name in names:
            print(f"{name}: {'pin forgotten; the next connection pins the key it sees' if name in gone else 'no pin'}")
        return 0 if gone else 1
    pins = load_pins(spec.host_owner)
    fixed = spec_host_keys(spec.ssh.hosts if spec.ssh else [])
    for name, line in sorted({**pins, **fixed}.items()):
        how = "from the spec" if name in fixed else "pinned on first use"
        print(f"{name}  {line.split()[0]}  {fingerprint(line)}  ({how})")
    if not pins and not fixed:
        print(f"no host key pinned for cluster {spec.host_owner} yet (the first connection to each host pins its key)")
    return 0


def _blocks(args: argparse.Namespace) -> int:
    from blocks.register import register_block_types

    for sentence in register_block_types():
        print(sentence)
    return 0


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
    "serve": ("deployments.serve", "serve one cluster's scheduled deployments (--list prints the plan)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dbtier", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dbtier {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB", parser_class=Parser)
    for verb, (module, text) in FLOW_VERBS.items():
        sub.add_parser(verb, help=f"{text} (= python -m {module})", add_help=False)
    for name, func, text in (
        ("status", _status, "member table and health, without a flow run; exit 0 only when healthy"),
        ("dsn", _dsn, "the read-write DSN (no password in it)"),
        ("password", _password, "print one of the cluster's passwords (from its Prefect Secret block)"),
        ("host-keys", _host_keys, "the SSH host keys pinned for the cluster; --forget HOST:PORT after a rebuild"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--spec", help="cluster spec YAML (default: deployments/clusters/default.yaml or $DBTIER_SPEC)")
        cmd.set_defaults(func=func)
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "password":
            cmd.add_argument("--role", choices=ROLES, default="app", help="whose password")
        if name == "host-keys":
            cmd.add_argument("--forget", nargs="+", metavar="HOST[:PORT]", help="forget these hosts' pinned keys")
    blocks = sub.add_parser("blocks", help="register dbtier's block types with the Prefect API (for the UI)",
                            description="Register ClusterSpecBlock, S3Repository, SSHCredentials and ProxmoxCredentials "
                            "with the Prefect API (PREFECT_API_URL), so they can be created from the UI.")
    blocks.add_argument("action", choices=["register"], help="what to do with the block types")
    blocks.set_defaults(func=_blocks)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbtier")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
        return "unknown"


def run_flow_verb(verb: str, argv: list[str]) -> int:
    """Run ``dbtier VERB ...`` through the flow module's own ``main(argv)``; its usage says ``dbtier VERB``."""
    module = importlib.import_module(FLOW_VERBS[verb][0])
    saved, sys.argv[0] = sys.argv[0], f"dbtier {verb}"  # argparse names the program after argv[0]
    try:
        code: int = module.main(argv)
        return code
    finally:
        sys.argv[0] = saved


def main(argv: list[str] | None = None) -> int:
    """``dbtier`` alone prints the help and exits 0; an unknown verb is one line, exit 2."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # as flows/__init__.py
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        build_parser().print_help()
        return 0
    if argv[0] in FLOW_VERBS:
        return run_flow_verb(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    from blocks.api import prefect_api

    try:
        with prefect_api():  # the Prefect API is input too: one line when it does not answer
            code: int = args.func(args)
        return code
    except DbtierError as err:
        print(f"dbtier: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
