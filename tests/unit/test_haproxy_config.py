"""HAProxy in front of the members: haproxy.cfg per router, checked by HAProxy itself, and its stats CSV (tables)."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dbtier.certs import Sans, issue, make_ca
from dbtier.engines.postgres import haproxy_config as hc
from dbtier.engines.postgres.routing import Router, routers
from dbtier.spec import ClusterSpec, build_spec
from dbtier.tls import tls_paths

SSH3 = {"provider": "ssh", "ssh": {"key_file": "/k", "hosts": [
    {"address": "10.0.0.11"}, {"address": "10.0.0.12"}, {"address": "10.0.0.13"}]},
    "backup": {"repositories": [{"type": "fs", "shared": True}]}}


def rendered(data: dict[str, Any], router: int = 0) -> tuple[ClusterSpec, Router, str]:
    spec = build_spec({**data, "routing": {"enabled": True, **data.get("routing", {})}}, environ={})
    where = routers(spec)[router]
    return spec, where, hc.render_haproxy_config(spec, where)


def section(cfg: str, name: str) -> list[str]:
    """The lines of one ``listen``/``frontend`` section, stripped."""
    lines, inside = [], False
    for line in cfg.splitlines():
        if not line.startswith(" "):
            inside = line.split()[1:2] == [name] if line.strip() else False
            continue
        if inside:
            lines.append(line.strip())
    return lines


def binds(cfg: str) -> dict[str, str]:
    found: dict[str, str] = {}
    current = ""
    for line in cfg.splitlines():
        if line.startswith(("listen ", "frontend ")):
            current = line.split()[1]
        elif line.strip().startswith("bind "):
            found[current] = line.split()[1]
    return found


@pytest.mark.parametrize(
    ("data", "router", "expected"),
    [
        ({}, 0, {"rw": "127.0.0.1:5000", "ro": "127.0.0.1:5001", "sync": "127.0.0.1:5002",
                 "rw-pooled": "127.0.0.1:5003", "ro-pooled": "127.0.0.1:5004", "stats": "127.0.0.1:7000"}),
        ({"ports": {"router": 24660, "router_stats": 24665}, "routing": {"pooler": {"enabled": False}}}, 0,
         {"rw": "127.0.0.1:24660", "ro": "127.0.0.1:24661", "sync": "127.0.0.1:24662", "stats": "127.0.0.1:24665"}),
        (SSH3, 2, {"rw": "10.0.0.13:5000", "ro": "10.0.0.13:5001", "sync": "10.0.0.13:5002",
                   "rw-pooled": "10.0.0.13:5003", "ro-pooled": "10.0.0.13:5004", "stats": "10.0.0.13:7000"}),
    ],
)
def test_every_route_listens_on_its_router_host_and_port(data: dict[str, Any], router: int,
                                                         expected: dict[str, str]) -> None:
    assert binds(rendered(data, router)[2]) == expected


@pytest.mark.parametrize(
    ("route", "check", "servers"),
    [
        ("rw", "/primary", ["pg0 10.0.0.11:5432", "pg1 10.0.0.12:5433", "pg2 10.0.0.13:5434"]),
        ("sync", "/sync", ["pg0 10.0.0.11:5432", "pg1 10.0.0.12:5433", "pg2 10.0.0.13:5434"]),
        ("ro", "/replica?lag=1000", ["pg0 10.0.0.11:5432", "pg1 10.0.0.12:5433", "pg2 10.0.0.13:5434",
                                     "pg0-primary 10.0.0.11:5432", "pg1-primary 10.0.0.12:5433",
                                     "pg2-primary 10.0.0.13:5434"]),
        ("rw-pooled", "/primary", ["pg0 10.0.0.11:6432", "pg1 10.0.0.12:6433", "pg2 10.0.0.13:6434"]),
        ("ro-pooled", "/replica?lag=1000", ["pg0 10.0.0.11:6432", "pg1 10.0.0.12:6433", "pg2 10.0.0.13:6434",
                                            "pg0-primary 10.0.0.11:6432", "pg1-primary 10.0.0.12:6433",
                                            "pg2-primary 10.0.0.13:6434"]),
    ],
)
def test_each_route_sends_to_the_members_its_patroni_check_passes(route: str, check: str, servers: list[str]) -> None:
    _, _, cfg = rendered({**SSH3, "routing": {"replica_max_lag_bytes": 1000}})
    lines = section(cfg, route)
    assert f"http-check send meth GET uri {check}" in lines
    assert [" ".join(line.split()[1:3]) for line in lines if line.startswith("server ")] == servers


def test_checks_verify_patroni_over_https_and_the_primary_is_ros_backup_only() -> None:
    _, router, cfg = rendered(SSH3)
    ca = tls_paths(router.dir, "haproxy").ca
    for route in ("rw", "ro", "sync", "rw-pooled", "ro-pooled"):
        regular = [line for line in section(cfg, route) if line.startswith("server ") and " backup " not in line]
        assert [line.split(" check ")[1] for line in regular] == [
            f"port {8008 + i} check-ssl verify required ca-file {ca}" for i in range(3)]
    backups = [line for line in section(cfg, "ro") if " backup " in line]
    assert backups == [f"server pg{i}-primary 10.0.0.1{i + 1}:{5432 + i} backup track rw/pg{i}" for i in range(3)]
    assert "on-marked-down shutdown-sessions" in cfg


def test_plain_checks_and_plain_stats_with_tls_off() -> None:
    _, _, cfg = rendered({"tls": {"enabled": False}})
    assert "check-ssl" not in cfg and " ssl " not in cfg
    assert "bind 127.0.0.1:7000" in section(cfg, "stats")


def test_check_timing_follows_the_spec() -> None:
    _, _, cfg = rendered({"routing": {"check": {"inter_ms": 2000, "fastinter_ms": 250, "fall": 3, "rise": 4}}})
    default = next(line for line in cfg.splitlines() if "default-server" in line).split()
    assert default[default.index("inter") + 1] == "2000ms"
    assert default[default.index("fastinter") + 1] == "250ms"
    assert default[default.index("fall") + 1] == "3" and default[default.index("rise") + 1] == "4"


def test_the_stats_page_is_read_only_and_serves_prometheus() -> None:
    lines = section(rendered({})[2], "stats")
    assert "http-request use-service prometheus-exporter if { path /metrics }" in lines
    assert not any(line.startswith("stats admin") or line.startswith("stats auth") for line in lines)


@pytest.mark.skipif(shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
                    reason="haproxy is not installed (make setup installs it)")
@pytest.mark.parametrize("data", [{}, {"tls": {"enabled": False}}, {"routing": {"pooler": {"enabled": False}}}, SSH3])
def test_haproxy_accepts_every_rendered_config(tmp_path: Path, data: dict[str, Any]) -> None:
    """``haproxy -c`` parses the file and loads its certificates: the router's cert (key beside it as .key) and
    the CA its checks verify with."""
    spec, router, _ = rendered({**data, "data_root": str(tmp_path)}, 2 if data is SSH3 else 0)
    cfg = hc.render_haproxy_config(spec, router)
    files = tls_paths(router.dir, "haproxy")
    Path(files.dir).mkdir(parents=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = make_ca(spec.name, now)
    leaf = issue(ca, "router", Sans.of([router.host]), now, 30)
    Path(files.ca).write_bytes(ca.cert_pem)
    Path(files.cert).write_bytes(leaf.cert_pem)
    Path(files.key).write_bytes(leaf.key_pem)
    Path(router.config).write_text(cfg)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    done = subprocess.run([haproxy, "-c", "-f", router.config], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_server_states_read_the_stats_csv() -> None:
    header = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,weight,act,bck\n"
    rows = ("rw,FRONTEND,,,0,0,2000,0,0,0,OPEN,,,\n"
            "rw,pg0,0,0,4,4,,9,0,0,UP,1,1,0\n"
            "rw,pg1,0,0,0,0,,0,0,0,DOWN,1,1,0\n"
            "ro,pg1,0,0,1,1,,1,0,0,UP 1/2,1,1,0\n"
            "ro,pg0-primary,0,0,0,0,,0,0,0,UP,1,0,1\n"
            "rw,BACKEND,0,0,4,4,200,9,0,0,UP,1,1,0\n"
            "stats,FRONTEND,,,1,1,2000,1,0,0,OPEN,,,\n")
    states = hc.server_states(header + rows)
    assert [(s.route, s.server, s.up, s.sessions, s.backup) for s in states] == [
        ("rw", "pg0", True, 4, False), ("rw", "pg1", False, 0, False),
        ("ro", "pg1", True, 1, False), ("ro", "pg0-primary", True, 0, True)]
