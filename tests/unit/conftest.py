"""Fixtures of the MongoDB wire tests: one mockupdb member per test, stopped without making the suite wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest


@pytest.fixture(scope="module")
def stopping() -> Iterator[list[threading.Thread]]:
    """MockupDB.stop() closes its sockets at once, then waits up to 1 s for its accept loop: wait for all at the end."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(10)


@pytest.fixture
def member_server(stopping: list[threading.Thread]) -> Iterator[object]:
    """One member answering hello as a mongod 7.0 would; each test answers the rest itself."""
    from mockupdb import MockupDB

    server = MockupDB(auto_ismaster={"maxWireVersion": 21, "minWireVersion": 0}, verbose=False)
    server.run()
    yield server
    thread = threading.Thread(target=server.stop, daemon=True)
    thread.start()
    stopping.append(thread)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """One thread for the client side of a conversation while the test answers as the server."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor
