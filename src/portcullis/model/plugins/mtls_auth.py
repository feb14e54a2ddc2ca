"""The `mtls-auth` plugin's config (its handler: plugins/mtls_auth.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from portcullis.model.plugins.base import PluginConfig
from portcullis.model.plugins.key_auth import check_realm
from portcullis.model.tenancy import names


class MtlsAuthConfig(PluginConfig):
    ca_certificates: str = Field(
        min_length=1,
        max_length=1_000_000,
        description="PEM bundle of the CA certificates client certificates must chain to",
    )
    match: list[Literal["subject", "san"]] = Field(
        default=["san", "subject"],
        min_length=1,
        description="certificate names looked up among the consumers' mtls credentials, in "
        "order: `san` (each DNS, URI, email and IP SAN) and `subject` (the RFC 4514 DN)",
    )
    anonymous: str | None = Field(
        default=None,
        description="consumer username used when no client certificate is presented (one of "
        "the route's organization)",
        json_schema_extra=names("consumers"),
    )
    realm: str = Field(default="portcullis", description="realm of the WWW-Authenticate challenge")

    _realm = field_validator("realm")(check_realm)

    @field_validator("ca_certificates")
    @classmethod
    def _pem(cls, pem: str) -> str:
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError("must hold at least one PEM certificate")
        return pem
