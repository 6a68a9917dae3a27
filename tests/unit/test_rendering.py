"""Rendered configuration and command lines: what Patroni and etcd will be told (pure)."""

from __future__ import annotations

import pytest

from dbtier.engines.postgres.etcd import etcd_argv, judge_quorum
from dbtier.engines.postgres.patroni_config import pg_hba, render_patroni_config
from dbtier.procs import launch_argv
from dbtier.secrets import Passwords, block_name
from dbtier.spec import build_spec
from dbtier.engines.postgres.topology import client_dsn, etcd_members, pg_members

PASSWORDS = Passwords(superuser="s3cr3t-super", replication="s3cr3t-repl", rewind="s3cr3t-rew", app="s3cr3t-app",
                      monitoring="s3cr3t-mon", restapi="s3cr3t-rest", etcd_root="s3cr3t-etcdroot", etcd="s3cr3t-etcd",
                      pgbouncer="s3cr3t-bouncer")


def test_patroni_config_has_the_safety_settings() -> None:
    spec = build_spec({"synchronous_mode": True, "postgresql_parameters": {"work_mem": "8MB"}}, environ={})
    member = pg_members(spec)[1]
    config = render_patroni_config(spec, member, PASSWORDS)
    dcs = config["bootstrap"]["dcs"]
    assert dcs["failsafe_mode"] is True
    assert dcs["synchronous_mode"] is True
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["use_slots"] is True
    assert dcs["postgresql"]["parameters"]["work_mem"] == "8MB"
    assert dcs["postgresql"]["parameters"]["wal_log_hints"] == "on"
    assert "data-checksums" in config["bootstrap"]["initdb"]
    assert config["name"] == "pg1"
    assert config["postgresql"]["listen"] == "127.0.0.1:5433"
    assert config["restapi"]["listen"] == "127.0.0.1:8009"
    assert config["etcd3"]["hosts"] == ["127.0.0.1:2379", "127.0.0.1:2381", "127.0.0.1:2383"]
    assert config["postgresql"]["data_dir"] == "/var/lib/dbtier/dbtier/pg1/pgdata"
    # Patroni talks to its own member over the socket, which the restore bootstrap's trust line matches
    assert config["postgresql"]["use_unix_socket"] is True
    assert config["postgresql"]["parameters"]["unix_socket_directories"] == member.socket_dir


@pytest.mark.parametrize(
    "fields",
    [{}, {"allowed_client_networks": ["10.0.0.0/24", "fd00::/64"]}, {"host": "192.168.5.7"}],
)
def test_pg_hba_is_scram_on_every_tcp_line_and_never_trust(fields: dict[str, object]) -> None:
    lines = pg_hba(build_spec(fields, environ={}))
    tcp = [line for line in lines if line.startswith("host")]
    assert tcp and all(line.endswith((" scram-sha-256", " reject")) for line in tcp)
    assert all(line.startswith("hostssl ") for line in tcp if line.endswith(" scram-sha-256"))
    assert not any("trust" in line for line in lines)
    for net in fields.get("allowed_client_networks", []):  # type: ignore[attr-defined]
        assert f"hostssl all all {net} scram-sha-256" in lines


def test_etcd_members_form_one_cluster() -> None:
    spec = build_spec({"ports": {"etcd": 12379}}, environ={})
    argvs = [etcd_argv(spec, m) for m in etcd_members(spec)]
    initial = {argv[argv.index("--initial-cluster") + 1] for argv in argvs}
    assert initial == {"etcd0=https://127.0.0.1:12380,etcd1=https://127.0.0.1:12382,etcd2=https://127.0.0.1:12384"}
    assert [argv[argv.index("--listen-client-urls") + 1] for argv in argvs] == [
        "https://127.0.0.1:12379", "https://127.0.0.1:12381", "https://127.0.0.1:12383"
    ]
    assert argvs[1][argvs[1].index("--peer-cert-file") + 1] == "/var/lib/dbtier/dbtier/etcd1/tls/etcd.crt"
    plain = build_spec({"tls": {"enabled": False}}, environ={})
    argv = etcd_argv(plain, etcd_members(plain)[0])
    assert argv[argv.index("--listen-peer-urls") + 1] == "http://127.0.0.1:2380" and "--cert-file" not in argv


@pytest.mark.parametrize(
    ("states", "ok", "words"),
    [
        ({"etcd0": "leader", "etcd1": "follower", "etcd2": "follower"}, True, "leader etcd0"),
        ({"etcd0": "leader", "etcd1": "down", "etcd2": "down"}, False, "etcd1, etcd2"),
        ({"etcd0": "no leader", "etcd1": "no leader", "etcd2": "no leader"}, False, "do not agree"),
        ({"etcd0": "leader", "etcd1": "leader", "etcd2": "follower"}, False, "do not agree"),
    ],
)
def test_etcd_quorum_verdict(states: dict[str, str], ok: bool, words: str) -> None:
    verdict, sentence = judge_quorum(states)
    assert verdict is ok and words in sentence


@pytest.mark.parametrize(
    ("fields", "dsn"),
    [
        ({}, "postgresql://app@127.0.0.1:5432,127.0.0.1:5433,127.0.0.1:5434/app?target_session_attrs=read-write"
             "&connect_timeout=3&sslmode=verify-full&sslrootcert=/w/dbtier/ca.crt"),
        ({"members": 1, "app": {"user": "shop", "database": "orders"}, "tls": {"enabled": False}},
         "postgresql://shop@127.0.0.1:5432/orders?target_session_attrs=read-write&connect_timeout=3"),
    ],
)
def test_client_dsn(fields: dict[str, object], dsn: str) -> None:
    assert client_dsn(build_spec(fields, environ={}), ca_file="/w/dbtier/ca.crt") == dsn


def test_passwords_never_show_in_repr_or_str() -> None:
    text = repr(PASSWORDS) + str(PASSWORDS) + f"{PASSWORDS}"
    assert "s3cr3t" not in text and "**********" in text


def test_secret_block_names() -> None:
    assert block_name(build_spec({"name": "orders"}, environ={}), "replication") == "dbtier-orders-replication-password"
    with pytest.raises(ValueError):
        block_name(build_spec({}, environ={}), "root")


def test_launch_argv_passes_program_argv_untouched() -> None:
    argv = launch_argv(["/usr/bin/etcd", "--name", "a b"], "/d/p.pid", "/d/l.log")
    assert argv[-3:] == ["/usr/bin/etcd", "--name", "a b"]
    assert argv[5:8] == ["sh", "/d/p.pid", "/d/l.log"]
