"""keepalived on every member host: the virtual IP follows the primary (pure: no I/O).

Why keepalived and not vip-manager: Debian ships vip-manager 1.0.2, which reads the leader key from etcd itself
(old config format, without 5.0's fix for a VIP left up on two hosts), so it would need its own etcd login and
TLS settings; keepalived asks the member's own Patroni, the same ``/primary`` check HAProxy uses, and needs
nothing from etcd.

Each host runs one VRRP instance, all of them ``BACKUP`` with the same priority and ``nopreempt``, talking
unicast to the other member hosts (no multicast needed on the network). A ``track_script`` without a weight
checks ``https://<member>/primary`` against the cluster CA: while it fails the instance is in FAULT and holds
nothing, so only the host whose Patroni is the leader can hold the address; when that host's check fails (its
Patroni demoted it, it crashed, or it is cut off and Patroni stepped down) it drops the address at once, and the
new primary's host takes it once its own check passes and no advertisement is heard.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbtier.spec import ClusterSpec, VipSettings
from dbtier.tls import tls_paths
from dbtier.engines.postgres.topology import PgMember, pg_members


@dataclass(frozen=True)
class Keeper:
    """keepalived on one member's host."""

    name: str
    member: PgMember

    @property
    def host(self) -> str:
        return self.member.host

    @property
    def dir(self) -> str:
        return f"{self.member.dir}/keepalived"

    @property
    def config(self) -> str:
        return f"{self.dir}/keepalived.conf"


def keepers(spec: ClusterSpec) -> list[Keeper]:
    """One keepalived per member (each on a host of its own: the spec refuses a shared one) when the spec has a
    virtual IP, else none.

    >>> spec = ClusterSpec(provider="ssh", members=1, ssh={"key_file": "/k", "hosts": [{"address": "10.0.0.11"}]},
    ...                    routing={"enabled": True, "vip": {"address": "10.0.0.50"}})
    >>> [(k.name, k.host, k.config) for k in keepers(spec)]
    [('vip0', '10.0.0.11', '/var/lib/dbtier/dbtier/pg0/keepalived/keepalived.conf')]
    """
    if spec.pg.routing.vip is None:
        return []
    return [Keeper(name=f"vip{m.index}", member=m) for m in pg_members(spec)]


def check_command(spec: ClusterSpec, member: PgMember) -> str:
    """The command keepalived runs: exit 0 only while the member's own Patroni answers 200 on ``/primary``.

    >>> check_command(ClusterSpec(tls={"enabled": False}), pg_members(ClusterSpec())[0])
    '/usr/bin/curl -sf -o /dev/null --max-time 2 http://127.0.0.1:8008/primary'
    """
    if spec.tls.enabled:
        ca = tls_paths(member.dir, "patroni").ca
        return f"/usr/bin/curl -sf -o /dev/null --max-time 2 --cacert {ca} https://{member.host}:{member.rest_port}/primary"
    return f"/usr/bin/curl -sf -o /dev/null --max-time 2 http://{member.host}:{member.rest_port}/primary"


def render_keepalived_config(spec: ClusterSpec, keeper: Keeper) -> str:
    """keepalived.conf of ``keeper`` (VRRP only; run ``keepalived -n -l -P -f <conf>`` as root).

    >>> spec = ClusterSpec(provider="ssh", ssh={"key_file": "/k", "hosts": [
    ...     {"address": "10.0.0.11"}, {"address": "10.0.0.12"}, {"address": "10.0.0.13"}]},
    ...     backup={"repositories": [{"type": "fs", "shared": True}]},
    ...     routing={"enabled": True, "vip": {"address": "10.0.0.50", "virtual_router_id": 7}})
    >>> conf = render_keepalived_config(spec, keepers(spec)[1])
    >>> [line.strip() for line in conf.splitlines() if line.strip().startswith(("unicast", "10.0.0", "virtual_router_id"))]
    ['virtual_router_id 7', 'unicast_src_ip 10.0.0.12', 'unicast_peer {', '10.0.0.11', '10.0.0.13', '10.0.0.50/24 dev eth0']
    """
    vip: VipSettings | None = spec.pg.routing.vip
    if vip is None:
        raise ValueError("postgres.routing.vip: no virtual IP in the spec")
    member = keeper.member
    peers = sorted({m.host for m in pg_members(spec)} - {member.host})
    script = f"chk_{spec.name.replace('-', '_')}_primary"
    lines = [
        f"# keepalived {keeper.name} on {member.host} for cluster {spec.name} (rendered by dbtier)",
        "global_defs {",
        f"    router_id {spec.name}-{member.name}",
        "    enable_script_security",
        "    script_user root",
        "    vrrp_garp_master_delay 1",
        "    vrrp_garp_master_repeat 3",
        "}",
        "",
        f"vrrp_script {script} {{",
        f'    script "{check_command(spec, member)}"',
        f"    interval {vip.check_interval_s}",
        "    timeout 3",
        "    fall 2",
        "    rise 2",
        "}",
        "",
        f"vrrp_instance {spec.name.replace('-', '_')} {{",
        "    state BACKUP",
        "    nopreempt",
        f"    interface {vip.interface}",
        f"    virtual_router_id {vip.virtual_router_id}",
        "    priority 100",
        "    advert_int 1",
        f"    unicast_src_ip {member.host}",
        "    unicast_peer {",
        *(f"        {peer}" for peer in peers),
        "    }",
        "    virtual_ipaddress {",
        f"        {vip.address}/{vip.prefix} dev {vip.interface}",
        "    }",
        "    track_script {",
        f"        {script}",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def keepalived_argv(binary: str, keeper: Keeper) -> list[str]:
    """Foreground, VRRP only, logging to the console (the service's log file), pid files of its own.

    >>> keepalived_argv("/usr/sbin/keepalived", keepers(ClusterSpec(provider="ssh", members=1, ssh={"key_file": "/k", "hosts": [
    ...     {"address": "10.0.0.11"}]}, routing={"enabled": True, "vip": {"address": "10.0.0.50"}}))[0])[1:5]
    ['--dont-fork', '--log-console', '--vrrp', '--use-file=/var/lib/dbtier/dbtier/pg0/keepalived/keepalived.conf']
    """
    return [binary, "--dont-fork", "--log-console", "--vrrp", f"--use-file={keeper.config}",
            f"--pid={keeper.dir}/keepalived.pid", f"--vrrp_pid={keeper.dir}/vrrp.pid"]
