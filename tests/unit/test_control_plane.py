"""Who may use Patroni's REST API and etcd: the rendered restapi/etcd3/ctl sections and the RBAC plan (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from dbtier.engines.postgres import control_plane as cp
from dbtier.engines.postgres.etcd_auth import permissions_of
from dbtier.engines.postgres.patroni_config import render_patroni_config
from dbtier.secrets import Passwords
from dbtier.spec import build_spec
from dbtier.engines.postgres.topology import pg_members

PASSWORDS = Passwords(superuser="s3cr3t-super", replication="s3cr3t-repl", rewind="s3cr3t-rew", app="s3cr3t-app",
                      monitoring="s3cr3t-mon", restapi="s3cr3t-rest", etcd_root="s3cr3t-etcdroot", etcd="s3cr3t-etcd",
                      pgbouncer="s3cr3t-bouncer")
REST = {"username": "dbtier", "password": "s3cr3t-rest"}


def rendered(fields: dict[str, Any], member: int = 0) -> dict[str, Any]:
    spec = build_spec(fields, environ={})
    return render_patroni_config(spec, pg_members(spec)[member], PASSWORDS)


TLS1 = "/var/lib/dbtier/dbtier/pg1/tls"
OFF = {"tls": {"enabled": False}}


@pytest.mark.parametrize("fields, member, section, expected", [
    ({}, 1, "restapi", {"listen": "127.0.0.1:8009", "connect_address": "127.0.0.1:8009", "authentication": REST,
                        "certfile": f"{TLS1}/patroni.crt", "keyfile": f"{TLS1}/patroni.key", "cafile": f"{TLS1}/ca.crt",
                        "verify_client": "none"}),
    ({"ports": {"patroni": 22220}, **OFF}, 2, "restapi",
     {"listen": "127.0.0.1:22222", "connect_address": "127.0.0.1:22222", "authentication": REST}),
    ({}, 1, "etcd3", {"hosts": ["127.0.0.1:2379", "127.0.0.1:2381", "127.0.0.1:2383"], "protocol": "https",
                      "username": "dbtier-dbtier", "password": "s3cr3t-etcd", "cacert": f"{TLS1}/ca.crt"}),
    ({"name": "orders", "members": 1, "etcd_members": 1, **OFF}, 0, "etcd3",
     {"hosts": ["127.0.0.1:2379"], "protocol": "http", "username": "dbtier-orders", "password": "s3cr3t-etcd"}),
    ({}, 1, "ctl", {"authentication": REST, "cacert": f"{TLS1}/ca.crt", "insecure": False}),
    (OFF, 2, "ctl", {"authentication": REST}),
])
def test_rendered_control_plane_sections(fields: dict[str, Any], member: int, section: str,
                                         expected: dict[str, Any]) -> None:
    assert rendered(fields, member)[section] == expected


def test_the_etcd_root_password_never_reaches_a_member() -> None:
    assert "s3cr3t-etcdroot" not in repr(rendered({}))


@pytest.mark.parametrize("name", ["dbtier", "orders", "pg-drill"])
def test_the_role_reaches_exactly_the_prefix_patroni_uses(name: str) -> None:
    config = rendered({"name": name})
    spec = build_spec({"name": name}, environ={})
    # Patroni's keys are /<namespace>/<scope>/<key> (patroni/dcs/__init__.py: _base_path + '/' + key)
    assert f"/{config['namespace'].strip('/')}/{config['scope']}/" == cp.key_prefix(spec)
    assert cp.rbac_plan(spec).user == config["etcd3"]["username"]


@pytest.mark.parametrize("key, reached", [
    ("/dbtier/orders/leader", True),
    ("/dbtier/orders/members/pg0", True),
    ("/dbtier/orders/config", True),
    ("/dbtier/orders/failsafe", True),
    ("/dbtier/orders/", True),
    ("/dbtier/orders", False),                  # the prefix without its slash is not a Patroni key
    ("/dbtier/orders-restored/leader", False),  # a restored copy is another cluster
    ("/dbtier/orders0/leader", False),          # the range end itself is outside
    ("/dbtier/billing/leader", False),
    ("/dbtier/probe", False),
    ("/other/orders/leader", False),
    ("", False),
])
def test_rbac_plan_reaches_only_the_clusters_prefix(key: str, reached: bool) -> None:
    plan = cp.rbac_plan(build_spec({"name": "orders"}, environ={}))
    assert plan.reaches(key) is reached
    assert (plan.user, plan.role, plan.root_user) == ("dbtier-orders", "dbtier-orders", "root")
    assert [p.perm for p in plan.permissions] == ["READWRITE"]


@pytest.mark.parametrize("prefix, end", [("/dbtier/a/", "/dbtier/a0"), ("/x", "/y"), ("/dbtier/z~", "/dbtier/z\x7f")])
def test_prefix_range_end(prefix: str, end: str) -> None:
    assert cp.prefix_range_end(prefix) == end


@pytest.mark.parametrize("doc, expected", [
    ({}, set()),
    ({"perm": None}, set()),
    ({"perm": [{"key": "L2Ev", "range_end": "L2Ew"}]}, {cp.Permission("/a/", "/a0", "READ")}),
    ({"perm": [{"permType": "READWRITE", "key": "L2Ev", "range_end": "L2Ew"}]}, {cp.Permission("/a/", "/a0")}),
])
def test_permissions_read_back_from_etcd(doc: dict[str, Any], expected: set[cp.Permission]) -> None:
    assert permissions_of(doc) == expected


def test_logins_never_show_their_password() -> None:
    login = cp.rest_login(PASSWORDS)
    assert login.as_basic_auth() == ("dbtier", "s3cr3t-rest")
    assert "s3cr3t" not in repr(login) + str(login) + repr(cp.etcd_root_login(PASSWORDS))


def test_client_settings_are_one_place() -> None:
    spec, plain = build_spec({}, environ={}), build_spec(OFF, environ={})
    assert cp.client_settings(spec, "/w/ca.crt") == cp.ClientSettings("https", "/w/ca.crt", None)
    assert cp.rest_base(spec, pg_members(spec)[0]) == "https://127.0.0.1:8008"
    assert cp.client_settings(plain) == cp.ClientSettings("http", True, None)
    assert cp.rest_base(plain, pg_members(plain)[0]) == "http://127.0.0.1:8008"
    session = cp.http_session(build_spec({"name": "orders"}, environ={}))
    assert session.trust_env is False and str(session.verify).endswith("/orders/ca.crt")
