"""The Prefect API at the boundary: its failures become dbtier's one line, naming the API and the fix."""

from __future__ import annotations

import httpx
import pytest

from blocks.api import prefect_api
from dbtier.errors import ApiUnreachable


@pytest.mark.parametrize(("raised", "words"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), ("does not answer (ConnectError", "start it")),
    # what Prefect raises when its temporary API takes longer than PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
    (RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server."),
     ("did not start within", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_API_URL")),
])
def test_an_api_that_does_not_answer_or_start_is_one_line(raised: Exception, words: tuple[str, ...]) -> None:
    with pytest.raises(ApiUnreachable) as caught, prefect_api():
        raise raised
    line = caught.value.one_line()
    assert line.startswith("prefect api: the ") and "\n" not in line
    assert all(word in line for word in words), line


def test_another_runtime_error_is_not_mistaken_for_the_api() -> None:
    with pytest.raises(RuntimeError, match="something else"), prefect_api():
        raise RuntimeError("something else")


def test_the_command_lines_give_the_temporary_api_time_to_start() -> None:
    import os

    import flows  # noqa: F401 - its import sets the default

    assert int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 90
