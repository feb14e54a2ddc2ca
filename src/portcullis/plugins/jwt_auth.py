"""jwt-auth: authenticate requests by a signed JSON Web Token (RFC 7519).

Token sources, in order: the `Authorization: Bearer` header (or another configured
header), then a cookie, then (opt-in) a query parameter. Keys come from three kinds
of source, and every key has its algorithms pinned:

- `keys`: static keys in the config, one algorithm each (an HMAC secret for
  HS256/384/512; a PEM public key or a JWK for RS/PS, ES and EdDSA);
- `jwks`: remote JWK Sets (`identity.jwks`), each with the asymmetric algorithms
  it may sign with;
- `gateway_tokens`: access tokens of the gateway's own OAuth2 server (RFC 9068),
  verified with `env.issuer_keys`: `typ` must be `at+jwt`, `iss` the gateway's,
  and a revoked `jti` is refused.

`alg: none` is never accepted, and a key verifies only tokens whose header `alg`
is one of its pinned algorithms, so an HMAC key never checks an RS/ES token (nor
the reverse: the classic confusion attack of signing HS256 with the RSA public key).

Claims: `exp`/`nbf`/`iat` with `leeway`, allowed `issuers` (tokens of the gateway's
own issuer are always checked against it), `audiences`, `required_claims`,
`max_lifetime`. The consumer comes from `consumer_claim` (default `sub`) matched
against consumer usernames or custom ids; gateway tokens always carry the
consumer's username in `sub` (that is what the built-in server issues). Scopes come from
`scope` (space-separated) or `scp` (list). Consumers are looked up in the route's view
(`ConsumerIndex.view`): a token of another organization's consumer is an unknown
consumer here, and a gateway token naming no consumer the route accepts is refused even
with `allow_unmapped` (which is for other issuers' subjects).

Upstream: the token is removed (`hide_credentials`), client-sent identity headers
are always removed, and the gateway adds `X-Consumer-*` (from `ConsumerInfo`),
`X-Credential-Id` and `X-Consumer-Scopes`. `ctx.credential_id` is `jwt:<kid>`
(`jwt:<iss>` for a token without a kid, `jwt` when it has neither).

Failures are 401 problems with an RFC 6750 `WWW-Authenticate` challenge naming
the reason; a token that can only be checked against a JWKS that was never fetched
successfully gets 503.

Hot path: everything config-derived is computed in `__init__`. A successful
verification is cached per token string for `verify_cache_ttl` seconds (never past
the token's `exp`); gateway tokens are checked against revocation on every use.
"""

from __future__ import annotations

import binascii
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote_plus

import structlog

from portcullis.analytics.record import Flag
from portcullis.http_fields import field_value_bytes
from portcullis.identity.consumers import ConsumerInfo
from portcullis.identity.jwks import JwksPolicy, JwksSource, JwksUnavailableError
from portcullis.model.plugins.jwt_auth import JwksConfig, JwtAuthConfig
from portcullis.model.plugins.jwt_keys import (
    ALGORITHMS,
    load_static_key,
    usable,
)
from portcullis.plugins.auth_replies import Reply as _Reply
from portcullis.plugins.base import (
    Headers,
    Phase,
    Plugin,
    PluginResponse,
    RequestContext,
)
from portcullis.plugins.credential_sources import (
    Source,
    challenge_params,
    expected_member,
    required_detail,
)
from portcullis.plugins.env import IssuerKeys, PluginEnv
from portcullis.plugins.key_auth import IDENTITY_HEADER_PREFIXES
from portcullis.problems import (
    BAD_REQUEST,
    CREDENTIALS_UNAVAILABLE,
    PROBLEM_CONTENT_TYPE,
    UNAUTHORIZED,
    problem_body,
)

log = structlog.get_logger(__name__)

# Longer "tokens" are refused before any decoding (real access tokens are < 4 kB).
MAX_TOKEN_LENGTH = 8192
# At most this many keys are tried for one token without a `kid`.
_MAX_CANDIDATES = 4
_GATEWAY_TYP = frozenset({"at+jwt", "application/at+jwt"})
_CREDENTIAL_HEADER = b"x-credential-id"
_SCOPES_HEADER = b"x-consumer-scopes"
_AUTHORIZATION = b"authorization"


# -- config --------------------------------------------------------------------------


# -- keys ----------------------------------------------------------------------------


def _policy(config: JwksConfig) -> JwksPolicy:
    """The JWKS cache policy of one configured JWK Set."""
    return JwksPolicy(
        min_ttl=config.min_ttl,
        max_ttl=config.max_ttl,
        default_ttl=config.default_ttl,
        refetch_interval=config.refetch_interval,
        timeout=config.timeout,
    )


@dataclass(frozen=True, slots=True)
class _StaticKey:
    kid: str | None
    algorithm: str
    key: object


@dataclass(frozen=True, slots=True)
class _Jwks:
    source: JwksSource
    algorithms: frozenset[str]


# -- results -------------------------------------------------------------------------


@dataclass(slots=True)
class _Identity:
    """What a verified token grants; cached per token string."""

    consumer: ConsumerInfo | None
    credential_id: str | None
    scopes: frozenset[str]
    headers: tuple[tuple[bytes, bytes], ...]
    until: float
    jti: str | None  # gateway tokens: checked against revocation on every use
    claims: Mapping[str, Any] | None = None  # the verified payload (rate-limit keys on claims)
    client_id: str | None = None  # gateway tokens: the client, revoked as a whole on deletion


class _Reject(Exception):
    """A verification failure: the RFC 6750 error description (never attacker data)."""

    def __init__(self, description: str, *, status: int = 401) -> None:
        super().__init__(description)
        self.description = description
        self.status = status


_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")
_json_decode = json.JSONDecoder().decode


def _b64decode(segment: str) -> bytes:
    """base64url without padding (RFC 7515 §2), decoded with the C codec directly."""
    data = segment.encode("ascii").translate(_URLSAFE_TO_STD)
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _number(payload: dict[str, Any], claim: str) -> float | None:
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Reject(f"malformed {claim} claim")
    return float(value)


def _scopes(payload: dict[str, Any]) -> frozenset[str]:
    scope = payload.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = payload.get("scp")
    if isinstance(scp, str):
        return frozenset(scp.split())
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str) and s)
    return frozenset()


def _strip_cookie(value: bytes, name: bytes) -> bytes:
    """A Cookie header value without cookie `name` (empty when nothing is left)."""
    kept = [
        part.strip()
        for part in value.split(b";")
        if part.strip() and part.partition(b"=")[0].strip() != name
    ]
    return b"; ".join(kept)


def _strip_query(query: bytes, name: str) -> bytes | None:
    """The query without parameter `name` (however encoded); None when it has none."""
    if not query:
        return None
    pairs = query.split(b"&")
    kept = [p for p in pairs if unquote_plus(p.partition(b"=")[0].decode("latin-1")) != name]
    return None if len(kept) == len(pairs) else b"&".join(kept)


# -- plugin --------------------------------------------------------------------------


class JwtAuth(Plugin[JwtAuthConfig]):
    """Verifies a bearer JWT, maps it to a consumer, and forwards the identity upstream."""

    name: ClassVar[str] = "jwt-auth"
    priority: ClassVar[int] = 1450
    refusal_flag = Flag.AUTH_FAILED
    config_model = JwtAuthConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: JwtAuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        cfg = config
        self._clock: Callable[[], float] = env.clock
        self._header = cfg.header.encode("latin-1")
        self._bearer = cfg.header == "authorization"
        self._cookie = cfg.cookie.encode("latin-1") if cfg.cookie else None
        self._query = cfg.query_param
        self._hide = cfg.hide_credentials

        # Static keys by kid; kid-less tokens try the keys pinned to their algorithm.
        self._static_by_kid: dict[str, _StaticKey] = {}
        self._static_by_alg: dict[str, list[_StaticKey]] = {}
        for k in cfg.keys:
            key = _StaticKey(k.kid, k.algorithm, load_static_key(k))
            if k.kid is not None:
                self._static_by_kid[k.kid] = key
            self._static_by_alg.setdefault(k.algorithm, []).append(key)

        self._jwks: tuple[_Jwks, ...] = ()
        if cfg.jwks:
            if env.jwks is None:
                raise ValueError("jwt-auth with `jwks` needs the worker's JWKS registry")
            self._jwks = tuple(
                _Jwks(env.jwks.source(str(j.url), _policy(j)), frozenset(j.algorithms))
                for j in cfg.jwks
            )
            for j in cfg.jwks:
                env.jwks.prefetch(str(j.url))
        self._jwks_algorithms = frozenset(a for j in self._jwks for a in j.algorithms)
        # Without the worker's issuer keyring (tools, unit tests) gateway trust is inert.
        self._issuer_keys: IssuerKeys | None = env.issuer_keys if cfg.gateway_tokens else None

        self._issuers = frozenset(cfg.issuers)
        self._audiences = frozenset(cfg.audiences)
        self._leeway = cfg.leeway
        self._required = tuple(dict.fromkeys(cfg.required_claims))
        self._max_lifetime = cfg.max_lifetime
        self._consumer_claim = cfg.consumer_claim
        consumers = env.consumers
        self._consumer_map: dict[str, ConsumerInfo] = (
            consumers.by_username if cfg.consumer_by == "username" else consumers.by_custom_id
        )
        self._by_username = consumers.by_username
        self._allow_unmapped = cfg.allow_unmapped
        self._anonymous: _Identity | None = None
        if cfg.anonymous is not None:
            anonymous = consumers.get(cfg.anonymous)
            if anonymous is None:
                # Fail closed: without its consumer, anonymous access is simply off.
                log.warning("jwt_auth.anonymous_consumer_missing", consumer=cfg.anonymous)
            else:
                self._anonymous = _Identity(
                    anonymous,
                    None,
                    frozenset(),
                    (*anonymous.upstream_headers, (b"x-anonymous-consumer", b"true")),
                    math.inf,
                    None,
                )

        self._cache_ttl = cfg.verify_cache_ttl
        self._cache_size = cfg.verify_cache_size
        self._cache: dict[str, _Identity] = {}

        # Every refusal names where the token was expected (see credential_sources).
        sources = [Source.header(cfg.header)]
        if cfg.cookie is not None:
            sources.append(Source("cookie", cfg.cookie))
        if cfg.query_param is not None:
            sources.append(Source("query", cfg.query_param))
        self.credential_sources = tuple(sources)
        self._expected = expected_member(sources)
        realm = f'Bearer realm="{cfg.realm}"{challenge_params(sources)}'
        self._realm = realm
        self._challenge_missing = _Reply(
            401,
            problem_body(
                UNAUTHORIZED, required_detail("A bearer token", "token", sources), **self._expected
            ),
            [
                (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                (b"www-authenticate", realm.encode()),
            ],
        )
        self._failures: dict[tuple[int, str], _Reply] = {}

    # -- hot path ---------------------------------------------------------------------

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        token = self._extract(ctx)
        if isinstance(token, _Reply):
            return token.response()
        if token is None:
            if self._anonymous is None:
                return self._challenge_missing.response()
            self._apply(ctx, self._anonymous)
            return None
        now = self._clock()
        identity = self._cache.get(token)
        if identity is None or identity.until <= now:
            try:
                identity = await self._verify(token, now)
            except _Reject as rej:
                if identity is not None:
                    self._cache.pop(token, None)  # an expired entry
                return self._failure(rej.status, rej.description).response()
            if self._cache_ttl > 0:
                cache = self._cache
                if len(cache) >= self._cache_size:
                    # Evict the oldest insertion; dicts keep insertion order.
                    del cache[next(iter(cache))]
                cache[token] = identity
        elif identity.jti is not None and self._revoked(identity.jti, identity.client_id):
            del self._cache[token]
            return self._failure(401, "token revoked").response()
        self._apply(ctx, identity)
        return None

    def _apply(self, ctx: RequestContext, identity: _Identity) -> None:
        ctx.consumer = identity.consumer
        ctx.credential_id = identity.credential_id
        ctx.scopes = identity.scopes
        ctx.claims = identity.claims
        self._rewrite_upstream(ctx, identity)

    def _revoked(self, jti: str, client_id: str | None) -> bool:
        keys = self._issuer_keys
        if keys is None:
            return False
        return keys.is_revoked(jti) or (client_id is not None and keys.client_revoked(client_id))

    def _extract(self, ctx: RequestContext) -> str | _Reply | None:
        """The presented token; a 400 response if the header is ambiguous; None if absent."""
        header_value: bytes | None = None
        cookie_token: bytes | None = None
        target = self._header
        cookie = self._cookie
        for name, value in ctx.headers:
            if name == target:
                if header_value is not None:
                    return self._failure(400, "more than one token header", "invalid_request")
                header_value = value
            elif cookie is not None and cookie_token is None and name == b"cookie":
                cookie_token = self._from_cookie(value, cookie)
        raw: bytes | None = None
        if header_value is not None:
            if self._bearer:
                scheme, _, rest = header_value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    raw = rest.strip()
            else:
                raw = header_value.strip()
                if raw[:7].lower() == b"bearer ":
                    raw = raw[7:].strip()
        if not raw and cookie_token:
            raw = cookie_token
        if not raw and self._query is not None:
            raw = self._from_query(ctx)
        if not raw:
            return None
        if len(raw) > MAX_TOKEN_LENGTH:
            return self._failure(401, "malformed token")
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return self._failure(401, "malformed token")

    @staticmethod
    def _from_cookie(value: bytes, name: bytes) -> bytes | None:
        for part in value.split(b";"):
            k, sep, v = part.partition(b"=")
            if sep and k.strip() == name:
                return v.strip().strip(b'"') or None
        return None

    def _from_query(self, ctx: RequestContext) -> bytes | None:
        query: bytes = (
            ctx.query_string if ctx.query_string is not None else ctx.scope["query_string"]
        )
        assert self._query is not None
        for pair in query.split(b"&"):
            k, sep, v = pair.partition(b"=")
            if sep and unquote_plus(k.decode("latin-1")) == self._query:
                return unquote_plus(v.decode("latin-1")).encode("latin-1") or None
        return None

    def _rewrite_upstream(self, ctx: RequestContext, identity: _Identity) -> None:
        """Drop the credential and any client-sent identity headers; add ours."""
        hide = self._hide
        target = self._header
        cookie = self._cookie
        out: Headers = []
        for name, value in ctx.upstream_headers:
            if name.startswith(IDENTITY_HEADER_PREFIXES):
                continue
            if hide:
                # A non-Bearer Authorization (e.g. Basic) was not our credential: keep it.
                if name == target and (
                    not self._bearer or value.lstrip()[:7].lower() == b"bearer "
                ):
                    continue
                if cookie is not None and name == b"cookie":
                    value = _strip_cookie(value, cookie)
                    if not value:
                        continue
            out.append((name, value))
        out.extend(identity.headers)
        ctx.upstream_headers = out
        if hide and self._query is not None:
            query: bytes = (
                ctx.query_string if ctx.query_string is not None else ctx.scope["query_string"]
            )
            stripped = _strip_query(query, self._query)
            if stripped is not None:
                ctx.query_string = stripped

    def _failure(self, status: int, description: str, error: str = "invalid_token") -> _Reply:
        """The response for one failure reason, built once per plugin and reason."""
        cached = self._failures.get((status, description))
        if cached is not None:
            return cached
        headers: Headers = [(b"content-type", PROBLEM_CONTENT_TYPE.encode())]
        if status == 503:
            body = problem_body(CREDENTIALS_UNAVAILABLE, f"Cannot verify the token: {description}.")
            headers.append((b"retry-after", b"5"))
        else:
            if status == 400:
                body = problem_body(BAD_REQUEST, f"Invalid request: {description}.")
            else:
                body = problem_body(
                    UNAUTHORIZED, f"Invalid bearer token: {description}.", **self._expected
                )
            challenge = f'{self._realm}, error="{error}", error_description="{description}"'
            headers.append((b"www-authenticate", challenge.encode()))
        response = _Reply(status, body, headers)
        if len(self._failures) < 256:
            self._failures[(status, description)] = response
        return response

    # -- verification -----------------------------------------------------------------

    async def _verify(self, token: str, now: float) -> _Identity:
        """Check signature and claims; raises `_Reject` with the reason."""
        header, payload, signing_input, signature = self._parse(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise _Reject("unsupported algorithm")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _Reject("malformed kid")
        if "crit" in header:
            raise _Reject("unsupported critical header")
        iss = payload.get("iss")

        gateway = self._issuer_keys
        if gateway is not None and iss == gateway.issuer:
            self._verify_gateway(gateway, header, alg, kid, signing_input, signature)
            issuer_ok = True
        else:
            await self._verify_signature(alg, kid, signing_input, signature)
            issuer_ok = not self._issuers or (isinstance(iss, str) and iss in self._issuers)
            gateway = None
        self._check_claims(payload, now, issuer_ok)
        jti: str | None = None
        client_id: str | None = None
        if gateway is not None:
            raw_jti = payload.get("jti")
            if not isinstance(raw_jti, str) or not raw_jti:
                raise _Reject("missing claim: jti")
            raw_client = payload.get("client_id")
            client_id = raw_client if isinstance(raw_client, str) else None
            if gateway.is_revoked(raw_jti) or (
                client_id is not None and gateway.client_revoked(client_id)
            ):
                raise _Reject("token revoked")
            jti = raw_jti
        consumer = self._consumer(payload, gateway is not None)
        scopes = _scopes(payload)
        if kid:
            credential_id = "jwt:" + kid
        elif isinstance(iss, str) and iss:
            credential_id = "jwt:" + iss
        else:
            credential_id = "jwt"
        headers: list[tuple[bytes, bytes]] = []
        if consumer is not None:
            headers.extend(consumer.upstream_headers)
        headers.append((_CREDENTIAL_HEADER, credential_id.encode("utf-8")))
        if scopes:
            headers.append((_SCOPES_HEADER, " ".join(sorted(scopes)).encode("utf-8")))
        if not all(field_value_bytes(v) for _, v in headers):
            # kid, iss and scp come from the token; they go upstream in headers.
            raise _Reject("malformed token")
        exp = _number(payload, "exp")
        until = now + self._cache_ttl
        if exp is not None:
            until = min(until, exp + self._leeway)
        return _Identity(
            consumer, credential_id, scopes, tuple(headers), until, jti, payload, client_id
        )

    @staticmethod
    def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
        parts = token.split(".")
        if len(parts) != 3:
            raise _Reject("malformed token")
        try:
            header = _json_decode(_b64decode(parts[0]).decode("utf-8"))
            payload = _json_decode(_b64decode(parts[1]).decode("utf-8"))
            signature = _b64decode(parts[2])
        except (binascii.Error, ValueError, RecursionError):
            raise _Reject("malformed token") from None
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise _Reject("malformed token")
        return header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature

    def _verify_gateway(
        self,
        gateway: IssuerKeys,
        header: dict[str, Any],
        alg: str,
        kid: str | None,
        signing_input: bytes,
        signature: bytes,
    ) -> None:
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _GATEWAY_TYP:
            raise _Reject("token type must be at+jwt")
        if kid is None:
            raise _Reject("missing kid")
        jwk = gateway.key_for(kid)
        if jwk is None:
            raise _Reject("unknown kid")
        if jwk.algorithm_name != alg or not usable(alg, jwk.key):
            raise _Reject("algorithm not allowed for this key")
        if not ALGORITHMS[alg].verify(signing_input, jwk.key, signature):
            raise _Reject("bad signature")

    async def _verify_signature(
        self, alg: str, kid: str | None, signing_input: bytes, signature: bytes
    ) -> None:
        """Verify with a static or JWKS key pinned to `alg`; raises `_Reject` otherwise.

        A kid names one key. Without a kid, the static keys pinned to `alg` are
        tried first, then the JWKS keys (at most `_MAX_CANDIDATES` each), so a
        kid-less token costs a bounded number of signature checks.
        """
        verifier = ALGORITHMS[alg]
        tried = False
        if kid is not None:
            static = self._static_by_kid.get(kid)
            if static is not None:
                if static.algorithm != alg:
                    raise _Reject("algorithm not allowed for this key")
                if not verifier.verify(signing_input, static.key, signature):
                    raise _Reject("bad signature")
                return
        else:
            for candidate in self._static_by_alg.get(alg, ())[:_MAX_CANDIDATES]:
                tried = True
                if verifier.verify(signing_input, candidate.key, signature):
                    return
        if alg in self._jwks_algorithms:
            for key in (await self._jwks_candidates(alg, kid))[:_MAX_CANDIDATES]:
                tried = True
                if verifier.verify(signing_input, key, signature):
                    return
        if tried:
            raise _Reject("bad signature")
        if alg not in self._static_by_alg and alg not in self._jwks_algorithms:
            raise _Reject("algorithm not allowed")
        raise _Reject("unknown kid" if kid is not None else "no key for this algorithm")

    async def _jwks_candidates(self, alg: str, kid: str | None) -> list[object]:
        found: list[object] = []
        unavailable = False
        for jwks in self._jwks:
            if alg not in jwks.algorithms:
                continue
            try:
                keys = await jwks.source.get(kid)
            except JwksUnavailableError:
                unavailable = True
                continue
            for remote in keys:
                if (remote.alg is None or remote.alg == alg) and usable(alg, remote.jwk.key):
                    found.append(remote.jwk.key)
        if not found and unavailable:
            raise _Reject("key set unavailable", status=503)
        return found

    def _check_claims(self, payload: dict[str, Any], now: float, issuer_ok: bool) -> None:
        leeway = self._leeway
        for claim in self._required:
            if claim not in payload:
                raise _Reject(f"missing claim: {claim}")
        exp = _number(payload, "exp")
        if exp is not None and now >= exp + leeway:
            raise _Reject("token expired")
        nbf = _number(payload, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise _Reject("token not yet valid")
        iat = _number(payload, "iat")
        if iat is not None and now + leeway < iat:
            raise _Reject("token issued in the future")
        if self._max_lifetime is not None:
            if exp is None:
                raise _Reject("missing claim: exp")
            start = iat if iat is not None else now
            if exp - start > self._max_lifetime + leeway:
                raise _Reject("token lifetime too long")
        if not issuer_ok:
            raise _Reject("wrong issuer")
        if self._audiences:
            aud = payload.get("aud")
            if isinstance(aud, str):
                ok = aud in self._audiences
            elif isinstance(aud, list):
                ok = any(isinstance(a, str) and a in self._audiences for a in aud)
            else:
                ok = False
            if not ok:
                raise _Reject("wrong audience")

    def _consumer(self, payload: dict[str, Any], gateway: bool) -> ConsumerInfo | None:
        if gateway:
            # The built-in server puts the consumer's username in `sub`
            # (identity/oauth_server.py), whatever this plugin maps for other issuers.
            name = payload.get("sub")
            consumer = self._by_username.get(name) if isinstance(name, str) else None
        else:
            value = payload.get(self._consumer_claim)
            consumer = self._consumer_map.get(value) if isinstance(value, str) else None
        if consumer is None:
            # The gateway's own tokens always name a consumer: one this route does not
            # accept (another organization's) is refused, never let through unmapped.
            if self._allow_unmapped and not gateway:
                return None
            raise _Reject("unknown consumer")
        if consumer.suspended:
            raise _Reject("consumer suspended")
        return consumer
