"""Where a cluster's CA is kept: on the machine that runs dbtier, never on a member.

A :class:`CAStore` is handed in, as providers get their loaders. Two exist:

- :data:`FILE_CA_STORE` (no Prefect: the library, the lab, the benches): ``<work>/<cluster>/ca/ca.key``
  (mode 0600) and ``ca.crt`` in the work directory (see :mod:`dbtier.workdir`).
- ``blocks.ca.PREFECT_CA_STORE`` (the flows and the ``dbtier`` command): the key in the Secret block
  ``dbtier-<cluster>-ca-key``, the certificate (public) in the variable ``dbtier-<cluster>-ca-cert``.

A store holding only one half (a certificate without its key, or a key without its certificate) is refused
in one line: nothing is made over it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from dbtier import workdir
from dbtier.certs import CertAuthority
from dbtier.errors import SecretError


def ca_key_block(cluster: str) -> str:
    """
    >>> ca_key_block("orders")
    'dbtier-orders-ca-key'
    """
    return f"dbtier-{cluster}-ca-key"


def ca_cert_variable(cluster: str) -> str:
    """
    >>> ca_cert_variable("orders")
    'dbtier-orders-ca-cert'
    """
    return f"dbtier-{cluster}-ca-cert"


@dataclass(frozen=True)
class CAStore:
    """``load``: the cluster's CA (certificate and key), or None when it has none; ``save``: keep a new one;
    ``load_cert``: the certificate alone (what ``dbtier certs`` and ``dbtier ca`` need; the key is not read);
    ``forget``: delete it, returning what was deleted; ``where``: where it is kept, for messages."""

    load: Callable[[str], CertAuthority | None]
    save: Callable[[str, CertAuthority], None]
    load_cert: Callable[[str], bytes | None]
    forget: Callable[[str], list[str]]
    where: Callable[[str], str]
    name: str = "files"


def pair(cluster: str, cert: bytes | None, key: bytes | None, cert_at: str, key_at: str) -> CertAuthority | None:
    """Both halves, or neither; one alone is refused in one line.

    >>> pair("pg", None, None, "c", "k") is None
    True
    >>> pair("pg", b"C", None, "variable v", "Secret block k")
    Traceback (most recent call last):
    ...
    dbtier.errors.SecretError: ca: cluster pg's CA certificate is in variable v but its key (Secret block k) is missing; restore the key, or delete the certificate to make a new CA (every certificate is then issued again)
    """
    if cert is None and key is None:
        return None
    if key is None:
        raise SecretError(f"ca: cluster {cluster}'s CA certificate is in {cert_at} but its key ({key_at}) is missing; "
                          "restore the key, or delete the certificate to make a new CA (every certificate is then "
                          "issued again)")
    if cert is None:
        raise SecretError(f"ca: cluster {cluster}'s CA key is in {key_at} but its certificate ({cert_at}) is missing; "
                          "restore the certificate, or delete the key to make a new CA (every certificate is then "
                          "issued again)")
    return CertAuthority(cert_pem=cert, key_pem=key)


def _files(cluster: str) -> tuple[str, str]:
    directory = os.path.join(workdir.cluster_work_dir(cluster), "ca")
    return os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")


def load_ca_files(cluster: str) -> CertAuthority | None:
    cert, key = _files(cluster)
    return pair(cluster, workdir.read_local(cert), workdir.read_local(key), cert, key)


def save_ca_files(cluster: str, ca: CertAuthority) -> None:
    cert, key = _files(cluster)
    workdir.write_private(key, ca.key_pem, 0o600)
    workdir.write_private(cert, ca.cert_pem, 0o644)


def load_cert_file(cluster: str) -> bytes | None:
    return workdir.read_local(_files(cluster)[0])


def forget_ca_files(cluster: str) -> list[str]:
    gone = []
    for path in _files(cluster):
        if os.path.exists(path):
            os.unlink(path)
            gone.append(path)
    return gone


def where_files(cluster: str) -> str:
    return f"{os.path.dirname(_files(cluster)[0])} on this machine"


#: The library's store: the work directory of the machine that runs dbtier.
FILE_CA_STORE = CAStore(load=load_ca_files, save=save_ca_files, load_cert=load_cert_file, forget=forget_ca_files,
                        where=where_files, name="files")
