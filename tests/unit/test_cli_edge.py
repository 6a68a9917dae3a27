"""The command-line edge keeps Prefect's temporary API off the cluster's ports."""

from __future__ import annotations

import pytest

from dbtier.spec import ClusterSpec
from flows._cli import cluster_ports, keep_temporary_api_off


def test_temporary_api_never_picks_a_patroni_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.server.api.server import SubprocessASGIServer

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(SubprocessASGIServer, "_port_range", range(8000, 9000))
    ports = cluster_ports(ClusterSpec())
    keep_temporary_api_off(ports)
    left = set(SubprocessASGIServer._port_range)
    assert {8008, 8009, 8010, 8108, 8110, 8308} & left == set()
    assert len(left) == 1000 - len([p for p in ports if 8000 <= p < 9000])


def test_a_configured_api_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.server.api.server import SubprocessASGIServer

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr(SubprocessASGIServer, "_port_range", range(8000, 9000))
    keep_temporary_api_off({8008})
    assert SubprocessASGIServer._port_range == range(8000, 9000)
