"""A spec whose restored or drill copy would land on the cluster's own ports is refused when it loads;
ports in the kernel's ephemeral range are warned about (tables: ranges in, findings out)."""

from __future__ import annotations

from typing import Any

import pytest

from dbtier.errors import SpecError
from dbtier.ports import copy_clash, ephemeral_findings, ephemeral_warning, parse_range, shifted
from dbtier.spec import build_spec
from flows._spec import port_warning


@pytest.mark.parametrize(
    ("data", "words"),
    [
        pytest.param({"backup": {"restore_drill": {"port_offset": 1}}},
                     "backup.restore_drill.port_offset: the restore drill's copy (postgres.ports + 1) would put its "
                     "postgres.ports.postgres (member 0) on port 5433, which is the cluster's "
                     "postgres.ports.postgres (member 1); "
                     "choose an offset", id="drill-offset-1-on-member-1"),
        pytest.param({"backup": {"restore_drill": {"port_offset": 2}}, "members": 1, "etcd_members": 3},
                     "the restore drill's copy (postgres.ports + 2) would put its postgres.ports.etcd "
                     "(etcd member 0 client) on port 2381, which is the cluster's postgres.ports.etcd "
                     "(etcd member 1 client)", id="drill-offset-2-on-etcd-1"),
        pytest.param({"ports": {"postgres": 5432, "patroni": 5532, "etcd": 2379}},
                     "ports: a restored copy (postgres.ports + 100) would put its postgres.ports.postgres (member 0) "
                     "on port 5532, which is the cluster's postgres.ports.patroni (member 0); move one base port",
                     id="restored-on-patroni"),
        pytest.param({"ports": {"postgres": 5432, "patroni": 8008, "etcd": 5300}, "backup": {"restore_drill": {"port_offset": 132}}},
                     "the restore drill's copy (postgres.ports + 132) would put its postgres.ports.etcd "
                     "(etcd member 0 client) on port "
                     "5432, which is the cluster's postgres.ports.postgres (member 0)", id="drill-etcd-on-postgres"),
        pytest.param({"ports": {"postgres": 60000, "patroni": 8008, "etcd": 2379},
                      "backup": {"restore_drill": {"port_offset": 6000}}},
                     "backup.restore_drill.port_offset: the restore drill's copy (postgres.ports + 6000) "
                     "would need port 66000, "
                     "past 65535", id="drill-past-65535"),
    ],
)
def test_a_copy_on_the_clusters_own_ports_is_refused_when_the_spec_loads(data: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError) as caught:
        build_spec(data, environ={})
    line = caught.value.one_line()
    assert line.startswith("invalid cluster spec: ") and words in line, line
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"members": 7, "etcd_members": 7}, id="seven-members"),
        pytest.param({"backup": {"restore_drill": {"port_offset": 7}}, "members": 3, "etcd_members": 3,
                      "ports": {"postgres": 20000, "patroni": 20020, "etcd": 20040}}, id="tight-test-block"),
        pytest.param({"members": 1, "backup": {"restore_drill": {"port_offset": 2}}}, id="one-member-offset-2"),
    ],
)
def test_copies_clear_of_the_cluster_load(data: dict[str, Any]) -> None:
    build_spec(data, environ={})


PLAN = [("postgres.ports.postgres (member 0)", 5432), ("postgres.ports.patroni (member 0)", 8008),
        ("postgres.ports.etcd (etcd member 0 client)", 40000)]


@pytest.mark.parametrize(
    ("ephemeral", "found"),
    [
        ((32768, 60999), ["postgres.ports.etcd (etcd member 0 client) 40000"]),
        ((1024, 65535), ["postgres.ports.postgres (member 0) 5432", "postgres.ports.patroni (member 0) 8008",
                         "postgres.ports.etcd (etcd member 0 client) 40000"]),
        ((40001, 60999), []),
        ((40000, 40000), ["postgres.ports.etcd (etcd member 0 client) 40000"]),
        ((8009, 39999), []),
        ((5432, 8008), ["postgres.ports.postgres (member 0) 5432", "postgres.ports.patroni (member 0) 8008"]),
    ],
)
def test_ephemeral_findings(ephemeral: tuple[int, int], found: list[str]) -> None:
    assert ephemeral_findings(PLAN, *ephemeral) == found
    warning = ephemeral_warning(found, *ephemeral)
    assert (warning is None) == (not found)
    if warning:
        assert warning.startswith(found[0]) and f"range {ephemeral[0]}-{ephemeral[1]}" in warning
        assert "\n" not in warning


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("32768\t60999\n", (32768, 60999)), ("1024 65535", (1024, 65535)), ("", None), ("a b", None), ("1 2 3", None)],
)
def test_parse_range(text: str, parsed: tuple[int, int] | None) -> None:
    assert parse_range(text) == parsed


def test_copy_clash_names_both_fields() -> None:
    assert copy_clash(PLAN, shifted(PLAN, 0)) == ("postgres.ports.postgres (member 0)", 5432,
                                                  "postgres.ports.postgres (member 0)")
    assert copy_clash(PLAN, shifted(PLAN, 1)) is None


def test_a_spec_warns_for_its_copies_ports_too() -> None:
    """A cluster below the range whose drill copy (postgres.ports + 300) lands inside it is warned about, not
    refused."""
    spec = build_spec({"ports": {"postgres": 32500, "patroni": 8008, "etcd": 2379}, "members": 1}, environ={})
    warning = port_warning(spec, (32768, 60999))
    assert warning is not None
    assert warning.startswith("restore drill copy's postgres.ports.postgres (member 0) 32800 ")
    assert port_warning(build_spec({}, environ={}), (32768, 60999)) is None


def test_a_flow_says_the_warning_once(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """resolve_spec (every flow's first step) warns on the run's logger, or on stderr outside a run; once."""
    import yaml

    import dbtier.ports
    from flows import _spec

    monkeypatch.setattr(dbtier.ports, "ephemeral_range", lambda path=dbtier.ports.EPHEMERAL_RANGE_FILE: (32768, 60999))
    monkeypatch.setattr(_spec, "WARNED", set())
    # the cluster CA's copy is another step of resolve_spec's: without one here it would ask a Prefect API
    monkeypatch.setattr(_spec, "ensure_client_ca", lambda spec: None)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"ports": {"postgres": 40000, "patroni": 8008, "etcd": 2379}, "members": 1}))
    _spec.resolve_spec(str(path), None)
    _spec.resolve_spec(str(path), None)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines  # the file's old layout, then the ports: each once
    assert lines[0] == (f"dbtier: warning: spec {path}: ports is in the old place and read under postgres:; move it "
                        "there (deployments/clusters/default.yaml shows the layout)")
    assert lines[1].startswith("dbtier: warning: postgres.ports.postgres (member 0) 40000 (and 2 more) lie"), lines
