"""The ``dbtier`` command: fast answers for operators, without starting a flow run.

    dbtier status [--spec FILE] [--json]     exit 0 only when healthy
    dbtier dsn [--spec FILE]                 the read-write connection string (no password)
    dbtier password [--role app] [--spec FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dbtier.errors import DbtierError
from dbtier.health import format_table
from dbtier.providers.base import resolve_addresses
from dbtier.secrets import ROLES
from dbtier.spec import ClusterSpec, load_spec
from dbtier.topology import client_dsn


def _status(args: argparse.Namespace) -> int:
    from dbtier.engines.base import get_engine

    spec = resolve_addresses(load_spec(args.spec))
    current = get_engine(spec).status(spec)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbtier", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("status", _status, "member table and health; exit 0 only when healthy"),
        ("dsn", _dsn, "the read-write DSN (no password in it)"),
        ("password", _password, "print one of the cluster's passwords (from its Prefect Secret block)"),
        ("host-keys", _host_keys, "the SSH host keys pinned for the cluster; --forget HOST:PORT after a rebuild"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--spec", help="cluster spec YAML (default: the built-in default spec)")
        cmd.set_defaults(func=func)
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "password":
            cmd.add_argument("--role", choices=ROLES, default="app")
        if name == "host-keys":
            cmd.add_argument("--forget", nargs="+", metavar="HOST[:PORT]", help="forget these hosts' pinned keys")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # as flows/__init__.py
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except DbtierError as err:
        print(f"dbtier: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
