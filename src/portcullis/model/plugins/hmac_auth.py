"""The `hmac-auth` plugin's config (its handler: plugins/hmac_auth.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from portcullis.model.plugins.base import PluginConfig
from portcullis.model.plugins.key_auth import check_realm

_DERIVED = "@method|@authority|@path|@target-uri|@query|@scheme|@request-target"
_COMPONENT = rf"^({_DERIVED}|[a-z0-9!#$%&'*+.^_`|~-]+)$"


class HmacAuthConfig(PluginConfig):
    required_components: list[str] = Field(
        default_factory=lambda: ["@method", "@authority", "@path"],
        description=(
            "RFC 9421 components every signature must cover (`@target-uri` also satisfies "
            "`@path`); `content-digest` is required on top whenever the request has a body"
        ),
        min_length=1,
        max_length=32,
    )
    clock_skew: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="seconds a signature's `created` may lie in the past (or the future)",
    )
    require_nonce: bool = Field(
        default=True,
        description="require a `nonce` parameter and refuse one seen before within the window",
    )
    nonce_store: Literal["memory", "redis"] = Field(
        default="memory",
        description="where seen nonces live: this worker's memory, or the gateway's Redis "
        "(shared by every worker and node; needs PORTCULLIS_REDIS_URL)",
    )
    max_nonces: int = Field(
        default=100_000, ge=1, le=10_000_000, description="bound of the in-memory nonce set"
    )
    max_body: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description="largest body whose Content-Digest is checked (larger bodies are refused)",
    )
    hide_credentials: bool = Field(
        default=True, description="remove Signature and Signature-Input before proxying"
    )
    realm: str = Field(default="portcullis", description="realm of the WWW-Authenticate challenge")

    _realm = field_validator("realm")(check_realm)

    @field_validator("required_components")
    @classmethod
    def _components(cls, components: list[str]) -> list[str]:
        import re

        out: list[str] = []
        for component in components:
            lowered = component.strip().lower()
            if not re.fullmatch(_COMPONENT, lowered):
                raise ValueError(f"{component!r} is not a supported component")
            if lowered not in out:
                out.append(lowered)
        return out
