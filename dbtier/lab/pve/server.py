"""The PVE API double served over HTTPS (on loopback unless told), one thread, stopped by joining it.

A request goes through the same gates as on a real PVE: the token, the path and method
(only those in the published schema), the node, then the parameters (HTTP 400 with an
``errors`` map), and only then the handler.
"""

from __future__ import annotations

import hmac
import json
import re
import shutil
import ssl
import tempfile
import threading
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from typing_extensions import Self

from dbtier.lab.pve.certs import ServerCerts, make_certs
from dbtier.lab.pve.handlers import ROUTES
from dbtier.lab.pve.schema import Schema, load_schema, validate
from dbtier.lab.pve.state import ApiError, Container, PveState

if TYPE_CHECKING:
    from dbtier.lab.pve.backend import HostBackend

API_PREFIX = "/api2/json"
TOKEN_RE = re.compile(r"^PVEAPIToken[= ](?P<token_id>[^=\s]+)=(?P<secret>\S+)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every request thread: nothing outlives stop()
    block_on_close = True
    double: PveDouble


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, verb: str) -> None:
        try:
            status, body = 200, {"data": self.server.double.answer(verb, self.path, self._params(verb), self._auth())}
        except ApiError as err:
            status, body = err.status, {"data": None, "message": err.message + "\n"}
            if err.errors is not None:
                body["errors"] = err.errors
            self._reply(status, body, err.message)
            return
        self._reply(status, body, "OK")

    def _auth(self) -> str | None:
        return self.headers.get("Authorization")

    def _params(self, verb: str) -> dict[str, str]:
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if verb in ("GET", "DELETE") or not length:
            return query
        raw = self.rfile.read(length).decode("utf-8")
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return {**query, **{k: _wire(v) for k, v in json.loads(raw).items()}}
        return {**query, **dict(parse_qsl(raw, keep_blank_values=True))}

    def _reply(self, status: int, body: dict[str, Any], reason: str) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status, reason.replace("\n", " ").strip())
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _wire(value: Any) -> str:
    """A JSON body value as the string PVE would have received in a form."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class PveDouble:
    """A fake Proxmox VE cluster: ``with PveDouble() as pve: ProxmoxAPI(pve.host, ...)``.

    Fault hooks: :meth:`fail_next_task`, :meth:`hang_next_task`; seed foreign containers with
    :meth:`add_container`. ``state.task_seconds`` sets how long a task reports "running",
    ``state.dhcp_delay`` how long a started DHCP container waits for its address. ``leases`` are
    DHCP reservations (vmid -> IPv4 CIDR, e.g. a loopback address where a test sshd listens);
    other DHCP containers get 10.99.0.100/24 and up.

    ``backend``: the containers are that backend's hosts (:mod:`dbtier.lab.pve.backend`). ``listen``:
    the IPv4 address and port to serve on (port 0: any free one). ``cert_dir``: where the CA and server
    certificates go (kept at stop, valid for a year); by default a temporary directory, removed at stop.
    """

    def __init__(self, nodes: tuple[str, ...] = ("pve1", "pve2"), token_id: str = "dbtier@pve!provision",
                 token_secret: str | None = None, task_seconds: float = 0.1, schema_file: str | None = None,
                 leases: Mapping[int, str] | None = None, backend: HostBackend | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 0), cert_dir: Path | None = None) -> None:
        self.token_id = token_id
        self.token_secret = token_secret or str(uuid.uuid4())
        self.schema: Schema = load_schema(schema_file)
        self._nodes, self._task_seconds, self._leases = nodes, task_seconds, dict(leases or {})
        self.backend = backend
        self.listen = listen
        self.state = self._new_state()
        self._cert_dir = cert_dir
        self._tmp: Path | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.certs: ServerCerts | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def _new_state(self) -> PveState:
        return PveState(list(self._nodes), self.token_id, self._task_seconds, leases=self._leases,
                        backend=self.backend)

    def start(self) -> Self:
        directory = self._cert_dir
        if directory is None:
            directory = self._tmp = Path(tempfile.mkdtemp(prefix="dbtier-pve-double-"))
        self.certs = make_certs(directory, self.listen[0], days=1 if self._tmp else 365)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs.cert_file, self.certs.key_file)
        server = _Server(self.listen, _Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.double = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="pve-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
        self._server = self._thread = None
        self.state.join_workers()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the double is not started"
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """``host:port`` as proxmoxer takes it."""
        return f"{self.listen[0]}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def ca_file(self) -> str:
        assert self.certs is not None, "the double is not started"
        return self.certs.ca_file

    # -- test hooks -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget containers, tasks and faults (between tests sharing one server)."""
        self.state.join_workers()
        with self.state.lock:
            self.state = self._new_state()

    def fail_next_task(self, exitstatus: str = "unable to create CT - command 'lxc-usernsexec' failed") -> None:
        """The next task started ends ``stopped`` with this exit status instead of ``OK``."""
        with self.state.lock:
            self.state.faults.fail_next.append(exitstatus)

    def hang_next_task(self) -> None:
        """The next task started stays ``running`` forever."""
        with self.state.lock:
            self.state.faults.hang_next += 1

    def add_container(self, vmid: int, node: str, hostname: str, **kwargs: Any) -> Container:
        with self.state.lock:
            return self.state.add_container(vmid, node, hostname, **kwargs)

    def container(self, vmid: int) -> Container | None:
        with self.state.lock:
            self.state.settle()
            return self.state.containers.get(vmid)

    # -- the request pipeline -------------------------------------------------------------------

    def answer(self, verb: str, raw_path: str, params: dict[str, str], authorization: str | None) -> Any:
        """The ``data`` for one request, or :class:`ApiError`."""
        path = urlsplit(raw_path).path
        if not path.startswith(API_PREFIX + "/"):
            raise ApiError(404, "Not found")
        self._check_token(authorization)
        api_path = path[len(API_PREFIX):].rstrip("/") or "/"
        found = self.schema.match(api_path)
        method = found[0].method(verb) if found else None
        if found is None or method is None:
            raise ApiError(501, f"Method '{verb} {API_PREFIX}{api_path}' not implemented")
        endpoint, path_params = found
        path_params = {k: unquote(v) for k, v in path_params.items()}
        with self.state.lock:
            self.state.requests.append((verb, api_path))
            self._check_node(path_params)
            errors = validate(method, {**params, **path_params})
            if errors:
                raise ApiError(400, "Parameter verification failed.", errors)
            handler = ROUTES.get((verb, endpoint.template))
            if handler is None:
                raise ApiError(501, f"Method '{verb} {endpoint.template}' not implemented by the PVE test double")
            self.state.settle()
            return handler(self.state, path_params, params)

    def _check_token(self, authorization: str | None) -> None:
        if not authorization:
            raise ApiError(401, "No ticket")
        found = TOKEN_RE.match(authorization.strip())
        if not found or found["token_id"] != self.token_id:
            raise ApiError(401, "authentication failure")
        if not hmac.compare_digest(found["secret"], self.token_secret):
            raise ApiError(401, "authentication failure")

    def _check_node(self, path_params: dict[str, str]) -> None:
        # Recent PVE answers 595 for a node the cluster does not know (older ones: 500, hostname lookup failed).
        node = path_params.get("node")
        if node is not None and node not in self.state.nodes:
            raise ApiError(595, f"no such cluster node '{node}'")
