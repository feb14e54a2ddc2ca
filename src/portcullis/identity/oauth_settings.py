"""Settings of the built-in OAuth2 authorization server (environment `PORTCULLIS_OAUTH_*`).

The issuer itself is `Settings.issuer` (`PORTCULLIS_OAUTH_ISSUER`, default the
admin URL), because the data plane needs it too; what only the control plane
needs lives here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY = 24 * 3600


class OAuthServerSettings(BaseSettings):
    """How access tokens are minted and how often the signing key changes."""

    model_config = SettingsConfigDict(env_prefix="PORTCULLIS_OAUTH_", extra="ignore")

    # `aud` of every access token: the gateway is the resource server. jwt-auth in
    # `issuer: gateway` mode expects this value.
    audience: str = Field(default="portcullis", min_length=1, max_length=256)
    # Upper bound of a client's `token_ttl` (seconds). A retired signing key stays
    # published this long (plus leeway), so every token it signed can still be verified.
    max_token_ttl: int = Field(default=DAY, ge=60, le=30 * DAY)
    # Algorithm of newly created signing keys (existing keys keep theirs).
    signing_alg: Literal["ES256", "RS256"] = "ES256"
    # Rotate the active signing key automatically once it is this old (seconds;
    # checked when a token is issued). 0 turns automatic rotation off.
    signing_key_max_age: float = Field(default=90 * DAY, ge=0)
    # Brute-force protection of the token, introspection and revocation endpoints:
    # after this many failed client authentications within the window (seconds),
    # the client id is refused until the window has passed.
    client_failure_limit: int = Field(default=10, ge=1)
    client_failure_window: float = Field(default=300.0, gt=0)
