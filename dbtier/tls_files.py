"""The cluster's certificates on its members: read, judged and installed through each member's Runner.

No provider is named here: files go through ``provider.runner(spec, host)``, which writes as the database
OS user (keys mode 0600). The CA comes from a :class:`~dbtier.ca_store.CAStore`; its key never leaves the
machine that runs dbtier, and no sentence returned here carries a key.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from dbtier import certs, workdir
from dbtier.ca_store import CAStore
from dbtier.certs import CertAuthority
from dbtier.errors import CertificateError
from dbtier.providers.base import Provider
from dbtier.spec import ClusterSpec
from dbtier.tls import CERT_MODE, DIR_MODE, KEY_MODE, CertNeed, cert_plan, renewal_reason


def write_client_ca(spec: ClusterSpec, ca_pem: bytes) -> str | None:
    """Keep this machine's copy of the CA certificate (:func:`dbtier.workdir.ca_cert_file`), which every
    dbtier client of the cluster verifies the members with; a sentence when it was written, None when it
    was already that certificate."""
    path = workdir.ca_cert_file(spec.name)
    if workdir.read_local(path) == ca_pem:
        return None
    workdir.write_private(path, ca_pem, CERT_MODE)
    return f"CA certificate for this machine's clients written to {path}"


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def plan_for(provider: Provider, spec: ClusterSpec) -> list[CertNeed]:
    """The cluster's certificates, with the host names the provider knows."""
    return cert_plan(spec, lambda host: provider.host_names(spec, host))


def ensure_ca(store: CAStore, spec: ClusterSpec, now: datetime.datetime) -> tuple[CertAuthority, str]:
    """The cluster's CA: the one in ``store``, else a new one saved there; and a sentence (never the key)."""
    ca = store.load(spec.name)
    if ca is not None:
        info = certs.describe(ca.cert_pem)
        if now >= info.not_after:
            raise CertificateError(f"ca: cluster {spec.name}'s CA ({info.subject}) expired on {info.not_after:%Y-%m-%d}; "
                                   f"delete it from {store.where(spec.name)} to make a new one (every certificate "
                                   "is then issued again)")
        soon = (f"; it ends in {info.days_left(now)} days and no certificate outlives it: a new CA is not made "
                "automatically yet") if info.days_left(now) < spec.tls.cert_days else ""
        return ca, f"cluster CA reused ({info.subject}, until {info.not_after:%Y-%m-%d}){soon}"
    ca = certs.make_ca(spec.name, now, spec.tls.ca_days)
    store.save(spec.name, ca)
    info = certs.describe(ca.cert_pem)
    return ca, f"cluster CA made ({info.subject}, until {info.not_after:%Y-%m-%d}); kept in {store.where(spec.name)}"


@dataclass(frozen=True)
class Installed:
    """What a member holds for one certificate: the certificate, whether its key is the certificate's, the CA
    certificate beside it, and (never shown) the key and the bundle."""

    cert_pem: bytes | None
    key_ok: bool
    ca_pem: bytes | None
    key_pem: bytes | None = field(default=None, repr=False)
    bundle_pem: bytes | None = field(default=None, repr=False)


#: One file to write through a runner: its path, its bytes and its mode (:meth:`Runner.write_files`).
FileWrite = tuple[str, bytes, int]


def read_all_installed(provider: Provider, spec: ClusterSpec, needs: list[CertNeed]) -> list[Installed]:
    """What each of ``needs`` finds on its host, in order: one read of every file per host."""
    by_host: dict[str, list[int]] = {}
    for i, need in enumerate(needs):
        by_host.setdefault(need.host, []).append(i)
    found: list[Installed | None] = [None] * len(needs)
    for host, indexes in by_host.items():
        here = [needs[i] for i in indexes]
        paths = [p for need in here for p in (need.paths.cert, need.paths.key, need.paths.ca, need.bundle) if p]
        read = iter(provider.runner(spec, host).read_files(paths))
        for i, need in zip(indexes, here, strict=True):
            cert, key, ca = next(read), next(read), next(read)
            bundle = next(read) if need.bundle else None
            key_ok = False
            if cert is not None:
                try:
                    key_ok = certs.key_matches(cert, key)
                except CertificateError:
                    key_ok = False
            found[i] = Installed(cert_pem=cert, key_ok=key_ok, ca_pem=ca, key_pem=key, bundle_pem=bundle)
    return [f for f in found if f is not None]


def bundle_pem(cert_pem: bytes, key_pem: bytes) -> bytes:
    """The certificate then its key in one PEM file (what mongod's ``certificateKeyFile`` reads).

    >>> bundle_pem(b"-----CERT-----\\n", b"-----KEY-----")
    b'-----CERT-----\\n-----KEY-----\\n'
    """
    return cert_pem.rstrip(b"\n") + b"\n" + key_pem.rstrip(b"\n") + b"\n"


def install_writes(need: CertNeed, issued: certs.IssuedCert, ca_pem: bytes, found: Installed) -> list[FileWrite]:
    """The files that install ``issued`` for ``need``: the key (0600), then the certificate, the bundle where the
    service wants one, and the CA certificate unless the member holds it already."""
    writes = [(need.paths.key, issued.key_pem, KEY_MODE), (need.paths.cert, issued.cert_pem, CERT_MODE)]
    if need.bundle:
        writes.append((need.bundle, bundle_pem(issued.cert_pem, issued.key_pem), KEY_MODE))
    if found.ca_pem != ca_pem:
        writes.append((need.paths.ca, ca_pem, CERT_MODE))
    return writes


def kept_writes(need: CertNeed, ca_pem: bytes, found: Installed) -> list[FileWrite]:
    """What a kept certificate still needs: the cluster's CA certificate beside it, and a bundle that matches it."""
    writes: list[FileWrite] = []
    if found.ca_pem != ca_pem:
        writes.append((need.paths.ca, ca_pem, CERT_MODE))
    if need.bundle and found.cert_pem is not None:
        bundle = bundle_pem(found.cert_pem, found.key_pem or b"")
        if found.bundle_pem != bundle:
            writes.append((need.bundle, bundle, KEY_MODE))
    return writes


def ensure_certificates(provider: Provider, spec: ClusterSpec, ca: CertAuthority, now: datetime.datetime,
                        rotate: bool = False) -> list[str]:
    """Issue and install every certificate that is missing, foreign, expired, lacking SANs, soon expiring or
    whose key is not its own (``rotate``: every one); keep the others. One sentence per certificate issued,
    then the counts. Each host's files are read in one round trip and written in one."""
    issued: list[str] = []
    kept = 0
    needs = plan_for(provider, spec)
    dirs: dict[str, list[tuple[str, int]]] = {}
    writes: dict[str, dict[str, FileWrite]] = {}  # per host, by path: a member's CA file is written once
    for need, found in zip(needs, read_all_installed(provider, spec, needs), strict=True):
        reason = "rotated" if rotate else renewal_reason(need, found.cert_pem, found.key_ok, ca.cert_pem, now,
                                                         spec.tls.renew_before_days)
        here = writes.setdefault(need.host, {})
        if reason is None:
            kept += 1
            here.update({w[0]: w for w in kept_writes(need, ca.cert_pem, found)})
            continue
        leaf = certs.issue(ca, need.common_name, need.sans, now, spec.tls.cert_days)
        dirs.setdefault(need.host, []).append((need.paths.dir, DIR_MODE))
        here.update({w[0]: w for w in install_writes(need, leaf, ca.cert_pem, found)})
        info = certs.describe(leaf.cert_pem)
        issued.append(f"{need.label}: issued ({reason}), serial {info.serial:x}, {need.sans}, until "
                      f"{info.not_after:%Y-%m-%d}")
    for host, files in writes.items():
        wanted = list(dict.fromkeys(dirs.get(host, [])))
        if files or wanted:
            provider.runner(spec, host).write_files(list(files.values()), wanted)
    return [*issued, f"certificates of {spec.name}: {len(issued)} issued, {kept} reused"]


@dataclass(frozen=True)
class CertRow:
    """One certificate as ``dbtier certs`` shows it."""

    need: CertNeed
    subject: str
    sans: str
    not_after: str
    days_left: int | None
    problem: str | None

    def row(self) -> dict[str, object]:
        return {"member": self.need.member, "service": self.need.service, "subject": self.subject,
                "SANs": self.sans, "not after": self.not_after,
                "days left": "" if self.days_left is None else self.days_left, "status": self.problem or "ok"}


def survey(provider: Provider, spec: ClusterSpec, ca_pem: bytes, now: datetime.datetime) -> list[CertRow]:
    """Every certificate as the members hold it, judged against the CA ``ca_pem`` and ``now``."""
    rows = []
    needs = plan_for(provider, spec)
    for need, found in zip(needs, read_all_installed(provider, spec, needs), strict=True):
        reason = renewal_reason(need, found.cert_pem, found.key_ok, ca_pem, now, spec.tls.renew_before_days)
        if reason is None and found.ca_pem != ca_pem:
            reason = f"{need.paths.ca} is not the cluster's CA certificate"
        try:
            info = certs.describe(found.cert_pem) if found.cert_pem is not None else None
        except CertificateError:
            info = None
        rows.append(CertRow(need=need, subject=info.subject if info else "", sans=str(info.sans) if info else "",
                            not_after=f"{info.not_after:%Y-%m-%d %H:%M}" if info else "",
                            days_left=info.days_left(now) if info else None, problem=reason))
    return rows


def first_expiry(provider: Provider, spec: ClusterSpec) -> datetime.datetime | None:
    """When the first certificate the members hold expires (None: TLS off, or none installed yet)."""
    ends = []
    needs = plan_for(provider, spec) if spec.tls.enabled else []
    for found in read_all_installed(provider, spec, needs):
        pem = found.cert_pem
        if pem is not None:
            try:
                ends.append(certs.describe(pem).not_after)
            except CertificateError:
                continue
    return min(ends, default=None)


def certificates_ok(provider: Provider, spec: ClusterSpec, store: CAStore, now: datetime.datetime) -> str | None:
    """None when the store holds a CA and every member's certificate is good; else why not (no key, no secret)."""
    ca_pem = store.load_cert(spec.name)
    if ca_pem is None:
        return f"no CA for cluster {spec.name} in {store.where(spec.name)}"
    bad = [r for r in survey(provider, spec, ca_pem, now) if r.problem]
    if bad:
        return f"{len(bad)} certificate(s) to issue ({bad[0].need.label}: {bad[0].problem})"
    return None
