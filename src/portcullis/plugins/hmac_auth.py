"""hmac-auth: authenticate requests by an RFC 9421 HTTP message signature (hmac-sha256).

The client signs the request with a consumer's hmac-auth credential (a key id
`pch_…` and a shared secret, managed under `/consumers/{username}/hmac-auth` and
`portcullis credentials`) and sends `Signature-Input` and `Signature`:

    Signature-Input: sig1=("@method" "@authority" "@path" "content-digest");\
created=1733616000;keyid="pch_…";alg="hmac-sha256";nonce="…"
    Signature: sig1=:<base64 HMAC-SHA256 of the signature base>:

The plugin takes the first signature with a `keyid`, and refuses it (401) unless:

- `alg`, when present, is `hmac-sha256`;
- it covers every `required_components` (`@target-uri` stands for `@path`,
  `@authority`, `@scheme` and `@query`) and, when the request has a body,
  `content-digest` (RFC 9530; `sha-256` or `sha-512`, checked against the body in
  the `request_body` phase; the body is then limited to `max_body` bytes);
- `created` lies within `clock_skew` seconds of the gateway's clock (either side)
  and `expires`, if present, has not passed;
- the key id is a credential of a consumer the route accepts (its organization's),
  and the HMAC over the signature base (RFC 9421 §2.5) matches, in constant time;
- its `nonce` (required unless `require_nonce` is false) was not seen before within
  the window: remembered per worker in a bounded set, or with `nonce_store: redis`
  in the gateway's Redis (`SET NX` with the window as expiry), shared by every
  worker and node. A nonce is remembered only once its signature verified.

401s carry `WWW-Authenticate: Signature realm="...", alg="hmac-sha256", headers=
"@method @authority @path"` and RFC 9421 §5.1's `Accept-Signature` naming the
components, `created` and `nonce`; the problem's detail says what was expected.
The key store or Redis being unreachable is a 503. On success, identity as for
key-auth; with `hide_credentials`, `Signature` and `Signature-Input` are removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import OrderedDict
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

import structlog

from portcullis.analytics.record import Flag
from portcullis.identity.credential_cache import Rejection
from portcullis.identity.credential_store import CredentialKind
from portcullis.model.plugins.base import BODY_BUFFER_LIMIT
from portcullis.model.plugins.hmac_auth import HmacAuthConfig
from portcullis.plugins.auth_replies import (
    CONTENT_TYPE,
    DropNames,
    Reply,
    credential_cache,
    set_identity,
)
from portcullis.plugins.base import Headers, Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.credential_sources import Source, expected_member
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.message_signatures import (
    Malformed,
    RequestTarget,
    SignatureInput,
    content_digests,
    field_value,
    parse_signature_inputs,
    parse_signatures,
    signature_base,
)
from portcullis.problems import CREDENTIALS_UNAVAILABLE, UNAUTHORIZED, problem_body

if TYPE_CHECKING:
    from portcullis.redis_client import SharedRedis

log = structlog.get_logger(__name__)

ALGORITHM = "hmac-sha256"
_SIGNATURE_INPUT = b"signature-input"
_SIGNATURE = b"signature"
_CONTENT_DIGEST = "content-digest"
_DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_TARGET_URI_COVERS = frozenset({"@path", "@authority", "@scheme", "@query"})
_MAX_HEADER = 8192


class Failure(Enum):
    """Why a signature was refused; the value is the client-facing description."""

    MALFORMED = "the Signature-Input or Signature header is malformed"
    ALGORITHM = f"the signature's alg is not {ALGORITHM}"
    COMPONENTS = "the signature does not cover the required components"
    DIGEST_REQUIRED = "a request with a body must sign its content-digest"
    CREATED = "the signature has no created time or it is outside the allowed clock skew"
    EXPIRED = "the signature has expired"
    NONCE_REQUIRED = "the signature has no nonce"
    REPLAYED = "the signature's nonce was already used"
    INVALID = "invalid signature or key id"
    DIGEST = "the Content-Digest does not match the body"
    SUSPENDED = "the consumer of this key is suspended"


class MemoryNonces:
    """Nonces seen in the last window, per worker; bounded (oldest dropped first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def first_use(self, nonce: str, now: float, ttl: float) -> bool:
        seen = self._seen
        # Insertion order is expiry order (one ttl per plugin instance): prune the front.
        while seen:
            oldest, expiry = next(iter(seen.items()))
            if expiry > now:
                break
            del seen[oldest]
        previous = seen.get(nonce)
        if previous is not None and previous > now:
            return False
        seen[nonce] = now + ttl
        while len(seen) > self.capacity:
            seen.popitem(last=False)
        return True


class RedisNonces:
    """Nonces shared by every worker and node: `SET key 1 NX PX ttl`, over the worker's
    pipelined connection (redis_pipe.py) where it can go, else redis-py. Fails (503)
    when Redis does not answer within `timeout`: a replay is never let through."""

    def __init__(self, redis: SharedRedis, prefix: str, timeout: float = 1.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout

    async def first_use(self, nonce: str, now: float, ttl: float) -> bool:
        key = self._prefix + nonce
        px = max(1, int(ttl * 1000))
        pipe = self._redis.pipe
        if pipe is not None:
            stored = await pipe.execute("SET", key, "1", "NX", "PX", px, timeout=self._timeout)
        else:
            stored = await asyncio.wait_for(
                self._redis.client.set(key, b"1", nx=True, px=px), self._timeout
            )
        return stored is not None and stored is not False


# Memory nonce sets outlive snapshot swaps: one per plugin instance per worker.
_MEMORY_NONCES: dict[str, MemoryNonces] = {}


class HmacAuth(Plugin[HmacAuthConfig]):
    """Verifies an RFC 9421 hmac-sha256 signature (see the module doc)."""

    name: ClassVar[str] = "hmac-auth"
    priority: ClassVar[int] = 1250
    refusal_flag = Flag.AUTH_FAILED
    config_model = HmacAuthConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access", "request_body"})

    def __init__(self, config: HmacAuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.credentials = credential_cache(env, self.name)
        self._consumer = env.consumers.by_username.get
        self._clock = env.clock
        self._skew = config.clock_skew
        self._required = frozenset(config.required_components)
        self._require_nonce = config.require_nonce
        self._body_limit = min(config.max_body, BODY_BUFFER_LIMIT)
        if config.nonce_store == "redis":
            if env.redis is None:
                raise ValueError("hmac-auth: nonce_store redis needs PORTCULLIS_REDIS_URL")
            self.nonces: MemoryNonces | RedisNonces = RedisNonces(
                env.redis, f"pc:hmac-nonce:{env.instance}:"
            )
        else:
            memory = _MEMORY_NONCES.setdefault(env.instance, MemoryNonces(config.max_nonces))
            memory.capacity = config.max_nonces  # the latest config's bound
            self.nonces = memory
        self._drop = DropNames(
            frozenset({_SIGNATURE, _SIGNATURE_INPUT}) if config.hide_credentials else frozenset()
        )

        components = " ".join(config.required_components)
        quoted = " ".join(f'"{c}"' for c in config.required_components)
        challenge = (
            b"www-authenticate",
            f'Signature realm="{config.realm}", alg="{ALGORITHM}", headers="{components}"'.encode(),
        )
        accept = f'sig1=({quoted});alg="{ALGORITHM}";created'
        if config.require_nonce:
            accept += ";nonce"
        headers: Headers = [CONTENT_TYPE, challenge, (b"accept-signature", accept.encode())]
        self.credential_sources = (
            Source("header", "Signature-Input"),
            Source("header", "Signature"),
        )
        expected = expected_member(list(self.credential_sources))
        wanted = (
            f'an RFC 9421 {ALGORITHM} signature covering {quoted} (and "content-digest" '
            f"when there is a body), with `created` within {config.clock_skew:g} s"
            + (" and a `nonce`" if config.require_nonce else "")
        )
        self._missing = Reply(
            401,
            problem_body(
                UNAUTHORIZED,
                f"A signed request is required: send the `Signature-Input` and `Signature` "
                f"headers, {wanted}.",
                **expected,
            ),
            headers,
        )
        self._failures = {
            failure: Reply(
                401,
                problem_body(
                    UNAUTHORIZED,
                    f"{failure.value[0].upper()}{failure.value[1:]}: expected {wanted}.",
                    **expected,
                ),
                headers,
            )
            for failure in Failure
        }
        self._unavailable = Reply(
            503,
            problem_body(CREDENTIALS_UNAVAILABLE, "The signature cannot be verified right now."),
            [CONTENT_TYPE, (b"retry-after", b"1")],
        )

    def _fail(self, failure: Failure) -> PluginResponse:
        return self._failures[failure].response()

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        headers = ctx.headers
        inputs_text = field_value(headers, _SIGNATURE_INPUT)
        signatures_text = field_value(headers, _SIGNATURE)
        if inputs_text is None or signatures_text is None:
            return self._missing.response()
        if len(inputs_text) > _MAX_HEADER or len(signatures_text) > _MAX_HEADER:
            return self._fail(Failure.MALFORMED)
        try:
            inputs = parse_signature_inputs(inputs_text)
            signatures = parse_signatures(signatures_text)
        except Malformed:
            return self._fail(Failure.MALFORMED)
        signed = next((i for i in inputs if isinstance(i.param("keyid"), str)), None)
        if signed is None or signed.label not in signatures:
            return self._fail(Failure.MALFORMED)
        failure = self._check_params(signed, ctx)
        if failure is not None:
            return self._fail(failure)
        key_id = signed.param("keyid")
        assert isinstance(key_id, str)
        outcome = await self.credentials.accepted(CredentialKind.HMAC, key_id, self._consumer)
        if isinstance(outcome, Rejection):
            if outcome is Rejection.UNAVAILABLE:
                return self._unavailable.response()
            return self._fail(Failure.INVALID)
        record, consumer = outcome
        target = RequestTarget.of(ctx.scope, ctx.method, headers)
        base = signature_base(signed, target, headers)
        if base is None:
            return self._fail(Failure.COMPONENTS)
        expected = hmac.new(record.secret, base.encode("utf-8"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signatures[signed.label]):
            return self._fail(Failure.INVALID)
        ctx.credential_id = record.id
        nonce = signed.param("nonce")
        if isinstance(nonce, str):
            try:
                fresh = await self.nonces.first_use(
                    f"{key_id}:{nonce}", self._clock(), 2 * self._skew
                )
            except Exception as exc:
                log.warning("hmac_auth.nonce_store_failed", error=type(exc).__name__)
                return self._unavailable.response()
            if not fresh:
                return self._fail(Failure.REPLAYED)
        if consumer.suspended:
            return self._fail(Failure.SUSPENDED)
        # Always: an HTTP/2 body may come without Content-Length or Transfer-Encoding, and
        # one larger than the buffering limit would skip the digest check.
        ctx.body_limit = (
            self._body_limit if ctx.body_limit is None else min(ctx.body_limit, self._body_limit)
        )
        set_identity(
            ctx, self._drop, [*consumer.upstream_headers, (b"x-credential-id", record.id.encode())]
        )
        ctx.consumer = consumer
        return None

    def _check_params(self, signed: SignatureInput, ctx: RequestContext) -> Failure | None:
        alg = signed.param("alg")
        if alg is not None and alg != ALGORITHM:
            return Failure.ALGORITHM
        covered = set(signed.components)
        if "@target-uri" in covered:
            covered |= _TARGET_URI_COVERS
        if not self._required <= covered:
            return Failure.COMPONENTS
        if _has_body(ctx) and _CONTENT_DIGEST not in covered:
            return Failure.DIGEST_REQUIRED
        created = signed.param("created")
        now = self._clock()
        if not isinstance(created, int) or isinstance(created, bool):
            return Failure.CREATED
        if abs(now - created) > self._skew:
            return Failure.CREATED
        expires = signed.param("expires")
        if isinstance(expires, int) and not isinstance(expires, bool) and now > expires:
            return Failure.EXPIRED
        if self._require_nonce and not isinstance(signed.param("nonce"), str):
            return Failure.NONCE_REQUIRED
        return None

    def request_body(self, ctx: RequestContext, body: bytes) -> bytes | PluginResponse | None:
        if ctx.consumer is None or ctx.credential_id is None:
            return None  # anonymous or answered already
        text = field_value(ctx.headers, b"content-digest")
        if text is None:
            return self._fail(Failure.DIGEST_REQUIRED)
        try:
            digests = content_digests(text)
        except Malformed:
            return self._fail(Failure.DIGEST)
        checked = False
        for algorithm, digest in digests.items():
            make = _DIGESTS.get(algorithm)
            if make is None:
                continue
            if not hmac.compare_digest(make(body).digest(), digest):
                return self._fail(Failure.DIGEST)
            checked = True
        return None if checked else self._fail(Failure.DIGEST)


def _has_body(ctx: RequestContext) -> bool:
    if ctx.content_length:
        return True
    return any(name == b"transfer-encoding" for name, _ in ctx.headers)
