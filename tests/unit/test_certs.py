"""The cluster CA and its certificates (pure): SANs per topology and provider, file layout, validity, every
reason a certificate is replaced, and reprs that never show a key. No cluster needed."""

from __future__ import annotations

import datetime
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dbtier import certs
from dbtier.ca_store import FILE_CA_STORE, pair
from dbtier.certs import CertAuthority, Sans, describe, issue, key_matches, make_ca, problem
from dbtier.errors import CertificateError, SecretError, SpecError
from dbtier.providers.base import get_provider
from dbtier.providers.proxmox import container_hostname
from dbtier.spec import ClusterSpec, build_spec
from dbtier.tls import cert_plan, reached_by, renewal_reason, tls_paths
from dbtier.tls_files import plan_for

NOW = datetime.datetime(2026, 12, 2, 14, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
LOOPBACK = Sans.of(["127.0.0.1", "localhost"])


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return make_ca("orders", NOW)


@pytest.fixture(scope="module")
def leaf(ca: CertAuthority) -> certs.IssuedCert:
    return issue(ca, "orders-pg0-postgres", LOOPBACK, NOW, 180)


def spec_of(**fields: Any) -> ClusterSpec:
    if fields.get("provider", "local") != "local":  # members on several hosts back up into S3
        fields["backup"] = {"repositories": [{"type": "s3", "block": "orders-backups"}]}
    return build_spec({"name": "orders", **fields}, environ={})


SSH = {"hosts": [{"address": "10.0.0.11"}, {"address": "10.0.0.12"}, {"address": "db3.example.com"}],
       "key_file": "/k"}
PVE = {"credentials_block": "pve", "ssh_key_file": "/k", "layout": "per-member",
       "containers": [{"vmid": 301 + i, "node": "pve1", "address": f"10.0.0.2{i}/24"} for i in range(3)]}


@pytest.mark.parametrize(
    ("fields", "member", "service", "sans"),
    [
        ({}, "pg0", "postgres", "IP:127.0.0.1, DNS:localhost"),
        ({}, "etcd2", "etcd", "IP:127.0.0.1, DNS:localhost"),
        ({"host": "127.0.0.21"}, "pg1", "patroni", "IP:127.0.0.1, IP:127.0.0.21, DNS:localhost"),
        ({"provider": "ssh", "ssh": SSH}, "pg1", "postgres", "IP:10.0.0.12"),
        ({"provider": "ssh", "ssh": SSH}, "pg2", "patroni", "DNS:db3.example.com"),
        ({"provider": "ssh", "ssh": SSH}, "etcd0", "etcd", "IP:10.0.0.11"),
        ({"provider": "proxmox", "proxmox": PVE}, "pg2", "postgres", "IP:10.0.0.22, DNS:orders-2"),
        ({"provider": "proxmox", "proxmox": PVE}, "etcd1", "etcd", "IP:10.0.0.21, DNS:orders-1"),
        ({"provider": "proxmox", "proxmox": {**PVE, "layout": "single", "containers": PVE["containers"][:1]}},
         "pg2", "patroni", "IP:10.0.0.20, DNS:orders"),
    ],
)
def test_each_certificate_names_what_its_service_is_reached_by(fields: dict[str, Any], member: str, service: str,
                                                               sans: str) -> None:
    spec = spec_of(**fields)
    need = next(n for n in plan_for(get_provider(spec), spec) if (n.member, n.service) == (member, service))
    assert str(need.sans) == sans
    assert need.common_name == f"orders-{member}-{service}"


@pytest.mark.parametrize(("members", "etcd", "count"), [(3, None, 9), (1, 1, 3), (5, 3, 13), (2, 1, 5)])
def test_two_certificates_per_member_and_one_per_etcd_member(members: int, etcd: int | None, count: int) -> None:
    plan = cert_plan(spec_of(members=members, etcd_members=etcd))
    assert len(plan) == count
    assert [n.service for n in plan if n.member == "pg0"] == ["postgres", "patroni"]
    assert len({n.paths.cert for n in plan}) == count


def test_files_sit_in_the_members_tls_directory() -> None:
    spec = spec_of(data_root="/srv/db")
    plan = {(n.member, n.service): n.paths for n in cert_plan(spec)}
    assert plan["pg1", "patroni"] == tls_paths("/srv/db/orders/pg1", "patroni")
    assert plan["etcd0", "etcd"].key == "/srv/db/orders/etcd0/tls/etcd.key"
    assert plan["pg0", "postgres"].ca == plan["pg0", "patroni"].ca == "/srv/db/orders/pg0/tls/ca.crt"


@pytest.mark.parametrize(
    ("address", "names", "expected"),
    [
        ("127.0.0.1", [], "IP:127.0.0.1, DNS:localhost"),
        ("::1", [], "IP:127.0.0.1, IP:::1, DNS:localhost"),
        ("10.0.0.5", ["Db5.Example."], "IP:10.0.0.5, DNS:db5.example"),
        ("localhost", [], "IP:127.0.0.1, DNS:localhost"),
    ],
)
def test_reached_by(address: str, names: list[str], expected: str) -> None:
    assert str(reached_by(address, names)) == expected


def test_a_leaf_is_a_p256_server_and_client_certificate_of_months(ca: CertAuthority, leaf: certs.IssuedCert) -> None:
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    info = describe(leaf.cert_pem)
    assert info.not_after - NOW == 180 * DAY and info.issuer == "CN=dbtier orders CA,O=dbtier"
    assert describe(ca.cert_pem).not_after - NOW == 730 * DAY
    assert key_matches(leaf.cert_pem, leaf.key_pem) and not key_matches(leaf.cert_pem, ca.key_pem)


def test_a_leaf_never_outlives_its_ca() -> None:
    short = make_ca("orders", NOW, days=30)
    assert describe(issue(short, "x", LOOPBACK, NOW, 180).cert_pem).not_after == describe(short.cert_pem).not_after


@pytest.mark.parametrize(("field", "value", "words"), [
    ("cert_days", 3650, "tls.cert_days: Input should be less than or equal to 397"),
    ("ca_days", 7300, "tls.ca_days: Input should be less than or equal to 730"),
    ("renew_before_days", 180, "tls: renew_before_days (180) must be below cert_days (180)"),
])
def test_the_spec_refuses_decades(field: str, value: int, words: str) -> None:
    with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)")):
        spec_of(tls={field: value})


def test_the_tls_defaults() -> None:
    assert spec_of().tls.model_dump() == {"enabled": True, "cert_days": 180, "ca_days": 730, "renew_before_days": 30}
    with pytest.raises(CertificateError, match="tls.ca_days: 731 is outside 1-730"):
        make_ca("orders", NOW, days=731)


@pytest.mark.parametrize(
    ("case", "at", "wanted", "expected"),
    [
        ("good", NOW, LOOPBACK, None),
        ("missing", NOW, None, "missing"),
        ("garbage", NOW, None, "not a PEM certificate"),
        ("foreign", NOW, None, "issued by 'CN=dbtier orders CA,O=dbtier', not by this cluster's CA"),
        ("good", NOW - DAY, None, "not valid before 2026-12-02 13:55 UTC"),
        ("good", NOW + 181 * DAY, None, "expired on 2027-05-31 14:00 UTC"),
        ("good", NOW, Sans.of(["127.0.0.1", "10.0.0.5"]), "lacks SANs IP:10.0.0.5"),
        ("good", NOW + 160 * DAY, None, "expires on 2027-05-31 UTC, in 20 days (renewed 30 days before)"),
    ],
)
def test_why_a_certificate_is_replaced(ca: CertAuthority, leaf: certs.IssuedCert, case: str,
                                       at: datetime.datetime, wanted: Sans | None, expected: str | None) -> None:
    other = make_ca("orders", NOW)  # same name, other key: only the signature tells
    pem = {"good": leaf.cert_pem, "missing": None, "garbage": b"-----BEGIN CERTIFICATE-----\nAAAA\n",
           "foreign": issue(other, "orders-pg0-postgres", LOOPBACK, NOW, 180).cert_pem}[case]
    said = problem(pem, ca.cert_pem, at, wanted, renew_before_days=30)
    if case == "foreign":  # then the CA's own subject
        assert said is not None and said.startswith(str(expected)), said
    else:
        assert said == expected


def test_a_certificate_whose_key_is_not_its_own_is_replaced(ca: CertAuthority, leaf: certs.IssuedCert) -> None:
    need = cert_plan(spec_of())[0]
    assert renewal_reason(need, leaf.cert_pem, True, ca.cert_pem, NOW, 30) is None
    assert renewal_reason(need, leaf.cert_pem, False, ca.cert_pem, NOW, 30) == (
        f"its key {need.paths.key} is missing or is not the certificate's")


def test_openssl_and_python_ssl_take_them(ca: CertAuthority, leaf: certs.IssuedCert, tmp_path: Path) -> None:
    real_now = datetime.datetime.now(datetime.timezone.utc)
    live_ca = make_ca("orders", real_now)
    live = issue(live_ca, "orders-pg0-postgres", LOOPBACK, real_now, 180)
    for name, data in (("ca.crt", live_ca.cert_pem), ("s.crt", live.cert_pem), ("s.key", live.key_pem)):
        (tmp_path / name).write_bytes(data)
    done = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(tmp_path / "ca.crt"),
                           str(tmp_path / "s.crt")], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout + done.stderr
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert handshake(server, client, "127.0.0.1") and handshake(server, client, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client, "10.9.9.9")


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> bool:
    """A TLS handshake in memory, the client checking ``name`` against the server's SANs."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for key, end, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            if not done[key]:
                try:
                    end.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return True
    return False


def test_no_repr_shows_a_key(ca: CertAuthority, leaf: certs.IssuedCert) -> None:
    shown = " ".join([repr(ca), str(ca), f"{ca}", repr([ca, leaf]), str(leaf), repr({"ca": ca})])
    secret_lines = {line for key in (ca.key_pem, leaf.key_pem) for line in key.decode().splitlines()[1:-1]}
    assert "PRIVATE" not in shown and not [line for line in secret_lines if line in shown]
    assert "CN=dbtier orders CA,O=dbtier" in repr(ca) and "**********" in repr(leaf)


def test_a_store_with_half_a_ca_is_refused(ca: CertAuthority) -> None:
    assert pair("orders", ca.cert_pem, ca.key_pem, "c", "k") == ca
    with pytest.raises(SecretError, match="^ca: cluster orders's CA key is in Secret block k but its certificate "):
        pair("orders", None, ca.key_pem, "variable c", "Secret block k")


def test_the_file_store_keeps_the_key_0600_in_the_work_directory(ca: CertAuthority, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBTIER_WORK_DIR", str(tmp_path))
    assert FILE_CA_STORE.load("orders") is None
    FILE_CA_STORE.save("orders", ca)
    assert FILE_CA_STORE.load("orders") == ca and FILE_CA_STORE.load_cert("orders") == ca.cert_pem
    assert os.stat(tmp_path / "orders" / "ca" / "ca.key").st_mode & 0o777 == 0o600
    assert FILE_CA_STORE.forget("orders") and FILE_CA_STORE.load("orders") is None


def test_proxmox_names_its_containers_and_the_others_none() -> None:
    spec = spec_of(provider="proxmox", proxmox=PVE)
    assert get_provider(spec).host_names(spec, "10.0.0.21") == [container_hostname("orders", "per-member", 1)]
    assert get_provider(spec_of()).host_names(spec_of(), "127.0.0.1") == []


@pytest.mark.parametrize("verb", ["certs", "ca", "rotate-certs"])
def test_the_verbs_have_help(verb: str) -> None:
    dbtier = os.path.join(os.path.dirname(sys.executable), "dbtier")
    done = subprocess.run([dbtier, verb, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: dbtier {verb} "), done.stdout + done.stderr
    assert "--spec SPEC" in done.stdout
