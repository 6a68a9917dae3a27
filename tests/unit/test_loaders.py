"""The providers' loaders and the work directory: the library needs no Prefect, the tasks hand theirs in.

Pure and local: no Prefect API, no SSH server (see tests/integration/test_without_prefect.py for those).
"""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from dbtier import workdir
from dbtier.errors import PreflightError
from dbtier.providers.loaders import (
    FILE_LOADERS,
    PVE_ENV,
    PVEToken,
    key_from_file,
    public_key_line,
    token_from_env_or_file,
)
from dbtier.providers.ssh import SSHProvider
from dbtier.spec import ProxmoxSettings, SSHSettings, build_spec

REPO = Path(__file__).resolve().parents[2]


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_nothing_under_dbtier_imports_blocks() -> None:
    """The library, the lab and the benches run without a Prefect API: only tasks/flows/blocks reach blocks/."""
    offenders = [f"{p.relative_to(REPO)}: import {name}" for p in _python_files("dbtier")
                 for name in _imported_modules(p) if name == "blocks" or name.startswith("blocks.")]
    assert offenders == []


#: Calls that build a provider (or read the PVE API) and the argument that hands in the loaders or provider.
HANDED_IN = {"get_provider": ("loaders", 2), "resolve_addresses": ("loaders", 99), "learn_leases": ("loaders", 99),
             "check_ready": ("provider", 99), "Drill": ("provider", 5)}


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        base = node.func.value
        if node.func.attr == "run" and isinstance(base, ast.Name) and base.id == "scenarios":
            return "scenarios.run"
        return node.func.attr
    return None


def test_the_tasks_and_flows_hand_their_loaders_to_every_provider() -> None:
    """A task that forgot would silently pin host keys in a local file and refuse every SSHCredentials block."""
    wanted = {**HANDED_IN, "scenarios.run": ("provider", 5)}
    missing = []
    for path in _python_files("tasks", "flows", "blocks", "deployments"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or _call_name(node) not in wanted:
                continue
            keyword, position = wanted[str(_call_name(node))]
            if not (any(k.arg == keyword for k in node.keywords) or len(node.args) >= position):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno}: {_call_name(node)}(...) without {keyword}")
    assert missing == []


# -- the work directory --------------------------------------------------------------------------------


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBTIER_WORK_DIR", str(tmp_path / "work"))
    for var in PVE_ENV.values():
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "work"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"DBTIER_WORK_DIR": "/srv/w", "XDG_STATE_HOME": "/s"}, "/srv/w"),
        ({"XDG_STATE_HOME": "/home/ops/.state"}, "/home/ops/.state/dbtier"),
        ({"XDG_STATE_HOME": "state"}, "/home/ops/.local/state/dbtier"),
        ({"DBTIER_WORK_DIR": ""}, "/home/ops/.local/state/dbtier"),
        ({}, "/home/ops/.local/state/dbtier"),
    ],
)
def test_the_work_directory_is_chosen_like_xdg_state(environ: dict[str, str], expected: str) -> None:
    assert workdir.work_root(environ, home="/home/ops") == expected


def test_the_work_directory_is_not_a_spec_field() -> None:
    spec = build_spec({}, environ={"DBTIER_WORK_DIR": "/w", "DBTIER_PVE_TOKEN_SECRET": "x"})
    assert spec.name == "dbtier"


def test_private_files_are_written_atomically_and_only_for_their_owner(work: Path) -> None:
    path = workdir.drill_dir("orders", "d1") + "/verdict.json"
    workdir.write_private(path, b"{}")
    assert Path(path).read_bytes() == b"{}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(work / "orders" / "drills").st_mode) == 0o700
    assert workdir.forget_cluster("orders") == f"removed {work / 'orders'} on this machine (drill evidence)"
    assert not (work / "orders").exists() and workdir.forget_cluster("orders") is None


# -- the default loaders: files and the environment ----------------------------------------------------


def test_host_keys_pinned_without_prefect_go_to_the_work_directory(work: Path) -> None:
    assert FILE_LOADERS.load_pins("orders") == {}
    FILE_LOADERS.save_pins("orders", {"10.0.0.12": "ssh-ed25519 BBBB", "10.0.0.11": "ssh-ed25519 AAAA"})
    pin_file = work / "orders" / "host-keys.json"
    assert json.loads(pin_file.read_text()) == {"10.0.0.11": "ssh-ed25519 AAAA", "10.0.0.12": "ssh-ed25519 BBBB"}
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
    assert FILE_LOADERS.forget_pins("orders", ["10.0.0.11", "10.9.9.9"]) == ["10.0.0.11"]
    assert FILE_LOADERS.load_pins("orders") == {"10.0.0.12": "ssh-ed25519 BBBB"}
    assert FILE_LOADERS.forget_pins("orders") == ["10.0.0.12"]
    assert not pin_file.exists()


def test_a_key_in_a_prefect_block_is_refused_without_prefect_in_one_line(tmp_path: Path) -> None:
    settings = SSHSettings(hosts=[{"address": "10.0.0.11"}], credentials_block="orders-ssh")
    with pytest.raises(PreflightError) as err:
        key_from_file(settings)
    assert err.value.one_line() == ("ssh.key_file: not set (credentials_block orders-ssh is a Prefect block, read only "
                                    "by the flows); give the path of the private key")
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    both = settings.model_copy(update={"key_file": str(key)})
    assert key_from_file(both) == {"key_filename": str(key)}
    public = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    assert public_key_line(key_from_file(both)) == f"{public} dbtier"


def _proxmox(**fields: object) -> ProxmoxSettings:
    return ProxmoxSettings(credentials_block="lab-pve", ssh_key_file="/k",
                           containers=[{"vmid": 301, "node": "pve1", "address": "dhcp"}], **fields)


def test_the_pve_token_comes_from_the_environment(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBTIER_PVE_API_URL", "https://198.18.0.1:8006")
    monkeypatch.setenv("DBTIER_PVE_TOKEN_ID", "root@pam!dbtier")
    monkeypatch.setenv("DBTIER_PVE_TOKEN_SECRET", "11111111-2222-3333-4444-555555555555")
    monkeypatch.setenv("DBTIER_PVE_CA_FILE", "/etc/lab/ca.pem")
    token = token_from_env_or_file(_proxmox())
    assert (token.api_url, token.token_id, token.ca_file, token.verify_ssl) == (
        "https://198.18.0.1:8006", "root@pam!dbtier", "/etc/lab/ca.pem", True)
    assert "5555" not in repr(token)


def test_else_from_the_token_file_of_the_block_in_the_work_directory(work: Path) -> None:
    path = Path(workdir.pve_token_file("lab-pve"))
    with pytest.raises(PreflightError) as err:
        token_from_env_or_file(_proxmox())
    assert err.value.one_line() == (
        f"proxmox.credentials_block: lab-pve is a Prefect block, and this run reads none; write the token to {path} "
        "(api_url, token_id, token_secret; mode 0600) or set DBTIER_PVE_API_URL, DBTIER_PVE_TOKEN_ID and "
        "DBTIER_PVE_TOKEN_SECRET")
    workdir.write_private(str(path), b"api_url: https://pve:8006\ntoken_id: root@pam!t\ntoken_secret: s\nbridge: br0\n")
    assert token_from_env_or_file(_proxmox()).bridge == "br0"
    os.chmod(path, 0o644)
    with pytest.raises(PreflightError, match=f"readable by others; chmod 600 {path}"):
        token_from_env_or_file(_proxmox())
    os.chmod(path, 0o600)
    path.write_text("api_url: https://pve:8006\ntoken_id: root@pam!t\n")
    with pytest.raises(PreflightError, match="token_secret: Field required"):
        token_from_env_or_file(_proxmox())


def test_the_proxmox_block_hands_out_the_same_token() -> None:
    from pydantic import SecretStr

    from blocks.proxmox import ProxmoxCredentials

    block = ProxmoxCredentials(api_url="https://pve:8006", token_id="root@pam!t", token_secret=SecretStr("s"),
                               fingerprint="aa" * 32, nodes=["pve1"])
    token = block.token()
    assert isinstance(token, PVEToken)
    assert token.model_dump() == {name: getattr(block, name) for name in PVEToken.model_fields}


def test_proxmox_needs_an_ssh_key_block_or_file() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="name the containers' SSH key: ssh_credentials_block"):
        ProxmoxSettings(credentials_block="p", containers=[{"vmid": 301, "node": "pve1", "address": "dhcp"}])


# -- the SSH provider ------------------------------------------------------------------------------------


def test_a_runner_for_a_host_not_in_the_spec_is_one_line_naming_ssh_hosts() -> None:
    spec = build_spec({"name": "orders", "provider": "ssh", "ssh": {
        "hosts": [{"address": "10.0.0.11"}, {"address": "10.0.0.12", "port": 2222}], "key_file": "/k"},
        "backup": {"repositories": [{"type": "fs", "shared": True}]}}, environ={})
    with pytest.raises(PreflightError) as err:
        SSHProvider().runner(spec, spec.host)  # 127.0.0.1: the local provider's field, no host of this cluster
    assert err.value.one_line() == ("ssh.hosts: 127.0.0.1 is not one of the spec's hosts (10.0.0.11:22, "
                                    "10.0.0.12:2222); add it to ssh.hosts, or ask for the runner of a member's host")
    assert err.value.exit_code == 2
