"""The lab's plan and the specs it writes (pure)."""

from __future__ import annotations

import pytest

from dbtier.errors import Refused
from dbtier.lab import plan
from dbtier.spec import build_spec
from dbtier.engines.postgres.topology import pg_members


@pytest.mark.parametrize(("used", "free"), [
    ([], "198.18.0.0/24"),
    (["198.18.0.1/24", "198.18.1.1/24"], "198.18.2.0/24"),
    (["198.18.0.0/16"], "198.19.0.0/24"),
    (["127.0.0.1/8", "192.0.2.2/24"], "198.18.0.0/24"),
])
def test_free_subnet_skips_what_this_machine_uses(used: list[str], free: str) -> None:
    assert plan.free_subnet(used) == free


def test_every_subnet_taken_is_refused() -> None:
    with pytest.raises(Refused, match="every /24 of 198.18.0.0/15 is in use"):
        plan.free_subnet(["198.18.0.0/15"])


@pytest.mark.parametrize(("subnet", "words"), [
    ("198.18.0.0/23", "must be a /24 to /28"),
    ("198.18.0.1/24", "is not a network"),
    ("fd00::/64", "outside 198.18.0.0/15"),
])
def test_bad_subnets_are_refused(subnet: str, words: str) -> None:
    with pytest.raises(Refused, match=words):
        plan.check_subnet(subnet)


def test_interface_names_fit_linux_limit() -> None:
    lab = plan.plan_lab("abcdefgh", 9, "198.18.0.0/24")
    assert len(lab.bridge) <= 15 and all(len(f"{h.veth}p") <= 15 for h in lab.hosts)
    assert len({h.address for h in lab.hosts}) == 9 and lab.gateway not in {h.address for h in lab.hosts}


def test_host_lookup_by_name_or_address() -> None:
    lab = plan.plan_lab("lab", 3, "198.18.5.0/24")
    assert lab.host("lab-2") == lab.host("198.18.5.12")
    with pytest.raises(Refused, match="no host 'lab-9'; its hosts are lab-1 \\(198.18.5.11\\)"):
        lab.host("lab-9")


def test_the_ssh_spec_loads_with_one_member_per_host_and_pinned_keys() -> None:
    lab = plan.plan_lab("lab", 3, "198.18.0.0/24")
    keys = {h.name: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{h.index}" + "A" * 42 for h in lab.hosts}
    spec = build_spec(plan.ssh_spec(lab, "/k/id_ed25519", keys, "/ca.pem", cluster="lab"), environ={})
    assert [m.host for m in pg_members(spec)] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    assert spec.ssh is not None and spec.ssh.lab == "lab"
    assert [h.host_key for h in spec.ssh.hosts] == list(keys.values())
    assert spec.data_root == plan.HOST_DATA_ROOT and spec.allowed_client_networks == ["198.18.0.0/24"]


def test_the_proxmox_spec_loads_with_one_container_per_host() -> None:
    lab = plan.plan_lab("lab", 3, "198.18.0.0/24")
    spec = build_spec(plan.proxmox_spec(lab, "/k/id_ed25519", cluster="labpve"), environ={})
    assert spec.proxmox is not None and spec.proxmox.layout == "per-member"
    assert [(c.vmid, c.node, c.ip) for c in spec.proxmox.containers] == [
        (901, "pve1", "198.18.0.11"), (902, "pve2", "198.18.0.12"), (903, "pve3", "198.18.0.13")]
    assert spec.proxmox.credentials_block == "lab-lab-pve"


def test_host_files_name_the_host_and_its_address() -> None:
    host = plan.plan_lab("lab", 1, "198.18.0.0/24").hosts[0]
    files = plan.host_files(host, "PRIVATE", "ssh-ed25519 AAAA lab")
    assert files["/etc/hostname"] == ("lab-1\n", 0o644)
    assert "ListenAddress 198.18.0.11" in files["/etc/dbtier-lab/sshd_config"][0]
    assert files["/etc/dbtier-lab/ssh_host_ed25519_key"] == ("PRIVATE", 0o600)
