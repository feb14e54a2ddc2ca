"""The `basic-auth` plugin's config (its handler: plugins/basic_auth.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from portcullis.model.plugins.base import PluginConfig
from portcullis.model.plugins.key_auth import check_realm
from portcullis.model.tenancy import names


class BasicAuthConfig(PluginConfig):
    hide_credentials: bool = Field(
        default=True, description="remove the Authorization header before proxying"
    )
    anonymous: str | None = Field(
        default=None,
        description="consumer username used when no credentials are presented (one of the "
        "route's organization)",
        json_schema_extra=names("consumers"),
    )
    realm: str = Field(default="portcullis", description="realm of the WWW-Authenticate challenge")

    _realm = field_validator("realm")(check_realm)
