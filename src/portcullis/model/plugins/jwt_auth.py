"""The `jwt-auth` plugin's config (its handler: plugins/jwt_auth.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator

from portcullis.http_fields import HeaderText, is_field_value
from portcullis.model.plugins.base import PluginConfig
from portcullis.model.tenancy import names

HmacAlgorithm = Literal["HS256", "HS384", "HS512"]
AsymmetricAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
SigningAlgorithm = Literal[
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]


class StaticKeyConfig(PluginConfig):
    """One trusted key with its algorithm pinned."""

    kid: HeaderText | None = Field(default=None, min_length=1, max_length=256)
    algorithm: SigningAlgorithm
    secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret (HS256/384/512), at least the hash size; it is stored "
        "with the config, so prefer `secret_env`",
    )
    secret_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of an environment variable of the data plane holding the secret",
    )
    secret_base64: bool = Field(
        default=False, description="the secret is base64 (or base64url) encoded bytes"
    )
    public_key: str | None = Field(default=None, description="PEM public key (RS/PS/ES/EdDSA)")
    jwk: dict[str, Any] | None = Field(default=None, description="public JWK (RS/PS/ES/EdDSA)")

    @model_validator(mode="after")
    def _material(self) -> StaticKeyConfig:
        has_secret = self.secret is not None or self.secret_env is not None
        if self.algorithm.startswith("HS"):
            if (
                (self.secret is None) == (self.secret_env is None)
                or self.public_key is not None
                or self.jwk is not None
            ):
                raise ValueError(
                    f"{self.algorithm} keys take one of `secret` or `secret_env` (and nothing else)"
                )
        elif has_secret or (self.public_key is None) == (self.jwk is None):
            raise ValueError(f"{self.algorithm} keys take exactly one of `public_key` or `jwk`")
        if self.secret_env is None:
            # Building the key validates it (format, type, size, curve) at config time;
            # a secret from the environment is checked when the data plane builds it.
            from portcullis.model.plugins.jwt_keys import load_static_key

            load_static_key(self)
        return self


class JwksConfig(PluginConfig):
    """A remote JWK Set and the algorithms its keys may sign with."""

    url: HttpUrl
    algorithms: list[AsymmetricAlgorithm] = Field(min_length=1)
    min_ttl: float = Field(default=60.0, ge=0, le=86_400)
    max_ttl: float = Field(default=86_400.0, gt=0, le=7 * 86_400)
    default_ttl: float = Field(default=300.0, gt=0, le=7 * 86_400)
    refetch_interval: float = Field(
        default=10.0, ge=0, le=3600, description="least gap between fetches on an unknown kid"
    )
    timeout: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _bounds(self) -> JwksConfig:
        if self.min_ttl > self.max_ttl:
            raise ValueError("min_ttl must not exceed max_ttl")
        return self


def _header_name(value: str) -> str:
    name = value.strip().lower()
    if not name or any(c in name for c in " \t:\r\n"):
        raise ValueError("not a valid header name")
    return name


class JwtAuthConfig(PluginConfig):
    header: str = Field(
        default="authorization",
        description="header carrying the token; `authorization` expects the Bearer scheme",
    )
    cookie: str | None = Field(default=None, min_length=1, description="cookie carrying the token")
    query_param: str | None = Field(
        default=None, min_length=1, description="query parameter carrying the token (opt-in)"
    )
    keys: list[StaticKeyConfig] = Field(default_factory=list)
    jwks: list[JwksConfig] = Field(default_factory=list)
    gateway_tokens: bool = Field(
        default=True, description="accept access tokens of the gateway's own OAuth2 server"
    )
    issuers: list[str] = Field(default_factory=list, description="allowed `iss` (empty: any)")
    audiences: list[str] = Field(
        default_factory=list, description="accepted `aud` values (empty: not checked)"
    )
    leeway: float = Field(default=0.0, ge=0, le=300, description="clock skew allowed, seconds")
    required_claims: list[str] = Field(default_factory=lambda: ["exp"])
    max_lifetime: float | None = Field(
        default=None, gt=0, description="longest accepted exp - iat (or exp - now), seconds"
    )
    consumer_claim: str = Field(default="sub", min_length=1)
    consumer_by: Literal["username", "custom_id"] = "username"
    allow_unmapped: bool = Field(
        default=False, description="accept valid tokens that name no known consumer"
    )
    anonymous: str | None = Field(
        default=None,
        description="consumer username used when no token is presented (one of the route's "
        "organization)",
        json_schema_extra=names("consumers"),
    )
    hide_credentials: bool = True
    realm: str = Field(default="portcullis", min_length=1, max_length=128)
    verify_cache_ttl: float = Field(
        default=30.0, ge=0, le=3600, description="reuse of a verified token, seconds (0: off)"
    )
    verify_cache_size: int = Field(default=10_000, ge=1, le=1_000_000)

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        return _header_name(value)

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        if any(c in value for c in '"\\') or not is_field_value(value):
            raise ValueError("realm must not contain quotes, backslashes or control characters")
        return value

    @model_validator(mode="after")
    def _sources(self) -> JwtAuthConfig:
        if not self.keys and not self.jwks and not self.gateway_tokens:
            raise ValueError("configure at least one of keys, jwks or gateway_tokens")
        kids = [k.kid for k in self.keys if k.kid is not None]
        if len(kids) != len(set(kids)):
            raise ValueError("static key kids must be unique")
        return self
