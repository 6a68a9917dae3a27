"""The ``dbtier`` verbs that answer without a flow run: status, dsn, password, host-keys, certs, ca, blocks register.

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
from dbtier.monitoring.status import alerts_line
from dbtier.providers.base import resolve_addresses
from dbtier.spec import ClusterSpec, load_spec


def status(args: argparse.Namespace) -> int:
    from dbtier.bootstrap import checked_status
    from dbtier.engines.base import get_engine
    from dbtier.health import format_table
    from dbtier.providers.base import get_provider

    spec = _client_spec(args)
    engine = get_engine(spec)
    checked = checked_status(engine, get_provider(spec, PREFECT_LOADERS), spec)  # pid files vs ports
    routers, disagreements = engine.router_views(spec)
    current = checked.with_router_problems(disagreements)
    backups = backup_line(spec)
    alerts = alerts_line(spec)
    if args.json:
        print(json.dumps({"cluster": spec.name, "healthy": current.health.healthy,
                          "leader": current.health.leader, "problems": current.health.problems,
                          "members": current.rows, "routers": routers, "backups": backups, "alerts": alerts},
                         indent=2))
    else:
        print(format_table(current.rows))
        for line in routers:
            print(line)
        print(f"{spec.name}: {checked.health.sentence}")  # the disagreements follow, one line each
        for problem in disagreements:
            print(f"router disagrees: {problem}")
        print(backups)
        if alerts:
            print(alerts)
    return 0 if current.health.healthy else 1


def backup_line(spec: ClusterSpec) -> str:
    """The backup summary; it never changes status's exit code (archive health has its own flow)."""
    from datetime import datetime, timezone

    from blocks.backup import load_backup_secrets
    from dbtier.backup.catalog import summarize
    from dbtier.engines.base import get_engine
    from dbtier.providers.base import get_provider

    try:
        catalog = get_engine(spec).read_catalog(get_provider(spec, PREFECT_LOADERS), spec, load_backup_secrets(spec))
        return summarize(catalog, datetime.now(timezone.utc))
    except DbtierError as err:
        return f"backups: unknown ({err.one_line()})"


def dsn(args: argparse.Namespace) -> int:
    from dbtier.engines.base import get_engine

    spec = _client_spec(args)
    print(get_engine(spec).dsn(spec, args.route, args.pooled))
    return 0


def _client_spec(args: argparse.Namespace) -> ClusterSpec:
    """The spec of ``--spec`` with its hosts' addresses, this machine holding the CA certificate its clients
    verify the members with."""
    from blocks.ca import ensure_client_ca

    spec = load_spec(args.spec)
    ensure_client_ca(spec)
    return resolve_addresses(spec, loaders=PREFECT_LOADERS)


def password(args: argparse.Namespace) -> int:
    from blocks.passwords import load_passwords
    from dbtier.errors import SpecError
    from dbtier.secrets import role_names

    spec = load_spec(args.spec)
    roles = role_names(spec)
    if args.role not in roles:  # each engine has its own secrets, so the parser cannot list them
        raise SpecError(f"--role: cluster {spec.name} (engine {spec.engine}) has no {args.role} secret; "
                        f"choose one of {', '.join(roles)}")
    print(getattr(load_passwords(spec), args.role))
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


def _ca_cert(spec: ClusterSpec) -> bytes:
    """The cluster CA's certificate from the Prefect API, or a one-line refusal saying where it should be."""
    from blocks.api import missing_block_advice
    from blocks.ca import PREFECT_CA_STORE
    from dbtier.ca_store import ca_cert_variable
    from dbtier.errors import BlockMissing

    pem = PREFECT_CA_STORE.load_cert(spec.name)
    if pem is None:
        raise BlockMissing(missing_block_advice(spec, ca_cert_variable(spec.name)))
    return pem


def certs(args: argparse.Namespace) -> int:
    """The certificates the members really hold, judged against the cluster CA; exit 1 when one is bad."""
    import sys

    from dbtier import tls_files
    from dbtier.certs import describe
    from dbtier.health import format_table
    from dbtier.providers.base import get_provider
    from dbtier.tls import fix_hint

    spec = _client_spec(args)
    ca_pem, now = _ca_cert(spec), tls_files.now_utc()
    rows = tls_files.survey(get_provider(spec, PREFECT_LOADERS), spec, ca_pem, now)
    ca = describe(ca_pem)
    print(format_table([r.row() for r in rows]))
    print(f"CA: {ca.subject}, until {ca.not_after:%Y-%m-%d} ({ca.days_left(now)} days left); `dbtier ca` prints it")
    hint = fix_hint(f" --spec {args.spec}" if args.spec else "")
    bad = [r for r in rows if r.problem]
    for row in bad:
        print(f"dbtier: {row.need.label} on {row.need.host}: {row.need.paths.cert}: {row.problem}; {hint}", file=sys.stderr)
    return 1 if bad else 0


def ca(args: argparse.Namespace) -> int:
    """Write the CA certificate (public) under the cluster's work directory; print its path and the PEM."""
    from dbtier import workdir

    spec = load_spec(args.spec)
    pem = _ca_cert(spec)
    path = workdir.ca_cert_file(spec.name)
    workdir.write_private(path, pem, 0o644)
    print(path)
    print(pem.decode(), end="")
    return 0


def register_blocks(args: argparse.Namespace) -> int:
    from blocks.register import register_block_types

    for sentence in register_block_types():
        print(sentence)
    return 0


#: ``dbtier VERB`` -> what answers it.
VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": status, "dsn": dsn, "password": password, "host-keys": host_keys, "blocks": register_blocks,
    "certs": certs, "ca": ca,
}


def answer(args: argparse.Namespace) -> int:
    """Answer ``dbtier <args.command>``; the Prefect API's transport errors become its one line."""
    from blocks.api import prefect_api

    with prefect_api():
        return VERBS[args.command](args)
