"""dbtier's one client of Patroni's REST API: health documents read without a login, unsafe calls with it.

The URL scheme, the CA and a client certificate come from :func:`dbtier.engines.control_plane.client_settings`.
"""

from __future__ import annotations

from typing import Any

import requests

from dbtier.engines.control_plane import Login, client_settings, rest_base
from dbtier.errors import ControlPlaneError
from dbtier.secrets import block_name
from dbtier.spec import ClusterSpec
from dbtier.topology import PgMember


def get_json(spec: ClusterSpec, member: PgMember, path: str, timeout: float) -> dict[str, Any] | None:
    """A readable endpoint's document (``/cluster``, ``/patroni``, ``/config``); None when the member does not
    answer it (down, frozen, not a JSON object)."""
    settings = client_settings(spec)
    try:
        response = requests.get(f"{rest_base(spec, member)}{path}", timeout=timeout, verify=settings.verify,
                                cert=settings.cert)
        doc = response.json() if response.ok else None
    except (requests.RequestException, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def call(spec: ClusterSpec, member: PgMember, method: str, path: str, login: Login | None,
         body: dict[str, Any], timeout: float) -> requests.Response:
    """One call to an unsafe endpoint of ``member``'s REST API with the REST login; its answer, whatever its
    status. No answer is a :class:`ControlPlaneError` naming the member."""
    settings = client_settings(spec)
    try:
        return requests.request(method, f"{rest_base(spec, member)}{path}", json=body, timeout=timeout,
                                auth=login.as_basic_auth() if login else None, verify=settings.verify,
                                cert=settings.cert)
    except requests.RequestException as err:
        raise ControlPlaneError(f"{member.name}: Patroni REST {method} {path} got no answer "
                                f"({type(err).__name__}); is its Patroni running?") from None


def refusal(spec: ClusterSpec, response: requests.Response) -> str:
    """What Patroni said, on one line; a 401 says which login it wants."""
    text = " ".join(response.text.split())[:200]
    if response.status_code == 401:
        text += f" (the REST login is user dbtier with Secret block {block_name(spec, 'restapi')})"
    return f"Patroni answered {response.status_code}: {text}"
