"""Where the providers get their secrets and pins: loaders handed in, so the library needs no Prefect.

A :class:`Loaders` is four callables: the SSH key for a set of SSH settings, the host-key pins of a
cluster (load and save), and the Proxmox API token of a ``proxmox:`` section. ``get_provider(spec,
loaders)`` takes one. Two exist:

- :data:`FILE_LOADERS` (the default, no Prefect): the key file of the spec (``ssh.key_file``,
  ``proxmox.ssh_key_file``), pins in ``<work>/<cluster>/host-keys.json`` (beside the spec's own
  ``host_key`` lines, which every provider trusts alone), the PVE token from ``DBTIER_PVE_API_URL``,
  ``DBTIER_PVE_TOKEN_ID`` and ``DBTIER_PVE_TOKEN_SECRET`` (optional ``DBTIER_PVE_FINGERPRINT``,
  ``DBTIER_PVE_CA_FILE``, ``DBTIER_PVE_VERIFY_SSL``), else the token file ``<work>/pve/<block>.yaml``
  (the fields of :class:`PVEToken`, mode 0600). The library, the lab and the benches use these.
- ``blocks.loaders.PREFECT_LOADERS``: SSHCredentials and ProxmoxCredentials blocks, pins in Prefect
  variables. The tasks and flows hand these in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from dbtier import workdir
from dbtier.errors import PreflightError
from dbtier.spec import ProxmoxSettings, SSHSettings

#: The environment variables of :func:`token_from_env`, by the token field each one sets.
PVE_ENV = {"api_url": "DBTIER_PVE_API_URL", "token_id": "DBTIER_PVE_TOKEN_ID",
           "token_secret": "DBTIER_PVE_TOKEN_SECRET", "fingerprint": "DBTIER_PVE_FINGERPRINT",
           "ca_file": "DBTIER_PVE_CA_FILE", "verify_ssl": "DBTIER_PVE_VERIFY_SSL"}
DEFAULT_TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


class PVEToken(BaseModel):
    """A Proxmox VE API token and the placement defaults the provider needs (the ProxmoxCredentials
    block's fields): it hands out API clients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_url: str
    token_id: str
    token_secret: SecretStr
    verify_ssl: bool = True
    ca_file: str | None = None
    fingerprint: str | None = None
    nodes: list[str] = Field(default_factory=list)
    storage: str = "local-lvm"
    bridge: str = "vmbr0"
    template: str = DEFAULT_TEMPLATE
    timeout: float = Field(30, gt=0)

    def get_client(self) -> Any:
        """A proxmoxer client using the token over HTTPS (TLS verified, or the fingerprint pinned)."""
        from dbtier.providers.proxmox_api import make_client, tls_verify

        return make_client(self.api_url, self.token_id, self.token_secret.get_secret_value(),
                           verify=tls_verify(self.verify_ssl, self.ca_file), fingerprint=self.fingerprint,
                           timeout=self.timeout)


KeyLoader = Callable[[SSHSettings], dict[str, Any]]
PinLoader = Callable[[str], dict[str, str]]
PinSaver = Callable[[str, dict[str, str]], None]
TokenLoader = Callable[[ProxmoxSettings], PVEToken]


@dataclass(frozen=True)
class Loaders:
    """What a provider asks for its secrets and pins; hashable, so providers can be shared per loaders.

    ``ssh_key``: paramiko connect arguments (``pkey`` or ``key_filename``) for the key the settings name;
    ``load_pins`` / ``save_pins``: a cluster's host keys pinned on first use (``host id -> key line``);
    ``pve_token``: the API token of a ``proxmox:`` section.
    """

    ssh_key: KeyLoader
    load_pins: PinLoader
    save_pins: PinSaver
    pve_token: TokenLoader
    name: str = "files"

    def forget_pins(self, cluster: str, names: list[str] | None = None) -> list[str]:
        """Forget the pins of ``names`` (host ids), or every pin of the cluster; return the ids forgotten."""
        pins = self.load_pins(cluster)
        gone = sorted(pins) if names is None else [n for n in names if n in pins]
        if gone:
            self.save_pins(cluster, {k: v for k, v in pins.items() if k not in gone})
        return gone


# -- the defaults: files and the environment ---------------------------------------------------------


def key_from_file(settings: SSHSettings) -> dict[str, Any]:
    """Connect arguments for a private key file on the machine that runs dbtier."""
    if not settings.key_file:
        block = f" (credentials_block {settings.credentials_block} is a Prefect block, read only by the flows)" \
            if settings.credentials_block else ""
        raise PreflightError(f"ssh.key_file: not set{block}; give the path of the private key")
    if not os.path.isfile(settings.key_file):
        raise PreflightError(f"ssh.key_file: {settings.key_file} does not exist; give the path of the private key")
    return {"key_filename": settings.key_file}


def load_pin_file(cluster: str) -> dict[str, str]:
    """The pins kept in ``<work>/<cluster>/host-keys.json`` (none when the file is absent)."""
    path = workdir.pin_file(cluster)
    raw = workdir.read_local(path)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise PreflightError(f"host keys: {path} is not JSON; fix or remove it (the next connection pins again)") from None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def save_pin_file(cluster: str, pins: dict[str, str]) -> None:
    path = workdir.pin_file(cluster)
    if pins:
        workdir.write_private(path, (json.dumps(dict(sorted(pins.items())), indent=2) + "\n").encode())
    elif os.path.exists(path):
        os.unlink(path)


def token_from_env(environ: Mapping[str, str]) -> PVEToken | None:
    """The token the ``DBTIER_PVE_*`` variables give, or None when none of them is set.

    >>> token_from_env({}) is None
    True
    >>> t = token_from_env({"DBTIER_PVE_API_URL": "https://pve:8006", "DBTIER_PVE_TOKEN_ID": "root@pam!dbtier",
    ...                     "DBTIER_PVE_TOKEN_SECRET": "s3cr3t", "DBTIER_PVE_VERIFY_SSL": "false"})
    >>> t.api_url, t.verify_ssl, t.token_secret
    ('https://pve:8006', False, SecretStr('**********'))
    >>> token_from_env({"DBTIER_PVE_API_URL": "https://pve:8006"})
    Traceback (most recent call last):
    ...
    dbtier.errors.PreflightError: DBTIER_PVE_TOKEN_ID: not set; set DBTIER_PVE_API_URL, DBTIER_PVE_TOKEN_ID and DBTIER_PVE_TOKEN_SECRET together
    """
    given = {field: environ[var] for field, var in PVE_ENV.items() if environ.get(var, "") != ""}
    if not given:
        return None
    for field in ("api_url", "token_id", "token_secret"):
        if field not in given:
            raise PreflightError(f"{PVE_ENV[field]}: not set; set {PVE_ENV['api_url']}, {PVE_ENV['token_id']} and "
                                 f"{PVE_ENV['token_secret']} together")
    if "verify_ssl" in given:
        given["verify_ssl"] = given["verify_ssl"].strip().lower() not in ("0", "false", "no", "off")  # type: ignore[assignment]
    return _token(given, "DBTIER_PVE_*")


def token_from_file(path: str) -> PVEToken | None:
    """The token of a YAML file (the :class:`PVEToken` fields), or None when it does not exist."""
    import yaml

    raw = workdir.read_local(path)
    if raw is None:
        return None
    if os.stat(path).st_mode & 0o077:
        raise PreflightError(f"proxmox token file: {path} is readable by others; chmod 600 {path}")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise PreflightError(f"proxmox token file: {path} is not a YAML mapping; write api_url, token_id and "
                             "token_secret (and fingerprint or ca_file) in it")
    return _token(data, path)


def _token(data: Mapping[str, Any], where: str) -> PVEToken:
    try:
        return PVEToken(**data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "token"
        raise PreflightError(f"{where}: {field}: {first['msg']}; see the fields of PVEToken "
                             "(api_url, token_id, token_secret, fingerprint, ca_file, storage, bridge, template)") from None


def token_from_env_or_file(settings: ProxmoxSettings) -> PVEToken:
    """The PVE token of ``settings`` for a run without Prefect: the environment, else the token file."""
    found = token_from_env(os.environ)
    if found is not None:
        return found
    path = workdir.pve_token_file(settings.credentials_block)
    found = token_from_file(path)
    if found is None:
        raise PreflightError(
            f"proxmox.credentials_block: {settings.credentials_block} is a Prefect block, and this run reads none; "
            f"write the token to {path} (api_url, token_id, token_secret; mode 0600) or set "
            f"{PVE_ENV['api_url']}, {PVE_ENV['token_id']} and {PVE_ENV['token_secret']}")
    return found


#: The library's loaders: key files, a local pin file, the PVE token from the environment or a file.
FILE_LOADERS = Loaders(ssh_key=key_from_file, load_pins=load_pin_file, save_pins=save_pin_file,
                       pve_token=token_from_env_or_file, name="files")


# -- the public half of a key ------------------------------------------------------------------------


def public_key_line(connect_kwargs: Mapping[str, Any], comment: str = "dbtier") -> str:
    """The OpenSSH public key line of the key in ``connect_kwargs`` (what goes into a new container)."""
    import paramiko

    pkey = connect_kwargs.get("pkey")
    if pkey is None:
        path = str(connect_kwargs["key_filename"])
        pkey = _read_private_key(paramiko, path)
    return f"{pkey.get_name()} {pkey.get_base64()} {comment}"


def _read_private_key(paramiko: Any, path: str) -> Any:
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key_file(path)
        except (paramiko.SSHException, ValueError):
            continue
        except OSError as err:
            raise PreflightError(f"ssh.key_file: cannot read {path} ({err.strerror}); give a readable private key") from None
    raise PreflightError(f"ssh.key_file: {path} is not an ed25519, ECDSA or RSA private key without a passphrase")
