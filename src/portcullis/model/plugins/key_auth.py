"""The `key-auth` plugin's config (its handler: plugins/key_auth.py)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from portcullis.model.plugins.base import PluginConfig
from portcullis.model.tenancy import names

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")
_REALM = re.compile(r'^[^"\\\x00-\x1f\x7f]{1,128}$')


def check_realm(cls: object, realm: str) -> str:
    """A realm every auth plugin may quote in its WWW-Authenticate challenge."""
    if not _REALM.fullmatch(realm):
        raise ValueError("must be 1-128 characters without quotes, backslashes or controls")
    return realm


class KeyAuthConfig(PluginConfig):
    header_names: list[str] = Field(
        default_factory=lambda: ["authorization", "x-api-key"],
        description=(
            "headers that may carry the key, in order of precedence; `authorization` "
            "expects the Bearer scheme, any other header holds the bare key"
        ),
    )
    query_param: str | None = Field(
        default=None, min_length=1, max_length=64, description="opt-in query parameter"
    )
    hide_credentials: bool = Field(
        default=True, description="remove the key from the request before proxying"
    )
    anonymous: str | None = Field(
        default=None,
        description="consumer username used when no key is presented (one of the route's "
        "organization)",
        json_schema_extra=names("consumers"),
    )
    realm: str = Field(default="portcullis", description="realm of the WWW-Authenticate challenge")

    @field_validator("header_names")
    @classmethod
    def _header_names(cls, names: list[str]) -> list[str]:
        out: list[str] = []
        for name in names:
            lowered = name.strip().lower()
            if not _TOKEN.fullmatch(lowered):
                raise ValueError(f"{name!r} is not a valid header name")
            if lowered not in out:
                out.append(lowered)
        return out

    _realm = field_validator("realm")(check_realm)
