"""The ``dbtier`` verbs that answer without a flow run: status, dsn, password, host-keys, blocks register.

``dbtier/cli.py`` parses them and hands them here by module name (as it hands the flow verbs to
``flows.*``), so the library never imports ``blocks/``. They see the cluster as the flows do: keys,
host-key pins and PVE tokens through :data:`blocks.loaders.PREFECT_LOADERS`, passwords in Secret blocks.
Prefect itself is imported only by the verbs that read it (a local cluster's status does not).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from blocks.loaders import PREFECT_LOADERS
from dbtier.errors import DbtierError
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec, load_spec
from dbtier.topology import client_dsn


def status(args: argparse.Namespace) -> int:
    from dbtier.bootstrap import checked_status
    from dbtier.engines.base import get_engine
    from dbtier.health import format_table
    from dbtier.providers.base import get_provider

    spec = resolve_addresses(load_spec(args.spec), loaders=PREFECT_LOADERS)
    current = checked_status(get_engine(spec), get_provider(spec, PREFECT_LOADERS), spec)  # pid files vs ports
    backups = backup_line(spec)
    if args.json:
        print(json.dumps({"cluster": spec.name, "healthy": current.health.healthy,
                          "leader": current.health.leader, "problems": current.health.problems,
                          "members": current.rows, "backups": backups}, indent=2))
    else:
        print(format_table(current.rows))
        print(f"{spec.name}: {current.health.sentence}")
        print(backups)
    return 0 if current.health.healthy else 1


def backup_line(spec: ClusterSpec) -> str:
    """The backup summary; it never changes status's exit code (archive health has its own flow)."""
    from datetime import datetime, timezone

    from dbtier.backup import ops
    from dbtier.backup.catalog import summarize
    from dbtier.providers.base import get_provider

    try:
        return summarize(ops.catalog(get_provider(spec, PREFECT_LOADERS), spec), datetime.now(timezone.utc))
    except DbtierError as err:
        return f"backups: unknown ({err.one_line()})"


def dsn(args: argparse.Namespace) -> int:
    print(client_dsn(resolve_addresses(load_spec(args.spec), loaders=PREFECT_LOADERS)))
    return 0


def password(args: argparse.Namespace) -> int:
    from blocks.passwords import load_passwords

    print(getattr(load_passwords(load_spec(args.spec)), args.role))
    return 0


def host_keys(args: argparse.Namespace) -> int:
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


def register_blocks(args: argparse.Namespace) -> int:
    from blocks.register import register_block_types

    for sentence in register_block_types():
        print(sentence)
    return 0


#: ``dbtier VERB`` -> what answers it.
VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": status, "dsn": dsn, "password": password, "host-keys": host_keys, "blocks": register_blocks,
}


def answer(args: argparse.Namespace) -> int:
    """Answer ``dbtier <args.command>``; the Prefect API's transport errors become its one line."""
    from blocks.api import prefect_api

    with prefect_api():
        return VERBS[args.command](args)
