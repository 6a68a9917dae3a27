"""The virtual IP: the spec's refusals, keepalived.conf per member host (checked by keepalived itself), its unit."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dbtier.backup.restore import derive_target, throwaway_spec
from dbtier.engines.postgres import keepalived_config as kc
from dbtier.engines.postgres.haproxy_config import render_haproxy_config
from dbtier.engines.postgres.engine import PostgresEngine
from dbtier.errors import SpecError
from dbtier.engines.postgres.routing import routed_dsn, router_addresses, routers
from dbtier.spec import ClusterSpec, build_spec
from dbtier.supervisors import render_unit
from dbtier.tls import cert_plan

HOSTS = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
VIP = "10.0.0.50"


def spec_with(vip: dict[str, Any] | None = None, **fields: Any) -> ClusterSpec:
    data: dict[str, Any] = {"provider": "ssh", "ssh": {"key_file": "/k", "hosts": [{"address": h} for h in HOSTS]},
                            "backup": {"repositories": [{"type": "fs", "shared": True}]},
                            "postgres": {"routing": {"enabled": True, "vip": {"address": VIP, **(vip or {})}}}}
    data.update(fields)
    return build_spec(data, environ={})


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"postgres": {"routing": {"vip": {"address": VIP}}}},
         "postgres.routing.vip: a virtual IP leads to the routers, and routing is off"),
        ({"provider": "local", "ssh": None}, "postgres.routing.vip: the local provider runs every member on this machine"),
        ({"postgres": {"routing": {"enabled": True, "vip": {"address": "10.0.0.12"}}}},
         "postgres.routing.vip.address: 10.0.0.12 is a member host's"),
        ({"postgres": {"routing": {"enabled": True, "vip": {"address": "10.0.0"}}}},
         "postgres.routing.vip.address: must be an IPv4 address"),
        ({"ssh": {"key_file": "/k", "hosts": [{"address": HOSTS[0]}]}}, "postgres.routing.vip: members share a host"),
        ({"postgres": {"routing": {"enabled": True, "vip": {"address": VIP, "virtual_router_id": 0}}}},
         "postgres.routing.vip.virtual_router_id"),
        ({"postgres": {"routing": {"enabled": True, "vip": {"address": VIP, "interface": "eth0; rm"}}}},
         "postgres.routing.vip.interface"),
    ],
)
def test_a_virtual_ip_the_cluster_cannot_have_is_refused_naming_the_field(data: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match="^invalid cluster spec: ") as refused:
        spec_with(**data)
    assert words in str(refused.value)


def test_every_member_host_runs_keepalived_talking_unicast_to_the_others() -> None:
    spec = spec_with({"virtual_router_id": 9, "prefix": 26, "interface": "ens18"})
    for keeper, own in zip(kc.keepers(spec), HOSTS, strict=True):
        conf = kc.render_keepalived_config(spec, keeper)
        lines = [line.strip() for line in conf.splitlines()]
        assert f"unicast_src_ip {own}" in lines
        peers = lines[lines.index("unicast_peer {") + 1:lines.index("unicast_peer {") + 3]
        assert peers == [h for h in HOSTS if h != own]
        assert f"{VIP}/26 dev ens18" in lines and "virtual_router_id 9" in lines and "interface ens18" in lines
        assert {"state BACKUP", "nopreempt", "priority 100"} <= set(lines), "no host preempts another"
        check = next(line for line in lines if line.startswith("script "))
        assert f"https://{own}:{keeper.member.rest_port}/primary" in check and "--cacert" in check


def test_the_virtual_ip_is_in_the_dsn_the_certificates_and_haproxys_binds() -> None:
    spec = spec_with()
    assert routed_dsn(spec, "rw").startswith(f"postgresql://app@{VIP}:5000/")
    assert VIP in router_addresses(spec)
    postgres = [n for n in cert_plan(spec) if n.service in ("postgres", "pgbouncer")]
    assert postgres and all(VIP in n.sans.ips for n in postgres)
    cfg = render_haproxy_config(spec, routers(spec)[1])
    assert f"bind {VIP}:5000" in cfg and "bind 10.0.0.12:5000" in cfg


def test_keepalived_runs_as_root_under_systemd_after_allowing_a_non_local_bind() -> None:
    spec = spec_with()
    (keeper,) = [s for s in PostgresEngine().router_services(spec) if s.kind == "keepalived"][:1]
    unit = render_unit(spec.name, spec.os_user, keeper)
    assert "User=root" in unit.splitlines()
    assert any(line.startswith("ExecStartPre=") and "net.ipv4.ip_nonlocal_bind=1" in line for line in unit.splitlines())
    others = [s for s in PostgresEngine().router_services(spec) if s.kind != "keepalived"]
    assert others and all(not s.as_root and "User=dbtier" in render_unit(spec.name, "dbtier", s) for s in others)


def test_copies_of_the_cluster_never_take_its_virtual_ip() -> None:
    spec = spec_with(members=1, ssh={"key_file": "/k", "hosts": [{"address": HOSTS[0]}]})
    assert spec.pg.routing.vip is not None
    assert derive_target(spec, "copy", 100).pg.routing.vip is None
    assert throwaway_spec(spec).pg.routing.vip is None
    assert kc.keepers(derive_target(spec, "copy", 100)) == []


@pytest.mark.skipif(shutil.which("keepalived") is None and not os.path.exists("/usr/sbin/keepalived"),
                    reason="keepalived is not installed (make setup installs it)")
def test_keepalived_accepts_the_rendered_config(tmp_path: Path) -> None:
    spec = spec_with()
    path = tmp_path / "keepalived.conf"
    path.write_text(kc.render_keepalived_config(spec, kc.keepers(spec)[0]))
    binary = shutil.which("keepalived") or "/usr/sbin/keepalived"
    done = subprocess.run([binary, "--config-test", f"--use-file={path}"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
