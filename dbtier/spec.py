"""The cluster spec: one pydantic model, layered like Patroni's configuration.

Defaults, then a YAML file, then ``DBTIER_*`` environment variables
(``DBTIER_MEMBERS=5``, ``DBTIER_PATRONI__TTL=30``: a double underscore goes one
level down). Everything is validated before any process starts, and a bad value
becomes one line naming the field and what is allowed.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dbtier.audit import AuditSettings
from dbtier.backup.settings import BackupSettings, RestoreSource
from dbtier.errors import SpecError
from dbtier.ports import DEFAULT_PORT_OFFSET, copy_clash, shifted

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC_PATH = REPO_ROOT / "deployments" / "clusters" / "default.yaml"

#: Environment variables with the DBTIER_ prefix that are settings of the tool, not of the spec.
NON_SPEC_ENV = frozenset({"DBTIER_SPEC", "DBTIER_WIPE", "DBTIER_DROP_BACKUPS", "DBTIER_RUNTIME_VENV", "DBTIER_WORK_DIR",
                          "DBTIER_PVE_API_URL", "DBTIER_PVE_TOKEN_ID", "DBTIER_PVE_TOKEN_SECRET",
                          "DBTIER_PVE_FINGERPRINT", "DBTIER_PVE_CA_FILE", "DBTIER_PVE_VERIFY_SSL"})

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ports(_Model):
    """Base ports; member ``i`` gets ``base + i`` (etcd: client ``base + 2i``, peer ``base + 2i + 1``).

    With routing on, each router host's HAProxy listens on ``router`` (read-write), ``router + 1`` (read-only),
    ``router + 2`` (synchronous reads), ``router + 3`` and ``+ 4`` (read-write and read-only through PgBouncer)
    and ``router_stats`` (its stats page and Prometheus endpoint); member ``i``'s PgBouncer on ``pgbouncer + i``.
    """

    postgres: int = Field(5432, ge=1024, le=65000)
    patroni: int = Field(8008, ge=1024, le=65000)
    etcd: int = Field(2379, ge=1024, le=65000)
    router: int = Field(5000, ge=1024, le=65000)
    router_stats: int = Field(7000, ge=1024, le=65000)
    pgbouncer: int = Field(6432, ge=1024, le=65000)


class PatroniTiming(_Model):
    """Patroni's DCS timing, in seconds."""

    ttl: int = Field(30, le=3600)
    loop_wait: int = Field(10, ge=1, le=600)
    retry_timeout: int = Field(10, ge=1, le=600)
    maximum_lag_on_failover: int = Field(1048576, ge=0)

    @field_validator("ttl")
    @classmethod
    def _ttl_floor(cls, ttl: int) -> int:
        if ttl < 20:
            raise ValueError(f"must be at least 20 (Patroni 4 silently raises {ttl} to 20); use 20 or more")
        return ttl

    @model_validator(mode="after")
    def _timing_fits(self) -> PatroniTiming:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"loop_wait + 2 * retry_timeout ({self.loop_wait} + 2 * {self.retry_timeout}) "
                f"must not exceed ttl ({self.ttl}); lower them or raise ttl"
            )
        return self


class AppDatabase(_Model):
    """The application role and database that provision creates."""

    user: str = Field("app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    database: str = Field("app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")


class Binaries(_Model):
    """Where the programs every engine uses live on each host (``make setup`` installs them here); each engine's own
    are in its section (``postgres.binaries``, ``mongodb.binaries``)."""

    node_exporter: str = "/usr/bin/prometheus-node-exporter"
    python: str = Field("/opt/dbtier/venv/bin/python", description="the runtime venv's Python on each host (built by "
                        "scripts/host-setup.sh, readable by os_user): "
                        "MongoDB's oplog archiver runs dbtier's code there")


class PostgresBinaries(_Model):
    """Where PostgreSQL's programs and its companions live on each host."""

    patroni: str = "/opt/dbtier/venv/bin/patroni"
    etcd: str = "/usr/bin/etcd"
    pg_bin_dir: str = "/usr/lib/postgresql/15/bin"
    pgbackrest: str = "/usr/bin/pgbackrest"
    haproxy: str = "/usr/sbin/haproxy"
    pgbouncer: str = "/usr/sbin/pgbouncer"
    keepalived: str = "/usr/sbin/keepalived"
    postgres_exporter: str = "/usr/bin/prometheus-postgres-exporter"


class MongoDBBinaries(_Model):
    """Where MongoDB's programs live on each host (MongoDB's apt repository installs them here)."""

    mongod: str = "/usr/bin/mongod"
    mongodump: str = "/usr/bin/mongodump"
    mongorestore: str = "/usr/bin/mongorestore"


class MongoDBSettings(_Model):
    """The section of ``engine: mongodb``: the replica set (member ``i``'s mongod listens on ``port + i``), its
    timing and its binaries."""

    replset: str = Field("rs0", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the replica set's name (replSetName)")
    port: int = Field(27017, ge=1024, le=65000, description="member i listens on port + i")
    election_timeout_ms: int = Field(10000, ge=1, description="how long the members wait for a primary before "
                                     "electing another (electionTimeoutMillis)")
    oplog_size_mb: int | None = Field(None, ge=990, description="mongod's default (5% of the disk) when None")
    oplog_slice_s: int = Field(60, ge=1, description="the archiver ships the oplog in slices this long")
    oplog_archiving: bool = Field(True, description="each member's oplog archiver runs (the restore drill's "
                                  "throwaway copy turns it off)")
    max_lag_s: int = Field(30, ge=1, description="a secondary further behind the primary than this makes the set "
                           "unhealthy (status exits 1)")
    binaries: MongoDBBinaries = MongoDBBinaries()


class Timeouts(_Model):
    """How long provision waits for each phase, in seconds (every engine's; PostgreSQL's own are
    ``postgres.timeouts``)."""

    healthy: int = Field(180, ge=1)
    replica_read: int = Field(60, ge=1)


class PostgresTimeouts(_Model):
    """How long provision waits for PostgreSQL's own phases, in seconds."""

    etcd_quorum: int = Field(60, ge=1, description="etcd has a leader and every member answers")
    routes: int = Field(60, ge=1, description="every router's routes agree with Patroni")


def checked_networks(nets: list[str]) -> list[str]:
    """``nets`` when each is a network in CIDR form, else a ValueError naming the first that is not.

    >>> checked_networks(["10.0.0.0/24", "fd00::/64"])
    ['10.0.0.0/24', 'fd00::/64']
    """
    import ipaddress

    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ValueError(f"{net!r} is not a network; write it as CIDR, e.g. 10.0.0.0/24") from None
    return nets


class TlsSettings(_Model):
    """TLS on every connection, and how long the cluster CA and its certificates live, in days (see
    dbtier/certs.py and dbtier/tls.py)."""

    enabled: bool = Field(True, description="PostgreSQL (hostssl only), Patroni's REST API (HTTPS) and etcd (client "
                          "and peer TLS) with the cluster CA's certificates; false leaves them in clear (a lab, a "
                          "benchmark's baseline), never on a network you do not own")
    cert_days: int = Field(180, ge=1, le=397, description="a member's certificate: months, not decades")
    ca_days: int = Field(730, ge=30, le=730, description="the cluster CA: at most two years")
    renew_before_days: int = Field(30, ge=0, description="provision issues a new certificate this close to its end")

    @model_validator(mode="after")
    def _fits(self) -> TlsSettings:
        if self.renew_before_days >= self.cert_days:
            raise ValueError(f"renew_before_days ({self.renew_before_days}) must be below cert_days ({self.cert_days}), "
                             "or every provision would issue new certificates")
        return self


class SSHHost(_Model):
    """One existing host reached over SSH; ``host_key`` pins its key (else the first one seen is pinned)."""

    address: str
    port: int = Field(22, ge=1, le=65535)
    host_key: str | None = Field(None, description="the host's public key line, e.g. 'ssh-ed25519 AAAAC3Nz...'")

    @field_validator("host_key")
    @classmethod
    def _key_line(cls, line: str | None) -> str | None:
        import base64
        import binascii

        if line is None:
            return None
        parts = line.split()
        try:
            ok = len(parts) >= 2 and bool(base64.b64decode(parts[1], validate=True))
        except (binascii.Error, ValueError):
            ok = False
        if not ok or not parts[0].startswith(("ssh-", "ecdsa-")):
            raise ValueError(f"{line[:40]!r} is not a public key line; copy the host's "
                             "/etc/ssh/ssh_host_ed25519_key.pub, like 'ssh-ed25519 AAAAC3Nz...'")
        return f"{parts[0]} {parts[1]}"


class SSHSettings(_Model):
    """How to reach the hosts of ``provider: ssh``; members are placed on them round-robin."""

    hosts: list[SSHHost] = Field(min_length=1)
    user: str = Field("root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    credentials_block: str | None = None
    key_file: str | None = None
    connect_timeout: int = Field(10, ge=1, le=300)
    install_packages: bool = True
    services: Literal["auto", "systemd", "processes"] = Field(
        "auto", description="systemd units where systemd is the host's init (auto), always, or detached processes"
    )
    lab: str | None = Field(None, pattern=r"^[a-z][a-z0-9]{0,7}$", description="the `dbtier lab` whose hosts these are: "
                            "whole-host drills (host-freeze, host-crash) act on them through the lab")

    @model_validator(mode="after")
    def _one_key(self) -> SSHSettings:
        if not self.credentials_block and not self.key_file:
            raise ValueError(
                "ssh: name the private key: credentials_block (an SSHCredentials block) or key_file (a path)"
            )
        return self


#: ``proxmox.containers[i].address`` for a container that takes its address from DHCP.
DHCP = "dhcp"


def pending_host(vmid: int) -> str:
    """The host of a DHCP container whose address is not known yet: a name that never resolves
    (RFC 2606 ``.invalid``), which the proxmox provider treats as a container that does not run yet.

    >>> pending_host(301)
    'ct301.pending-dhcp.invalid'
    """
    return f"ct{vmid}.pending-dhcp.invalid"


class ProxmoxContainer(_Model):
    """One LXC container of ``provider: proxmox``: a static IPv4 address, or ``dhcp``.

    A DHCP container's address is read from the PVE API once it runs
    (:func:`dbtier.providers.base.resolve_addresses` fills in ``lease``); never write ``lease`` by hand.
    """

    vmid: int = Field(ge=100, le=999_999_999)
    node: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
    address: str = Field(description="static IPv4 in CIDR form, e.g. 10.0.0.21/24, or dhcp")
    gateway: str | None = None
    lease: str | None = Field(None, exclude=True, description="the address DHCP gave it, learned at run time")

    @field_validator("address")
    @classmethod
    def _cidr(cls, address: str) -> str:
        import ipaddress

        if address.strip().lower() == DHCP:
            return DHCP
        try:
            iface = ipaddress.IPv4Interface(address)
        except ValueError:
            raise ValueError(f"{address!r} is neither IPv4 CIDR nor dhcp; write it like 10.0.0.21/24, or dhcp") from None
        if "/" not in address:
            raise ValueError(f"{address!r} has no prefix length; write it like {address}/24")
        return iface.with_prefixlen

    @field_validator("lease")
    @classmethod
    def _not_by_hand(cls, lease: str | None) -> str | None:
        if lease is not None:  # validation sees only input: resolve_addresses sets it on a copy
            raise ValueError("dbtier reads a DHCP container's address from the Proxmox API; remove lease")
        return lease

    @model_validator(mode="after")
    def _gateway_on_network(self) -> ProxmoxContainer:
        import ipaddress

        if self.dhcp:
            if self.gateway is not None:
                raise ValueError(f"gateway: {self.gateway} is not used with address: dhcp (DHCP hands out the "
                                 "gateway); remove it, or give a static address in CIDR form")
            return self
        if self.gateway is None:
            return self
        try:
            gateway = ipaddress.IPv4Address(self.gateway)
        except ValueError:
            raise ValueError(f"gateway: {self.gateway!r} is not an IPv4 address; write it like 10.0.0.1") from None
        network = ipaddress.IPv4Interface(self.address).network
        if gateway not in network:
            raise ValueError(f"gateway: {gateway} is outside {network}; use a gateway on the container's network")
        return self

    @property
    def dhcp(self) -> bool:
        return self.address == DHCP

    @property
    def pending(self) -> bool:
        """True for a DHCP container whose address is not known yet."""
        return self.dhcp and self.lease is None

    @property
    def ip(self) -> str:
        """Where SSH and the members reach the container: its static address without the prefix length,
        its DHCP lease once learned, else :func:`pending_host`."""
        if not self.dhcp:
            return self.address.split("/")[0]
        return self.lease or pending_host(self.vmid)


class ProxmoxSettings(_Model):
    """Where ``provider: proxmox`` creates its LXC containers and how it reaches them over SSH.

    ``layout: single`` puts every member in one container (the seed's layout: one point of
    failure); ``per-member`` gives member ``i`` the container ``containers[i]``.
    ``storage``, ``bridge`` and ``template`` default to those of the credentials block.
    """

    credentials_block: str = Field(description="name of a ProxmoxCredentials block")
    layout: Literal["single", "per-member"] = "single"
    containers: list[ProxmoxContainer] = Field(min_length=1)
    cores: int = Field(4, ge=1, le=8192)
    memory_mb: int = Field(4096, ge=16)
    swap_mb: int = Field(512, ge=0)
    rootfs_gb: int = Field(100, ge=1)
    storage: str | None = None
    bridge: str | None = None
    template: str | None = None
    ssh_user: str = Field("root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    ssh_credentials_block: str | None = Field(None, description="an SSHCredentials block: its public key goes into "
                                              "the containers (or ssh_key_file)")
    ssh_key_file: str | None = Field(None, description="a private key file on the machine that runs dbtier, for runs "
                                     "without Prefect (the lab, the benches); its public key goes into the containers")
    ssh_port: int = Field(22, ge=1, le=65535)
    connect_timeout: int = Field(10, ge=1, le=300)
    ssh_wait_s: float = Field(120.0, gt=0, description="how long a started container may take to answer SSH")
    dhcp_wait_s: float = Field(60.0, gt=0, description="how long a started DHCP container may take to get its address")
    task_timeout_s: float = Field(300.0, gt=0, description="how long one Proxmox task (create, start, destroy) may take")

    @model_validator(mode="after")
    def _one_ssh_key(self) -> ProxmoxSettings:
        if not self.ssh_credentials_block and not self.ssh_key_file:
            raise ValueError("proxmox: name the containers' SSH key: ssh_credentials_block (an SSHCredentials block) "
                             "or ssh_key_file (a path)")
        return self

    @model_validator(mode="after")
    def _distinct(self) -> ProxmoxSettings:
        for field in ("vmid", "ip"):
            values = [getattr(ct, field) for ct in self.containers]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"containers: {field} {twice[0]} is given to two containers; each needs its own")
        return self

    @property
    def uses_dhcp(self) -> bool:
        return any(ct.dhcp for ct in self.containers)


class DrillSettings(_Model):
    """How hard a drill pushes and what it must achieve (seconds unless named otherwise)."""

    rto_budget_s: float = Field(60.0, gt=0, description="fault to first acknowledged write")
    rejoin_budget_s: float = Field(120.0, gt=0, description="restart of the failed member to streaming again")
    etcd_member_loss_max_gap_s: float = Field(1.0, gt=0, description="longest write outage allowed when one etcd member dies")
    quorum_loss_max_gap_s: float = Field(3.0, gt=0, description="longest write outage allowed without etcd quorum (failsafe mode)")
    settle_s: float = Field(2.0, ge=0, description="writes before the fault")
    tail_s: float = Field(1.0, ge=0, description="writes after the cluster is healthy again")
    replica_loss_hold_s: float = Field(8.0, ge=0, description="how long a lost replica stays down")
    etcd_member_loss_hold_s: float = Field(5.0, ge=0, description="how long a lost etcd member stays down")
    quorum_loss_hold_s: float | None = Field(None, ge=0, description="default: ttl + 2 * loop_wait")
    write_interval_ms: tuple[int, int] = (20, 50)
    write_timeout_s: float = Field(2.0, gt=0, description="the writer gives up on one statement after this")
    healthy_timeout_s: float = Field(180.0, gt=0)
    production: bool = Field(False, description="the cluster serves production traffic")
    allow_in_production: bool = Field(False, description="run drills even on a production cluster")
    via: Literal["auto", "router", "direct"] = Field(
        "auto", description="how the writer reaches the primary: the first router's rw route, the multi-host "
        "DSN, or auto (the router when routing is on)")

    @model_validator(mode="after")
    def _interval_order(self) -> DrillSettings:
        low, high = self.write_interval_ms
        if not 1 <= low <= high:
            raise ValueError(f"write_interval_ms: need 1 <= low <= high (got {low}, {high})")
        return self


class RouterCheck(_Model):
    """How often HAProxy asks each member's Patroni which role it holds, and how many answers change its mind."""

    inter_ms: int = Field(1000, ge=100, le=60000, description="between checks of a server in a steady state")
    fastinter_ms: int = Field(500, ge=100, le=60000, description="between checks while a server changes state")
    fall: int = Field(2, ge=1, le=10, description="failed checks that take a server out")
    rise: int = Field(2, ge=1, le=10, description="passed checks that put it back")


class PoolerSettings(_Model):
    """PgBouncer beside each member, between HAProxy's pooled routes and PostgreSQL."""

    enabled: bool = True
    pool_mode: Literal["transaction", "session"] = "transaction"
    default_pool_size: int = Field(20, ge=1, le=10000, description="server connections per user and database")
    max_client_conn: int = Field(1000, ge=1, le=100000, description="client connections one PgBouncer accepts")


class VipSettings(_Model):
    """A virtual IP that follows the primary: keepalived (VRRP, unicast between the member hosts) on every
    member host, holding the address only while its own Patroni answers ``/primary``. Clients reach every
    route at this address; HAProxy binds it on every host (``net.ipv4.ip_nonlocal_bind``)."""

    address: str = Field(description="an unused IPv4 address on the member hosts' network")
    prefix: int = Field(24, ge=8, le=32, description="its prefix length on the interface")
    interface: str = Field("eth0", pattern=r"^[A-Za-z0-9_.@-]{1,15}$", description="the member hosts' interface on that network")
    virtual_router_id: int = Field(51, ge=1, le=255, description="VRRP router id: unique among the VRRP groups of that network")
    check_interval_s: int = Field(1, ge=1, le=30, description="between keepalived's checks of the local Patroni")

    @field_validator("address")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        import ipaddress

        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ValueError(f"must be an IPv4 address (got {value!r})") from None


class AlertThresholds(_Model):
    """When the shipped alert rules fire (see :mod:`dbtier.monitoring.alerts`); None: derived from the spec."""

    replication_lag_bytes: int = Field(16 * 1024 * 1024, ge=0, description="a replica further behind its primary")
    archive_lag_s: int | None = Field(None, ge=1, description="default: backup.archive_lag_limit_s")
    full_backup_max_age_h: float | None = Field(None, gt=0, description="default: backup.full_every_days + 1 day")
    diff_backup_max_age_h: float = Field(36.0, gt=0, description="the newest full or differential backup")
    restore_drill_max_age_h: float = Field(8 * 24.0, gt=0, description="a restore drill passed within this")
    failover_drill_max_age_h: float = Field(8 * 24.0, gt=0, description="a failover drill ran within this")
    certificate_days: int = Field(21, ge=1, description="the first certificate expires within this")
    disk_free_ratio: float = Field(0.10, gt=0, lt=1, description="a filesystem with less free space")
    disk_full_within_h: float = Field(4.0, gt=0, description="a filesystem full within this at its last hour's rate")
    down_for_s: int = Field(30, ge=0, description="how long a member, Patroni or a router is down before it fires")


class MonitoringPorts(_Model):
    """Where the monitoring stack listens, on the machine that runs it (``monitoring.host``)."""

    prometheus: int = Field(9090, ge=1024, le=65535)
    alertmanager: int = Field(9093, ge=1024, le=65535)
    node_exporter: int = Field(9100, ge=1024, le=65535, description="this machine's, with dbtier's own metrics")

    @model_validator(mode="after")
    def _distinct(self) -> MonitoringPorts:
        ports = self.model_dump()
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"monitoring.ports: each port once, got {ports}")
        return self


class ExporterSettings(_Model):
    """The exporters ``make monitor`` runs, supervised like the members: PostgreSQL's beside each member
    (``postgres + index``, logging in over TLS as the ``monitoring`` role) and node exporter on each member host but
    the monitoring stack's own; and dbtier's PgBouncer exporter beside the stack, which reads every PgBouncer's
    console (``pgbouncer``)."""

    enabled: bool = Field(True, description="on: make monitor starts them and Prometheus scrapes them; off: only "
                          "Patroni's, etcd's and HAProxy's own endpoints and this machine's node exporter")
    postgres: int = Field(9187, ge=1024, le=65000, description="member i's PostgreSQL exporter on postgres + i")
    pgbouncer: int = Field(9127, ge=1024, le=65535, description="dbtier's PgBouncer exporter, beside the monitoring "
                           "stack on monitoring.host: it reads every PgBouncer's console for Prometheus")
    node: int = Field(9100, ge=1024, le=65535, description="node exporter on each member host")
    mongodb: int = Field(9216, ge=1024, le=65535, description="dbtier's MongoDB exporter, beside the monitoring stack "
                         "on monitoring.host: it asks every member of a replica set for its state and lag")


class MonitoringSettings(_Model):
    """Prometheus, Alertmanager and node exporter for the cluster, run by ``make monitor`` on the machine that
    runs the flows (where dbtier's own metrics are written), and the thresholds of the alert rules."""

    host: str = Field("127.0.0.1", description="the address the stack listens on")
    ports: MonitoringPorts = MonitoringPorts()
    scrape_interval_s: int = Field(15, ge=1, le=300)
    evaluation_interval_s: int = Field(15, ge=1, le=300)
    webhook_url: str | None = Field(None, description="Alertmanager posts every alert here (http or https)")
    alerts: AlertThresholds = AlertThresholds()
    exporters: ExporterSettings = ExporterSettings()

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL (got {url!r})")
        return url


class RoutingSettings(_Model):
    """HAProxy on every host of the cluster (one for the local provider), routing by Patroni's health checks:
    read-write to the primary, read-only to replicas within ``replica_max_lag_bytes`` (the primary when none
    is), synchronous reads to the synchronous standby; and PgBouncer in front of each member. Off by default
    until the routing suite proves it on every provider (issue 13)."""

    enabled: bool = False
    replica_max_lag_bytes: int = Field(16 * 1024 * 1024, ge=0, description="a replica further behind serves no reads")
    check: RouterCheck = RouterCheck()
    pooler: PoolerSettings = PoolerSettings()
    vip: VipSettings | None = None


class FirewallSettings(_Model):
    """dbtier's own nftables table on each host of the cluster's own (providers ssh and proxmox; see
    dbtier/firewall.py): the cluster's ports answer only members, loopback, the controller (the machine that runs
    dbtier) and ``admin_networks``; PostgreSQL's also ``allowed_client_networks``. Nothing else on the host changes."""

    enabled: bool = Field(True, description="false: provision installs none, and removes one left from before")
    controller: str | None = Field(None, description="the address the hosts see the controller at; default: "
                                   "learned on each host from its SSH session (SSH_CONNECTION)")
    admin_networks: list[str] = Field(default_factory=list, description="more sources (CIDR) that reach every port "
                                      "of the cluster, as the controller does: monitoring, operators' machines")

    @field_validator("controller")
    @classmethod
    def _address(cls, address: str | None) -> str | None:
        import ipaddress

        if address is None:
            return None
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            raise ValueError(f"{address!r} is not an IP address; give the address the hosts see this machine at, "
                             "e.g. 10.0.0.5, or remove it to learn it from SSH") from None

    @field_validator("admin_networks")
    @classmethod
    def _networks(cls, nets: list[str]) -> list[str]:
        return checked_networks(nets)


class PostgresSettings(_Model):
    """The section of ``engine: postgres``: PostgreSQL managed by Patroni with an etcd of ``etcd_members`` (default:
    one per member), its ports, Patroni's timing, the server's parameters, pgaudit, the routers and poolers
    (HAProxy, PgBouncer), how long provision waits for etcd and the routes, and the binaries."""

    ports: Ports = Ports()
    patroni: PatroniTiming = PatroniTiming()
    etcd_members: int | None = Field(None, ge=1, le=7, description="default: one per member; always odd")
    synchronous_mode: bool = False
    postgresql_parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    audit: AuditSettings = AuditSettings()
    routing: RoutingSettings = RoutingSettings()
    timeouts: PostgresTimeouts = PostgresTimeouts()
    binaries: PostgresBinaries = PostgresBinaries()

    def etcd_size(self, members: int) -> int:
        """How many etcd members a cluster of ``members`` runs.

        >>> PostgresSettings().etcd_size(3), PostgresSettings(etcd_members=1).etcd_size(3)
        (3, 1)
        """
        return self.etcd_members if self.etcd_members is not None else members


#: Each engine's section of the spec: ``engine: X`` reads its settings from ``X:``, and a spec holds no other.
ENGINE_SECTIONS: dict[str, type[_Model]] = {"postgres": PostgresSettings, "mongodb": MongoDBSettings}

#: Where each engine's settings sat before they had a section (top-level fields, and some of ``binaries``): a spec
#: in that layout still loads (:func:`migrate_layout` moves them), and ``DBTIER_*`` variables may still name them.
OLD_PLACES: dict[str, tuple[str, ...]] = {
    "postgres": ("ports", "patroni", "etcd_members", "synchronous_mode", "postgresql_parameters", "audit", "routing",
                 "timeouts.etcd_quorum", "timeouts.routes",
                 *(f"binaries.{name}" for name in PostgresBinaries.model_fields)),
    "mongodb": tuple(f"binaries.{name}" for name in MongoDBBinaries.model_fields),
}

#: What a spec of another engine uses instead of a setting, where it has an equivalent.
_INSTEAD = {("postgres", "mongodb"): {"ports": "member i's mongod listens on mongodb.port + i",
                                      "patroni": "the replica set elects by itself: mongodb.election_timeout_ms",
                                      "etcd_members": "the replica set elects by itself, without etcd",
                                      "timeouts.etcd_quorum": "the replica set elects by itself, without etcd",
                                      "routing": "HAProxy and PgBouncer route PostgreSQL only; a replica set's "
                                      "clients use its replica-set URI, dbtier dsn",
                                      "timeouts.routes": "HAProxy and PgBouncer route PostgreSQL only",
                                      "backup.restore_drill.check_query": "it is SQL; the drill of a replica set "
                                      "checks its marker documents, validate and the application user"}}


def _foreign(dotted: str, owner: str, engine: str, where: str | None = None) -> str:
    instead = _INSTEAD.get((owner, engine), {}).get(dotted.removeprefix(f"{owner}."))
    fix = f" ({instead})" if instead else f", or set engine: {owner}"
    place = f" (now {where})" if where else ""
    return f"{dotted}: belongs to engine {owner}{place}, and this spec's engine is {engine}; remove it{fix}"


def migrate_layout(data: Mapping[str, Any], engine: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """``data`` in the layout of engine sections for ``engine`` (default: the one ``data`` names), and the old places
    it moved (``"ports -> postgres.ports"``).

    The other engine's section, or one of its settings in the old
    place, is dropped when it holds only that engine's defaults (a spec saved before the sections wrote every field)
    and refused in one line (ValueError) otherwise, as is a setting given both in the old place and in the section.

    >>> migrate_layout({"ports": {"postgres": 6432},  # doctest: +NORMALIZE_WHITESPACE
    ...                 "binaries": {"patroni": "/p", "python": "/py"}})
    ({'binaries': {'python': '/py'}, 'postgres': {'ports': {'postgres': 6432}, 'binaries': {'patroni': '/p'}}},
     ['ports -> postgres.ports', 'binaries.patroni -> postgres.binaries.patroni'])
    >>> migrate_layout({"engine": "mongodb", "postgres": None})
    ({'engine': 'mongodb'}, [])
    >>> migrate_layout({"engine": "mongodb", "patroni": {"ttl": 30},
    ...                 "binaries": {"patroni": "/opt/dbtier/venv/bin/patroni"}})
    ({'engine': 'mongodb'}, [])
    >>> migrate_layout({"engine": "mongodb", "patroni": {"ttl": 40}})  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: patroni: belongs to engine postgres (now postgres.patroni), and this spec's engine is mongodb; remove it
    (the replica set elects by itself: mongodb.election_timeout_ms)
    """
    out = _deep_copy(data)
    engine = engine or out.get("engine", "postgres")
    if engine not in ENGINE_SECTIONS:
        return out, []  # validation names the engine field
    for other in ENGINE_SECTIONS:
        if other != engine and not _at_default(out.get(other), other, ""):
            raise ValueError(f"{other}: is the section of engine {other}, and this spec's engine is {engine}; "
                             f"remove it, or set engine: {other}")
        if other != engine:
            out.pop(other, None)
    section = out.get(engine)
    moved: list[str] = []
    for owner, places in OLD_PLACES.items():
        for dotted in places:
            parent, _, leaf = dotted.rpartition(".")
            holder = out.get(parent) if parent else out
            if not isinstance(holder, dict) or leaf not in holder:
                continue
            if owner != engine:
                if not _at_default(holder[leaf], owner, dotted):
                    raise ValueError(_foreign(dotted, owner, engine, f"{owner}.{dotted}"))
                holder.pop(leaf)  # a spec saved before the sections wrote every engine's defaults
                if parent and not holder:
                    out.pop(parent)
                continue
            if section is None:
                section = out[engine] = {}
            if not isinstance(section, dict):
                return out, moved  # validation names the section
            value = holder.pop(leaf)
            target = section.setdefault(parent, {}) if parent else section
            if not isinstance(target, dict):
                return out, moved
            target[leaf] = _merge_new(target[leaf], value, f"{engine}.{dotted}", dotted) if leaf in target else value
            moved.append(f"{dotted} -> {engine}.{dotted}")
            if parent and not holder:
                out.pop(parent)
    return out, moved


def _at_default(value: Any, owner: str, dotted: str) -> bool:
    """True when ``value``, given for ``dotted`` inside engine ``owner``'s section ("" for the whole section), is
    absent or says only what that section's default says (what a spec saved before the sections holds).

    >>> _at_default({"port": 27017}, "mongodb", ""), _at_default({"port": 28017}, "mongodb", "")
    (True, False)
    >>> _at_default("/usr/bin/mongod", "mongodb", "binaries.mongod"), _at_default(None, "postgres", "")
    (True, True)
    """
    if value is None and not dotted:
        return True
    default: Any = _default_section(owner)
    for part in dotted.split(".") if dotted else []:
        default = default[part]
    return _within(value, default)


def _within(value: Any, default: Any) -> bool:
    if isinstance(value, dict) and isinstance(default, dict):
        return all(key in default and _within(v, default[key]) for key, v in value.items())
    return bool(value == default)


@functools.cache
def _default_section(owner: str) -> dict[str, Any]:
    return ENGINE_SECTIONS[owner]().model_dump(mode="json")


def _merge_new(new: Any, old: Any, new_name: str, old_name: str) -> Any:
    """The old place's value laid into the section's where they do not disagree, else a ValueError."""
    if isinstance(new, dict) and isinstance(old, dict):
        merged = dict(new)
        for key, value in old.items():
            merged[key] = _merge_new(new[key], value, f"{new_name}.{key}", f"{old_name}.{key}") if key in new else value
        return merged
    if new != old:
        raise ValueError(f"{old_name}: set both in the old place ({old!r}) and as {new_name} ({new!r}); keep "
                         f"{new_name} only")
    return new


class ClusterSpec(_Model):
    """Everything dbtier needs to know about one cluster."""

    name: str = "dbtier"
    engine: Literal["postgres", "mongodb"] = "postgres"
    provider: Literal["local", "ssh", "proxmox"] = "local"
    members: int = Field(3, ge=1, le=7)
    host: str = "127.0.0.1"
    data_root: str = "/var/lib/dbtier"
    os_user: str = Field("dbtier", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    allowed_client_networks: list[str] = Field(default_factory=list)
    ssh: SSHSettings | None = None
    proxmox: ProxmoxSettings | None = None
    production: bool = False
    drills: DrillSettings = DrillSettings()
    firewall: FirewallSettings = FirewallSettings()
    backup: BackupSettings = BackupSettings()
    restore_from: RestoreSource | None = None
    hosts_of: str | None = Field(None, description="set on a restored or drill copy: the cluster whose hosts it runs "
                                 "on beside it; their containers and pinned SSH host keys stay that cluster's")
    app: AppDatabase = AppDatabase()
    binaries: Binaries = Binaries()
    timeouts: Timeouts = Timeouts()
    tls: TlsSettings = TlsSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    postgres: PostgresSettings | None = Field(None, description="engine postgres's section (filled in when absent)")
    mongodb: MongoDBSettings | None = Field(None, description="engine mongodb's section (filled in when absent)")

    @model_validator(mode="before")
    @classmethod
    def _engine_section(cls, data: Any) -> Any:
        """The old layout moved into the engine's section, the other engine's refused, the engine's filled in."""
        if not isinstance(data, Mapping):
            return data
        out = migrate_layout(data)[0]
        engine = out.get("engine", "postgres")
        if engine in ENGINE_SECTIONS and out.get(engine) is None:
            out[engine] = {}
        return out

    @property
    def pg(self) -> PostgresSettings:
        """The settings of ``engine: postgres`` (for PostgreSQL's own code: the spec of another engine has none)."""
        if self.postgres is None:
            raise SpecError(f"internal: cluster {self.name} is engine {self.engine}; "
                            "PostgreSQL's settings were asked for")
        return self.postgres

    @property
    def mongo(self) -> MongoDBSettings:
        """The settings of ``engine: mongodb`` (for MongoDB's own code: the spec of another engine has none)."""
        if self.mongodb is None:
            raise SpecError(f"internal: cluster {self.name} is engine {self.engine}; MongoDB's settings were asked for")
        return self.mongodb

    @field_validator("name", "hosts_of")
    @classmethod
    def _name_shape(cls, name: str | None) -> str | None:
        if name is not None and not NAME_RE.match(name):
            raise ValueError("must be 2-32 characters of lowercase letters, digits and dashes, starting with a letter")
        return name

    @property
    def host_owner(self) -> str:
        """The cluster whose hosts these are: the one that created (and may destroy) its containers and
        pinned their SSH host keys. A restored copy borrows its source's.

        >>> ClusterSpec(name="pg").host_owner, ClusterSpec(name="pg-drill", hosts_of="pg").host_owner
        ('pg', 'pg')
        """
        return self.hosts_of or self.name

    @field_validator("data_root")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"must be an absolute path (got {path!r})")
        return path.rstrip("/") or "/"

    @field_validator("allowed_client_networks")
    @classmethod
    def _cidrs(cls, nets: list[str]) -> list[str]:
        return checked_networks(nets)

    @model_validator(mode="after")
    def _provider_settings(self) -> ClusterSpec:
        if self.provider == "ssh" and self.ssh is None:
            raise ValueError("ssh: provider 'ssh' needs an ssh: section with hosts and a key (see deployments/clusters/ssh.yaml)")
        if self.provider == "proxmox":
            if self.proxmox is None:
                raise ValueError("proxmox: provider 'proxmox' needs a proxmox: section with blocks and containers "
                                 "(see deployments/clusters/proxmox.yaml)")
            wanted = 1 if self.proxmox.layout == "single" else self.members
            if len(self.proxmox.containers) != wanted:
                raise ValueError(f"proxmox.containers: layout {self.proxmox.layout!r} needs {wanted} container(s) "
                                 f"for {self.members} members, got {len(self.proxmox.containers)}")
        return self

    @model_validator(mode="after")
    def _vip_placement(self) -> ClusterSpec:
        routing = self.postgres.routing if self.postgres is not None else None
        vip = routing.vip if routing is not None else None
        if routing is None or vip is None:
            return self
        if not routing.enabled:
            raise ValueError("postgres.routing.vip: a virtual IP leads to the routers, and routing is off; set "
                             "postgres.routing.enabled: true, or drop postgres.routing.vip")
        if self.provider == "local":
            raise ValueError("postgres.routing.vip: the local provider runs every member on this machine; a virtual IP "
                             "needs member hosts on one network (providers ssh and proxmox); drop postgres.routing.vip")
        hosts = (self.ssh.hosts if self.provider == "ssh" and self.ssh else [])
        if any(h.address == vip.address for h in hosts):
            raise ValueError(f"postgres.routing.vip.address: {vip.address} is a member host's own address; choose an "
                             "unused one")
        shared = (self.provider == "ssh" and len({h.address for h in hosts}) < self.members) or (
            self.provider == "proxmox" and self.proxmox is not None and self.proxmox.layout == "single")
        if shared:
            raise ValueError("postgres.routing.vip: members share a host, and the virtual IP follows the primary from "
                             "host to host; give each member a host of its own (ssh.hosts, proxmox layout per-member), "
                             "or drop postgres.routing.vip")
        return self

    @model_validator(mode="after")
    def _fs_repository_reachable(self) -> ClusterSpec:
        spread = (self.provider == "ssh" and self.ssh is not None and len({h.address for h in self.ssh.hosts}) > 1) or (
            self.provider == "proxmox" and self.proxmox is not None and self.proxmox.layout == "per-member"
        )
        for i, repo in enumerate(self.backup.repositories):
            if spread and self.members > 1 and repo.type == "fs" and not repo.shared:
                raise ValueError(
                    f"backup.repositories.{i}: an fs repository on members spread over several hosts would split the "
                    "backups; use an s3 repository, or a shared mount with shared: true"
                )
        return self

    @model_validator(mode="after")
    def _etcd_size(self) -> ClusterSpec:
        size = self.postgres.etcd_size(self.members) if self.postgres is not None else 1  # a replica set runs none
        if size % 2 == 0:
            raise ValueError(
                f"postgres.etcd_members: {size} is even; etcd needs an odd member "
                "count (1, 3, 5 or 7): set postgres.etcd_members to an odd number"
            )
        return self

    @model_validator(mode="after")
    def _ports_distinct(self) -> ClusterSpec:
        seen: dict[int, str] = {}
        for field, port in port_plan(self):
            if port > 65535:
                raise ValueError(f"{field}: {port} is past 65535; choose a lower base port")
            if port in seen:
                raise ValueError(
                    f"{field}: port {port} is also {seen[port]}; move one base port so the ranges do not overlap"
                )
            seen[port] = field
        return self

    @model_validator(mode="after")
    def _copies_clear_of_the_cluster(self) -> ClusterSpec:
        problem = copy_port_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def cluster_dir(self) -> str:
        return f"{self.data_root}/{self.name}"

    @property
    def backup_dir(self) -> str:
        """pgBackRest's config, log and lock files for this cluster."""
        return f"{self.cluster_dir}/pgbackrest"


def port_plan(spec: ClusterSpec) -> list[tuple[str, int]]:
    """Every port the cluster of the spec's engine uses, named by the spec field it comes from.

    >>> [p for _, p in port_plan(ClusterSpec(members=1))]
    [5432, 8008, 2379, 2380]
    >>> port_plan(ClusterSpec(engine="mongodb", members=2))
    [('mongodb.port (member 0)', 27017), ('mongodb.port (member 1)', 27018)]
    """
    return engine_layout(spec).plan(spec)


#: A layout: every port of a spec's cluster, or of its restore drill's one-member copy (before the copy's offset).
Layout = Callable[[ClusterSpec], list[tuple[str, int]]]


class EngineLayout(NamedTuple):
    """How one engine lays out its ports: ``base`` names the spec field they grow from (what a copy's offset moves),
    ``plan`` the cluster's, ``copy`` the restore drill's copy's."""

    base: str
    plan: Layout
    copy: Layout


def postgres_layout(spec: ClusterSpec) -> list[tuple[str, int]]:
    """PostgreSQL's: each member's PostgreSQL and Patroni, etcd, and the routers and poolers (:func:`layout_plan`)."""
    return layout_plan(spec.pg.ports, spec.members, spec.pg.etcd_size(spec.members), routing_plan(spec.pg.routing))


def postgres_copy_layout(spec: ClusterSpec) -> list[tuple[str, int]]:
    """The drill's copy of a PostgreSQL cluster: one member, one etcd member, no routing."""
    return layout_plan(spec.pg.ports, 1, 1)


def mongodb_layout(spec: ClusterSpec, members: int | None = None) -> list[tuple[str, int]]:
    """MongoDB's: member ``i``'s mongod on ``mongodb.port + i``, nothing else (a replica set elects without etcd
    or Patroni, and is never routed).

    >>> mongodb_layout(ClusterSpec(engine="mongodb"), 1)
    [('mongodb.port (member 0)', 27017)]
    """
    return [(f"mongodb.port (member {i})", spec.mongo.port + i)
            for i in range(spec.members if members is None else members)]


def mongodb_copy_layout(spec: ClusterSpec) -> list[tuple[str, int]]:
    """The drill's copy of a replica set: one member."""
    return mongodb_layout(spec, 1)


#: Each engine's port layout, chosen by ``spec.engine`` (:func:`engine_layout`), the one place plans branch on it.
ENGINE_LAYOUTS: dict[str, EngineLayout] = {
    "postgres": EngineLayout("postgres.ports", postgres_layout, postgres_copy_layout),
    "mongodb": EngineLayout("mongodb.port", mongodb_layout, mongodb_copy_layout),
}


def engine_layout(spec: ClusterSpec) -> EngineLayout:
    """The port layout of the spec's engine.

    >>> engine_layout(ClusterSpec()).base, engine_layout(ClusterSpec(engine="mongodb")).base
    ('postgres.ports', 'mongodb.port')
    """
    return ENGINE_LAYOUTS[spec.engine]


def restored_copy_plan(spec: ClusterSpec) -> list[tuple[str, int]]:
    """A restored copy's ports: the cluster's, each plus :data:`DEFAULT_PORT_OFFSET`.

    >>> restored_copy_plan(ClusterSpec(engine="mongodb", members=1))
    [('mongodb.port (member 0)', 27117)]
    """
    return shifted(port_plan(spec), DEFAULT_PORT_OFFSET)


def drill_copy_plan(spec: ClusterSpec) -> list[tuple[str, int]]:
    """The restore drill's copy's ports: one member (PostgreSQL's with one etcd member, no routing), each plus
    ``backup.restore_drill.port_offset``.

    >>> [p for _, p in drill_copy_plan(ClusterSpec())]
    [5732, 8308, 2679, 2680]
    >>> drill_copy_plan(ClusterSpec(engine="mongodb"))
    [('mongodb.port (member 0)', 27317)]
    """
    return shifted(engine_layout(spec).copy(spec), spec.backup.restore_drill.port_offset)


#: HAProxy's listeners, from ``ports.router`` up: their names and offsets (see :class:`Ports`).
ROUTER_LISTENERS: tuple[str, ...] = ("rw", "ro", "sync", "rw-pooled", "ro-pooled")


def routing_plan(routing: RoutingSettings) -> tuple[bool, bool]:
    """(routers, poolers): which routing processes the cluster runs.

    >>> routing_plan(RoutingSettings(enabled=True)), routing_plan(RoutingSettings(enabled=True, pooler={"enabled": False}))
    ((True, True), (True, False))
    >>> routing_plan(RoutingSettings())
    (False, False)
    """
    return routing.enabled, routing.enabled and routing.pooler.enabled


def layout_plan(ports: Ports, members: int, etcd_size: int,
                routed: tuple[bool, bool] = (False, False)) -> list[tuple[str, int]]:
    """The ports of ``members`` members and ``etcd_size`` etcd members on the base ``ports``, and of the
    routers and poolers ``routed`` (:func:`routing_plan`) asks for."""
    plan: list[tuple[str, int]] = []
    for i in range(members):
        plan.append((f"postgres.ports.postgres (member {i})", ports.postgres + i))
        plan.append((f"postgres.ports.patroni (member {i})", ports.patroni + i))
    for i in range(etcd_size):
        plan.append((f"postgres.ports.etcd (etcd member {i} client)", ports.etcd + 2 * i))
        plan.append((f"postgres.ports.etcd (etcd member {i} peer)", ports.etcd + 2 * i + 1))
    routers, poolers = routed
    if routers:
        plan += [(f"postgres.ports.router ({name} route)", ports.router + i) for i, name in enumerate(ROUTER_LISTENERS)]
        plan.append(("postgres.ports.router_stats", ports.router_stats))
    if poolers:
        plan += [(f"postgres.ports.pgbouncer (member {i})", ports.pgbouncer + i) for i in range(members)]
    return plan


def copy_port_problem(spec: ClusterSpec) -> str | None:
    """Why a copy of ``spec`` could never start beside it, or None: a restored copy's port (ports +
    :data:`DEFAULT_PORT_OFFSET`) or the restore drill copy's (one member, ports + its ``port_offset``) lands
    on one of the cluster's own ports, or past 65535.

    >>> copy_port_problem(ClusterSpec()) is None
    True
    >>> odd = ClusterSpec.model_construct(postgres=PostgresSettings(ports=Ports(patroni=5532)), members=3,
    ...                                   backup=BackupSettings())
    >>> copy_port_problem(odd)[:123]  # doctest: +NORMALIZE_WHITESPACE
    'postgres.ports: a restored copy (postgres.ports + 100) would put its postgres.ports.postgres (member 0) on port
    5532, which'
    >>> near = ClusterSpec.model_construct(engine="mongodb", members=3, mongodb=MongoDBSettings(),
    ...                                    backup=BackupSettings(restore_drill={"port_offset": 2}))
    >>> copy_port_problem(near)[:115]
    "backup.restore_drill.port_offset: the restore drill's copy (mongodb.port + 2) would put its mongodb.port (member 0)"
    """
    own = port_plan(spec)
    base = engine_layout(spec).base
    offset = spec.backup.restore_drill.port_offset
    copies = (
        (base, f"a restored copy ({base} + {DEFAULT_PORT_OFFSET})", restored_copy_plan(spec),
         f"move one base port so no range of the cluster starts {DEFAULT_PORT_OFFSET} above another's"),
        ("backup.restore_drill.port_offset", f"the restore drill's copy ({base} + {offset})", drill_copy_plan(spec),
         "choose an offset that moves the copy past every port of the cluster (the default is 300)"),
    )
    for field, what, plan, fix in copies:
        high = max(port for _, port in plan)
        if high > 65535:
            return f"{field}: {what} would need port {high}, past 65535; choose lower base ports or a smaller offset"
        clash = copy_clash(own, plan)
        if clash is not None:
            return f"{field}: {what} would put its {clash[0]} on port {clash[1]}, which is the cluster's {clash[2]}; {fix}"
    return None


def apply_env_overrides(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return ``data`` with every ``DBTIER_*`` variable laid over it, both in the layout of engine sections
    (:func:`migrate_layout`: ``DBTIER_PATRONI__TTL`` still sets ``postgres.patroni.ttl``).

    >>> apply_env_overrides({"postgres": {"ports": {"postgres": 5432}}},
    ...                     {"DBTIER_PORTS__POSTGRES": "6432", "HOME": "/"})
    {'postgres': {'ports': {'postgres': 6432}}}
    >>> apply_env_overrides({}, {"DBTIER_POSTGRES__SYNCHRONOUS_MODE": "true"})
    {'postgres': {'synchronous_mode': True}}
    """
    tree: dict[str, Any] = {}
    for key in sorted(environ):
        if not key.startswith("DBTIER_") or key in NON_SPEC_ENV:
            continue
        path = key[len("DBTIER_"):].lower().split("__")
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = yaml.safe_load(environ[key]) if environ[key] != "" else ""
    engine = tree.get("engine", data.get("engine", "postgres"))
    return _deep_merge(migrate_layout(data, engine)[0], migrate_layout(tree, engine)[0])


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = _deep_copy(base)
    for key, value in over.items():
        here = merged.get(key)
        merged[key] = _deep_merge(here, value) if isinstance(here, Mapping) and isinstance(value, Mapping) else value
    return merged


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, the first problem first: ``field.path: what is wrong``."""
    problems = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "is not a known field; check its spelling against deployments/clusters/default.yaml"
        elif item["type"] == "literal_error":
            msg = msg.replace("Input should be", "must be")
        elif "input" in item and item["type"] not in ("missing",) and not isinstance(item["input"], dict) and "(got " not in msg:
            msg = f"{msg} (got {item['input']!r})"
        if not loc:
            problems.append(msg)
        else:
            problems.append(f"{loc}: {msg}")
    return "; ".join(problems)


#: The settings outside the engine sections that one engine owns (dotted spec fields): a spec of the other engine that
#: sets one to anything but its default is refused (:func:`foreign_engine_setting`), so no value is silently ignored.
ENGINE_SETTINGS: dict[str, tuple[str, ...]] = {
    "postgres": ("backup.restore_drill.check_query", "monitoring.exporters.postgres", "monitoring.exporters.pgbouncer"),
    "mongodb": ("monitoring.exporters.mongodb",),
}


def _dotted(spec: ClusterSpec, dotted: str) -> Any:
    value: Any = spec
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def foreign_engine_setting(spec: ClusterSpec) -> str | None:
    """The one-line refusal of a setting outside the engine sections that belongs to the other engine, set away from
    its default; None when every setting belongs to the spec's engine (the other engine's section is refused by
    :func:`migrate_layout`).

    >>> foreign_engine_setting(ClusterSpec(engine="mongodb",
    ...                                    backup={"restore_drill": {"check_query": "select 1"}}))[:96]
    "backup.restore_drill.check_query: belongs to engine postgres, and this spec's engine is mongodb;"
    >>> problem = foreign_engine_setting(ClusterSpec(monitoring={"exporters": {"mongodb": 9300}}))
    >>> problem  # doctest: +NORMALIZE_WHITESPACE
    "monitoring.exporters.mongodb: belongs to engine mongodb, and this spec's engine is postgres; remove it, or set
    engine: mongodb"
    >>> foreign_engine_setting(ClusterSpec(engine="mongodb", mongodb={"port": 28017})) is None
    True
    """
    defaults = _default_spec()
    for owner, settings in ENGINE_SETTINGS.items():
        if owner == spec.engine:
            continue
        for dotted in settings:
            if _dotted(spec, dotted) != _dotted(defaults, dotted):
                return _foreign(dotted, owner, spec.engine)
    return None


@functools.cache
def _default_spec() -> ClusterSpec:
    return ClusterSpec()


def build_spec(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ClusterSpec:
    """Validate layered data into a spec, or raise a one-line :class:`SpecError`."""
    try:
        layered = apply_env_overrides(data, os.environ if environ is None else environ)
    except ValueError as err:
        raise SpecError(f"invalid cluster spec: {err}") from None
    try:
        spec = ClusterSpec.model_validate(layered)
    except ValidationError as err:
        raise SpecError(f"invalid cluster spec: {format_validation_error(err)}") from None
    foreign = foreign_engine_setting(spec)
    if foreign:
        raise SpecError(f"invalid cluster spec: {foreign}")
    return spec


def load_spec(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> ClusterSpec:
    """Load a YAML spec (the default one when ``path`` is None), apply ``DBTIER_*`` overrides, validate."""
    env = os.environ if environ is None else environ
    _, data = _read_spec_file(path, env)
    return build_spec(data, env)


def _read_spec_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Path, dict[str, Any]]:
    chosen = Path(path or env.get("DBTIER_SPEC") or DEFAULT_SPEC_PATH)
    try:
        text = chosen.read_text()
    except OSError as err:
        raise SpecError(f"spec: cannot read {chosen}: {err.strerror}; pass an existing YAML file with --spec") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"spec: {chosen} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec: {chosen} must hold a mapping of fields (name:, members:, ...)")
    return chosen, data


def layout_notice(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """One line when the spec file :func:`load_spec` reads gives settings in their old places (before the engine
    sections), else None: they still load, and the line says where they belong now."""
    env = os.environ if environ is None else environ
    chosen, data = _read_spec_file(path, env)
    moved = old_layout(data)
    if not moved:
        return None
    engine = str(env.get("DBTIER_ENGINE") or data.get("engine") or "postgres")
    one = len(moved) == 1
    return (f"spec {chosen}: {moved_names(moved)} {'is' if one else 'are'} in the old place and read under {engine}:; "
            f"move {'it' if one else 'them'} there ({ENGINE_SAMPLES.get(engine, ENGINE_SAMPLES['postgres'])} shows "
            "the layout)")


def old_layout(data: Mapping[str, Any]) -> list[str]:
    """The settings ``data`` gives in the old places (before engine sections), as ``old -> new``; [] when none does
    or when the layout is refused anyway.

    >>> old_layout({"patroni": {"ttl": 30}, "postgres": {"synchronous_mode": True}})
    ['patroni -> postgres.patroni']
    """
    try:
        return migrate_layout(data)[1]
    except ValueError:
        return []


#: The sample spec of each engine, laid out in sections.
ENGINE_SAMPLES = {"postgres": "deployments/clusters/default.yaml", "mongodb": "deployments/clusters/mongodb.yaml"}


def moved_names(moved: list[str]) -> str:
    """The old places of :func:`old_layout`'s list, the programs under ``binaries`` named together.

    >>> moved_names(["ports -> postgres.ports", "binaries.etcd -> postgres.binaries.etcd",
    ...              "binaries.patroni -> postgres.binaries.patroni"])
    'ports, binaries.etcd and .patroni'
    """
    names = [m.split(" -> ")[0] for m in moved]
    programs = [n.removeprefix("binaries.") for n in names if n.startswith("binaries.")]
    rest = [n for n in names if not n.startswith("binaries.")]
    if programs:
        tail = f"binaries.{programs[0]}" + (f" and .{programs[1]}" if len(programs) == 2 else
                                              f" and {len(programs) - 1} more" if len(programs) > 2 else "")
        rest.append(tail)
    return ", ".join(rest)

