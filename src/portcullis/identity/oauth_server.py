"""The built-in OAuth2 authorization server: client credentials, introspection, revocation.

Protocol logic only (the HTTP binding is `portcullis.admin.routers.oauth`):

- Token endpoint (RFC 6749 §4.4): a consumer registered as a client authenticates
  with HTTP Basic (`client_secret_basic`) or form fields (`client_secret_post`)
  and gets an RFC 9068 JWT access token signed with the active signing key.
  Requested scopes must all be allowed for the client (`invalid_scope` otherwise);
  no `scope` means every allowed scope.
- Token claims: `iss` (the issuer), `sub` (the consumer's **username**, which is what
  jwt-auth maps to a consumer), `aud` (`PORTCULLIS_OAUTH_AUDIENCE`), `client_id`,
  `scope` (space-separated, omitted when empty), `iat`, `exp`, `jti`. Header:
  `typ: at+jwt`, `kid`, `alg` (ES256 by default).
- Introspection (RFC 7662) and revocation (RFC 7009) require client
  authentication; a client sees and revokes only its own tokens (others'
  introspect as inactive, and revoking them is a no-op with 200, which reveals
  nothing). Revocation records the jti with the token's expiry and appends a TOKEN
  event in the same transaction, so data-plane workers refuse it within a poll.
- Failed client authentications are counted per client id and client address;
  past the limit that pair is refused (429) until the window passes. The count is
  per process.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import jwt
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.events import EventKind, append_events
from portcullis.identity.issuer_keys import REVOKED_TOKEN_GRACE
from portcullis.identity.oauth_clients import (
    ClientStatus,
    OAuthClient,
    OAuthClientRepository,
    looks_like_client_id,
)
from portcullis.identity.oauth_settings import OAuthServerSettings
from portcullis.identity.secrets import ServerSecret
from portcullis.identity.signing import SigningKeyStore
from portcullis.model.config import Consumer, ConsumerStatus
from portcullis.store.engine import write_transaction
from portcullis.store.identity_tables import RevokedTokenRow

GRANT_CLIENT_CREDENTIALS = "client_credentials"
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
TOKEN_PATH = "/oauth/token"  # noqa: S105 (a URL path)
INTROSPECTION_PATH = "/oauth/introspect"
REVOCATION_PATH = "/oauth/revoke"
JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16 * 1024
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a JOSE `typ` value)
_PURGE_EVERY = 600.0
_INACTIVE: dict[str, Any] = {"active": False}

ConsumerLookup = Callable[[str], Awaitable[Consumer | None]]


@dataclass(slots=True)
class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    error: str
    description: str
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(description: str) -> OAuthError:
    # 401 with a challenge for the scheme clients may use (RFC 6749 §5.2).
    return OAuthError(
        "invalid_client",
        description,
        401,
        {"WWW-Authenticate": 'Basic realm="portcullis", charset="UTF-8"'},
    )


def parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body; repeated parameters are an error (§3.2)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise invalid_request(f"the request body must be {FORM_CONTENT_TYPE}")
    if len(body) > MAX_FORM_BYTES:
        raise invalid_request("the request body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("the request body is not valid form data") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise invalid_request(f"parameter {name!r} is repeated")
        form[name] = value
    return form


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str
    method: str


def client_credentials(authorization: str | None, form: Mapping[str, str]) -> ClientCredentials:
    """The credentials a request presents, by HTTP Basic or in the form (not both)."""
    if authorization:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise invalid_client("use HTTP Basic or client_secret_post client authentication")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client("the Basic credentials are malformed") from None
        raw_id, colon, raw_secret = decoded.partition(":")
        if not colon:
            raise invalid_client("the Basic credentials are malformed")
        # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
        client_id, client_secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if "client_secret" in form:
            raise invalid_request("use one client authentication method, not two")
        if "client_id" in form and form["client_id"] != client_id:
            raise invalid_request("client_id does not match the authenticated client")
        return ClientCredentials(client_id, client_secret, "client_secret_basic")
    if "client_id" in form and "client_secret" in form:
        return ClientCredentials(form["client_id"], form["client_secret"], "client_secret_post")
    raise invalid_client("client authentication is required")


class FailureWindow:
    """Failed authentications per client id over a sliding window, bounded in memory."""

    def __init__(self, limit: int, window: float, max_entries: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_entries = max_entries
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        return stamps

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again (0: now)."""
        now = time.monotonic()
        stamps = self._recent(key, now)
        if len(stamps) < self.limit:
            return 0
        return max(1, int(stamps[0] + self.window - now) + 1)

    def fail(self, key: str) -> None:
        now = time.monotonic()
        stamps = self._recent(key, now)
        stamps.append(now)
        self._failures[key] = stamps
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)

    def succeed(self, key: str) -> None:
        self._failures.pop(key, None)


class OAuthServer:
    """Issues, introspects and revokes access tokens for registered clients."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: ServerSecret,
        *,
        issuer: str,
        settings: OAuthServerSettings,
        consumer_lookup: ConsumerLookup,
    ) -> None:
        self._engine = engine
        self.issuer = issuer
        self._base_url = issuer.rstrip("/")
        self.settings = settings
        self.clients = OAuthClientRepository(engine, secret)
        self.keys = SigningKeyStore(
            engine,
            secret,
            alg=settings.signing_alg,
            max_age=settings.signing_key_max_age,
            token_lifetime=settings.max_token_ttl,
        )
        self._consumer = consumer_lookup
        self._failures = FailureWindow(
            settings.client_failure_limit, settings.client_failure_window
        )
        self._next_purge = 0.0

    # ------------------------------------------------------------------ documents

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        methods = list(AUTH_METHODS)
        return {
            "issuer": self.issuer,
            "token_endpoint": self._base_url + TOKEN_PATH,
            "jwks_uri": self._base_url + JWKS_PATH,
            "introspection_endpoint": self._base_url + INTROSPECTION_PATH,
            "revocation_endpoint": self._base_url + REVOCATION_PATH,
            "grant_types_supported": [GRANT_CLIENT_CREDENTIALS],
            # No authorization endpoint: no response type is supported.
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": methods,
            "introspection_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
        }

    # ------------------------------------------------------------------ clients

    async def authenticate(
        self, authorization: str | None, form: Mapping[str, str], address: str | None = None
    ) -> OAuthClient:
        """The client the request authenticates as; OAuthError (401/429) otherwise.

        Failures are counted per client id *and* client address: a third party who
        knows a client id (it is in every token the client uses) can't lock the
        client out from elsewhere, while guessing from one address is throttled.
        Client secrets have 256 bits, so throttling is defence in depth, not the defence.
        """
        creds = client_credentials(authorization, form)
        if not looks_like_client_id(creds.client_id):
            raise invalid_client("client authentication failed")
        throttle_key = f"{creds.client_id} {address or '-'}"
        wait = self._failures.retry_after(throttle_key)
        if wait:
            raise OAuthError(
                "invalid_client",
                f"too many failed authentications for this client; retry in {wait} s",
                429,
                {"Retry-After": str(wait)},
            )
        client = await self.clients.authenticate(creds.client_id, creds.client_secret)
        if client is None:
            self._failures.fail(throttle_key)
            raise invalid_client("client authentication failed")
        self._failures.succeed(throttle_key)
        return client

    async def _usable(self, client: OAuthClient) -> str | None:
        """Why the client may not get tokens now (None: it may)."""
        if client.status is not ClientStatus.ACTIVE:
            return "the client is disabled"
        consumer = await self._consumer(client.consumer)
        if consumer is None:
            return "the client's consumer no longer exists"
        if consumer.status is ConsumerStatus.suspended:
            return "the client's consumer is suspended"
        return None

    # ------------------------------------------------------------------ token endpoint

    async def token(
        self, authorization: str | None, form: Mapping[str, str], address: str | None = None
    ) -> dict[str, Any]:
        """The token endpoint: a token response, or OAuthError."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise invalid_request("grant_type is required")
        if grant_type != GRANT_CLIENT_CREDENTIALS:
            raise OAuthError(
                "unsupported_grant_type", f"only {GRANT_CLIENT_CREDENTIALS} is supported"
            )
        client = await self.authenticate(authorization, form, address)
        reason = await self._usable(client)
        if reason is not None:
            raise OAuthError("unauthorized_client", reason)
        scopes = self.grantable_scopes(client, form.get("scope"))
        return await self.issue(client, scopes)

    @staticmethod
    def grantable_scopes(client: OAuthClient, requested: str | None) -> list[str]:
        """The scopes to grant: every allowed one by default; invalid_scope if any is not."""
        if requested is None:
            return list(client.allowed_scopes)
        wanted = list(dict.fromkeys(requested.split()))
        refused = [s for s in wanted if s not in client.allowed_scopes]
        if refused:
            raise OAuthError(
                "invalid_scope", "scope not allowed for this client: " + " ".join(refused)
            )
        return wanted

    async def issue(self, client: OAuthClient, scopes: Sequence[str]) -> dict[str, Any]:
        """Sign an access token for `client` with `scopes` (already checked)."""
        signer = await self.keys.signer()
        ttl = min(client.token_ttl, self.settings.max_token_ttl)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client.consumer,
            "aud": self.settings.audience,
            "client_id": client.client_id,
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(18),
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        token = jwt.encode(
            claims,
            signer.key,
            algorithm=signer.alg,
            headers={"kid": signer.kid, "typ": ACCESS_TOKEN_TYPE},
        )
        response: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl,
        }
        if scopes:
            response["scope"] = claims["scope"]
        return response

    # ------------------------------------------------------------------ verification

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of an unexpired access token this server signed, else None."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid = header.get("kid")
        if not isinstance(kid, str) or header.get("typ") != ACCESS_TOKEN_TYPE:
            return None
        key = await self.keys.verification_key(kid)
        if key is None:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "jti", "sub", "client_id"],
                    "verify_aud": False,
                },
            )
        except jwt.PyJWTError:
            return None
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("client_id"), str):
            return None
        return claims

    async def is_revoked(self, jti: str) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.scalar(select(RevokedTokenRow.jti).where(RevokedTokenRow.jti == jti))
        return found is not None

    # ------------------------------------------------------------------ introspection

    async def introspect(
        self, authorization: str | None, form: Mapping[str, str], address: str | None = None
    ) -> dict[str, Any]:
        """RFC 7662: the token's claims when active and the caller's own, else inactive."""
        client = await self.authenticate(authorization, form, address)
        token = form.get("token")
        if not token:
            raise invalid_request("token is required")
        claims = await self.verify(token)
        if claims is None or claims["client_id"] != client.client_id:
            return dict(_INACTIVE)
        if await self.is_revoked(claims["jti"]) or await self._usable(client) is not None:
            return dict(_INACTIVE)
        out: dict[str, Any] = {
            "active": True,
            "client_id": claims["client_id"],
            "username": claims["sub"],
            "token_type": "Bearer",
            "exp": claims["exp"],
            "iat": claims["iat"],
            "sub": claims["sub"],
            "aud": claims.get("aud"),
            "iss": claims.get("iss"),
            "jti": claims["jti"],
        }
        if claims.get("scope"):
            out["scope"] = claims["scope"]
        return out

    # ------------------------------------------------------------------ revocation

    async def revoke(
        self, authorization: str | None, form: Mapping[str, str], address: str | None = None
    ) -> None:
        """RFC 7009: revoke the caller's own unexpired token; anything else is a no-op."""
        client = await self.authenticate(authorization, form, address)
        token = form.get("token")
        if not token:
            raise invalid_request("token is required")
        claims = await self.verify(token)
        if claims is None or claims["client_id"] != client.client_id:
            return
        await self.record_revocation(
            claims["jti"], client.client_id, datetime.fromtimestamp(int(claims["exp"]), UTC)
        )

    async def record_revocation(self, jti: str, client_id: str, expires_at: datetime) -> bool:
        """Store the revocation with a TOKEN event (one transaction); False if already there."""
        now = datetime.now(UTC)
        purge = time.monotonic() >= self._next_purge
        try:
            async with write_transaction(self._engine) as conn:
                exists = await conn.scalar(
                    select(RevokedTokenRow.jti).where(RevokedTokenRow.jti == jti)
                )
                if exists is not None:
                    return False
                await conn.execute(
                    insert(RevokedTokenRow).values(
                        jti=jti, client_id=client_id, revoked_at=now, expires_at=expires_at
                    )
                )
                await append_events(conn, [(EventKind.TOKEN, jti)])
                if purge:
                    # Expired revocations protect nothing: the token is refused for its
                    # `exp` anyway (after the grace that covers verifiers' leeway).
                    await conn.execute(
                        delete(RevokedTokenRow).where(
                            RevokedTokenRow.expires_at
                            < now - timedelta(seconds=REVOKED_TOKEN_GRACE)
                        )
                    )
        except IntegrityError:
            # A concurrent revocation of the same token committed first.
            return False
        if purge:
            self._next_purge = time.monotonic() + _PURGE_EVERY
        return True
