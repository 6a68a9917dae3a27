"""dbtier's one client of Patroni's REST API: health documents read without a login, unsafe calls with it.

The URL scheme, the CA and a client certificate come from :func:`dbtier.engines.postgres.control_plane.client_settings`.
"""

from __future__ import annotations

import warnings
from typing import Any

import requests

from dbtier.engines.postgres.control_plane import Login, client_settings, http_session, rest_base
from dbtier.errors import ControlPlaneError
from dbtier.secrets import block_name
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import PgMember


def get_json(spec: ClusterSpec, member: PgMember, path: str, timeout: float) -> dict[str, Any] | None:
    """A readable endpoint's document (``/cluster``, ``/patroni``, ``/config``); None when the member does not
    answer it (down, frozen, not a JSON object)."""
    try:
        with http_session(spec) as session:
            response = session.get(f"{rest_base(spec, member)}{path}", timeout=timeout)
        doc = response.json() if response.ok else None
    except (requests.RequestException, ValueError, OSError):  # OSError: this machine lacks the CA file
        return None
    return doc if isinstance(doc, dict) else None


def answers_in_other_scheme(spec: ClusterSpec, member: PgMember, timeout: float = 1.5) -> bool:
    """True when ``member``'s REST port answers HTTP in the scheme the spec does not use (plain HTTP while the
    spec wants TLS, or HTTPS while it does not); False when it answers as the spec says or not at all."""
    other = "http" if member.scheme == "https" else "https"
    try:
        with requests.Session() as session, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # urllib3's warning about the unverified request: it reads no data
            session.trust_env = False
            session.get(f"{other}://{member.host}:{member.rest_port}/health", timeout=timeout, verify=False)
    except (requests.RequestException, OSError):
        return False
    return True


def call(spec: ClusterSpec, member: PgMember, method: str, path: str, login: Login | None,
         body: dict[str, Any], timeout: float) -> requests.Response:
    """One call to an unsafe endpoint of ``member``'s REST API with the REST login; its answer, whatever its
    status. No answer is a :class:`ControlPlaneError` naming the member."""
    settings = client_settings(spec)
    try:
        with http_session(spec) as session:
            return session.request(method, f"{rest_base(spec, member)}{path}", json=body, timeout=timeout,
                                   auth=login.as_basic_auth() if login else None)
    except requests.exceptions.SSLError as err:
        raise ControlPlaneError(f"{member.name}: Patroni REST {method} {path}: its certificate did not verify "
                                f"against {settings.verify} ({_reason(err)}); run 'dbtier certs'") from None
    except requests.RequestException as err:
        raise ControlPlaneError(f"{member.name}: Patroni REST {method} {path} got no answer "
                                f"({type(err).__name__}); is its Patroni running?") from None
    except OSError as err:
        raise ControlPlaneError(f"{member.name}: Patroni REST {method} {path}: cannot read the CA certificate "
                                f"{settings.verify} ({err.strerror or err}); run 'dbtier ca' to write it") from None


def _reason(err: Exception) -> str:
    """The last words of an SSL error (``certificate verify failed: ...``), on one line."""
    text = " ".join(str(err).split())
    marker = text.find("certificate verify failed")
    return text[marker:marker + 120].rstrip(")'\" ") if marker >= 0 else text[-120:]


def refusal(spec: ClusterSpec, response: requests.Response) -> str:
    """What Patroni said, on one line; a 401 says which login it wants."""
    text = " ".join(response.text.split())[:200]
    if response.status_code == 401:
        text += f" (the REST login is user dbtier with Secret block {block_name(spec, 'restapi')})"
    return f"Patroni answered {response.status_code}: {text}"
