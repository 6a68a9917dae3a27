"""Proxmox VE containers through the REST API (proxmoxer), for the proxmox provider.

Pure builders turn typed inputs into the parameters of ``POST /nodes/{node}/lxc``
(what ``pct create 300 --cores 4 --memory 4096 --net0 ... --rootfs local-lvm:100`` says);
thin functions take a proxmoxer client (passed in) and hold one API conversation each:
find or create a container, wait on a task, read an address, destroy what dbtier created.
Every container dbtier creates carries the tags ``dbtier`` and ``dbtier-<cluster>``; teardown
touches nothing without them.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from dbtier.errors import ProvisionError

#: A proxmoxer ``ProxmoxAPI``; the library has no type hints.
Client = Any

OWNER_TAG = "dbtier"
DEFAULT_PORT = 8006
HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
TOKEN_ID_RE = re.compile(r"^(?P<user>[^@!\s]+@[^@!\s]+)!(?P<name>[A-Za-z][A-Za-z0-9._-]*)$")
STORAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")


class ProxmoxError(ProvisionError):
    """A Proxmox API call or task failed; ``status`` is the HTTP status, ``exitstatus`` the task's."""

    def __init__(self, message: str, *, status: int | None = None, exitstatus: str | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status
        self.exitstatus = exitstatus


@dataclass(frozen=True)
class StaticIPv4:
    """A fixed address for net0: ``address`` in CIDR form, optional default gateway."""

    address: str
    gateway: str | None = None


@dataclass(frozen=True)
class ContainerPlan:
    """One LXC container as dbtier wants it. ``vmid=None`` lets PVE pick the next free id."""

    hostname: str
    cluster: str
    ostemplate: str
    ssh_public_key: str
    vmid: int | None = None
    storage: str = "local-lvm"
    bridge: str = "vmbr0"
    cores: int = 2
    memory_mb: int = 2048
    swap_mb: int = 512
    rootfs_gb: int = 16
    ipv4: StaticIPv4 | None = None  # None: DHCP


@dataclass(frozen=True)
class ContainerRef:
    """A container as the cluster reports it."""

    node: str
    vmid: int
    hostname: str
    status: str
    tags: tuple[str, ...] = ()


# -- pure builders ---------------------------------------------------------------------------------


def owner_tags(cluster: str) -> tuple[str, str]:
    """The tags that mark a container as dbtier's, for one cluster.

    >>> owner_tags("pg")
    ('dbtier', 'dbtier-pg')
    """
    return OWNER_TAG, f"{OWNER_TAG}-{cluster}"


def parse_tags(value: str | None) -> tuple[str, ...]:
    """PVE's tag list (``;``, ``,`` or space separated) as a tuple.

    >>> parse_tags("dbtier;dbtier-pg") == parse_tags("dbtier, dbtier-pg")
    True
    """
    return tuple(t for t in re.split(r"[;,\s]+", value or "") if t)


def owned_by(tags: Sequence[str], cluster: str) -> bool:
    """True when ``tags`` mark the container as created by dbtier for ``cluster``."""
    return all(tag in tags for tag in owner_tags(cluster))


def net0_value(bridge: str, ipv4: StaticIPv4 | None) -> str:
    """The ``net0`` property string: DHCP, or a static address with its gateway.

    >>> net0_value("vmbr0", None)
    'name=eth0,bridge=vmbr0,ip=dhcp'
    """
    if not STORAGE_RE.match(bridge):
        raise ProxmoxError(f"bridge: {bridge!r} is not a bridge name; use the PVE bridge, e.g. vmbr0")
    value = f"name=eth0,bridge={bridge}"
    if ipv4 is None:
        return f"{value},ip=dhcp"
    try:
        iface = ipaddress.IPv4Interface(ipv4.address)
    except ValueError:
        raise ProxmoxError(f"ipv4.address: {ipv4.address!r} is not IPv4 CIDR; write it like 10.0.0.21/24") from None
    if "/" not in ipv4.address:
        raise ProxmoxError(f"ipv4.address: {ipv4.address!r} has no prefix length; write it like {ipv4.address}/24")
    value += f",ip={iface.with_prefixlen}"
    if ipv4.gateway is not None:
        value += f",gw={_gateway(iface, ipv4.gateway)}"
    return value


def _gateway(iface: ipaddress.IPv4Interface, gateway: str) -> str:
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise ProxmoxError(f"ipv4.gateway: {gateway!r} is not an IPv4 address; write it like 10.0.0.1") from None
    if gw not in iface.network:
        raise ProxmoxError(f"ipv4.gateway: {gw} is outside {iface.network}; use a gateway on the container's network")
    return str(gw)


def rootfs_value(storage: str, size_gb: int) -> str:
    """A new root volume of ``size_gb`` GiB on ``storage``, as ``pct create --rootfs`` takes it.

    >>> rootfs_value("local-lvm", 100)
    'local-lvm:100'
    """
    if not STORAGE_RE.match(storage):
        raise ProxmoxError(f"storage: {storage!r} is not a storage id; use one from 'pvesm status', e.g. local-lvm")
    return f"{storage}:{size_gb}"


def check_plan(plan: ContainerPlan) -> None:
    """Raise :class:`ProxmoxError` naming the first field PVE would refuse."""
    limits = [("cores", plan.cores, 1, 8192), ("memory_mb", plan.memory_mb, 16, None),
              ("swap_mb", plan.swap_mb, 0, None), ("rootfs_gb", plan.rootfs_gb, 1, None)]
    if plan.vmid is not None:
        limits.append(("vmid", plan.vmid, 100, 999_999_999))
    for name, value, low, high in limits:
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            raise ProxmoxError(f"{name}: {value} is out of range; it must be at least {low}{upper}")
    if not HOSTNAME_RE.match(plan.hostname):
        raise ProxmoxError(f"hostname: {plan.hostname!r} is not a DNS label; use 1-63 lowercase letters, digits, dashes")
    if not plan.ostemplate or ":" not in plan.ostemplate:
        raise ProxmoxError(f"template: {plan.ostemplate!r} is not a volume id; write it like "
                           "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")
    if not plan.ssh_public_key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise ProxmoxError("ssh_public_key: not an OpenSSH public key; pass the .pub line of the project's key pair")


def description_value(plan: ContainerPlan) -> str:
    """The description PVE shows on the container's summary page."""
    return (f"Created by dbtier for cluster {plan.cluster}. dbtier teardown destroys it "
            f"(tag {owner_tags(plan.cluster)[1]}); do not reuse.")


def create_params(plan: ContainerPlan, vmid: int) -> dict[str, str | int]:
    """The parameters of ``POST /nodes/{node}/lxc`` for ``plan`` with id ``vmid``."""
    check_plan(plan)
    return {
        "vmid": vmid,
        "ostemplate": plan.ostemplate,
        "hostname": plan.hostname,
        "cores": plan.cores,
        "memory": plan.memory_mb,
        "swap": plan.swap_mb,
        "rootfs": rootfs_value(plan.storage, plan.rootfs_gb),
        "net0": net0_value(plan.bridge, plan.ipv4),
        "unprivileged": 1,
        "features": "nesting=1",
        "ssh-public-keys": plan.ssh_public_key.strip(),
        "tags": ";".join(owner_tags(plan.cluster)),
        "description": description_value(plan),
        "onboot": 1,
        "start": 1,
    }


def node_of_upid(upid: str) -> str:
    """The node a task runs on, read from its UPID.

    >>> node_of_upid("UPID:pve1:00001234:0000ABCD:65F0A1B2:vzcreate:300:root@pam!dbtier:")
    'pve1'
    """
    fields = upid.split(":")
    if len(fields) != 9 or fields[0] != "UPID" or not fields[1]:
        raise ProxmoxError(f"task id {upid!r} is not a PVE UPID; the API answered something unexpected")
    return fields[1]


def task_failure(status: Mapping[str, Any]) -> str | None:
    """The exit status of a stopped task that failed; None when it succeeded (``OK`` or ``WARNINGS: n``)."""
    exitstatus = str(status.get("exitstatus", ""))
    if exitstatus == "OK" or exitstatus.startswith("WARNINGS"):
        return None
    return exitstatus or "no exit status"


def ipv4_of(interfaces: Sequence[Mapping[str, Any]]) -> str | None:
    """The first IPv4 address (no prefix) of a non-loopback interface in ``/interfaces``: its
    ``inet``, else the first ``inet`` entry of its ``ip-addresses`` (the schema makes only that one required).

    >>> ipv4_of([{"name": "lo", "inet": "127.0.0.1/8"}, {"name": "eth0", "inet": "10.0.0.5/24"}])
    '10.0.0.5'
    """
    for iface in interfaces:
        if iface.get("name") == "lo":
            continue
        if iface.get("inet"):
            return str(iface["inet"]).split("/")[0]
        for entry in iface.get("ip-addresses") or []:
            if entry.get("ip-address-type") == "inet" and entry.get("ip-address"):
                return str(entry["ip-address"])
    return None


def describe_api_error(step: str, status: int, reason: str, errors: Mapping[str, Any] | None) -> str:
    """One line for a failed API call: what was attempted, what PVE said, what to do."""
    said = " ".join(str(reason).split())
    if status == 401:
        return (f"{step}: the Proxmox API rejected the token (401 {said}); check token_id (USER@REALM!TOKENID) "
                "and token_secret in the ProxmoxCredentials block")
    if status == 403:
        return f"{step}: the token lacks a permission (403 {said}); grant its role VM.Allocate and Datastore.AllocateSpace"
    if status == 400 and errors:
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
        return f"{step}: Proxmox refused the parameters ({detail}); fix those fields"
    if "no such cluster node" in said or "hostname lookup" in said:
        return f"{step}: {said}; fix the node name (the nodes list of the ProxmoxCredentials block)"
    if "already exists" in said:
        return f"{step}: {said}; choose another vmid or remove that container"
    return f"{step}: Proxmox answered {status} {said}"


# -- client set-up ---------------------------------------------------------------------------------


def api_host(api_url: str) -> str:
    """``host:port`` for proxmoxer from an API URL (``https://pve1:8006``, ``pve1``, ``[::1]:8006``).

    >>> api_host("https://pve1.example.com")
    'pve1.example.com:8006'
    """
    parts = urlsplit(api_url if "//" in api_url else f"https://{api_url}")
    if parts.scheme != "https" or not parts.hostname or parts.path.rstrip("/") not in ("", "/api2/json"):
        raise ProxmoxError(f"api_url: {api_url!r} is not a Proxmox API address; write it like https://pve1:8006")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or DEFAULT_PORT}"


def split_token_id(token_id: str) -> tuple[str, str]:
    """``(user, token name)`` from a full token id.

    >>> split_token_id("dbtier@pve!provision")
    ('dbtier@pve', 'provision')
    """
    found = TOKEN_ID_RE.match(token_id)
    if not found:
        raise ProxmoxError(f"token_id: {token_id!r} is not USER@REALM!TOKENID; copy the full id, e.g. root@pam!dbtier")
    return found["user"], found["name"]


def normalize_fingerprint(fingerprint: str) -> str:
    """The SHA-256 certificate fingerprint as ``AA:BB:...`` (PVE shows it so under Certificates)."""
    digits = re.sub(r"[:\s]", "", fingerprint).upper()
    if not re.fullmatch(r"[0-9A-F]{64}", digits):
        raise ProxmoxError("fingerprint: not a SHA-256 fingerprint; copy the 64 hex digits PVE shows under Certificates")
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def tls_verify(verify_ssl: bool, ca_file: str | None) -> bool | str:
    """What requests' ``verify`` gets: the CA file when given, else the flag."""
    return ca_file if verify_ssl and ca_file else verify_ssl


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """Accepts exactly one server certificate, by fingerprint, instead of a CA chain."""

    def __init__(self, fingerprint: str) -> None:
        self._fingerprint = fingerprint
        super().__init__()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


def make_client(api_url: str, token_id: str, token_secret: str, *, verify: bool | str = True,
                fingerprint: str | None = None, timeout: float = 30) -> Client:
    """A proxmoxer client with token auth over HTTPS; a fingerprint replaces CA verification."""
    user, name = split_token_id(token_id)
    pinned = normalize_fingerprint(fingerprint) if fingerprint else None
    client = ProxmoxAPI(api_host(api_url), backend="https", service="PVE", user=user, token_name=name,
                        token_value=token_secret, verify_ssl=False if pinned else verify, timeout=timeout)
    if pinned:
        client._store["session"].mount("https://", _PinnedAdapter(pinned))  # proxmoxer exposes no hook for this
    return client


@contextmanager
def _api(step: str) -> Iterator[None]:
    """Turn proxmoxer and requests failures into one-line :class:`ProxmoxError`."""
    try:
        yield
    except ResourceException as err:
        errors = err.errors if isinstance(err.errors, Mapping) else None
        raise ProxmoxError(describe_api_error(step, err.status_code, err.content, errors), status=err.status_code) from err
    except requests.exceptions.SSLError as err:
        raise ProxmoxError(f"{step}: TLS verification of the Proxmox API failed; set ca_file or fingerprint "
                           "in the ProxmoxCredentials block (verify_ssl=False only for a lab)") from err
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        raise ProxmoxError(f"{step}: cannot reach the Proxmox API ({type(err).__name__}); "
                           "check api_url and that port 8006 is open from this machine") from err


# -- conversations with the API --------------------------------------------------------------------

Sleep = Callable[[float], None]


def check_node(client: Client, node: str) -> None:
    """Raise unless ``node`` is a node of the cluster (before creating anything on it)."""
    with _api("listing Proxmox nodes"):
        known = sorted(str(n["node"]) for n in client.nodes.get())
    if node not in known:
        raise ProxmoxError(f"node: {node!r} is not a node of this Proxmox cluster (it has {', '.join(known)}); "
                           "fix the nodes list in the ProxmoxCredentials block")


def list_containers(client: Client) -> list[ContainerRef]:
    """Every LXC container of the cluster, on any node."""
    with _api("listing containers"):
        rows = client.cluster.resources.get(type="vm")
    return [ContainerRef(str(r["node"]), int(r["vmid"]), str(r.get("name", "")), str(r.get("status", "")),
                         parse_tags(r.get("tags"))) for r in rows if r.get("type") == "lxc"]


def find_container(client: Client, *, vmid: int | None = None, hostname: str | None = None) -> ContainerRef | None:
    """The container with this vmid, else the one with this hostname; None when there is none."""
    containers = list_containers(client)
    for ct in containers:
        if vmid is not None and ct.vmid == vmid:
            return ct
    for ct in containers:
        if hostname is not None and ct.hostname == hostname:
            return ct
    return None


def poll_delays(poll: float, first: float = 0.1) -> Iterator[float]:
    """Seconds between polls of a task: quick at first (most tasks end within a second), then every ``poll``.

    >>> import itertools; list(itertools.islice(poll_delays(1.0), 6))
    [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    """
    delay = min(first, poll)
    while True:
        yield delay
        delay = min(delay * 2, poll)


def wait_for_task(client: Client, upid: str, *, timeout: float = 300, poll: float = 1.0,
                  sleep: Sleep = time.sleep) -> dict[str, Any]:
    """Poll a task until it stops; raise when it fails or outlives ``timeout`` seconds."""
    node = node_of_upid(upid)
    kind, target = upid.split(":")[5:7]
    deadline = time.monotonic() + timeout
    delays = poll_delays(poll)
    while True:
        with _api(f"reading task {kind} {target} on {node}"):
            status: dict[str, Any] = client.nodes(node).tasks(upid).status.get()
        if status.get("status") == "stopped":
            failure = task_failure(status)
            if failure is not None:
                raise ProxmoxError(f"task {kind} for CT {target} on {node} failed: {failure}", exitstatus=failure)
            return status
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProxmoxError(f"task {kind} for CT {target} on {node} still running after {timeout:g} s; "
                               f"see its log in the Proxmox UI ({upid}) or raise the timeout")
        sleep(min(next(delays), remaining))


def create_container(client: Client, node: str, plan: ContainerPlan, vmid: int, *, timeout: float = 300,
                     poll: float = 1.0) -> ContainerRef:
    """Create (and start) the container; no check for an existing one: see :func:`ensure_container`."""
    params = create_params(plan, vmid)
    with _api(f"creating CT {vmid} ({plan.hostname}) on {node}"):
        upid = client.nodes(node).lxc.post(**params)
    wait_for_task(client, upid, timeout=timeout, poll=poll)
    return ContainerRef(node, vmid, plan.hostname, "running", owner_tags(plan.cluster))


def next_vmid(client: Client) -> int:
    with _api("asking for a free vmid"):
        return int(client.cluster.nextid.get())


def ensure_container(client: Client, node: str, plan: ContainerPlan, *, timeout: float = 300,
                     poll: float = 1.0) -> tuple[ContainerRef, str]:
    """Find the plan's container (by vmid, else hostname) or create it; leave it running.

    Returns the container and a sentence saying what was done.
    """
    check_plan(plan)
    check_node(client, node)
    found = find_container(client, vmid=plan.vmid, hostname=plan.hostname)
    if found is None:
        began = time.monotonic()
        vmid = plan.vmid if plan.vmid is not None else next_vmid(client)
        ref = create_container(client, node, plan, vmid, timeout=timeout, poll=poll)
        return ref, f"CT {vmid} ({plan.hostname}) created on {node} in {time.monotonic() - began:.1f} s"
    _check_reusable(found, plan)
    if found.status == "running":
        return found, f"CT {found.vmid} ({found.hostname}) already running on {found.node}"
    start_container(client, found, timeout=timeout, poll=poll)
    return ContainerRef(found.node, found.vmid, found.hostname, "running", found.tags), \
        f"CT {found.vmid} ({found.hostname}) existed stopped on {found.node}; started it"


def _check_reusable(found: ContainerRef, plan: ContainerPlan) -> None:
    if not owned_by(found.tags, plan.cluster):
        raise ProxmoxError(f"CT {found.vmid} ({found.hostname!r} on {found.node}) already exists and dbtier did not "
                           f"create it for cluster {plan.cluster}; choose another vmid and hostname")
    if found.hostname != plan.hostname or (plan.vmid is not None and found.vmid != plan.vmid):
        raise ProxmoxError(f"CT {found.vmid} on {found.node} is named {found.hostname!r}, but the plan wants vmid "
                           f"{plan.vmid} named {plan.hostname!r}; fix the vmid or hostname so they match")


def start_container(client: Client, ct: ContainerRef, *, timeout: float = 120, poll: float = 1.0) -> None:
    with _api(f"starting CT {ct.vmid} on {ct.node}"):
        upid = client.nodes(ct.node).lxc(ct.vmid).status.start.post()
    wait_for_task(client, upid, timeout=timeout, poll=poll)


def stop_container(client: Client, ct: ContainerRef, *, timeout: float = 120, poll: float = 1.0) -> None:
    """Stop at once (the databases inside are stopped by their own flows before this)."""
    with _api(f"stopping CT {ct.vmid} on {ct.node}"):
        upid = client.nodes(ct.node).lxc(ct.vmid).status.stop.post()
    wait_for_task(client, upid, timeout=timeout, poll=poll)


def read_address(client: Client, ct: ContainerRef) -> str | None:
    """The running container's IPv4 address from ``GET /nodes/{node}/lxc/{vmid}/interfaces``; None before
    its interface has one (DHCP not answered yet)."""
    with _api(f"reading the interfaces of CT {ct.vmid} on {ct.node}"):
        return ipv4_of(client.nodes(ct.node).lxc(ct.vmid).interfaces.get() or [])


def container_address(client: Client, ct: ContainerRef, *, timeout: float = 60, poll: float = 1.0,
                      sleep: Sleep = time.sleep) -> str:
    """The container's IPv4 address, waiting for DHCP to hand one out."""
    deadline = time.monotonic() + timeout
    delays = poll_delays(poll)
    while True:
        address = read_address(client, ct)
        if address is not None:
            return address
        if time.monotonic() >= deadline:
            raise ProxmoxError(f"CT {ct.vmid} on {ct.node} has no IPv4 address after {timeout:g} s; "
                               "check DHCP on its bridge, or give it a static address in proxmox.containers")
        sleep(next(delays))


def destroy_container(client: Client, ct: ContainerRef, cluster: str, *, timeout: float = 300,
                      poll: float = 1.0) -> str:
    """Stop and destroy one container, only when it carries the cluster's dbtier tags."""
    with _api(f"reading CT {ct.vmid} on {ct.node}"):
        current = client.nodes(ct.node).lxc(ct.vmid).status.current.get()
    tags = parse_tags(current.get("tags"))
    if not owned_by(tags, cluster):
        raise ProxmoxError(f"CT {ct.vmid} on {ct.node} lacks the tags {';'.join(owner_tags(cluster))}; "
                           "dbtier destroys only containers it created (remove it by hand if you mean to)")
    if current.get("status") == "running":
        stop_container(client, ct, timeout=timeout, poll=poll)
    with _api(f"destroying CT {ct.vmid} on {ct.node}"):
        upid = client.nodes(ct.node).lxc(ct.vmid).delete(purge=1, **{"destroy-unreferenced-disks": 1})
    wait_for_task(client, upid, timeout=timeout, poll=poll)
    return f"CT {ct.vmid} ({ct.hostname}) stopped and destroyed on {ct.node}"


def destroy_cluster_containers(client: Client, cluster: str, *, timeout: float = 300,
                               poll: float = 1.0) -> list[str]:
    """Destroy every container tagged for ``cluster``; one sentence each."""
    return [destroy_container(client, ct, cluster, timeout=timeout, poll=poll)
            for ct in list_containers(client) if owned_by(ct.tags, cluster)]
