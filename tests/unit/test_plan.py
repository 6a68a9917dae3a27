"""``provision --plan``: the plan is worked out from the spec alone, names every service and port, and holds no
secret; the command touches nothing (no data directory, no Prefect API)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from dbtier.bootstrap import all_services
from dbtier.engines.base import get_engine
from dbtier.plan import placeholder_passwords, provision_plan
from dbtier.secrets import Passwords
from dbtier.spec import load_spec
from flows.provision import main

REPO = Path(__file__).resolve().parent.parent.parent
SPECS = REPO / "deployments" / "clusters"


@pytest.mark.parametrize(("spec_file", "hosts", "services"), [
    ("default.yaml", 1, 10),   # one host: 3 etcd, 3 Patroni, one HAProxy, a PgBouncer per member
    ("ssh.yaml", 3, 6),        # a host per member: etcd and Patroni on each (routing is off in this sample)
    ("proxmox.yaml", 3, 6),
])
def test_the_plan_names_every_host_service_and_port(spec_file: str, hosts: int, services: int) -> None:
    spec = load_spec(str(SPECS / spec_file))
    engine = get_engine(spec)
    lines = provision_plan(engine, spec)
    text = "\n".join(lines)
    assert f"hosts ({hosts}):" in lines
    assert f"services ({services};" in text
    for service in all_services(engine, spec):
        for _label, port in service.ports:
            assert f" {port}" in next(line for line in lines if line.startswith(f"  {service.name} ({service.kind})"))
    assert "nothing was created or changed" in lines[0]
    assert f"data: {spec.cluster_dir} on each host" in lines


def test_files_show_where_each_secret_goes_and_never_one() -> None:
    spec = load_spec(str(SPECS / "default.yaml"))
    generated = Passwords.generate(get_engine(spec).secret_roles)
    text = "\n".join(provision_plan(get_engine(spec), spec, show_files=True))
    assert "patroni.yml" in text and "haproxy.cfg" in text and "pgbouncer.ini" in text
    assert "<secret:superuser>" in text and "<secret:pgbouncer>" in text, "the placeholders are shown in place"
    assert "holds the pgbouncer secret(s), redacted" in text
    placeholders = set(placeholder_passwords(get_engine(spec)).values())
    for line in text.splitlines():
        assert not any(value in line for value in generated.values())
    assert all(p.startswith("<secret:") for p in placeholders)


def test_plan_on_the_command_line_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((SPECS / "default.yaml").read_text())
    data["data_root"] = str(tmp_path / "data")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing answers: a call would fail
    assert main(["--plan", "--spec", str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan for cluster dbtier: engine postgres, provider local")
    assert not os.path.exists(tmp_path / "data"), "no data directory was created"


def test_the_plan_of_a_spec_in_the_old_layout_says_where_its_settings_belong(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((SPECS / "default.yaml").read_text())
    data.update(data.pop("postgres"))  # PostgreSQL's settings at the top, as before the engine sections
    spec_file = tmp_path / "old.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    assert main(["--plan", "--spec", str(spec_file)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (f"dbtier: warning: spec {spec_file}: ports, patroni, etcd_members, synchronous_mode, "
                            "postgresql_parameters, audit, routing, timeouts.etcd_quorum, timeouts.routes, "
                            "binaries.patroni and 3 more are in the old place and read "
                            "under postgres:; move them there (deployments/clusters/default.yaml shows the layout)\n")
    assert "postgres.ports.postgres 5432, postgres.ports.patroni 8008" in captured.out


def test_plan_of_a_bad_spec_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text("members: 0\n")
    assert main(["--plan", "--spec", str(spec_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dbtier: error: ") and "members" in err


def test_the_mongodb_plan_is_the_seeds_layout(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Three mongod members on 27017-27019, each with its mongod.conf and a key file written 0400 that holds the
    keyfile secret (redacted); the replica set's own secret blocks, none of PostgreSQL's."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing answers: a call would fail
    assert main(["--plan", "--spec", str(SPECS / "mongodb.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("plan for cluster mongo: engine mongodb, provider local")
    services = [line.strip() for line in lines if "(mongod) on " in line]
    assert services == [f"mongo{i} (mongod) on 127.0.0.1: mongodb.port (member {i}) {27017 + i}; runs mongod"
                        for i in range(3)]
    keyfiles = [line for line in lines if "/keyfile (" in line]
    assert len(keyfiles) == 3 and all("mode 0400" in line and "holds the keyfile secret(s), redacted" in line
                                      for line in keyfiles)
    confs = [line for line in lines if "/mongod.conf (" in line]
    assert len(confs) == 3 and all("mode 0600" in line and "holds" not in line for line in confs)
    blocks = lines[lines.index("secrets (Prefect Secret blocks, created when missing, never printed):") + 1]
    assert blocks.split(", ") == ["  dbtier-mongo-superuser-password", "dbtier-mongo-app-password", "dbtier-mongo-keyfile",
                                  "dbtier-mongo-monitoring-password"]
    assert not any("etcd" in line or "patroni" in line for line in lines)
    uris = [line for line in lines if "/oplog-archiver/member.uri (" in line]
    assert len(uris) == 3 and all("-oplog-archiver on 127.0.0.1, mode 0600" in line and
                                  "holds the superuser secret(s), redacted" in line for line in uris)
    assert not any("s3.credentials" in line for line in lines), "an fs repository: no S3 keys to write"


def test_the_mongodb_plan_lists_the_archivers_s3_keys_as_placeholders(capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBTIER_BACKUP__REPOSITORIES", "[{type: s3, block: backups-s3}]")
    assert main(["--plan", "--show-files", "--spec", str(SPECS / "mongodb.yaml")]) == 0
    out = capsys.readouterr().out
    keys = [line for line in out.splitlines() if "/oplog-archiver/s3.credentials (" in line]
    assert len(keys) == 3 and all("mode 0600" in line and "holds the s3-access-key, s3-secret-key secret(s)" in line
                                  for line in keys)
    assert "| secret_access_key = <secret:s3-secret-key>" in out


def test_the_mongodb_plan_shows_where_the_keyfile_goes_never_its_value() -> None:
    spec = load_spec(str(SPECS / "mongodb.yaml"))
    engine = get_engine(spec)
    text = "\n".join(provision_plan(engine, spec, show_files=True))
    assert "keyFile: /var/lib/dbtier/mongo/mongo0/keyfile" in text
    assert "| <secret:keyfile>" in text
    made = Passwords.generate(engine.secret_roles)
    assert not any(value.strip() in text for value in made.values())
