"""Host key pins: names, parsing, messages (pure), and the pin store's rules with an in-memory store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from dbtier.errors import PreflightError
from dbtier.providers.hostkeys import (
    HostKeyPins,
    changed_key_message,
    fingerprint,
    host_id,
    key_line,
    parse_key_line,
    split_host_id,
)
from dbtier.spec import SSHHost


@pytest.mark.parametrize(
    ("text", "host", "port", "name"),
    [
        ("10.0.0.11", "10.0.0.11", 22, "10.0.0.11"),
        ("10.0.0.11:22", "10.0.0.11", 22, "10.0.0.11"),
        ("127.0.0.1:20490", "127.0.0.1", 20490, "[127.0.0.1]:20490"),
        ("[127.0.0.1]:20490", "127.0.0.1", 20490, "[127.0.0.1]:20490"),
        ("db1.example.com", "db1.example.com", 22, "db1.example.com"),
        (" db1:2222 ", "db1", 2222, "[db1]:2222"),
    ],
)
def test_host_ids_as_operators_type_them(text: str, host: str, port: int, name: str) -> None:
    assert split_host_id(text) == (host, port)
    assert host_id(host, port) == name


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    lines = []
    for i in range(2):
        path = tmp_path_factory.mktemp("k") / f"k{i}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        lines.append(" ".join(Path(f"{path}.pub").read_text().split()[:2]))
    return lines


def test_fingerprint_is_openssh_s(keys: list[str], tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text(keys[0] + " c\n")
    said = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True)
    assert said.stdout.split()[1] == fingerprint(keys[0])


def test_a_key_line_round_trips(keys: list[str]) -> None:
    assert key_line(parse_key_line(keys[0] + " comment")) == keys[0]


@pytest.mark.parametrize("line", ["", "ssh-ed25519", "ssh-ed25519 not-base64!", "ssh-ed25519 AAAA"])
def test_bad_key_lines_are_one_line_errors(line: str) -> None:
    with pytest.raises(PreflightError) as err:
        parse_key_line(line, "ssh.hosts.host_key")
    assert err.value.one_line().startswith("ssh.hosts.host_key: ") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("line", "ok"),
    [("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 root@h", True), ("ecdsa-sha2-nistp256 AAAAE2Vj", True),
     ("AAAAC3NzaC1lZDI1NTE5", False), ("rsa AAAA", False), ("ssh-ed25519 ***", False)],
)
def test_the_spec_checks_host_key_lines(line: str, ok: bool) -> None:
    if ok:
        assert SSHHost(address="h", host_key=line).host_key == " ".join(line.split()[:2])
    else:
        with pytest.raises(ValueError, match="is not a public key line"):
            SSHHost(address="h", host_key=line)


@pytest.mark.parametrize(
    ("from_spec", "words"),
    [(True, "not the host_key of the spec (SHA256:old); check that the address reaches the right host"),
     (False, "not SHA256:old pinned on first use; if the host was rebuilt on purpose, forget the pin: "
             "dbtier host-keys --spec FILE --forget 10.0.0.11:2222")],
)
def test_changed_key_messages_say_what_to_do(from_spec: bool, words: str) -> None:
    message = changed_key_message("10.0.0.11", 2222, "SHA256:new", "SHA256:old", from_spec)
    assert message.startswith("ssh.hosts: 10.0.0.11:2222 presented host key SHA256:new, ") and words in message


class Store:
    def __init__(self) -> None:
        self.saved: dict[str, dict[str, str]] = {}

    def load(self, cluster: str) -> dict[str, str]:
        return dict(self.saved.get(cluster, {}))

    def save(self, cluster: str, pins: dict[str, str]) -> None:
        self.saved[cluster] = dict(pins)


def test_the_first_key_is_pinned_then_required(keys: list[str]) -> None:
    store = Store()
    pins = HostKeyPins("orders", store.load, store.save)
    client = paramiko.SSHClient()
    pins.prepare(client, "10.0.0.11", 22)
    policy = client._policy  # type: ignore[attr-defined]
    assert not isinstance(policy, paramiko.RejectPolicy)
    policy.missing_host_key(client, "10.0.0.11", parse_key_line(keys[0]))
    assert store.saved == {"orders": {"10.0.0.11": keys[0]}}
    assert pins.expected("10.0.0.11", 22) == (keys[0], False)
    again = paramiko.SSHClient()
    pins.prepare(again, "10.0.0.11", 22)
    assert isinstance(again._policy, paramiko.RejectPolicy)  # type: ignore[attr-defined]
    assert again.get_host_keys().lookup("10.0.0.11")["ssh-ed25519"].get_base64() == keys[0].split()[1]


def test_a_key_from_the_spec_wins_and_is_never_stored(keys: list[str]) -> None:
    store = Store()
    store.saved["orders"] = {"[h]:2222": keys[1]}
    pins = HostKeyPins("orders", store.load, store.save, fixed={"[h]:2222": keys[0]})
    assert pins.expected("h", 2222) == (keys[0], True)
    client = paramiko.SSHClient()
    pins.prepare(client, "h", 2222)
    assert isinstance(client._policy, paramiko.RejectPolicy)  # type: ignore[attr-defined]
    assert store.saved == {"orders": {"[h]:2222": keys[1]}}


def test_pins_are_per_cluster_and_read_fresh(keys: list[str]) -> None:
    store = Store()
    orders, billing = (HostKeyPins(c, store.load, store.save) for c in ("orders", "billing"))
    orders.pin("h", 22, keys[0])
    assert billing.expected("h", 22) is None
    store.saved["orders"] = {}  # forgotten elsewhere (dbtier host-keys --forget)
    assert orders.expected("h", 22) is None
