"""mongodump and mongorestore command lines, their password file, and the repository's names (pure).

The password never travels on argv: the tools read it from a ``--config`` YAML file (mode 0600,
written by :func:`write_tool_config`); the URI on argv names the user only.

A repository (the fs path, or an S3 bucket's prefix) holds, beside pgBackRest's ``backup/`` and
``archive/``::

    mongodump/<cluster>/<label>/dump.archive.gz   mongodump --oplog --gzip --archive
    mongodump/<cluster>/<label>/dump.json         its DumpRecord (oplog start and end)
    oplog/<cluster>/index.json                    the slice index
    oplog/<cluster>/oplog-<T>.<I>-<T>.<I>.bson.gz the slices
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote_plus

from bson import Timestamp

from dbtier.engines.mongodb.config import MongoMember, MongoSettings
from dbtier.engines.mongodb.oplog import AUTH_NAMESPACES, parse_ts, ts_text
from dbtier.backup.s3 import repo_prefix
from dbtier.errors import BackupError
from dbtier.providers.base import Runner

TOOL_CONFIG_MODE = 0o600
ARCHIVE = "dump.archive.gz"
RECORD = "dump.json"
_LABEL = re.compile(r"^\d{8}-\d{6}F$")


def tool_config(password: str) -> str:
    """The ``--config`` file of mongodump and mongorestore: the password only (JSON is valid YAML).

    >>> tool_config('p"w')
    'password: "p\\\\"w"\\n'
    """
    return f"password: {json.dumps(password)}\n"


def write_tool_config(runner: Runner, path: str, password: str) -> None:
    runner.write_file(path, tool_config(password).encode(), mode=TOOL_CONFIG_MODE)


def tool_uri(members: list[MongoMember], settings: MongoSettings, user: str, tls_ca_file: str | None = None) -> str:
    """The URI on the tools' argv: the user, never the password.

    >>> from dbtier.engines.mongodb.config import mongo_members
    >>> tool_uri(mongo_members("/d", ["h"], MongoSettings(ports=(1, 2), priorities=(2, 1))), MongoSettings(), "root")
    'mongodb://root@h:1,h:2/?replicaSet=rs0&authSource=admin'
    """
    hosts = ",".join(m.address for m in members)
    uri = f"mongodb://{quote_plus(user)}@{hosts}/?replicaSet={settings.replset}&authSource=admin"
    if settings.tls:
        uri += "&tls=true" + (f"&tlsCAFile={quote_plus(tls_ca_file)}" if tls_ca_file else "")
    return uri


def dump_argv(binary: str, uri: str, config_path: str, archive_path: str) -> list[str]:
    """
    >>> dump_argv("mongodump", "mongodb://root@h:1/", "/w/tool.yaml", "/w/d.gz")
    ['mongodump', '--uri=mongodb://root@h:1/', '--config=/w/tool.yaml', '--oplog', '--gzip', '--archive=/w/d.gz', '--readPreference=primary']
    """
    return [binary, f"--uri={uri}", f"--config={config_path}", "--oplog", "--gzip", f"--archive={archive_path}",
            "--readPreference=primary"]


def restore_dump_argv(binary: str, uri: str, config_path: str, archive_path: str, *, replay_own_oplog: bool) -> list[str]:
    """The dump into a new replica set, but its users and roles (:data:`.oplog.AUTH_NAMESPACES`: the new set keeps
    its own); with the dump's own oplog when the restore ends at the dump.

    >>> restore_dump_argv("mongorestore", "u", "/c", "/d.gz", replay_own_oplog=False)[5:]
    ['--drop', '--nsExclude=admin.system.users', '--nsExclude=admin.system.roles', '--nsExclude=admin.system.version']
    """
    argv = [binary, f"--uri={uri}", f"--config={config_path}", "--gzip", f"--archive={archive_path}", "--drop",
            *(f"--nsExclude={ns}" for ns in AUTH_NAMESPACES)]
    return [*argv, "--oplogReplay"] if replay_own_oplog else argv


def replay_argv(binary: str, uri: str, config_path: str, directory: str, limit: Timestamp | None) -> list[str]:
    """Replay ``directory/oplog.bson`` (the archived slices) up to the exclusive ``limit``.

    >>> replay_argv("mongorestore", "u", "/c", "/r", Timestamp(1764118924, 0))[3:]
    ['--oplogReplay', '--oplogLimit=1764118924:0', '--dir=/r']
    """
    argv = [binary, f"--uri={uri}", f"--config={config_path}", "--oplogReplay"]
    if limit is not None:
        argv.append(f"--oplogLimit={ts_text(limit)}")
    return [*argv, f"--dir={directory}"]


# -- naming ----------------------------------------------------------------------------------------


def dump_label(at: datetime) -> str:
    """A label in pgBackRest's form for a full backup.

    >>> dump_label(datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone.utc))
    '20261126-010203F'
    """
    return at.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%SF")


def label_time(label: str) -> datetime:
    if not _LABEL.match(label):
        raise BackupError(f"dump label {label!r} is not like 20261126-010203F")
    return datetime.strptime(label[:-1], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)


def repo_root(repo_path: str, s3: bool) -> str:
    """What names in a repository start with: the fs path with a slash, or the S3 key prefix.

    >>> repo_root("/var/lib/dbtier/backups", False), repo_root("/dbtier", True), repo_root("/", True)
    ('/var/lib/dbtier/backups/', 'dbtier/', '')
    """
    return repo_prefix(repo_path) if s3 else repo_path.rstrip("/") + "/"


def dump_dir(root: str, cluster: str, label: str) -> str:
    """
    >>> dump_dir("dbtier/", "orders", "20261126-010203F")
    'dbtier/mongodump/orders/20261126-010203F/'
    """
    return f"{root}mongodump/{cluster}/{label}/"


def oplog_dir(root: str, cluster: str) -> str:
    """
    >>> oplog_dir("/b/", "orders")
    '/b/oplog/orders/'
    """
    return f"{root}oplog/{cluster}/"


def label_of_name(name: str, root: str, cluster: str) -> str | None:
    """The dump label a repository name belongs to, or None."""
    prefix = f"{root}mongodump/{cluster}/"
    if not name.startswith(prefix):
        return None
    label, slash, _ = name[len(prefix):].partition("/")
    return label if slash and _LABEL.match(label) else None


@dataclass(frozen=True)
class DumpRecord:
    """One dump: the newest oplog entry just before mongodump started and just after it ended."""

    label: str
    oplog_start: Timestamp
    oplog_end: Timestamp
    size: int = 0

    def to_json(self) -> str:
        return json.dumps({"label": self.label, "oplog_start": ts_text(self.oplog_start),
                           "oplog_end": ts_text(self.oplog_end), "size": self.size}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DumpRecord:
        try:
            raw = json.loads(text)
            return cls(str(raw["label"]), parse_ts(raw["oplog_start"]), parse_ts(raw["oplog_end"]), int(raw["size"]))
        except (ValueError, KeyError, TypeError) as err:
            raise BackupError(f"dump record: unreadable ({err})") from None


def dumps_to_expire(labels: list[str], keep: int) -> list[str]:
    """The dumps retention removes: all but the newest ``keep``.

    >>> dumps_to_expire(["20261124-010000F", "20261126-010000F", "20261125-010000F"], 2)
    ['20261124-010000F']
    """
    return sorted(labels)[:-keep] if keep > 0 else sorted(labels)
