"""key-auth: authenticate requests by API key, then tell the upstream who is calling.

Where the key comes from, in order of precedence (the order of `header_names`,
then `query_param`):

- `Authorization: Bearer <key>` when `authorization` is in `header_names` (other
  schemes, e.g. Basic, are left alone: they are not for us);
- any other listed header, whose whole value is the key (default `X-API-Key`);
- opt-in, a query parameter.

The key is resolved through the worker's `CredentialCache` (no store access on a
cache hit), then checked: key status, expiry, end of a rotation grace period, the
consumer (it must be one the route accepts and not be suspended), the key's IP
allowlist and allowed origins. The consumers a route accepts are compiled into the
plugin (`env.consumers`, the route organization's view, `ConsumerIndex.view`): a key
of another organization's consumer gets the same 401 as an unknown key.

Failures are RFC 9457 problems. 401s carry an RFC 6750-style challenge: a key sent
as a Bearer token is answered with `WWW-Authenticate: Bearer realm=..., error=
"invalid_token", error_description=...`; a key sent in another header or the query
with the same parameters under the `Key` scheme (API keys have no registered HTTP
auth scheme; `Key` names what the client should send without pretending to be
OAuth). A request with no key gets one challenge per configured way to send one
and no `error` (RFC 6750 §3.1). An unknown key and a malformed one get exactly the
same answer, so responses never reveal whether a key exists; an expired, rotated,
revoked or suspended key (which the caller does hold) says which, without the
operator's reason. A key used from a disallowed IP or origin gets 403. When the key
store cannot be reached the answer is 503 (retry), not 401 (the key may be fine).

On success the plugin sets `ctx.consumer`, `ctx.credential_id` (the key id),
`ctx.environment` (the key's), `ctx.api_pins` (its `api_version:<api>` metadata),
`ctx.scopes` and `ctx.plan` (the key's traffic plan, if any), and sends upstream
`X-Consumer-Id`, `X-Consumer-Name` (plus custom id and groups when set),
`X-Credential-Id` and `X-Consumer-Scopes` (space-separated, sorted). Whatever the
client sent under `X-Consumer-*`, `X-Credential-*` or `X-Anonymous-Consumer` is
removed first, so identity headers cannot be spoofed.
With `hide_credentials` (the default) the key's header or query parameter is
removed before proxying.

`anonymous` names a consumer used when the request carries no key at all (public
routes that still want a consumer identity, e.g. for acl or limits); one of the
instance's organization (model/tenancy.py). A key that is
presented and fails is still refused: a wrong key never silently downgrades to
anonymous.
"""

from __future__ import annotations

from enum import Enum
from ipaddress import IPv6Address, ip_address
from typing import ClassVar
from urllib.parse import unquote_plus

import structlog

from portcullis.analytics.record import Flag
from portcullis.identity.consumers import ConsumerInfo
from portcullis.identity.credential_cache import CredentialCache, Rejection
from portcullis.identity.key_records import KeyRecord, KeyStatus
from portcullis.model.plugins.key_auth import (
    KeyAuthConfig,
)
from portcullis.plugins.auth_replies import CONTENT_TYPE as _CONTENT_TYPE
from portcullis.plugins.auth_replies import IDENTITY_HEADER_PREFIXES as IDENTITY_HEADER_PREFIXES
from portcullis.plugins.auth_replies import DropNames as _DropNames
from portcullis.plugins.auth_replies import Reply as _Reply
from portcullis.plugins.auth_replies import forbidden as _forbidden
from portcullis.plugins.auth_replies import sentence as _sentence
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
from portcullis.plugins.env import PluginEnv
from portcullis.problems import (
    CREDENTIALS_UNAVAILABLE,
    UNAUTHORIZED,
    problem_body,
)

log = structlog.get_logger(__name__)

_AUTHORIZATION = b"authorization"
_BEARER = b"bearer "
# Distinct scope sets whose X-Consumer-Scopes header is remembered (a plain bound).
_SCOPE_HEADER_MEMO = 1024


class Failure(Enum):
    """Why a presented key was refused; the value is the client-facing description."""

    INVALID = "invalid API key"
    EXPIRED = "the API key has expired"
    ROTATED = "the API key was rotated and has expired"
    REVOKED = "the API key has been revoked"
    SUSPENDED = "the API key is suspended"
    CONSUMER_SUSPENDED = "the consumer of this API key is suspended"


class KeyAuth(Plugin[KeyAuthConfig]):
    """Resolves the presented API key to a consumer (see the module doc)."""

    name: ClassVar[str] = "key-auth"
    priority: ClassVar[int] = 1250
    refusal_flag = Flag.AUTH_FAILED
    config_model = KeyAuthConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: KeyAuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        if env.credentials is None:
            raise ValueError("key-auth needs the worker's credential cache (env.credentials)")
        self.credentials: CredentialCache = env.credentials
        self._clock = env.clock
        self._consumer = env.consumers.by_username.get
        names = [n.encode("ascii") for n in config.header_names]
        self._names = frozenset(names)
        self._ranks = {name: rank for rank, name in enumerate(names)}
        self._query = config.query_param
        self._query_probe = f"{config.query_param}=".encode() if config.query_param else None
        self._hide = config.hide_credentials
        # Hidden credential headers go by name; Authorization only when it carried the key.
        hidden = self._names - {_AUTHORIZATION} if self._hide else frozenset()
        self._drop = _DropNames(hidden)
        self._drop_with_authorization = _DropNames(
            hidden | {_AUTHORIZATION} if self._hide else hidden
        )
        self._anonymous: ConsumerInfo | None = None
        if config.anonymous is not None:
            self._anonymous = env.consumers.get(config.anonymous)
            if self._anonymous is None:
                # Fail closed: without its consumer, anonymous access is simply off.
                log.warning("key_auth.anonymous_consumer_missing", consumer=config.anonymous)
        self._anonymous_headers: Headers = (
            [*self._anonymous.upstream_headers, (b"x-anonymous-consumer", b"true")]
            if self._anonymous is not None
            else []
        )
        self._scope_headers: dict[frozenset[str], tuple[tuple[bytes, bytes], ...]] = {}

        # Every refusal is precomputed: (status, body, headers).
        realm = config.realm
        bearer_ok = _AUTHORIZATION in self._names
        key_ok = bool(self._names - {_AUTHORIZATION}) or config.query_param is not None
        # Every refusal names where the key was expected (see credential_sources).
        sources = [Source.header(n) for n in config.header_names]
        if config.query_param is not None:
            sources.append(Source("query", config.query_param))
        self.credential_sources = tuple(sources)
        expected = expected_member(sources)
        key_params = challenge_params(sources)
        challenges: Headers = []
        if bearer_ok:
            challenges.append((b"www-authenticate", f'Bearer realm="{realm}"'.encode()))
        if key_ok:
            challenges.append((b"www-authenticate", f'Key realm="{realm}"{key_params}'.encode()))
        self._missing = _Reply(
            401,
            problem_body(UNAUTHORIZED, required_detail("An API key", "key", sources), **expected),
            [_CONTENT_TYPE, *challenges],
        )
        self._failures: dict[tuple[Failure, bool], _Reply] = {}
        for failure in Failure:
            body = problem_body(UNAUTHORIZED, _sentence(failure.value), **expected)
            for bearer in (True, False):
                scheme = "Bearer" if bearer else "Key"
                challenge = (
                    f'{scheme} realm="{realm}"{"" if bearer else key_params}, '
                    f'error="invalid_token", error_description="{failure.value}"'
                )
                self._failures[failure, bearer] = _Reply(
                    401, body, [_CONTENT_TYPE, (b"www-authenticate", challenge.encode())]
                )
        self._ip_denied = _forbidden("This API key may not be used from this IP address.")
        self._origin_denied = _forbidden("This API key may not be used from this origin.")
        self._unavailable = _Reply(
            503,
            problem_body(CREDENTIALS_UNAVAILABLE, "The API key cannot be verified right now."),
            [_CONTENT_TYPE, (b"retry-after", b"1")],
        )

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        presented, bearer = self._from_headers(ctx.headers)
        from_query = False
        if presented is None and self._query_probe is not None:
            presented = self._from_query(ctx)
            from_query = presented is not None
        if presented is None:
            if self._anonymous is None:
                return self._missing.response()
            self._set_identity(ctx, self._anonymous_headers)
            ctx.consumer = self._anonymous
            return None
        outcome = await self.credentials.resolve(presented)
        if isinstance(outcome, Rejection):
            if outcome is Rejection.UNAVAILABLE:
                return self._unavailable.response()
            return self._failures[Failure.INVALID, bearer].response()
        record = outcome
        # Known even when refused below: the request log (and anomaly detection per key)
        # attributes refusals of a suspended, expired or IP-denied key to that key.
        ctx.credential_id = record.id
        # Checks, cheapest and most common first.
        if record.status is not KeyStatus.active:
            failure = Failure.REVOKED if record.status is KeyStatus.revoked else Failure.SUSPENDED
            return self._failures[failure, bearer].response()
        if record.expires_at is not None or record.grace_until is not None:
            now = self._clock()
            if record.expires_at is not None and now >= record.expires_at:
                return self._failures[Failure.EXPIRED, bearer].response()
            if record.grace_until is not None and now >= record.grace_until:
                return self._failures[Failure.ROTATED, bearer].response()
        consumer = self._consumer(record.consumer)
        if consumer is None:
            # The key outlived its consumer: as good as unknown.
            return self._failures[Failure.INVALID, bearer].response()
        if consumer.suspended:
            return self._failures[Failure.CONSUMER_SUSPENDED, bearer].response()
        if record.ip_allowlist and not _ip_allowed(ctx.client_ip, record):
            return self._ip_denied.response()
        if record.allowed_origins and not _origin_allowed(ctx.headers, record.allowed_origins):
            return self._origin_denied.response()

        self.credentials.record_use(record.id)
        if from_query and self._hide:
            ctx.query_string = self._strip_query(ctx)
        self._set_identity(ctx, self._identity_headers(record, consumer), bearer=bearer)
        ctx.consumer = consumer
        ctx.credential_id = record.id
        ctx.scopes = record.scopes
        ctx.plan = record.plan
        ctx.environment = record.environment.value
        ctx.api_pins = record.api_versions
        return None

    # -- where the key is -------------------------------------------------------------

    def _from_headers(self, headers: Headers) -> tuple[str | None, bool]:
        """The key from the highest-precedence header that carries one, and whether it was
        a Bearer token."""
        ranks = self._ranks
        best: bytes | None = None
        best_rank = len(ranks)
        bearer = False
        for name, value in headers:
            rank = ranks.get(name)
            if rank is None or rank >= best_rank:
                continue
            if name == _AUTHORIZATION:
                if value[:7].lower() != _BEARER:
                    continue
                value = value[7:]
            value = value.strip()
            if value:
                best, best_rank, bearer = value, rank, name == _AUTHORIZATION
                if rank == 0:
                    break
        if best is None:
            return None, False
        return best.decode("latin-1"), bearer

    def _raw_query(self, ctx: RequestContext) -> bytes:
        if ctx.query_string is not None:
            return ctx.query_string
        raw: bytes = ctx.scope.get("query_string", b"")
        return raw

    def _from_query(self, ctx: RequestContext) -> str | None:
        query = self._raw_query(ctx)
        assert self._query_probe is not None
        # Quick miss when the name can't be there, plain or encoded.
        if self._query_probe not in query and b"%" not in query and b"+" not in query:
            return None
        for part in query.split(b"&"):
            name, sep, value = part.partition(b"=")
            if sep and unquote_plus(name.decode("latin-1")) == self._query:
                key = unquote_plus(value.decode("latin-1")).strip()
                return key or None
        return None

    def _strip_query(self, ctx: RequestContext) -> bytes:
        kept = [
            part
            for part in self._raw_query(ctx).split(b"&")
            if part and unquote_plus(part.partition(b"=")[0].decode("latin-1")) != self._query
        ]
        return b"&".join(kept)

    # -- what the upstream sees -------------------------------------------------------

    def _identity_headers(self, record: KeyRecord, consumer: ConsumerInfo) -> Headers:
        # Keys share a handful of scope sets: their header is encoded once per set (a
        # frozenset caches its hash, so the lookup is cheap).
        scopes = self._scope_headers.get(record.scopes)
        if scopes is None:
            scopes = (
                ((b"x-consumer-scopes", " ".join(sorted(record.scopes)).encode()),)
                if record.scopes
                else ()
            )
            if len(self._scope_headers) >= _SCOPE_HEADER_MEMO:
                self._scope_headers.clear()
            self._scope_headers[record.scopes] = scopes
        return [*consumer.upstream_headers, (b"x-credential-id", record.id.encode()), *scopes]

    def _set_identity(
        self, ctx: RequestContext, identity: Headers, *, bearer: bool = False
    ) -> None:
        """Drop spoofed identity headers and (when hidden) the credential, add ours.

        `bearer`: the key came in `Authorization`, which then goes too.
        """
        drop = self._drop_with_authorization if bearer else self._drop
        upstream = ctx.upstream_headers
        kept = [h for h in upstream if not drop[h[0]]]
        kept.extend(identity)
        upstream[:] = kept


def _ip_allowed(client_ip: str, record: KeyRecord) -> bool:
    try:
        address = ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in record.ip_allowlist)


def _origin_allowed(headers: Headers, allowed: frozenset[str]) -> bool:
    """True if the request's Origin is one of the key's; a key bound to origins needs one."""
    for name, value in headers:
        if name == b"origin":
            origin = value.decode("latin-1").strip()
            return origin in allowed or origin.lower().rstrip("/") in allowed
    return False
