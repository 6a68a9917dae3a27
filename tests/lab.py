"""A lab for a test module: brought up before its first test, taken down (everything, by PID) after its last.

Each module that uses a lab gives it its own name and subnet, so modules running side by side never meet:
``tlab`` 198.18.10.0/24 (test_lab), ``tnet`` 198.18.11.0/24 (network drills), ``tpve`` 198.18.12.0/24
(the proxmox spec), ``tcut`` 198.18.13.0/24 (interrupted up), ``fwlab`` 198.18.14.0/24 (the host firewall: three
members and a host outside the cluster).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from dbtier.lab import lab
from dbtier.lab.lab import LabState
from tests.clusters import FAST_TIMING


def unavailable() -> str | None:
    """Why no lab can run here (None: it can)."""
    try:
        lab.check_machine()
    except Exception as err:  # noqa: BLE001 - Refused: the reason to skip
        return str(err)
    return None


@contextmanager
def running_lab(name: str, subnet: str, hosts: int = 3) -> Iterator[LabState]:
    """``dbtier lab up`` for the block (what an earlier killed run left of this lab is removed first)."""
    lab.down(name, progress=lambda _line: None)
    try:
        yield lab.up(name, hosts, subnet, progress=lambda _line: None)
    finally:
        lab.down(name, progress=lambda _line: None)


def save_s3_block(state: LabState) -> list[str]:
    """The blocks the lab's specs name (its S3, its PVE double), in the current Prefect API (the test harness)."""
    from blocks.lab import save_lab_blocks

    return save_lab_blocks(state)


def lab_spec_file(state: LabState, which: str, directory: Path, members: int | None = None,
                  **fields: Any) -> str:
    """The lab's own ready spec (``ssh`` or ``proxmox``) with Patroni's fast test timing, in ``directory``; the
    lab's blocks saved in the current Prefect API. ``members``: only the first hosts carry the cluster (the others
    stay outside it); ``fields`` replace the spec's own."""
    data: dict[str, Any] = yaml.safe_load((state.public / f"{which}-spec.yaml").read_text())
    postgres = data.setdefault("postgres", {})
    postgres["patroni"] = FAST_TIMING
    postgres["routing"] = fields.pop("routing", {"enabled": False})  # the routing suites turn it on
    if members is not None and which == "ssh":
        data["members"] = members
        data["ssh"]["hosts"] = data["ssh"]["hosts"][:members]
    data.update(fields)
    path = directory / f"{which}-spec.yaml"
    path.write_text(yaml.safe_dump(data))
    save_s3_block(state)
    return str(path)


def on_host(state: LabState, host: str, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` as root on a lab host (by name or address), over its sshd with the lab's key."""
    return subprocess.run(lab.ssh_argv(state, state.plan.host(host), command), capture_output=True, text=True,
                          timeout=60)


def bucket_keys(state: LabState, prefix: str) -> list[str]:
    """The keys under ``prefix`` in the lab's S3 bucket, listed with boto3 over the lab's TLS."""
    import boto3

    settings = lab.s3_settings(state)
    s3 = boto3.client("s3", endpoint_url=f"https://{settings['endpoint']}:{settings['port']}",
                      aws_access_key_id=settings["access_key_id"], aws_secret_access_key=settings["secret_access_key"],
                      region_name="us-east-1", verify=settings["ca_file"])
    listed = s3.list_objects_v2(Bucket=settings["bucket"], Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]
