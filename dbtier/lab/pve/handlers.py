"""The endpoints the double implements, keyed by HTTP method and schema path template.

Messages and status codes copy what PVE answers: a synchronous refusal is a 500 whose
status line carries the reason; work that takes time returns a UPID and may fail later. With a host backend, the tasks of a
container bound to a host run the backend action of :data:`HOST_ACTIONS` (see :mod:`dbtier.lab.pve.backend`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dbtier.lab.pve.state import ApiError, Container, Params, PveState, mac_for, new_digest, static_ip

Handler = Callable[[PveState, Params, Params], Any]

#: Create parameters that PVE consumes instead of storing them in the container's config.
CREATE_ONLY = frozenset({"node", "vmid", "ostemplate", "ssh-public-keys", "start", "storage", "password",
                         "force", "restore", "unique", "ignore-unpack-errors", "bwlimit", "ha-managed", "pool"})
INTEGER_CONFIG = frozenset({"cores", "memory", "swap", "unprivileged", "onboot", "tty", "cpuunits"})
#: What each task does to the host of a bound container (a method of HostBackend).
HOST_ACTIONS = {"vzstart": "boot", "vzstop": "kill", "vzshutdown": "kill", "vzsuspend": "freeze",
                "vzresume": "thaw", "vzdestroy": "kill"}
TRUE = ("1", "true", "yes", "on")


def version(state: PveState, path: Params, params: Params) -> Any:
    return {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}


def nodes(state: PveState, path: Params, params: Params) -> Any:
    return [{"node": n, "status": "online", "type": "node", "maxcpu": 16, "maxmem": 64 << 30, "uptime": 86400}
            for n in state.nodes]


def resources(state: PveState, path: Params, params: Params) -> Any:
    kind = params.get("type")
    rows: list[dict[str, Any]] = []
    if kind in (None, "node"):
        rows += [{"id": f"node/{n}", "type": "node", "node": n, "status": "online"} for n in state.nodes]
    if kind in (None, "vm"):
        rows += [{**ct.summary(), "id": f"lxc/{ct.vmid}", "node": ct.node} for ct in state.containers.values()]
    return rows


def next_id(state: PveState, path: Params, params: Params) -> Any:
    if "vmid" in params:
        if int(params["vmid"]) in state.containers:
            raise ApiError(400, "Parameter verification failed.", {"vmid": f"VM {params['vmid']} already exists"})
        return params["vmid"]
    return str(next(i for i in range(100, 1_000_000_000) if i not in state.containers))


def lxc_list(state: PveState, path: Params, params: Params) -> Any:
    return [ct.summary() for ct in state.containers.values() if ct.node == path["node"]]


def lxc_create(state: PveState, path: Params, params: Params) -> Any:
    node, vmid = path["node"], int(params["vmid"])
    host = _bind(state, params)
    existing = state.containers.get(vmid)
    if existing is not None:
        raise ApiError(500, f"CT {vmid} already exists on node '{existing.node}'")
    ct = Container(vmid, node, _initial_config(vmid, params), host=host)
    state.containers[vmid] = ct
    problem = _create_problem(state, params)
    if problem and not state.faults.fail_next:
        state.faults.fail_next.append(f"unable to create CT {vmid} - {problem}")

    def created() -> None:
        ct.config.pop("lock", None)
        if params.get("start", "0").lower() in TRUE:
            state.boot(ct)

    def failed() -> None:
        state.containers.pop(vmid, None)

    return state.new_task(node, "vzcreate", vmid, created, failed, _create_work(state, host, params))


def _bind(state: PveState, params: Params) -> str | None:
    """The backend host a new container is (the one at its static address); None without a backend."""
    if state.backend is None:
        return None
    cidr = static_ip(params.get("net0", ""))
    if cidr is None:
        raise ApiError(400, "Parameter verification failed.", {"net0": (
            "this PVE test double serves lab hosts, each at its own static address; set ip=ADDRESS/PREFIX "
            "to a lab host's address (dbtier lab status lists them)")})
    address = cidr.split("/")[0]
    host = state.backend.host_at(address)
    if host is None:
        raise ApiError(400, "Parameter verification failed.", {"net0": (
            f"no lab host has the address {address}; use a lab host's address (dbtier lab status lists them)")})
    taken = next((ct for ct in state.containers.values() if ct.host == host), None)
    if taken is not None:
        raise ApiError(400, "Parameter verification failed.", {"net0": (
            f"lab host {host} ({address}) is CT {taken.vmid} already; destroy CT {taken.vmid} or use another address")})
    return host


def _create_work(state: PveState, host: str | None, params: Params) -> Callable[[], None] | None:
    """Creating a bound container: its root keys go to the host, then the host boots when ``start``."""
    backend = state.backend
    if backend is None or host is None:
        return None
    keys, start = params.get("ssh-public-keys", ""), params.get("start", "0").lower() in TRUE

    def work() -> None:
        if keys.strip():
            backend.authorize(host, keys)
        if start:
            backend.boot(host)

    return work


def host_work(state: PveState, ct: Container, kind: str) -> Callable[[], None] | None:
    """The backend call a task of ``kind`` makes on ``ct``'s host; None for a container without a host."""
    backend, host = state.backend, ct.host
    if backend is None or host is None or kind not in HOST_ACTIONS:
        return None
    action: Callable[[str], None] = getattr(backend, HOST_ACTIONS[kind])
    return lambda: action(host)


def _initial_config(vmid: int, params: Params) -> dict[str, Any]:
    config: dict[str, Any] = {"arch": "amd64", "ostype": "debian", "lock": "create", "digest": new_digest()}
    for key, value in params.items():
        if key not in CREATE_ONLY:
            config[key] = int(value) if key in INTEGER_CONFIG else value
    if "rootfs" in params:
        storage, _, size = params["rootfs"].partition(",")[0].partition(":")
        config["rootfs"] = f"{storage}:vm-{vmid}-disk-0,size={size}G"
    if "net0" in params:
        config["net0"] = f"{params['net0']},hwaddr={mac_for(vmid)},type=veth"
    return config


def _create_problem(state: PveState, params: Params) -> str | None:
    if state.templates is not None and params["ostemplate"] not in state.templates:
        return f"volume '{params['ostemplate']}' does not exist"
    storage = params.get("rootfs", params.get("storage", "local")).split(":")[0]
    if state.storages is not None and storage not in state.storages:
        return f"storage '{storage}' does not exist"
    return None


def lxc_index(state: PveState, path: Params, params: Params) -> Any:
    state.container(path["node"], path["vmid"])
    return [{"subdir": s} for s in ("config", "status", "interfaces", "snapshot", "firewall", "rrd")]


def lxc_destroy(state: PveState, path: Params, params: Params) -> Any:
    ct = state.container(path["node"], path["vmid"])
    if ct.status == "running" and params.get("force", "0") not in ("1", "true"):
        raise ApiError(500, f"unable to destroy CT {ct.vmid} - container is running")

    def destroyed() -> None:
        state.containers.pop(ct.vmid, None)

    return state.new_task(ct.node, "vzdestroy", ct.vmid, destroyed, work=host_work(state, ct, "vzdestroy"))


def lxc_status(state: PveState, path: Params, params: Params) -> Any:
    ct = state.container(path["node"], path["vmid"])
    return {**ct.summary(), "ha": {"managed": 0}}


def lxc_config(state: PveState, path: Params, params: Params) -> Any:
    ct = state.container(path["node"], path["vmid"])
    return {k: v for k, v in ct.config.items() if not k.startswith("_")}


def _unlocked(ct: Container) -> Container:
    if "lock" in ct.config:
        raise ApiError(500, f"CT is locked ({ct.config['lock']})")
    return ct


def lxc_start(state: PveState, path: Params, params: Params) -> Any:
    ct = _unlocked(state.container(path["node"], path["vmid"]))
    if ct.status == "running":
        raise ApiError(500, f"CT {ct.vmid} already running")
    return state.new_task(ct.node, "vzstart", ct.vmid, lambda: state.boot(ct), work=host_work(state, ct, "vzstart"))


def _halt(kind: str) -> Handler:
    def handler(state: PveState, path: Params, params: Params) -> Any:
        ct = _running(state, path)
        return state.new_task(ct.node, kind, ct.vmid, lambda: state.halt(ct), work=host_work(state, ct, kind))

    return handler


def _freeze(kind: str, frozen: bool) -> Handler:
    """suspend (``vzsuspend``) and resume (``vzresume``): the container keeps running, its processes
    stopped or let go. (PVE marks suspend experimental; it needs a running container.)"""
    def handler(state: PveState, path: Params, params: Params) -> Any:
        ct = _running(state, path)

        def done() -> None:
            ct.frozen = frozen

        return state.new_task(ct.node, kind, ct.vmid, done, work=host_work(state, ct, kind))

    return handler


def _running(state: PveState, path: Params) -> Container:
    ct = _unlocked(state.container(path["node"], path["vmid"]))
    if ct.status != "running":
        raise ApiError(500, f"CT {ct.vmid} not running")
    return ct


def lxc_interfaces(state: PveState, path: Params, params: Params) -> Any:
    ct = state.container(path["node"], path["vmid"])
    if ct.status != "running":
        raise ApiError(500, f"CT {ct.vmid} not running")
    loopback = _interface("lo", "00:00:00:00:00:00", "127.0.0.1/8")
    leased = time.monotonic() - float(ct.config.get("_booted", 0)) >= state.dhcp_delay
    return [loopback, _interface("eth0", mac_for(ct.vmid).lower(), ct.address if leased else None)]


def _interface(name: str, mac: str, inet: str | None) -> dict[str, Any]:
    iface: dict[str, Any] = {"name": name, "hwaddr": mac, "hardware-address": mac, "ip-addresses": []}
    if inet:
        address, _, prefix = inet.partition("/")
        iface["inet"] = inet
        iface["ip-addresses"] = [{"ip-address": address, "ip-address-type": "inet", "prefix": int(prefix or 32)}]
    return iface


def task_status(state: PveState, path: Params, params: Params) -> Any:
    task = state.tasks.get(path["upid"])
    if task is None or task.node != path["node"]:
        raise ApiError(500, f"no such task '{path['upid']}'")
    return task.status(time.monotonic())


ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/version"): version,
    ("GET", "/nodes"): nodes,
    ("GET", "/cluster/resources"): resources,
    ("GET", "/cluster/nextid"): next_id,
    ("GET", "/nodes/{node}/lxc"): lxc_list,
    ("POST", "/nodes/{node}/lxc"): lxc_create,
    ("GET", "/nodes/{node}/lxc/{vmid}"): lxc_index,
    ("DELETE", "/nodes/{node}/lxc/{vmid}"): lxc_destroy,
    ("GET", "/nodes/{node}/lxc/{vmid}/status/current"): lxc_status,
    ("GET", "/nodes/{node}/lxc/{vmid}/config"): lxc_config,
    ("POST", "/nodes/{node}/lxc/{vmid}/status/start"): lxc_start,
    ("POST", "/nodes/{node}/lxc/{vmid}/status/stop"): _halt("vzstop"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown"): _halt("vzshutdown"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/suspend"): _freeze("vzsuspend", True),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/resume"): _freeze("vzresume", False),
    ("GET", "/nodes/{node}/lxc/{vmid}/interfaces"): lxc_interfaces,
    ("GET", "/nodes/{node}/tasks/{upid}/status"): task_status,
}
