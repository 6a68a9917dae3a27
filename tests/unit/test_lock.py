"""The cluster lock's decisions, the teardown's keep-or-delete rules for the cipher block, pid file checks (pure)."""

from __future__ import annotations

import pytest

from dbtier.cleanup import cluster_of_cipher_record, keep_cipher_reason
from dbtier.lock import RUN_GONE, Holder, refusal, stale_reason
from dbtier.procs import PidMismatch, parse_listeners, port_holders
from dbtier.spec import ClusterSpec

HOLDER = Holder("pg", "backup", "db1", 42, "2026-12-02T01:00:00Z", "t", pid_start=100, run_id="r1", run_name="calm-fox")


@pytest.mark.parametrize(
    ("here", "live_start", "run_state", "stale"),
    [
        ("db1", 100, "RUNNING", None),
        ("db1", 100, "CRASHED", None),  # its process lives: it is still in its finally
        ("db1", None, "RUNNING", "pid 42 on db1 is gone"),
        ("db1", 101, "RUNNING", "pid 42 on db1 is now another process"),
        ("db2", None, "RUNNING", None),  # another host: a pid there means nothing here
        ("db2", None, None, None),
        ("db2", None, "PENDING", None),
        ("db2", None, "COMPLETED", "its flow run calm-fox is completed"),
        ("db2", None, "FAILED", "its flow run calm-fox is failed"),
        ("db2", None, "CANCELLED", "its flow run calm-fox is cancelled"),
        ("db2", None, RUN_GONE, "its flow run r1 is gone from the Prefect API"),
    ],
)
def test_stale_holders(here: str, live_start: int | None, run_state: str | None, stale: str | None) -> None:
    assert stale_reason(HOLDER, here, live_start, run_state) == stale


@pytest.mark.parametrize("value", [None, "busy", 3, [], {}, {"cluster": "pg", "flow": "x"},
                                   {**HOLDER.as_value(), "pid": "42"}])
def test_a_value_that_is_no_holder_record_reads_as_none(value: object) -> None:
    assert Holder.from_value(value) is None


def test_holder_record_survives_the_variable_and_ignores_unknown_fields() -> None:
    assert Holder.from_value({**HOLDER.as_value(), "added_later": 1}) == HOLDER


@pytest.mark.parametrize("holder", [HOLDER, None])
def test_refusal_is_one_line_naming_the_field_and_the_way_out(holder: Holder | None) -> None:
    line = refusal("pg", holder)
    assert "\n" not in line and line.startswith("cluster: pg is busy: ")
    assert "prefect variable unset dbtier-pg-lock" in line
    if holder:
        assert "flow backup (run calm-fox, id r1) on host db1, pid 42, since 2026-12-02T01:00:00Z" in line


OWNER = ClusterSpec(name="pg", backup={"cipher_block": "k"})


@pytest.mark.parametrize(
    ("spec", "gone", "made", "users", "stanzas", "kept"),
    [
        (OWNER, True, True, [], [], None),
        (ClusterSpec(name="pg-restored", hosts_of="pg", backup={"cipher_block": "k"}), True, True, [], [], "copy"),
        (OWNER, False, True, [], [], "still holds"),
        (OWNER, True, False, [], [], "did not create it"),
        (OWNER, True, True, ["pg-restored"], [], "pg-restored"),
        (OWNER, True, True, [], ["other"], "stanza other"),
    ],
)
def test_the_cipher_block_goes_only_when_nothing_says_another_cluster_needs_it(
    spec: ClusterSpec, gone: bool, made: bool, users: list[str], stanzas: list[str], kept: str | None
) -> None:
    reason = keep_cipher_reason(spec, stanza_gone=gone, made_for_it=made, other_users=users, other_stanzas=stanzas)
    assert (reason is None) == (kept is None) and (kept is None or kept in str(reason)), reason


@pytest.mark.parametrize(("name", "cluster"), [("dbtier-pg-cipher", "pg"), ("dbtier-pg-restored-cipher", "pg-restored"),
                                               ("dbtier--cipher", None), ("dbtier-pg-lock", None), ("pg-cipher", None)])
def test_cipher_records_name_their_cluster_exactly(name: str, cluster: str | None) -> None:
    assert cluster_of_cipher_record(name) == cluster


SS = """LISTEN 0 4096 127.0.0.11:5432 0.0.0.0:* users:(("postgres",pid=70,fd=6))
LISTEN 0 4096 127.0.0.12:5432 0.0.0.0:* users:(("postgres",pid=71,fd=6))
LISTEN 0 4096 0.0.0.0:8008 0.0.0.0:* users:(("patroni",pid=80,fd=5))
LISTEN 0 4096 [::1]:2379 [::]:* users:(("etcd",pid=90,fd=7),("etcd",pid=91,fd=7))
LISTEN 0 128 127.0.0.1:22 0.0.0.0:*
"""


@pytest.mark.parametrize(
    ("host", "port", "holders"),
    [
        ("127.0.0.11", 5432, frozenset({70})),  # members on loopback aliases share port numbers
        ("127.0.0.12", 5432, frozenset({71})),
        ("127.0.0.13", 5432, None),
        ("127.0.0.13", 8008, frozenset({80})),  # a wildcard socket serves every address
        ("::1", 2379, frozenset({90, 91})),
        ("127.0.0.1", 22, frozenset()),  # another user's: held, by a pid this user cannot see
        ("db1.example", 5432, frozenset({70, 71})),  # a host name: any socket on the port
    ],
)
def test_port_holders(host: str, port: int, holders: frozenset[int] | None) -> None:
    assert port_holders(parse_listeners(SS), host, port) == holders


def test_a_pid_mismatch_says_which_pid_file_and_which_port() -> None:
    problem = PidMismatch("pg1", 9, True, 5433, frozenset({12}))
    assert problem.sentence == "pg1: its pid file names pid 9, but port 5433 is held by pid 12"
    assert problem.cell == "pid 9 alive; port 5433: pid 12"
