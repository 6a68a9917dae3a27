"""mongod.conf, the mongod service, the replica-set config document, the keyfile and the URIs (pure).

Nothing here connects anywhere; :func:`write_keyfile` is the one function that writes (through a Runner).
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import yaml

from dbtier.procs import Service, launch_argv
from dbtier.providers.base import Runner

#: Bytes of randomness in a keyfile: base64 of 756 bytes is 1008 characters (mongod takes 6 to 1024).
KEYFILE_BYTES = 756
KEYFILE_MODE = 0o400
_BASE64 = re.compile(r"^[A-Za-z0-9+/=]{6,1024}$")
REDACTED = "**********"


@dataclass(frozen=True)
class MongoSettings:
    """The replica set's settings, as the lead maps them from the spec."""

    replset: str = "rs0"
    ports: tuple[int, ...] = (27017, 27018, 27019)
    priorities: tuple[float, ...] = (2, 1, 1)
    election_timeout_ms: int = 10000
    oplog_slice_s: int = 60
    oplog_size_mb: int | None = None
    tls: bool = False
    binary: str = "mongod"
    #: Also listen on 127.0.0.1, so bootstrap can initiate through the localhost exception.
    bind_localhost: bool = True


@dataclass(frozen=True)
class MongoMember:
    """One mongod of the replica set; its files live under ``dir``."""

    name: str
    host: str
    port: int
    priority: float
    dir: str
    index: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """How errors name it: ``mongo0 (10.0.0.5:27017)``."""
        return f"{self.name} ({self.address})"

    @property
    def data_dir(self) -> str:
        return f"{self.dir}/data"

    @property
    def config(self) -> str:
        return f"{self.dir}/mongod.conf"

    @property
    def keyfile(self) -> str:
        return f"{self.dir}/keyfile"

    @property
    def log(self) -> str:
        return f"{self.dir}/mongod.log"

    @property
    def stdout_log(self) -> str:
        return f"{self.dir}/mongod.out"

    @property
    def pidfile(self) -> str:
        return f"{self.dir}/mongod.pid"

    @property
    def tls_ca(self) -> str:
        return f"{self.dir}/tls/ca.crt"

    @property
    def tls_pem(self) -> str:
        """Certificate and key in one PEM file, as mongod's ``certificateKeyFile`` wants."""
        return f"{self.dir}/tls/mongod.pem"


def mongo_members(cluster_dir: str, hosts: list[str], settings: MongoSettings) -> list[MongoMember]:
    """One member per port, ``mongo0`` first; ``hosts[i % len(hosts)]`` is member i's address.

    >>> [(m.name, m.address, m.priority) for m in mongo_members("/d/c", ["10.0.0.1"], MongoSettings())]
    [('mongo0', '10.0.0.1:27017', 2), ('mongo1', '10.0.0.1:27018', 1), ('mongo2', '10.0.0.1:27019', 1)]
    """
    if len(settings.priorities) != len(settings.ports):
        raise ValueError("one priority per port")
    return [
        MongoMember(f"mongo{i}", hosts[i % len(hosts)], port, settings.priorities[i], f"{cluster_dir}/mongo{i}", i)
        for i, port in enumerate(settings.ports)
    ]


def bind_ips(member: MongoMember, settings: MongoSettings) -> str:
    """
    >>> m = MongoMember("mongo0", "10.0.0.1", 27017, 2, "/d")
    >>> bind_ips(m, MongoSettings()), bind_ips(m, MongoSettings(bind_localhost=False))
    ('10.0.0.1,127.0.0.1', '10.0.0.1')
    """
    ips = [member.host]
    if settings.bind_localhost and member.host not in ("127.0.0.1", "localhost"):
        ips.append("127.0.0.1")
    return ",".join(ips)


def mongod_conf(member: MongoMember, settings: MongoSettings) -> dict[str, Any]:
    """mongod's configuration as data: in the foreground (its supervisor keeps it running), keyfile auth."""
    net: dict[str, Any] = {"bindIp": bind_ips(member, settings), "port": member.port}
    if settings.tls:
        # Clients authenticate with passwords, members with the keyfile: no client certificate is asked.
        net["tls"] = {"mode": "requireTLS", "certificateKeyFile": member.tls_pem, "CAFile": member.tls_ca,
                      "allowConnectionsWithoutCertificates": True}
    replication: dict[str, Any] = {"replSetName": settings.replset}
    if settings.oplog_size_mb:
        replication["oplogSizeMB"] = settings.oplog_size_mb
    return {
        "net": net,
        "storage": {"dbPath": member.data_dir},
        "replication": replication,
        "security": {"keyFile": member.keyfile, "authorization": "enabled"},
        "systemLog": {"destination": "file", "path": member.log, "logAppend": True},
        "processManagement": {"fork": False},
    }


def render_mongod_conf(member: MongoMember, settings: MongoSettings) -> str:
    header = f"# Written by dbtier for {member.name}; rewritten on every provision.\n"
    return header + yaml.safe_dump(mongod_conf(member, settings), sort_keys=False)


def mongod_argv(member: MongoMember, settings: MongoSettings) -> list[str]:
    """
    >>> mongod_argv(MongoMember("mongo0", "h", 27017, 2, "/d"), MongoSettings())
    ['mongod', '--config', '/d/mongod.conf']
    """
    return [settings.binary, "--config", member.config]


def mongod_service(member: MongoMember, settings: MongoSettings) -> Service:
    """The member as a supervised service (a systemd unit via ``supervisors.render_unit``, or detached)."""
    return Service(
        name=member.name,
        kind="mongod",
        host=member.host,
        argv=mongod_argv(member, settings),
        pidfile=member.pidfile,
        logfile=member.stdout_log,
        marker=member.config,
        ports=[("mongod", member.port)],
    )


def detached_argv(member: MongoMember, settings: MongoSettings) -> list[str]:
    """The argv that starts the member detached on a host without systemd (pid file, log)."""
    return launch_argv(mongod_argv(member, settings), member.pidfile, member.stdout_log)


def replset_config(members: list[MongoMember], settings: MongoSettings) -> dict[str, Any]:
    """The document ``replSetInitiate`` takes.

    >>> doc = replset_config(mongo_members("/d", ["h"], MongoSettings()), MongoSettings())
    >>> doc["_id"], [(m["_id"], m["host"], m["priority"]) for m in doc["members"]], doc["settings"]
    ('rs0', [(0, 'h:27017', 2), (1, 'h:27018', 1), (2, 'h:27019', 1)], {'electionTimeoutMillis': 10000})
    """
    return {
        "_id": settings.replset,
        "members": [{"_id": m.index, "host": m.address, "priority": m.priority} for m in members],
        "settings": {"electionTimeoutMillis": settings.election_timeout_ms},
    }


# -- the keyfile -----------------------------------------------------------------------------------


def new_keyfile() -> str:
    """Fresh keyfile content: 1008 base64 characters and a newline."""
    return base64.b64encode(secrets.token_bytes(KEYFILE_BYTES)).decode() + "\n"


def keyfile_problem(content: str) -> str | None:
    """Why mongod would refuse this keyfile content, or None (6 to 1024 base64 characters)."""
    text = "".join(content.split())
    if not _BASE64.match(text):
        return f"the keyfile holds {len(text)} characters; mongod wants 6 to 1024 of the base64 set"
    return None


def write_keyfile(runner: Runner, path: str, content: str) -> None:
    """Write the keyfile with mode 0400 (mongod refuses one that others can read)."""
    runner.write_file(path, content.encode(), mode=KEYFILE_MODE)


# -- connection URIs -------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class MongoUri:
    """A connection URI; ``str`` and ``repr`` show it with the password redacted, :attr:`secret` whole."""

    secret: str
    shown: str = field(default="")

    def __repr__(self) -> str:
        return f"MongoUri({self.shown!r})"

    def __str__(self) -> str:
        return self.shown


def _uri(members: list[MongoMember], settings: MongoSettings, user: str, password: str, database: str,
         options: dict[str, str], tls_ca_file: str | None) -> MongoUri:
    hosts = ",".join(m.address for m in members)
    opts = {"replicaSet": settings.replset, "authSource": "admin", **options}
    if settings.tls:
        opts["tls"] = "true"
        if tls_ca_file:
            opts["tlsCAFile"] = tls_ca_file
    query = "&".join(f"{k}={quote_plus(v)}" for k, v in opts.items())
    name = quote_plus(user)
    tail = f"@{hosts}/{quote_plus(database)}?{query}"
    return MongoUri(f"mongodb://{name}:{quote_plus(password)}{tail}", f"mongodb://{name}:{REDACTED}{tail}")


def write_uri(members: list[MongoMember], settings: MongoSettings, user: str, password: str, database: str,
              tls_ca_file: str | None = None) -> MongoUri:
    """The replica-set URI for writes (``w=majority``: an acknowledged write survives a failover).

    >>> ms = mongo_members("/d", ["h"], MongoSettings())
    >>> str(write_uri(ms, MongoSettings(), "app", "p@ss/w:rd", "app"))
    'mongodb://app:**********@h:27017,h:27018,h:27019/app?replicaSet=rs0&authSource=admin&w=majority'
    >>> write_uri(ms, MongoSettings(), "app", "p@ss/w:rd", "app").secret.split("@")[0]
    'mongodb://app:p%40ss%2Fw%3Ard'
    """
    return _uri(members, settings, user, password, database, {"w": "majority"}, tls_ca_file)


def read_uri(members: list[MongoMember], settings: MongoSettings, user: str, password: str, database: str,
             tls_ca_file: str | None = None) -> MongoUri:
    """The URI for read scaling: ``readPreference=secondaryPreferred``."""
    return _uri(members, settings, user, password, database, {"readPreference": "secondaryPreferred"}, tls_ca_file)


def client_uri(members: list[MongoMember], settings: MongoSettings, user: str, database: str, *, reads: bool = False,
               tls_ca_file: str | None = None) -> str:
    """The replica-set URI a client is given, without a password: for writes (``w=majority``), or with ``reads``
    for read scaling (``readPreference=secondaryPreferred``).

    >>> ms = mongo_members("/d", ["h"], MongoSettings(tls=True))
    >>> client_uri(ms, MongoSettings(tls=True), "app", "app", reads=True, tls_ca_file="/w/ca.crt")
    'mongodb://app@h:27017,h:27018,h:27019/app?replicaSet=rs0&authSource=admin&readPreference=secondaryPreferred&tls=true&tlsCAFile=%2Fw%2Fca.crt'
    """
    build = read_uri if reads else write_uri
    return build(members, settings, user, "", database, tls_ca_file).shown.replace(f":{REDACTED}@", "@", 1)


def redact_uri(uri: str) -> str:
    """Any ``mongodb://user:password@...`` with the password replaced.

    >>> redact_uri("mongodb://root:s3cr%40t@h:1/?replicaSet=rs0")
    'mongodb://root:**********@h:1/?replicaSet=rs0'
    """
    return re.sub(r"^(mongodb(?:\+srv)?://[^:@/]*):[^@/]*@", rf"\1:{REDACTED}@", uri)
