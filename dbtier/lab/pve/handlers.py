"""The endpoints the double implements, keyed by HTTP method and schema path template.

Messages and status codes copy what PVE answers: a synchronous refusal is a 500 whose
status line carries the reason; work that takes time returns a UPID and may fail later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dbtier.lab.pve.state import ApiError, Container, Params, PveState, mac_for, new_digest

Handler = Callable[[PveState, Params, Params], Any]

#: Create parameters that PVE consumes instead of storing them in the container's config.
CREATE_ONLY = frozenset({"node", "vmid", "ostemplate", "ssh-public-keys", "start", "storage", "password",
                         "force", "restore", "unique", "ignore-unpack-errors", "bwlimit", "ha-managed", "pool"})
INTEGER_CONFIG = frozenset({"cores", "memory", "swap", "unprivileged", "onboot", "tty", "cpuunits"})


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
    existing = state.containers.get(vmid)
    if existing is not None:
        raise ApiError(500, f"CT {vmid} already exists on node '{existing.node}'")
    ct = Container(vmid, node, _initial_config(vmid, params))
    state.containers[vmid] = ct
    problem = _create_problem(state, params)
    if problem and not state.faults.fail_next:
        state.faults.fail_next.append(f"unable to create CT {vmid} - {problem}")

    def created() -> None:
        ct.config.pop("lock", None)
        if params.get("start", "0").lower() in ("1", "true", "yes", "on"):
            state.boot(ct)

    def failed() -> None:
        state.containers.pop(vmid, None)

    return state.new_task(node, "vzcreate", vmid, created, failed)


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

    return state.new_task(ct.node, "vzdestroy", ct.vmid, destroyed)


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
    return state.new_task(ct.node, "vzstart", ct.vmid, lambda: state.boot(ct))


def _halt(kind: str) -> Handler:
    def handler(state: PveState, path: Params, params: Params) -> Any:
        ct = _unlocked(state.container(path["node"], path["vmid"]))
        if ct.status != "running":
            raise ApiError(500, f"CT {ct.vmid} not running")
        return state.new_task(ct.node, kind, ct.vmid, lambda: state.halt(ct))

    return handler


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
    ("GET", "/nodes/{node}/lxc/{vmid}/interfaces"): lxc_interfaces,
    ("GET", "/nodes/{node}/tasks/{upid}/status"): task_status,
}
