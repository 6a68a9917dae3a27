"""Flow runs are named after the cluster their parameters point at (the same from the CLI, a deployment, the UI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows._names import name_of_run

REPO = Path(__file__).resolve().parent.parent.parent
SSH = str(REPO / "deployments" / "clusters" / "ssh.yaml")
SYNC = str(REPO / "deployments" / "clusters" / "sync-fast.yaml")


@pytest.mark.parametrize(
    ("verb", "params", "name"),
    [
        ("provision", {"spec_path": None, "spec_block": None}, "provision dbtier"),
        ("provision", {"spec_path": SSH}, "provision orders"),
        ("backup", {"spec_path": SSH, "kind": "auto", "repo": None}, "backup orders"),
        ("backup", {"spec_path": SSH, "kind": "diff", "repo": 2}, "backup orders (diff, repo 2)"),
        ("failover-drill", {"spec_path": SYNC, "scenario": "drill-all"}, "failover-drill syncfast (drill-all)"),
        ("restore", {"spec_path": SSH}, "restore orders->orders-restored"),
        ("restore", {"spec_path": SSH, "into": "orders-copy"}, "restore orders->orders-copy"),
        ("restore", {"spec_path": SSH, "target_spec_path": SYNC}, "restore orders->syncfast"),
        ("restore", {"spec_path": SSH, "in_place": True}, "restore orders (in place)"),
        ("teardown", {"spec_path": "/no/such/spec.yaml"}, "teardown"),  # the run itself refuses the spec
    ],
)
def test_run_names(monkeypatch: pytest.MonkeyPatch, verb: str, params: dict[str, object], name: str) -> None:
    monkeypatch.delenv("DBTIER_SPEC", raising=False)
    assert name_of_run(verb, params) == name
