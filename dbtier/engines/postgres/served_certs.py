"""Which certificate a running service really serves, read off a TLS handshake with it.

A reload is proven by the served certificate, not by a file on disk: PostgreSQL keeps its old TLS context when a
reloaded file is unreadable, and Patroni's REST API swaps its certificate only when it notices a new serial.
PostgreSQL 15 starts TLS inside its own protocol (an ``SSLRequest`` packet, then the handshake); Patroni and etcd
speak TLS from the first byte.

The handshake does not verify the server: it only reads what is served, which the caller compares with the
certificate it installed.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dbtier import certs
from dbtier.errors import CertificateError

#: The ``SSLRequest`` packet: length 8, then the code 1234 5679 (PostgreSQL's protocol documentation).
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def served_certificate(host: str, port: int, postgres: bool = False, timeout: float = 5.0) -> bytes:
    """The PEM certificate ``host:port`` presents; :class:`CertificateError` naming the address when it does not
    answer with TLS."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if postgres:
                raw.sendall(SSL_REQUEST)
                if raw.recv(1) != b"S":
                    raise CertificateError(f"{host}:{port}: PostgreSQL refused TLS (ssl is off)")
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as err:
        raise CertificateError(f"{host}:{port}: no TLS handshake ({type(err).__name__}: {err})") from None
    if not der:
        raise CertificateError(f"{host}:{port}: the TLS handshake carried no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


@dataclass(frozen=True)
class Endpoint:
    """One TLS service of a member: where it listens and the certificate it should serve."""

    label: str
    host: str
    port: int
    postgres: bool
    installed: bytes


def serial_of(pem: bytes) -> int:
    return certs.describe(pem).serial


def wait_until_served(endpoints: Sequence[Endpoint], timeout: float,
                      served: Callable[[Endpoint], bytes] | None = None) -> list[str]:
    """Wait until every endpoint serves its installed certificate; one sentence per endpoint, or a
    :class:`CertificateError` naming those still serving another serial after ``timeout``."""
    read = served or (lambda e: served_certificate(e.host, e.port, e.postgres))
    deadline = time.monotonic() + timeout
    pending = list(endpoints)
    said: list[str] = []
    last: dict[str, str] = {}
    while pending:
        for endpoint in list(pending):
            want = serial_of(endpoint.installed)
            try:
                got = serial_of(read(endpoint))
            except CertificateError as err:
                last[endpoint.label] = err.one_line()
                continue
            if got == want:
                pending.remove(endpoint)
                said.append(f"{endpoint.label} serves serial {want:x}")
            else:
                last[endpoint.label] = f"still serves serial {got:x}, not {want:x}"
        if pending and time.monotonic() > deadline:
            raise CertificateError("; ".join(f"{e.label}: {last.get(e.label, 'no answer')}" for e in pending)
                                   + f" after {timeout:.0f} s (its new files are in place: a restart reads them)")
        if pending:
            time.sleep(0.3)
    return said
