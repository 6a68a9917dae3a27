"""SSH credentials as a Prefect block: the private key stays a secret and hands out connect arguments."""

from __future__ import annotations

import io
from typing import Any, cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from dbtier.errors import PreflightError


class SSHCredentials(Block):
    """A private key (OpenSSH or PEM text) that dbtier uses to reach existing hosts."""

    _block_type_name = "dbtier SSH Credentials"
    _block_type_slug = "dbtier-ssh-credentials"

    private_key: SecretStr = Field(description="The private key text (ed25519, ECDSA or RSA).")
    passphrase: SecretStr | None = Field(default=None, description="The key's passphrase, if it has one.")

    def connect_kwargs(self) -> dict[str, Any]:
        """paramiko connect arguments holding the parsed key (never the text)."""
        import paramiko

        text = self.private_key.get_secret_value()
        password = self.passphrase.get_secret_value() if self.passphrase else None
        for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return {"pkey": key_class.from_private_key(io.StringIO(text), password=password)}
            except (paramiko.SSHException, ValueError):
                continue
        raise PreflightError("ssh.credentials_block: the private key is not an ed25519, ECDSA or RSA key (or its passphrase is wrong)")

    @classmethod
    def load_connect_kwargs(cls, name: str) -> dict[str, Any]:
        try:
            block = cast(SSHCredentials, cls.load(name))
        except ValueError:
            raise PreflightError(
                f"ssh.credentials_block: no SSHCredentials block named {name!r}; save one first "
                "(SSHCredentials(private_key=...).save(name))"
            ) from None
        return block.connect_kwargs()
