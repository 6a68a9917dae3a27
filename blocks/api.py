"""The Prefect API is part of a command's input: say which one was asked, and translate its failures.

Without ``PREFECT_API_URL`` every command runs a temporary API on the local database under
``PREFECT_HOME`` (``~/.prefect/prefect.db``); with it, the server at that URL. A cluster's Secret
blocks live in the API that provisioned it, so a different API is a wrong input, never a reason
to create new passwords or to remove the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from dbtier.errors import ApiUnreachable, DbtierError
from dbtier.spec import ClusterSpec

#: What a person does when the API is the wrong one (or does not answer).
POINT_AT_IT = ("point PREFECT_API_URL at the API that serves this cluster, or unset it for the local temporary "
               "API (PREFECT_HOME, ~/.prefect)")


def which_api() -> str:
    """The API this process talks to, as a person would find it again (never a database password)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url:
        return f"the Prefect API at {settings.api.url}"
    return f"the local temporary Prefect API ({local_database(settings)})"


def local_database(settings: object) -> str:
    """Where the temporary API keeps its data: the SQLite file, else the database's setting name."""
    url = getattr(getattr(getattr(settings, "server", None), "database", None), "connection_url", None)
    text = url.get_secret_value() if url is not None and hasattr(url, "get_secret_value") else str(url or "")
    if text.startswith("sqlite"):
        return f"database {text.split(':///', 1)[-1]}"
    return f"PREFECT_HOME {getattr(settings, 'home', '?')}, database from PREFECT_SERVER_DATABASE_CONNECTION_URL"


def unreachable(err: Exception) -> ApiUnreachable:
    """An httpx failure as dbtier's one line: which API, what it said, how to point at the right one.

    >>> line = unreachable(httpx.ConnectError("[Errno 111] Connection refused")).one_line()
    >>> line.startswith("prefect api: the "), " does not answer (ConnectError: [Errno 111] Connection refused); start it" in line
    (True, True)
    """
    what = " ".join(str(err).split())[:160]
    verb = "answers with an error" if isinstance(err, httpx.HTTPStatusError) else "does not answer"
    return ApiUnreachable(f"prefect api: {which_api()} {verb} ({type(err).__name__}: {what}); start it, or {POINT_AT_IT}")


def check_api(timeout: float = 5.0) -> None:
    """Before a flow run: the API at PREFECT_API_URL answers at all (a status error, an auth wall, counts as
    answering; the temporary API, started on demand, is not probed)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
    except httpx.TransportError as err:
        raise unreachable(err) from None


#: What Prefect raises when the temporary API it starts on demand does not answer in time.
_TEMPORARY_API_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"


def did_not_start() -> ApiUnreachable:
    """The temporary API that did not start in time, as dbtier's one line.

    >>> did_not_start().one_line().startswith("prefect api: the local temporary Prefect API (")
    True
    """
    from prefect.settings import get_current_settings

    seconds = get_current_settings().server.ephemeral.startup_timeout_seconds
    return ApiUnreachable(f"prefect api: {which_api()} did not start within {seconds} s "
                          "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); the machine may be busy: run the command "
                          "again, raise that setting, or start a Prefect server (prefect server start) and point "
                          "PREFECT_API_URL at it")


@contextmanager
def prefect_api() -> Iterator[None]:
    """Translate the API's transport errors, and a temporary API that did not start, at the boundary into
    :class:`ApiUnreachable`."""
    try:
        yield
    except httpx.HTTPError as err:
        raise unreachable(err) from None
    except RuntimeError as err:
        if str(err).startswith(_TEMPORARY_API_TIMEOUT):
            raise did_not_start() from None
        raise


def missing_block_advice(spec: ClusterSpec, block: str) -> str:
    """Why a cluster's block is missing and what to do, without ever advising a destructive command.

    When the cluster's data directory exists, the cluster was provisioned through another API.
    """
    where = which_api()
    if cluster_exists(spec):
        return (f"{block}: no such block in {where}, but cluster {spec.name} exists under {spec.cluster_dir}: its "
                f"blocks must be in another Prefect API; {POINT_AT_IT}")
    return f"{block}: no such block in {where}; run 'python -m flows.provision' to create the cluster and its blocks"


def cluster_exists(spec: ClusterSpec) -> bool:
    """True when any host of the cluster holds its data directory with its marker (False when unsure)."""
    from blocks.loaders import PREFECT_LOADERS
    from dbtier import bootstrap
    from dbtier.engines.base import get_engine
    from dbtier.providers.base import get_provider

    try:
        return bootstrap.is_initialised(get_engine(spec), get_provider(spec, PREFECT_LOADERS), spec)
    except DbtierError:
        return False
