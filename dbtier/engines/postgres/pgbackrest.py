"""pgBackRest config files and command lines, built as data (pure: no I/O).

Every member host gets one config per cluster (``<cluster_dir>/pgbackrest/pgbackrest.conf``),
with one stanza named after the cluster. Members that share a host share that file, so every
command names the member it acts on (``--pg1-path``, ``--pg1-port``, ``--pg1-socket-path``):
a plain ``archive-push %p`` fails as soon as a member other than the first is primary.
"""

from __future__ import annotations

import shlex

from dbtier.backup.repos import S3Target, fs_repo_path
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import PgMember, pgpass_entry

SUPERUSER = "postgres"


def config_path(spec: ClusterSpec) -> str:
    return f"{spec.backup_dir}/pgbackrest.conf"


def pgpass_path(spec: ClusterSpec) -> str:
    """The libpq password file pgBackRest connects with (superuser, mode 0600)."""
    return f"{spec.backup_dir}/pgpass"


def repo_lines(spec: ClusterSpec, s3: dict[int, S3Target], cipher_pass: str | None) -> list[str]:
    """The ``repoN-*`` lines of ``[global]``: one block per repository of the spec, in order."""
    lines: list[str] = []
    for n, repo in enumerate(spec.backup.repositories, start=1):
        if repo.type == "fs":
            lines.append(f"repo{n}-path={fs_repo_path(spec, repo)}")
        else:
            target = s3[n]
            lines += [
                f"repo{n}-type=s3",
                f"repo{n}-path={repo.path}",
                f"repo{n}-s3-bucket={target.bucket}",
                f"repo{n}-s3-endpoint={target.endpoint}",
                f"repo{n}-s3-region={target.region}",
                f"repo{n}-s3-uri-style={target.uri_style}",
                f"repo{n}-s3-key={target.access_key_id}",
                f"repo{n}-s3-key-secret={target.secret_access_key}",
                f"repo{n}-storage-port={target.port}",
            ]
            if target.ca_file:
                lines.append(f"repo{n}-storage-ca-file={target.ca_file}")
            if not target.verify_tls:
                lines.append(f"repo{n}-storage-verify-tls=n")
        # Small files travel bundled: a few objects instead of one per relation file (far fewer S3 requests).
        lines.append(f"repo{n}-bundle=y")
        # dbtier applies retention itself (expire with counts it computes); this only quiets pgBackRest's warning.
        lines.append(f"repo{n}-retention-full=9999999")
        if cipher_pass:
            lines += [f"repo{n}-cipher-type=aes-256-cbc", f"repo{n}-cipher-pass={cipher_pass}"]
    return lines


def render_config(
    spec: ClusterSpec,
    member: PgMember,
    s3: dict[int, S3Target],
    cipher_pass: str | None,
    *,
    stanza: str | None = None,
    home: str | None = None,
) -> str:
    """One host's pgbackrest.conf: the repositories of ``spec`` and the stanza of its cluster.

    ``member`` is the stanza's default pg1 (commands name their own member anyway). ``home`` puts
    log and lock files under another directory: the restore flow writes the source's config on
    the target's hosts.
    """
    home = home or spec.backup_dir
    settings = spec.backup
    lines = [
        "# Written by dbtier; rewritten on every provision. Holds repository secrets: keep it 0600.",
        "[global]",
        *repo_lines(spec, s3, cipher_pass),
        f"compress-type={settings.compress_type}",
        f"process-max={settings.process_max}",
        "start-fast=y",
        "expire-auto=n",
        f"archive-timeout={max(60, settings.archive_timeout_s * 2)}",
        f"log-path={home}/log",
        f"lock-path={home}/lock",
        f"spool-path={home}/spool",
        "log-level-console=warn",
        "log-level-file=info",
        "",
        f"[{stanza or spec.name}]",
        *pg_lines(1, member),
        "",
    ]
    return "\n".join(lines)


def pg_lines(n: int, member: PgMember) -> list[str]:
    return [
        f"pg{n}-path={member.data_dir}",
        f"pg{n}-port={member.pg_port}",
        f"pg{n}-socket-path={member.socket_dir}",
        f"pg{n}-user={SUPERUSER}",
    ]


def member_options(member: PgMember, n: int = 1) -> list[str]:
    """Command-line options that point pgBackRest's ``pg<n>`` at ``member``."""
    return [f"--{line}" for line in pg_lines(n, member)]


def base_argv(binary: str, config: str, stanza: str) -> list[str]:
    return [binary, f"--config={config}", f"--stanza={stanza}"]


def archive_command(spec: ClusterSpec, member: PgMember) -> str:
    """The member's ``archive_command``: push through pgBackRest with the member's own data dir.

    >>> from dbtier.engines.postgres.topology import pg_members
    >>> archive_command(ClusterSpec(), pg_members(ClusterSpec())[1])  # doctest: +NORMALIZE_WHITESPACE
    '/usr/bin/pgbackrest --config=/var/lib/dbtier/dbtier/pgbackrest/pgbackrest.conf --stanza=dbtier
     --pg1-path=/var/lib/dbtier/dbtier/pg1/pgdata archive-push %p'
    """
    argv = [*base_argv(spec.pg.binaries.pgbackrest, config_path(spec), spec.name), f"--pg1-path={member.data_dir}"]
    return shlex.join(argv) + " archive-push %p"


def restore_command(spec: ClusterSpec, member: PgMember) -> str:
    """The member's ``restore_command``: a replica that fell behind its slot fetches WAL from the archive."""
    argv = [*base_argv(spec.pg.binaries.pgbackrest, config_path(spec), spec.name), f"--pg1-path={member.data_dir}"]
    return shlex.join(argv) + ' archive-get %f "%p"'


def archive_parameters(spec: ClusterSpec) -> dict[str, str | int]:
    """Cluster-wide archiving parameters (the command itself is per member)."""
    return {"archive_mode": "on", "archive_timeout": spec.backup.archive_timeout_s}


def backup_argv(spec: ClusterSpec, primary: PgMember, kind: str, repo: int, standby: PgMember | None = None) -> list[str]:
    """``pgbackrest backup`` from ``primary`` (data copied from ``standby`` when given).

    >>> from dbtier.engines.postgres.topology import pg_members
    >>> backup_argv(ClusterSpec(), pg_members(ClusterSpec())[0], "full", 1)[-3:]
    ['--type=full', '--repo=1', 'backup']
    """
    argv = [*base_argv(spec.pg.binaries.pgbackrest, config_path(spec), spec.name), *member_options(primary)]
    if standby is not None:
        argv += [*member_options(standby, 2), "--backup-standby"]
    return [*argv, f"--type={kind}", f"--repo={repo}", "backup"]


def command_argv(spec: ClusterSpec, member: PgMember | None, command: str, *options: str) -> list[str]:
    """Any other pgBackRest command (``check``, ``verify``, ``info``, ``expire``, ``stanza-create``)."""
    argv = base_argv(spec.pg.binaries.pgbackrest, config_path(spec), spec.name)
    if member is not None:
        argv += member_options(member)
    return [*argv, *options, command]


def expire_options(repo: int, keep_full: int, keep_diff: int) -> list[str]:
    """
    >>> expire_options(2, 3, 7)
    ['--repo=2', '--repo2-retention-full=3', '--repo2-retention-diff=7']
    """
    return [f"--repo={repo}", f"--repo{repo}-retention-full={keep_full}", f"--repo{repo}-retention-diff={keep_diff}"]


def restore_bootstrap_command(spec: ClusterSpec, member: PgMember) -> str:
    """The custom bootstrap command Patroni runs on the member that initialises a restored cluster.

    pgBackRest writes the recovery settings (restore_command from the source's archive, the
    target); Patroni keeps them (``keep_existing_recovery_conf``) and promotes at the target.
    """
    source = spec.restore_from
    assert source is not None
    argv = [
        spec.pg.binaries.pgbackrest,
        f"--config={source.config}",
        f"--stanza={source.cluster}",
        f"--pg1-path={member.data_dir}",
        "--log-level-console=info",
        *source.options,
        "restore",
    ]
    return shlex.join(["/bin/sh", "-c", f"mkdir -p -m 0700 {shlex.quote(member.data_dir)} && exec {shlex.join(argv)}"])


def pgpass_line(password: str) -> str:
    """A pgpass line for the superuser on any member (``:`` and ``\\`` escaped).

    >>> pgpass_line("a:b")
    '*:*:*:postgres:a\\\\:b'
    """
    return pgpass_entry("*", "*", "*", SUPERUSER, password)
