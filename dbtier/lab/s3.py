"""moto's S3 over TLS (a test double of S3), with connections that end in a TLS close_notify; stopped by PID.

The tests run it on loopback; ``dbtier lab`` runs it on the lab's bridge so that every lab host reaches it.

moto's own server (werkzeug) drops TLS connections without a close_notify alert, and
pgBackRest, built on OpenSSL 3, then fails with "unexpected eof while reading". This
server serves the same moto WSGI app through werkzeug's threaded ``http.server``-based
server, but ends every connection with ``SSLSocket.unwrap()`` before closing the socket.
The TLS handshake runs in the connection's thread, so a silent client never blocks accept().

Run it in the foreground::

    python -m dbtier.lab.s3 --port 20801 --cert cert.pem --key key.pem [--bind 198.18.0.1]

It binds 127.0.0.1 unless told, prints ``ready https://ADDRESS:PORT`` and exits on SIGTERM.
Tests use :func:`running_s3`, which makes the certificate and starts and stops the process.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

ACCESS_KEY = "dbtier-test-key"
SECRET_KEY = "dbtier-test-secret-0123456789"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HANDSHAKE_TIMEOUT = 10.0
CLOSE_NOTIFY_TIMEOUT = 2.0


@dataclass(frozen=True)
class S3Endpoint:
    """Where the test S3 listens and what a client needs to trust and sign for it."""

    port: int
    ca_file: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    host: str = "localhost"
    region: str = "us-east-1"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"


def _alt_names(addresses: Sequence[str]) -> list[Any]:
    """localhost, 127.0.0.1 and each of ``addresses`` as an IP name and also as a DNS name: pgBackRest matches the
    endpoint's host against DNS names only, even when it is an address (boto3 and OpenSSL clients use the IP name)."""
    from cryptography import x509

    names: list[Any] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for address in addresses:
        names += [x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName(address)]
    return names


def make_cert(directory: str, addresses: Sequence[str] = ()) -> tuple[str, str]:
    """Write a self-signed ``s3.pem`` / ``s3.key`` for ``localhost``, 127.0.0.1 and ``addresses`` into ``directory``.

    The certificate (0644, in a 0755 directory) doubles as the CA file, readable by the
    database OS user that runs pgBackRest; the key stays 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(directory, mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(_alt_names(addresses)),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "s3.pem"), os.path.join(directory, "s3.key")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        pkcs8 = serialization.PrivateFormat.PKCS8
        fh.write(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return cert_path, key_path


def _make_server(bind: str, port: int, cert: str, key: str) -> Any:
    """A threaded werkzeug server for moto's app whose connections end with a close_notify."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import ThreadedWSGIServer

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

        def log(self, type: str, message: str, *args: Any) -> None:
            pass

    class CleanCloseServer(ThreadedWSGIServer):
        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = self.socket.accept()
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        def finish_request(self, request: Any, client_address: Any) -> None:
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                request.do_handshake()
            except (OSError, ValueError):
                return
            request.settimeout(None)
            super().finish_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.settimeout(CLOSE_NOTIFY_TIMEOUT)
                    request.unwrap()  # sends close_notify (and waits briefly for the peer's)
                except (OSError, ValueError):
                    pass
            super().shutdown_request(request)

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], OSError):
                super().handle_error(request, client_address)

    server = CleanCloseServer(bind, port, DomainDispatcherApplication(create_backend_app), handler=QuietHandler)
    server.ssl_context = context  # werkzeug then reports wsgi.url_scheme=https
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto's S3 over TLS, closing connections cleanly")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    os.environ["MOTO_PORT"] = str(args.port)

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    server = _make_server(args.bind, args.port, args.cert, args.key)
    try:
        print(f"ready https://{args.bind}:{args.port}", flush=True)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_ready(proc: subprocess.Popen[bytes], log_path: str, port: int, bind: str = "127.0.0.1",
               timeout: float = 30) -> None:
    """Return once the server started as ``proc`` says it is ready and accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as fh:
            ready = b"ready https://" in fh.read()
        if ready and listening(port, bind):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(log_path, errors="replace") as fh:
        tail = fh.read()[-2000:]
    raise RuntimeError(f"test S3 server on {bind}:{port} did not start (exit {proc.poll()}): {tail}")


@contextmanager
def running_s3(port: int, workdir: str | None = None, *, check_keys: bool = False) -> Iterator[S3Endpoint]:
    """The TLS S3 server on 127.0.0.1:``port`` as a subprocess, stopped by its PID on exit.

    ``workdir`` (made 0755) receives the certificate, key and the server's log. With
    ``check_keys`` moto authenticates every request against its (empty) IAM, so any key
    gets 403 InvalidAccessKeyId: the shape of a real S3 refusing the keys.
    """
    from dbtier.procs import stop_child

    workdir = workdir or tempfile.mkdtemp(prefix="dbtier-s3-")
    cert, key = make_cert(workdir)
    log_path = os.path.join(workdir, "s3_server.log")
    argv = [sys.executable, "-m", "dbtier.lab.s3", "--port", str(port), "--cert", cert, "--key", key]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_keys else None
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(proc, log_path, port)
        yield S3Endpoint(port=port, ca_file=cert)
    finally:
        stop_child(proc)


if __name__ == "__main__":
    main()
