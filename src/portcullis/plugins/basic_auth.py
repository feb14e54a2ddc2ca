"""basic-auth: authenticate requests by HTTP Basic credentials (RFC 7617).

The credentials (`Authorization: Basic base64(username:password)`) name a consumer's
basic-auth credential by its username (identity/credential_store.py; managed with
the admin API under `/consumers/{username}/basic-auth` and `portcullis credentials`).
The credential is found through the worker's `ConsumerCredentialCache`, the
password checked against its argon2id hash there, and a verified pair cached (keyed
by a keyed hash of the credential id and password, never the password itself) so
only the first request pays for argon2 (docs/decisions/029).

As for key-auth: only consumers of the route's organization (`env.consumers`, the
route's view) are accepted, so a credential of another organization's consumer gets
the same 401 as an unknown username or a wrong password; a suspended consumer is
told so; the store being unreachable (or too many cold verifies queued) is a 503,
not a 401. Every 401 carries `WWW-Authenticate: Basic realm="...", charset="UTF-8"`
and a problem naming `Authorization: Basic <credentials>` (credential_sources.py).

On success `ctx.consumer` and `ctx.credential_id` are set and the upstream gets the
consumer's identity headers plus `X-Credential-Id`; client-sent identity headers
are dropped, and with `hide_credentials` (the default) so is `Authorization`.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import ClassVar

from portcullis.analytics.record import Flag
from portcullis.identity.credential_cache import Rejection
from portcullis.identity.credential_lookup import VerifyBusy
from portcullis.identity.credential_store import CredentialKind
from portcullis.model.plugins.basic_auth import BasicAuthConfig
from portcullis.plugins.auth_replies import (
    CONTENT_TYPE,
    DropNames,
    Reply,
    anonymous_consumer,
    anonymous_headers,
    credential_cache,
    set_identity,
)
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.credential_sources import Source, expected_member, required_detail
from portcullis.plugins.env import PluginEnv
from portcullis.problems import CREDENTIALS_UNAVAILABLE, UNAUTHORIZED, problem_body

_AUTHORIZATION = b"authorization"
_BASIC = b"basic "
# base64 of a 512-byte username plus a 1 KiB password, with room to spare.
_MAX_ENCODED = 2048


class BasicAuth(Plugin[BasicAuthConfig]):
    """Resolves HTTP Basic credentials to a consumer (see the module doc)."""

    name: ClassVar[str] = "basic-auth"
    priority: ClassVar[int] = 1250
    refusal_flag = Flag.AUTH_FAILED
    config_model = BasicAuthConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: BasicAuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.credentials = credential_cache(env, self.name)
        self._consumer = env.consumers.by_username.get
        self._anonymous = anonymous_consumer(config.anonymous, env, self.name)
        self._anonymous_headers = anonymous_headers(self._anonymous)
        self._drop = DropNames(
            frozenset({_AUTHORIZATION}) if config.hide_credentials else frozenset()
        )
        source = Source("header", "Authorization", "Basic")
        self.credential_sources = (source,)
        expected = expected_member([source])
        challenge = (b"www-authenticate", f'Basic realm="{config.realm}", charset="UTF-8"'.encode())
        self._missing = Reply(
            401,
            problem_body(
                UNAUTHORIZED,
                required_detail("A username and password", "credentials", [source]),
                **expected,
            ),
            [CONTENT_TYPE, challenge],
        )
        self._invalid = Reply(
            401,
            problem_body(
                UNAUTHORIZED,
                "Invalid username or password: send `Authorization: Basic <credentials>`.",
                **expected,
            ),
            [CONTENT_TYPE, challenge],
        )
        self._suspended = Reply(
            401,
            problem_body(
                UNAUTHORIZED, "The consumer of these credentials is suspended.", **expected
            ),
            [CONTENT_TYPE, challenge],
        )
        self._unavailable = Reply(
            503,
            problem_body(CREDENTIALS_UNAVAILABLE, "The credentials cannot be verified right now."),
            [CONTENT_TYPE, (b"retry-after", b"1")],
        )

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        encoded = None
        for name, value in ctx.headers:
            if name == _AUTHORIZATION and value[:6].lower() == _BASIC:
                encoded = value[6:].strip()
                break
        if not encoded:
            if self._anonymous is None:
                return self._missing.response()
            set_identity(ctx, self._drop, self._anonymous_headers)
            ctx.consumer = self._anonymous
            return None
        pair = _decode(encoded)
        if pair is None:
            return self._invalid.response()
        username, password = pair
        outcome = await self.credentials.accepted(CredentialKind.BASIC, username, self._consumer)
        if isinstance(outcome, Rejection):
            if outcome is Rejection.UNAVAILABLE:
                return self._unavailable.response()
            # Unknown, or another organization's consumer's: the same answer.
            return self._invalid.response()
        record, consumer = outcome
        ctx.credential_id = record.id
        try:
            verified = await self.credentials.verify_password(record, password)
        except VerifyBusy:
            return self._unavailable.response()
        if not verified:
            return self._invalid.response()
        if consumer.suspended:
            return self._suspended.response()
        set_identity(
            ctx, self._drop, [*consumer.upstream_headers, (b"x-credential-id", record.id.encode())]
        )
        ctx.consumer = consumer
        return None


def _decode(encoded: bytes) -> tuple[str, str] | None:
    """`(username, password)` of RFC 7617 credentials; None when malformed."""
    if len(encoded) > _MAX_ENCODED:
        return None
    try:
        text = b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, sep, password = text.partition(":")
    if not sep or not username:
        return None
    return username, password
