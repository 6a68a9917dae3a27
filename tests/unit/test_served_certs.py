"""Which certificate a service serves: a real TLS handshake with a local server, and the wait's verdicts."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from dbtier import certs
from dbtier.engines.postgres.served_certs import Endpoint, served_certificate, wait_until_served
from dbtier.errors import CertificateError

NOW = datetime.datetime.now(datetime.timezone.utc)
CA = certs.make_ca("served", NOW, 30)
OLD = certs.issue(CA, "served-old", certs.Sans.of(["127.0.0.1"]), NOW, 30)
NEW = certs.issue(CA, "served-new", certs.Sans.of(["127.0.0.1"]), NOW, 30)


@pytest.fixture()
def tls_server(tmp_path: object) -> Iterator[int]:
    """A TLS server on a free loopback port serving OLD; answers each handshake, then closes."""
    import os

    cert, key = os.path.join(str(tmp_path), "c.pem"), os.path.join(str(tmp_path), "k.pem")
    open(cert, "wb").write(OLD.cert_pem)
    open(key, "wb").write(OLD.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_the_served_certificate_is_read_off_the_handshake(tls_server: int) -> None:
    assert certs.describe(served_certificate("127.0.0.1", tls_server)).serial == certs.describe(OLD.cert_pem).serial


def test_a_port_without_tls_is_named_in_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]
    with pytest.raises(CertificateError, match=f"^127.0.0.1:{port}: no TLS handshake"):
        served_certificate("127.0.0.1", port, timeout=1)


@pytest.mark.parametrize(("served", "installed", "verdict"), [
    ([NEW], NEW, "serves serial"),
    ([OLD, OLD, NEW], NEW, "serves serial"),
    ([OLD], NEW, "still serves serial"),
])
def test_wait_until_served(served: list[certs.IssuedCert], installed: certs.IssuedCert, verdict: str) -> None:
    answers = iter(served + [served[-1]] * 100)
    endpoint = Endpoint(label="pg0 patroni", host="127.0.0.1", port=1, postgres=False, installed=installed.cert_pem)
    try:
        said = wait_until_served([endpoint], timeout=1.0, served=lambda e: next(answers).cert_pem)
    except CertificateError as err:
        said = [err.one_line()]
    assert verdict in said[0] and said[0].startswith("pg0 patroni")
