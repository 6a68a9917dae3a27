"""An S3 bucket for pgBackRest repositories as a Prefect block: the keys stay secrets and hand out boto3 clients."""

from __future__ import annotations

from typing import Any, Literal, cast

import boto3
from botocore.config import Config
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from dbtier.errors import PreflightError


class S3Repository(Block):
    """An S3 (or S3-compatible) bucket, its endpoint and keys, and how to trust its certificate.

    TLS is always on (pgBackRest speaks S3 only over HTTPS) and verified by default: against
    ``ca_file`` when given, else the system CAs.
    """

    _block_type_name = "dbtier S3 Repository"
    _block_type_slug = "dbtier-s3-repository"

    bucket: str = Field(..., min_length=3, max_length=63, description="Bucket holding the repositories")
    region: str = Field("us-east-1", description="The bucket's region, e.g. eu-west-1")
    endpoint: str = Field("s3.amazonaws.com", description="Endpoint host name only, no scheme or port")
    port: int = Field(443, ge=1, le=65535, description="Endpoint HTTPS port")
    uri_style: Literal["host", "path"] = Field("host", description="host: bucket.endpoint; path: endpoint/bucket")
    access_key_id: SecretStr = Field(..., description="Access key id")
    secret_access_key: SecretStr = Field(..., description="Secret access key")
    ca_file: str | None = Field(None, description="PEM file of the CA that signed the endpoint's certificate")
    verify_tls: bool = Field(True, description="Verify the endpoint's TLS certificate; turn off only in a lab")

    @field_validator("endpoint")
    @classmethod
    def _host_only(cls, value: str) -> str:
        if "://" in value or "/" in value or ":" in value or not value:
            raise ValueError(f"a host name only, e.g. s3.eu-west-1.amazonaws.com, the port apart (got {value!r})")
        return value

    @property
    def endpoint_url(self) -> str:
        return f"https://{self.endpoint}:{self.port}"

    def get_boto3_client(self) -> Any:
        """A boto3 S3 client for the endpoint, addressing buckets the way ``uri_style`` says."""
        config = Config(
            s3={"addressing_style": "path" if self.uri_style == "path" else "virtual"},
            connect_timeout=10,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id.get_secret_value(),
            aws_secret_access_key=self.secret_access_key.get_secret_value(),
            verify=self.ca_file or self.verify_tls,
            config=config,
        )

    @classmethod
    def load_repository(cls, name: str, field: str = "backup.s3.block") -> S3Repository:
        """The block saved as ``name``; a missing one is a PreflightError naming the spec ``field``."""
        try:
            return cast(S3Repository, cls.load(name))
        except ValueError:
            raise PreflightError(
                f"{field}: no S3Repository block named {name!r}; save one first "
                f"(S3Repository(bucket=..., ...).save({name!r}))"
            ) from None
