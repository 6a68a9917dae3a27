"""The PVE test double as its own long-lived process, for a lab that outlives the command that made it.

``python -m dbtier.lab.pve --listen 198.18.0.1:8006 --state-dir DIR --backend dbtier.lab.hosts:backend_for
--lab NAME`` serves HTTPS with a CA of its own and, once it answers, writes into ``DIR``:

- ``pve-api.json`` (0600): what a client needs, with the fields of a ProxmoxCredentials block (and of
  :class:`dbtier.providers.loaders.PVEToken`): ``api_url``, ``token_id``, ``token_secret``, ``ca_file``,
  ``fingerprint``, ``nodes``; its presence means the double answers;
- ``pve.pid``: the process to stop (SIGTERM: it stops serving, waits for running tasks and removes both files);
- ``ca.pem``, ``server.pem``, ``server.key``: its certificates (valid for a year, kept).

``--backend MODULE:ATTR`` names a factory called with ``--lab``'s value; what it returns is the
:class:`~dbtier.lab.pve.backend.HostBackend` whose hosts the containers are. Without it the containers
are records in memory, as in the tests. It prints one line once it serves; a refused argument is one
line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from dbtier.errors import Refused
from dbtier.lab.pve.backend import HostBackend
from dbtier.lab.pve.server import PveDouble

PROG = "python -m dbtier.lab.pve"
CONNECTION_FILE = "pve-api.json"
PID_FILE = "pve.pid"


def parse_listen(value: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` as the server binds it: one IPv4 address (the one clients use), port 0 for any free one.

    >>> parse_listen("198.18.0.1:8006"), parse_listen("127.0.0.1:0")
    (('198.18.0.1', 8006), ('127.0.0.1', 0))
    >>> parse_listen("0.0.0.0:8006")
    Traceback (most recent call last):
    ...
    dbtier.errors.Refused: --listen: 0.0.0.0 is no one address (the certificate names the address clients use); give that address, e.g. 198.18.0.1:8006
    """
    address, sep, port = value.rpartition(":")
    example = "198.18.0.1:8006"
    if not sep or not port.isdigit() or int(port) > 65535:
        raise Refused(f"--listen: {value!r} is not ADDRESS:PORT; write it like {example} (port 0: any free one)")
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise Refused(f"--listen: {address!r} is not an IPv4 address; write it like {example}") from None
    if ip.is_unspecified:
        raise Refused(f"--listen: {ip} is no one address (the certificate names the address clients use); "
                      f"give that address, e.g. {example}")
    return str(ip), int(port)


def parse_nodes(value: str) -> tuple[str, ...]:
    """``pve1,pve2`` as node names.

    >>> parse_nodes("pve1, pve2")
    ('pve1', 'pve2')
    """
    nodes = tuple(n.strip() for n in value.split(",") if n.strip())
    if not nodes:
        raise Refused("--nodes: no node named; give one or more names, e.g. pve1,pve2")
    return nodes


def load_backend(factory: str, argument: str | None) -> HostBackend:
    """The backend ``MODULE:ATTR(argument)`` makes."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise Refused(f"--backend: {factory!r} is not MODULE:ATTR; write it like dbtier.lab.hosts:backend_for")
    if argument is None:
        raise Refused("--lab: required with --backend (its value is what the factory is called with); name the lab")
    try:
        make = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise Refused(f"--backend: cannot load {factory} ({err}); name an importable factory") from None
    backend = make(argument)
    if not isinstance(backend, HostBackend):
        raise Refused(f"--backend: {factory}({argument!r}) returned a {type(backend).__name__}, which lacks the "
                      "methods of dbtier.lab.pve.backend.HostBackend; return a host backend")
    return backend


def connection(double: PveDouble) -> dict[str, Any]:
    """What a client needs to reach a started double (the fields of a ProxmoxCredentials block)."""
    assert double.certs is not None, "the double is not started"
    return {"api_url": double.url, "token_id": double.token_id, "token_secret": double.token_secret,
            "ca_file": double.ca_file, "fingerprint": double.certs.fingerprint, "nodes": list(double.state.nodes)}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by its owner only."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def check_state_dir(state_dir: Path) -> None:
    """Refuse a state directory that another live double serves."""
    pid_file = state_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    if pid != os.getpid() and _alive(pid):
        raise Refused(f"--state-dir: {state_dir} is served by pid {pid} already; stop it first (kill {pid}) "
                      "or give another directory")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Serve the PVE API test double until SIGTERM.")
    p.add_argument("--listen", default="127.0.0.1:0", help="IPv4 ADDRESS:PORT (port 0: any free one)")
    p.add_argument("--state-dir", required=True, type=Path, help="where the connection file, pid file and certs go")
    p.add_argument("--backend", help="MODULE:ATTR of a factory of the host backend (none: containers in memory)")
    p.add_argument("--lab", help="the argument the backend factory is called with (the lab's name)")
    p.add_argument("--nodes", default="pve1,pve2", help="the PVE node names, comma separated")
    p.add_argument("--token-id", default="dbtier@pve!provision", help="the API token id (USER@REALM!NAME)")
    p.add_argument("--task-seconds", type=float, default=0.1, help="how long each task runs at least")
    return p


def serve(args: argparse.Namespace, stop: threading.Event) -> str:
    """Serve until ``stop`` is set; return what it did."""
    listen, nodes = parse_listen(args.listen), parse_nodes(args.nodes)
    backend = load_backend(args.backend, args.lab) if args.backend else None
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_state_dir(state_dir)
    double = PveDouble(nodes=nodes, token_id=args.token_id, task_seconds=args.task_seconds, backend=backend,
                       listen=listen, cert_dir=state_dir)
    files = (state_dir / CONNECTION_FILE, state_dir / PID_FILE)
    with double:
        try:
            write_private(files[1], f"{os.getpid()}\n")
            write_private(files[0], json.dumps(connection(double), indent=2) + "\n")
            print(f"PVE test double serving {double.url} (nodes {', '.join(nodes)}; "
                  f"{'hosts of ' + args.backend if backend else 'containers in memory'}); "
                  f"connection in {files[0]}, pid {os.getpid()}", flush=True)
            while not stop.wait(1.0):
                pass
        finally:
            for path in files:
                path.unlink(missing_ok=True)
    return f"PVE test double on {double.listen[0]} stopped"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        print(serve(args, stop), flush=True)
    except Refused as err:
        print(f"{PROG}: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # the address is not this machine's, or the port is taken
        print(f"{PROG}: error: --listen: cannot serve on {args.listen} ({err.strerror or err}); "
              "give an address of this machine and a free port", file=sys.stderr)
        return 2
    return 0
