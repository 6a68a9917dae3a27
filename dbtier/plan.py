"""``provision --plan``: what provisioning a spec would create, worked out from the spec alone.

Pure: nothing is read from or written to a host, Prefect or the network. Files are rendered with placeholder
passwords (``<secret:ROLE>``), so the plan shows where each secret goes and never holds one.
"""

from __future__ import annotations

from collections.abc import Iterable

from dbtier.backup.repos import S3Target
from dbtier.bootstrap import all_services
from dbtier.ca_store import ca_key_block
from dbtier.engines.base import Engine
from dbtier.procs import Service
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec

PLACEHOLDER = "<secret:{role}>"


def placeholder_passwords(engine: Engine) -> Passwords:
    """
    >>> from dbtier.engines.postgres.engine import PostgresEngine
    >>> placeholder_passwords(PostgresEngine()).app
    '<secret:app>'
    """
    return Passwords(**{role.name: PLACEHOLDER.format(role=role.name) for role in engine.secret_roles})


def _service_line(service: Service) -> str:
    """
    >>> _service_line(Service("pg0", "patroni", "10.0.0.1", ["patroni", "/d/p.yml"], "/d/p.pid", "/d/p.log", "x",
    ...                       [("postgres", 5432), ("rest", 8008)]))
    'pg0 (patroni) on 10.0.0.1: postgres 5432, rest 8008; runs patroni'
    """
    ports = ", ".join(f"{label} {port}" for label, port in service.ports) or "no port"
    runs = service.argv[0].rsplit("/", 1)[-1] if service.argv else "?"
    return f"{service.name} ({service.kind}) on {service.host}: {ports}; runs {runs}" + (
        " as root" if service.as_root else "")


def redacted_roles(content: bytes, roles: Iterable[str]) -> list[str]:
    """The roles whose placeholder a rendered file holds, as it is or quoted into a URI.

    >>> redacted_roles(b"password: <secret:app>\\nrest: <secret:restapi>", ["superuser", "app", "restapi"])
    ['app', 'restapi']
    >>> redacted_roles(b"mongodb://root:%3Csecret%3Asuperuser%3E@h:27017/", ["superuser", "app"])
    ['superuser']
    """
    from urllib.parse import quote

    text = content.decode(errors="replace")
    return [role for role in roles if any(form in text for form in (PLACEHOLDER.format(role=role),
                                                                     quote(PLACEHOLDER.format(role=role), safe="")))]


#: An S3 repository's keys (its block's), as the plan shows them; the bucket and endpoint are the block's too.
S3_KEY_ROLES = ("s3-access-key", "s3-secret-key")
S3_PLACEHOLDER = S3Target("<bucket>", "<endpoint>", 443, "<region>", "path",
                          PLACEHOLDER.format(role=S3_KEY_ROLES[0]), PLACEHOLDER.format(role=S3_KEY_ROLES[1]))


def _files(engine: Engine, spec: ClusterSpec, service: Service, passwords: Passwords) -> dict[str, tuple[bytes, int]]:
    """A service's files with their modes: a member's or router's configuration, or an archiver's (0600)."""
    files = {path: (content, engine.file_mode(spec, path))
             for path, content in engine.member_files(spec, service, passwords).items()}
    files.update({path: (content, 0o600) for path, content in
                  engine.archiver_files(spec, service, passwords, S3_PLACEHOLDER).items()})
    return files


def file_lines(engine: Engine, spec: ClusterSpec, services: Iterable[Service],
               show: bool = False) -> list[str]:
    """One line per configuration file (path, owner service, size, secrets it holds); with ``show`` its
    content too, indented, secrets as placeholders."""
    lines: list[str] = []
    passwords = placeholder_passwords(engine)
    for service in services:
        for path, (content, mode) in _files(engine, spec, service, passwords).items():
            roles = redacted_roles(content, [*passwords.roles(), *S3_KEY_ROLES])
            holds = f"; holds the {', '.join(roles)} secret(s), redacted" if roles else ""
            lines.append(f"{path} ({service.name} on {service.host}, mode {mode:04o}, {len(content)} bytes{holds})")
            if show:
                lines += [f"    | {line}" for line in content.decode(errors="replace").splitlines()]
    return lines


def provision_plan(engine: Engine, spec: ClusterSpec, show_files: bool = False) -> list[str]:
    """The plan, one line each: hosts, services and ports, files, secrets, where the data goes."""
    services = all_services(engine, spec)
    configured = (engine.member_services(spec) + engine.router_services(spec)  # those with files of their own
                  + (engine.archiver_services(spec) if engine.archives(spec) else []))
    hosts: dict[str, list[str]] = {}
    for service in services:
        hosts.setdefault(service.host, []).append(service.name)
    lines = [f"plan for cluster {spec.name}: engine {spec.engine}, provider {spec.provider}; "
             "nothing was created or changed", "", f"hosts ({len(hosts)}):"]
    lines += [f"  {host}: {', '.join(names)}" for host, names in sorted(hosts.items())]
    lines += ["", f"services ({len(services)}; systemd units where the host runs systemd, detached processes "
                  "elsewhere):"]
    lines += [f"  {_service_line(s)}" for s in services]
    lines += ["", "files:"] + [f"  {line}" for line in file_lines(engine, spec, configured, show_files)]
    lines += ["", "secrets (Prefect Secret blocks, created when missing, never printed):",
              "  " + ", ".join(role.block(spec.name) for role in engine.secret_roles),
              f"  the cluster CA's key: {ca_key_block(spec.name)}; a certificate per host, signed by it",
              "", f"data: {spec.cluster_dir} on each host"]
    return lines
