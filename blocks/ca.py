"""The cluster CA kept in the Prefect API: its key in the Secret block ``dbtier-<cluster>-ca-key``, its
certificate (public) in the variable ``dbtier-<cluster>-ca-cert`` (see it under Variables in the UI).

The library's own store (no Prefect) is :data:`dbtier.ca_store.FILE_CA_STORE`.
"""

from __future__ import annotations

import os
from typing import Any

from prefect.blocks.system import Secret
from prefect.variables import Variable
from pydantic import SecretStr

from blocks.api import prefect_api, which_api
from blocks.passwords import load_secret
from dbtier.ca_store import CAStore, ca_cert_variable, ca_key_block, pair
from dbtier.certs import CertAuthority
from dbtier.errors import Refused
from dbtier.spec import ClusterSpec
from dbtier.workdir import ca_cert_file
from dbtier.tls_files import write_client_ca


def load_cert(cluster: str) -> bytes | None:
    with prefect_api():
        value: Any = Variable.get(ca_cert_variable(cluster), default=None)
    return value.encode() if isinstance(value, str) and value else None


def load_ca(cluster: str) -> CertAuthority | None:
    key = load_secret(ca_key_block(cluster))
    return pair(cluster, load_cert(cluster), key.encode() if key else None,
                f"variable {ca_cert_variable(cluster)}", f"Secret block {ca_key_block(cluster)}")


def save_ca(cluster: str, ca: CertAuthority) -> None:
    with prefect_api():
        Secret(value=SecretStr(ca.key_pem.decode())).save(ca_key_block(cluster), overwrite=True)
        Variable.set(ca_cert_variable(cluster), ca.cert_pem.decode(), tags=["dbtier", "ca"], overwrite=True)


def forget_ca(cluster: str) -> list[str]:
    """Delete the cluster's CA (its data is gone); return the names deleted."""
    gone = []
    if load_secret(ca_key_block(cluster)) is not None:
        Secret.delete(ca_key_block(cluster))
        gone.append(ca_key_block(cluster))
    if Variable.unset(ca_cert_variable(cluster)):
        gone.append(ca_cert_variable(cluster))
    return gone


def require_ca(cluster: str) -> None:
    """Refuse (one line, exit 2) a cluster that has no CA yet: provision makes it, rotation only renews."""
    if load_cert(cluster) is None:
        raise Refused(f"ca: cluster {cluster} has no CA in {where(cluster)}; provision it first "
                      "(python -m flows.provision), which makes the CA and every certificate")


def ensure_client_ca(spec: ClusterSpec) -> None:
    """Give this machine the cluster CA's certificate its clients verify the members with (a worker that did
    not provision the cluster has none yet); nothing when TLS is off, the copy is there (provision rewrites
    it when the CA changes) or the cluster has no CA yet."""
    if not spec.tls.enabled or os.path.exists(ca_cert_file(spec.name)):
        return
    pem = load_cert(spec.name)
    if pem is not None:
        write_client_ca(spec, pem)


def where(cluster: str) -> str:
    return f"Secret block {ca_key_block(cluster)} and variable {ca_cert_variable(cluster)} in {which_api()}"


#: What the flows and the ``dbtier`` command use.
PREFECT_CA_STORE = CAStore(load=load_ca, save=save_ca, load_cert=load_cert, forget=forget_ca, where=where,
                           name="prefect")
