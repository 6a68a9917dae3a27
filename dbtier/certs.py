"""The cluster CA and its leaf certificates (pure: bytes and times in, bytes and verdicts out).

One EC P-256 CA per cluster signs one certificate per member and service. PostgreSQL 15, Go's TLS (etcd
3.4) and Python's ssl all take P-256. A leaf carries the IP and DNS names its service is reached by and
both extended key usages, serverAuth and clientAuth (etcd peers present the same certificate as client
and as server). Keys travel in :class:`CertAuthority` and :class:`IssuedCert`, whose reprs never show them.
Where the files live and which certificates a cluster needs: :mod:`dbtier.tls`.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dbtier.errors import CertificateError

#: A CA may live at most this long (two years): a leaked key must not stay good for decades.
CA_MAX_DAYS = 730
#: How far back ``not_valid_before`` reaches, so a member whose clock lags a little accepts a new certificate.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Sans:
    """The subject alternative names of a certificate: IP addresses and DNS names, each sorted.

    >>> str(Sans.of(["127.0.0.1", "localhost", "db1.example"]))
    'IP:127.0.0.1, DNS:db1.example, DNS:localhost'
    """

    ips: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()

    @classmethod
    def of(cls, names: list[str] | tuple[str, ...]) -> Sans:
        """Split names into IPs and DNS names (an address that does not parse as an IP is a DNS name)."""
        ips, dns = set(), set()
        for name in names:
            try:
                ips.add(str(ipaddress.ip_address(name)))
            except ValueError:
                dns.add(name.lower().rstrip("."))
        ordered = sorted(ips, key=lambda ip: (ipaddress.ip_address(ip).version, ipaddress.ip_address(ip)))
        return cls(tuple(ordered), tuple(sorted(dns)))

    def missing_from(self, other: Sans) -> list[str]:
        """The names of this set that ``other`` lacks, as ``IP:...`` / ``DNS:...``.

        >>> Sans.of(["127.0.0.1", "localhost"]).missing_from(Sans.of(["127.0.0.1"]))
        ['DNS:localhost']
        """
        return [f"IP:{ip}" for ip in self.ips if ip not in other.ips] + \
            [f"DNS:{d}" for d in self.dns if d not in other.dns]

    def __str__(self) -> str:
        return ", ".join([f"IP:{ip}" for ip in self.ips] + [f"DNS:{d}" for d in self.dns])


@dataclass(frozen=True, repr=False)
class CertAuthority:
    """The cluster CA: its certificate (public) and its private key (a secret: never on a member, never logged)."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        info = describe(self.cert_pem)
        return f"CertAuthority(subject={info.subject!r}, not_after={info.not_after:%Y-%m-%d}, key='**********')"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class IssuedCert:
    """A leaf certificate and its private key, as written to a member."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        info = describe(self.cert_pem)
        return f"IssuedCert(subject={info.subject!r}, serial={info.serial:x}, key='**********')"

    __str__ = __repr__


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says about itself (no key)."""

    subject: str
    issuer: str
    sans: Sans
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int

    def days_left(self, now: datetime.datetime) -> int:
        return (self.not_after - now).days


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dbtier"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cluster: str, now: datetime.datetime, days: int = CA_MAX_DAYS) -> CertAuthority:
    """A new CA for ``cluster``, valid ``days`` from ``now`` (at most :data:`CA_MAX_DAYS`)."""
    if not 1 <= days <= CA_MAX_DAYS:
        raise CertificateError(f"tls.ca_days: {days} is outside 1-{CA_MAX_DAYS}; a CA lives at most two years")
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"dbtier {cluster} CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertAuthority(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(ca: CertAuthority, common_name: str, sans: Sans, now: datetime.datetime, days: int) -> IssuedCert:
    """A leaf certificate for ``common_name`` with ``sans``, signed by ``ca``, valid ``days`` from ``now`` (never
    past the CA's own end)."""
    if not sans.ips and not sans.dns:
        raise CertificateError(f"{common_name}: a certificate needs at least one address or name")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertificateError("ca: the CA key is not an EC key; dbtier makes P-256 CAs only")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in sans.ips]
    names += [x509.DNSName(d) for d in sans.dns]
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _load(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CertificateError("not a PEM certificate") from None


def describe(pem: bytes) -> CertInfo:
    """Subject, issuer, SANs, validity and serial of a PEM certificate; :class:`CertificateError` when it is none."""
    cert = _load(pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)] + ext.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return CertInfo(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(), sans=Sans.of(names),
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    serial=cert.serial_number)


def key_matches(cert_pem: bytes, key_pem: bytes | None) -> bool:
    """True when ``key_pem`` is the private key of the certificate."""
    if not key_pem:
        return False
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(key.public_key().public_bytes(der, public) == _load(cert_pem).public_key().public_bytes(der, public))


def problem(pem: bytes | None, ca_pem: bytes, now: datetime.datetime, wanted: Sans | None = None,
            renew_before_days: int = 0) -> str | None:
    """Why this certificate must be replaced, in a few words, or None when it is good.

    In order: missing, not a certificate, foreign (not signed by the CA ``ca_pem``), not yet valid, expired,
    missing some of the ``wanted`` SANs, expiring within ``renew_before_days``.
    """
    if pem is None:
        return "missing"
    try:
        cert = _load(pem)
    except CertificateError as err:
        return str(err)
    ca = _load(ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return f"issued by {cert.issuer.rfc4514_string()!r}, not by this cluster's CA ({ca.subject.rfc4514_string()!r})"
    info = describe(pem)
    if now < info.not_before:
        return f"not valid before {info.not_before:%Y-%m-%d %H:%M} UTC"
    if now >= info.not_after:
        return f"expired on {info.not_after:%Y-%m-%d %H:%M} UTC"
    lacking = wanted.missing_from(info.sans) if wanted is not None else []
    if lacking:
        return f"lacks SANs {', '.join(lacking)}"
    if info.not_after - now < datetime.timedelta(days=renew_before_days):
        return f"expires on {info.not_after:%Y-%m-%d} UTC, in {info.days_left(now)} days (renewed {renew_before_days} days before)"
    return None


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the certificate, as ``AA:BB:...``."""
    return _load(pem).fingerprint(hashes.SHA256()).hex(":").upper()
