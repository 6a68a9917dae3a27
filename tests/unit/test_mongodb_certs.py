"""A replica set's certificates: one ``mongod`` certificate per member, and the single PEM file (certificate then
key, mode 0600) that mongod's ``net.tls.certificateKeyFile`` names, written and kept in step with them. Files go
into a temporary data root through the local provider; no mongod runs."""

from __future__ import annotations

import datetime
import getpass
import os
import stat
from pathlib import Path

import yaml

from dbtier import certs
from dbtier.engines.base import get_engine
from dbtier.engines.mongodb.engine import members
from dbtier.providers.base import get_provider
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec, build_spec
from dbtier.tls import cert_plan
from dbtier.tls_files import bundle_pem, ensure_certificates

NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.timezone.utc)


def mongo_spec(root: Path) -> ClusterSpec:
    return build_spec({"name": "orders", "engine": "mongodb", "data_root": str(root), "os_user": getpass.getuser()},
                      environ={})


def test_each_member_gets_a_mongod_certificate_named_by_what_reaches_it(tmp_path: Path) -> None:
    spec = mongo_spec(tmp_path)
    needs = cert_plan(spec)
    assert [(n.label, n.common_name, str(n.sans)) for n in needs] == [
        (f"mongo{i} mongod", f"orders-mongo{i}-mongod", "IP:127.0.0.1, DNS:localhost") for i in range(3)]
    assert [n.bundle for n in needs] == [m.tls_pem for m in members(spec)]


def test_the_pem_mongod_reads_is_the_certificate_and_its_key(tmp_path: Path) -> None:
    spec = mongo_spec(tmp_path)
    provider, ca = get_provider(spec), certs.make_ca("orders", NOW)
    for m in members(spec):
        os.makedirs(m.dir)
    said = ensure_certificates(provider, spec, ca, NOW)
    assert said[-1] == "certificates of orders: 3 issued, 0 reused"
    for m in members(spec):
        pem = Path(m.tls_pem).read_bytes()
        cert, key = Path(f"{m.dir}/tls/mongod.crt").read_bytes(), Path(f"{m.dir}/tls/mongod.key").read_bytes()
        assert pem == bundle_pem(cert, key) and certs.key_matches(cert, key)
        assert stat.S_IMODE(os.stat(m.tls_pem).st_mode) == 0o600
        conf = yaml.safe_load(get_engine(spec).member_files(spec, get_engine(spec).member_services(spec)[m.index],
                                                            _secrets(spec))[m.config])
        assert conf["net"]["tls"]["certificateKeyFile"] == m.tls_pem and conf["net"]["tls"]["CAFile"] == m.tls_ca
        assert Path(m.tls_ca).read_bytes() == ca.cert_pem
    first = members(spec)[0]
    os.unlink(first.tls_pem)  # lost (or never written by an older dbtier): the next run puts it back
    assert ensure_certificates(provider, spec, ca, NOW)[-1] == "certificates of orders: 0 issued, 3 reused"
    assert Path(first.tls_pem).read_bytes() == bundle_pem(Path(f"{first.dir}/tls/mongod.crt").read_bytes(),
                                                           Path(f"{first.dir}/tls/mongod.key").read_bytes())


def _secrets(spec: ClusterSpec) -> Passwords:
    return Passwords.generate(get_engine(spec).secret_roles)
