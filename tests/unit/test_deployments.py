"""The scheduled deployments each cluster gets (pure), and the prefect.yaml that `prefect deploy` reads."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from dbtier.spec import build_spec, load_spec
from deployments.plan import (
    ARCHIVE_HEALTH_CRON,
    MONTHLY_DRILL_CRON,
    NIGHTLY_BACKUP_CRON,
    WEEKLY_RESTORE_DRILL_CRON,
    plan,
)
from deployments.serve import CLUSTERS, load_plan

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize(
    ("fields", "active"),
    [
        ({}, True),
        ({"production": True}, False),
        ({"production": True, "drills": {"allow_in_production": True}}, True),
        ({"production": False, "drills": {"allow_in_production": True}}, True),
    ],
)
def test_monthly_drill_is_off_for_production_unless_it_opts_in(fields: dict[str, object], active: bool) -> None:
    [drill] = [d for d in plan({"c.yaml": build_spec(fields, environ={})}) if d.flow == "failover_drill"]
    assert (drill.cron, drill.active, drill.parameters["scenario"]) == (MONTHLY_DRILL_CRON, active, "drill-all")
    assert drill.parameters["spec_path"] == "c.yaml"


def test_every_sample_cluster_would_get_a_drill_deployment() -> None:
    samples = {str(p): load_spec(p) for p in sorted(CLUSTERS.glob("*.yaml"))}
    names = {d.name for d in plan(samples)}
    assert {"dbtier-drill-all-monthly", "syncfast-drill-all-monthly", "orders-drill-all-monthly"} <= names


def test_serve_without_a_spec_plans_the_default_cluster_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBTIER_SPEC", raising=False)
    assert {d.name.split("-")[0] for d in load_plan()} == {"dbtier"}
    monkeypatch.setenv("DBTIER_SPEC", str(CLUSTERS / "sync-fast.yaml"))
    assert {d.name.split("-")[0] for d in load_plan()} == {"syncfast"}


def test_every_planned_run_is_tagged_with_its_cluster() -> None:
    assert {d.tags for d in load_plan(str(CLUSTERS / "ssh.yaml"))} == {("dbtier", "cluster:orders")}


def test_prefect_yaml_tags_every_deployment_with_its_cluster() -> None:
    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    for deployment in doc["deployments"]:
        cluster = load_spec(REPO / deployment["parameters"]["spec_path"]).name
        assert deployment["tags"] == ["dbtier", f"cluster:{cluster}"], deployment["name"]


def test_prefect_yaml_schedules_the_monthly_drill() -> None:
    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    [drill] = [d for d in doc["deployments"] if d["parameters"].get("scenario") == "drill-all"]
    assert drill["entrypoint"] == "flows/failover_drill.py:failover_drill"
    assert drill["schedules"][0]["cron"] == MONTHLY_DRILL_CRON
    assert (REPO / drill["parameters"]["spec_path"]).is_file()


@pytest.mark.parametrize(
    ("entrypoint", "cron", "parameter"),
    [
        ("flows/backup.py:backup", NIGHTLY_BACKUP_CRON, ("kind", "auto")),
        ("flows/archive_health.py:archive_health", ARCHIVE_HEALTH_CRON, None),
        ("flows/restore_drill.py:restore_drill", WEEKLY_RESTORE_DRILL_CRON, ("target", "marker")),
    ],
)
def test_prefect_yaml_schedules_backups_archive_health_and_the_restore_drill(
    entrypoint: str, cron: str, parameter: tuple[str, str] | None
) -> None:
    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    [deployment] = [d for d in doc["deployments"] if d["entrypoint"] == entrypoint]
    assert deployment["schedules"][0]["cron"] == cron and deployment["schedules"][0]["active"] is True
    assert deployment["work_pool"]["name"] == "dbtier-local"
    if parameter:
        assert deployment["parameters"][parameter[0]] == parameter[1]
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert getattr(module, name).name == name.replace("_", "-") or getattr(module, name).name == name


def test_serve_plans_backup_deployments_for_one_cluster() -> None:
    planned = load_plan(str(REPO / "deployments" / "clusters" / "default.yaml"))
    assert {(d.flow, d.cron, d.active) for d in planned} == {
        ("failover_drill", MONTHLY_DRILL_CRON, True),
        ("backup", NIGHTLY_BACKUP_CRON, True),
        ("archive_health", ARCHIVE_HEALTH_CRON, True),
        ("restore_drill", WEEKLY_RESTORE_DRILL_CRON, True),
    }
