"""The oplog archiver of each member as a supervised service (pure: spec in, a Service and its files out).

One archiver per member, on the member's host, tailing that member's own ``local.oplog.rs`` over a direct
connection (:func:`dbtier.engines.mongodb.rs.member_client`), into its own archive ``oplog/<cluster>/<member>/``
of a repository (:func:`archive_location`). Why every member and not only the primary: the archiver
(:mod:`~dbtier.engines.mongodb.archiver`) takes a one-host URI and tails that member, and its index has one
writer and no lock. Following the primary would need a supervisor that moves the process on each election and
never lets the old and the new one write the same index at once; a fixed member (mongo0) would stop archiving
whenever that member or its host is down. A secondary's oplog holds the same entries with the same ``ts``, so
each member's archive stands alone: while any member runs, one archive keeps growing, and a restore picks an
archive whose chain covers its target (:func:`~dbtier.engines.mongodb.oplog.chain_problems`). The costs: one
copy of the oplog per member in the repository, and an archive may keep entries its member later rolled back
(the cursor reads without majority read concern), so a restore should prefer the archive of a member that did
not roll back.

Both sides of the archiver's argv live here: :func:`archiver_service` builds it, :func:`parse_options` (which
the archiver's ``main`` calls) checks it, so a test can feed one to the other.

Secrets never reach argv, the environment or the Service's repr: the member's URI (``root`` and its password)
and the S3 keys are files written 0600 (:data:`FILE_MODE`) that the archiver reads at start
(:func:`~dbtier.engines.mongodb.archiver.read_secret_file`). The S3 settings that are not secret (bucket,
endpoint, region, CA) are on argv, from the repository's :class:`~dbtier.backup.repos.S3Target`.
"""

from __future__ import annotations

import argparse
import configparser
import re
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote_plus

from dbtier.backup.repos import S3Target, fs_repo_path
from dbtier.backup.settings import FsRepository, S3RepositorySettings
from dbtier.engines.mongodb.config import MongoMember
from dbtier.engines.mongodb.dump import oplog_dir, repo_root
from dbtier.errors import BackupError, DbtierError, SecretError
from dbtier.procs import Service
from dbtier.runtime import runtime_env
from dbtier.spec import ClusterSpec

KIND = "oplog-archiver"
MODULE = "dbtier.engines.mongodb.archiver"
DESCRIPTION = "Tail one member's oplog into contiguous, indexed slices until SIGTERM."
#: The section of the S3 credentials file.
S3_SECTION = "s3"
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
#: The user the archiver logs in as: it reads ``local.oplog.rs``, which the ``root`` role allows.
ARCHIVER_USER = "root"
#: The mode of every file :func:`archiver_files` returns.
FILE_MODE = 0o600


# -- the archive's place, the options the archiver runs with (built below, parsed by it) ------------


def archive_location(repo: str, s3: bool, cluster: str, member: str) -> str:
    """Where ``member``'s archive lives in a repository: its own directory (or key prefix) under the cluster's
    oplog directory, so each member's archiver is the one writer of its index.

    >>> archive_location("/var/lib/dbtier/backups", False, "orders", "mongo1")
    '/var/lib/dbtier/backups/oplog/orders/mongo1/'
    >>> archive_location("/dbtier", True, "orders", "mongo1"), archive_location("/", True, "orders", "mongo0")
    ('dbtier/oplog/orders/mongo1/', 'oplog/orders/mongo0/')
    """
    return f"{oplog_dir(repo_root(repo, s3), cluster)}{member}/"


def parse_s3_credentials(text: str, path: str) -> tuple[str, str]:
    """(access key id, secret access key) of a credentials file; errors name the file, never its content.

    >>> parse_s3_credentials("[s3]\\naccess_key_id = AK\\nsecret_access_key = s%cr=t\\n", "/c")
    ('AK', 's%cr=t')
    """
    parser = configparser.ConfigParser(interpolation=None)
    fix = f"S3 credentials file {path}: write [{S3_SECTION}] with access_key_id = ... and secret_access_key = ..."
    try:
        parser.read_string(text)
        key_id, secret = parser[S3_SECTION]["access_key_id"].strip(), parser[S3_SECTION]["secret_access_key"].strip()
    except (configparser.Error, KeyError):
        raise SecretError(fix) from None
    if not key_id or not secret:
        raise SecretError(fix)
    return key_id, secret


class UsageError(DbtierError):
    """Bad options: one line, exit 2."""

    exit_code = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class S3Options:
    """Where the S3 store is; the keys stay in ``credentials_file`` until the store is opened."""

    bucket: str
    endpoint: str
    region: str
    prefix: str
    credentials_file: str
    ca_file: str | None
    verify_tls: bool
    path_style: bool


@dataclass(frozen=True)
class Options:
    """The archiver's options, checked: exactly one repository (``repo_path`` or ``s3``)."""

    uri_file: str
    cluster: str
    member: str
    slice_s: float
    max_entries: int
    repo_path: str | None = None
    s3: S3Options | None = None

    @property
    def location(self) -> str:
        """The archive's directory, or its key prefix in the bucket."""
        if self.s3 is not None:
            return archive_location(self.s3.prefix, True, self.cluster, self.member)
        return archive_location(self.repo_path or "/", False, self.cluster, self.member)


def _parser() -> _Parser:
    parser = _Parser(prog="python -m dbtier.engines.mongodb.archiver", description=DESCRIPTION)
    add = parser.add_argument
    add("--uri-file", required=True, help="a 0600 file holding mongodb://user:password@host:port/")
    add("--cluster", required=True, help="the cluster's name: the archive is oplog/<cluster>/<member>/")
    add("--member", required=True, help="the member tailed: its archive's directory and the name in messages")
    add("--repo-path", help="an fs repository's directory (the archive goes under its oplog/ directory)")
    add("--s3-bucket", help="an S3 repository's bucket")
    add("--s3-endpoint", help="its endpoint URL, https://host:port")
    add("--s3-region", default="us-east-1", help="the bucket's region")
    add("--s3-prefix", default="/dbtier", help="the repository's path inside the bucket")
    add("--s3-credentials-file", help="a 0600 INI file: [s3] access_key_id = ..., secret_access_key = ...")
    add("--s3-ca-file", help="the PEM file of the CA that signed the endpoint's certificate")
    add("--s3-no-verify-tls", action="store_true", help="do not verify the endpoint's certificate (a lab only)")
    add("--s3-path-style", action="store_true", help="address the bucket as endpoint/bucket")
    add("--slice-s", type=float, default=60, help="close a slice at most this many seconds old")
    add("--max-entries", type=int, default=10000, help="close a slice holding this many entries")
    return parser


def _refusal(args: argparse.Namespace) -> str | None:
    """Why the options cannot run, in one line, or None."""
    s3_only = [f"--{k.replace('_', '-')}" for k in ("s3_endpoint", "s3_credentials_file", "s3_ca_file")
               if getattr(args, k)]
    for flag, value in (("--cluster", args.cluster), ("--member", args.member)):
        if not _NAME.match(value):
            return f"{flag} {value!r}: a name of letters, digits, '_', '-' and '.' (it names a directory)"
    if (args.repo_path is None) == (args.s3_bucket is None):
        return "give the archive's repository: --repo-path DIR or --s3-bucket NAME (one of them)"
    if args.repo_path is not None:
        if not args.repo_path.startswith("/"):
            return f"--repo-path {args.repo_path!r}: give an absolute path"
        if s3_only or args.s3_no_verify_tls or args.s3_path_style:
            return "the --s3-* options need --s3-bucket, not --repo-path"
    else:
        if not args.s3_endpoint or not args.s3_credentials_file:
            return "--s3-bucket needs --s3-endpoint URL and --s3-credentials-file FILE"
        if not args.s3_endpoint.startswith(("https://", "http://")):
            return f"--s3-endpoint {args.s3_endpoint!r}: give a URL, e.g. https://s3.eu-west-1.amazonaws.com:443"
        if not args.s3_prefix.startswith("/"):
            return f"--s3-prefix {args.s3_prefix!r}: start it with /, e.g. /dbtier"
    if not args.slice_s > 0 or args.max_entries < 1:
        return "--slice-s must be above 0 and --max-entries at least 1"
    return None


def parse_options(argv: list[str] | None) -> Options:
    """The checked options, or a one-line :class:`UsageError`."""
    args = _parser().parse_args(argv)
    problem = _refusal(args)
    if problem:
        raise UsageError(problem)
    s3 = None if args.s3_bucket is None else S3Options(
        args.s3_bucket, args.s3_endpoint, args.s3_region, args.s3_prefix, args.s3_credentials_file, args.s3_ca_file,
        not args.s3_no_verify_tls, args.s3_path_style)
    return Options(args.uri_file, args.cluster, args.member, args.slice_s, args.max_entries, args.repo_path, s3)


# -- the service -----------------------------------------------------------------------------------


def archiver_dir(member: MongoMember) -> str:
    """Its files: the URI file, the S3 credentials file, pid file and log.

    >>> archiver_dir(MongoMember("mongo1", "h", 27018, 1, "/d/orders/mongo1"))
    '/d/orders/mongo1/oplog-archiver'
    """
    return f"{member.dir}/{KIND}"


def uri_file(member: MongoMember) -> str:
    return f"{archiver_dir(member)}/member.uri"


def s3_credentials_file(member: MongoMember) -> str:
    return f"{archiver_dir(member)}/s3.credentials"


def repository(spec: ClusterSpec, repo: int = 1) -> FsRepository | S3RepositorySettings:
    """The spec's repository ``repo`` (numbered from 1, as pgBackRest's ``repoN``); a BackupError beyond them."""
    repos = spec.backup.repositories
    if not 1 <= repo <= len(repos):
        raise BackupError(f"oplog archiver: repository {repo} is not in backup.repositories (it has {len(repos)}); "
                          f"pick 1 to {len(repos)}")
    return repos[repo - 1]


def member_uri(spec: ClusterSpec, member: MongoMember, password: str) -> str:
    """The URI in the member's URI file: the member alone (a direct connection), TLS against its CA copy.

    >>> m = MongoMember("mongo0", "10.0.0.5", 27017, 2, "/d/mongo0")
    >>> member_uri(ClusterSpec(engine="mongodb", tls={"enabled": False}), m, "p@ss")
    'mongodb://root:p%40ss@10.0.0.5:27017/?authSource=admin'
    >>> member_uri(ClusterSpec(engine="mongodb"), m, "pw")
    'mongodb://root:pw@10.0.0.5:27017/?authSource=admin&tls=true&tlsCAFile=%2Fd%2Fmongo0%2Ftls%2Fca.crt'
    """
    uri = f"mongodb://{quote_plus(ARCHIVER_USER)}:{quote_plus(password)}@{member.address}/?authSource=admin"
    return uri + (f"&tls=true&tlsCAFile={quote_plus(member.tls_ca)}" if spec.tls.enabled else "")


def _s3_target(s3: S3Target | None, repo: int) -> S3Target:
    if s3 is None:
        raise BackupError(f"oplog archiver: backup.repositories.{repo - 1} is an s3 repository; load its "
                          "S3Repository block and pass its S3Target")
    return s3


def store_argv(spec: ClusterSpec, member: MongoMember, s3: S3Target | None = None, repo: int = 1) -> list[str]:
    """The options that choose the archive's store: ``--repo-path`` or the ``--s3-*`` ones (no key among them).

    >>> m = MongoMember("mongo0", "h", 27017, 2, "/d/mongo0")
    >>> store_argv(ClusterSpec(engine="mongodb", data_root="/d"), m)
    ['--repo-path=/d/backups']
    """
    settings = repository(spec, repo)
    if isinstance(settings, FsRepository):
        return [f"--repo-path={fs_repo_path(spec, settings)}"]
    target = _s3_target(s3, repo)
    argv = [f"--s3-bucket={target.bucket}", f"--s3-endpoint=https://{target.endpoint}:{target.port}",
            f"--s3-region={target.region}", f"--s3-prefix={settings.path}",
            f"--s3-credentials-file={s3_credentials_file(member)}"]
    if target.ca_file:
        argv.append(f"--s3-ca-file={target.ca_file}")
    if not target.verify_tls:
        argv.append("--s3-no-verify-tls")
    if target.uri_style == "path":
        argv.append("--s3-path-style")
    return argv


def archiver_service(spec: ClusterSpec, member: MongoMember, s3: S3Target | None = None, *, repo: int = 1) -> Service:
    """``member``'s archiver as a service on its host, run as the database OS user by the host's runtime Python
    (``binaries.python``) on the dbtier code shipped there (:mod:`dbtier.runtime`).

    ``s3`` is repository ``repo``'s resolved block when that repository is an S3 one (its keys stay out of
    the Service: they go in :func:`archiver_files`).

    >>> m = MongoMember("mongo1", "h", 27018, 1, "/d/orders/mongo1", 1)
    >>> s = archiver_service(ClusterSpec(engine="mongodb", name="orders", data_root="/d"), m)
    >>> s.name, s.kind, s.host, s.argv[:5]
    ('mongo1-oplog-archiver', 'oplog-archiver', 'h', ['/opt/dbtier/venv/bin/python', '-m', 'dbtier.engines.mongodb.archiver', '--uri-file=/d/orders/mongo1/oplog-archiver/member.uri', '--cluster=orders'])
    >>> s.env["PYTHONPATH"]
    '/d/orders/runtime'
    """
    marker = f"--uri-file={uri_file(member)}"
    argv = [spec.binaries.python, "-m", MODULE, marker, f"--cluster={spec.name}", f"--member={member.name}",
            *store_argv(spec, member, s3, repo), f"--slice-s={spec.mongo.oplog_slice_s}"]
    name = f"{member.name}-{KIND}" + (f"-repo{repo}" if repo != 1 else "")
    return Service(name=name, kind=KIND, host=member.host, argv=argv, pidfile=f"{archiver_dir(member)}/{KIND}.pid",
                   logfile=f"{archiver_dir(member)}/{KIND}.log", marker=marker, ports=[], env=runtime_env(spec))


def s3_credentials(target: S3Target) -> str:
    """The S3 credentials file the archiver reads (an INI section, so a person can tell the two keys apart).

    >>> print(s3_credentials(S3Target("b", "e", 443, "r", "host", "AKID", "s3cr3t")), end="")
    [s3]
    access_key_id = AKID
    secret_access_key = s3cr3t
    """
    return f"[{S3_SECTION}]\naccess_key_id = {target.access_key_id}\nsecret_access_key = {target.secret_access_key}\n"


def archiver_files(spec: ClusterSpec, member: MongoMember, root_password: str, s3_credentials_of: S3Target | None,
                   *, repo: int = 1) -> dict[str, bytes]:
    """The files the archiver reads, each to be written with mode :data:`FILE_MODE` on the member's host: its
    URI file, and the S3 credentials file when repository ``repo`` is an S3 one."""
    files = {uri_file(member): (member_uri(spec, member, root_password) + "\n").encode()}
    if isinstance(repository(spec, repo), S3RepositorySettings):
        files[s3_credentials_file(member)] = s3_credentials(_s3_target(s3_credentials_of, repo)).encode()
    return files
