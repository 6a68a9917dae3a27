"""Every flow's parameters validate as Prefect sees them (a wrapper under @flow must keep their types resolvable)."""

from __future__ import annotations

from typing import Any

import pytest

from flows.archive_health import archive_health
from flows.backup import backup
from flows.failover_drill import failover_drill
from flows.provision import provision
from flows.restore import restore
from flows.restore_drill import restore_drill
from flows.status import status
from flows.teardown import teardown


@pytest.mark.parametrize(
    ("flow", "given", "expected"),
    [
        (provision, {}, {"spec_path": None, "spec_block": None}),
        (teardown, {"wipe": True}, {"wipe": True, "drop_backups": False, "destroy_hosts": False}),
        (backup, {"kind": "full", "repo": 2}, {"kind": "full", "repo": 2}),
        (restore, {"target": "latest", "in_place": True}, {"target": "latest", "in_place": True, "into": None}),
        (restore_drill, {}, {"target": "marker"}),
        (failover_drill, {"scenario": "crash"}, {"scenario": "crash", "settings": None}),
        (archive_health, {}, {"spec_path": None}),
        (status, {}, {"spec_path": None}),
    ],
    ids=lambda v: getattr(v, "name", None) or "",
)
def test_flow_parameters_validate(flow: Any, given: dict[str, Any], expected: dict[str, Any]) -> None:
    validated = flow.validate_parameters(given)
    assert {key: validated[key] for key in expected} == expected
