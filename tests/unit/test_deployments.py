"""The scheduled deployments each cluster gets (pure), and the prefect.yaml that `prefect deploy` reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dbtier.spec import build_spec
from deployments.plan import MONTHLY_DRILL_CRON, plan
from deployments.serve import load_plan

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
    [drill] = plan({"c.yaml": build_spec(fields, environ={})})
    assert (drill.cron, drill.active, drill.parameters["scenario"]) == (MONTHLY_DRILL_CRON, active, "drill-all")
    assert drill.parameters["spec_path"] == "c.yaml"


def test_every_sample_cluster_gets_a_drill_deployment() -> None:
    names = {d.name for d in load_plan()}
    assert {"dbtier-drill-all-monthly", "syncfast-drill-all-monthly"} <= names


def test_prefect_yaml_schedules_the_monthly_drill() -> None:
    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    [drill] = [d for d in doc["deployments"] if d["parameters"]["scenario"] == "drill-all"]
    assert drill["entrypoint"] == "flows/failover_drill.py:failover_drill"
    assert drill["schedules"][0]["cron"] == MONTHLY_DRILL_CRON
    assert (REPO / drill["parameters"]["spec_path"]).is_file()
