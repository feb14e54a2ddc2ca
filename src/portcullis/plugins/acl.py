"""acl: which authenticated consumers may use a route or service, and with which scopes.

Runs after the auth plugins (they set `ctx.consumer` and `ctx.scopes`):

- `allow`: the consumer must belong to at least one of these groups; or
- `deny`: the consumer must belong to none of them (one list or the other);
- `required_scopes`: the credential must carry every one of these scopes. A
  shortfall is a 403 problem of type `insufficient-scope` that lists the missing
  scopes in `detail` and in the `missing_scopes` member, with the RFC 6750
  `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."` challenge.

Without a consumer (no auth plugin ran, or it let the request through without
one) the answer is 401. A route meant to be public configures its auth plugin's
`anonymous` consumer; that consumer's groups are then checked like anyone's.

`hide_groups_header` keeps the consumer's groups (`X-Consumer-Groups`) from the
upstream.

Priority 955: below every auth plugin (jwt-auth 1450, key-auth 1250) and, unlike
Kong (acl 950 after request-size-limiting 951), above request-size-limit (951) and
the traffic-control plugins, following this project's access-phase order
(auth → acl/scopes → rate limit / quota → size limit): an authorization decision
comes first, and a consumer who may not use a route is never counted against
limits or told about body sizes.
"""

from __future__ import annotations

from typing import ClassVar

from portcullis.analytics.record import Flag
from portcullis.model.plugins.acl import (
    AclConfig,
)
from portcullis.plugins.base import (
    Headers,
    Phase,
    Plugin,
    PluginResponse,
    RequestContext,
)
from portcullis.plugins.env import PluginEnv
from portcullis.problems import (
    FORBIDDEN,
    INSUFFICIENT_SCOPE,
    PROBLEM_CONTENT_TYPE,
    UNAUTHORIZED,
    problem_body,
)

_CONTENT_TYPE = (b"content-type", PROBLEM_CONTENT_TYPE.encode())
_GROUPS_HEADER = b"x-consumer-groups"
# Distinct "missing scopes" answers remembered (one per subset seen; a plain bound).
_MISSING_MEMO = 256


class Acl(Plugin[AclConfig]):
    """Group and scope checks on the authenticated consumer (see the module doc)."""

    name: ClassVar[str] = "acl"
    priority: ClassVar[int] = 955
    refusal_flag = Flag.AUTH_FAILED
    config_model = AclConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: AclConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._allow = frozenset(config.allow) if config.allow is not None else None
        self._deny = frozenset(config.deny or ())
        self._required = frozenset(config.required_scopes)
        self._hide_groups = config.hide_groups_header
        self._realm = config.realm
        self._unauthenticated = problem_body(UNAUTHORIZED, "Authentication is required.")
        self._unauthenticated_headers: Headers = [
            _CONTENT_TYPE,
            (b"www-authenticate", f'Bearer realm="{config.realm}"'.encode()),
        ]
        self._denied = problem_body(FORBIDDEN, "This consumer may not use this route.")
        self._missing: dict[frozenset[str], tuple[bytes, bytes]] = {}

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        consumer = ctx.consumer
        if consumer is None:
            return PluginResponse(401, self._unauthenticated, list(self._unauthenticated_headers))
        groups = consumer.groups
        if (self._allow is not None and self._allow.isdisjoint(groups)) or (
            self._deny and not self._deny.isdisjoint(groups)
        ):
            return PluginResponse(403, self._denied, [_CONTENT_TYPE])
        if self._required and not self._required <= ctx.scopes:
            body, challenge = self._insufficient(self._required - ctx.scopes)
            return PluginResponse(403, body, [_CONTENT_TYPE, (b"www-authenticate", challenge)])
        if self._hide_groups:
            upstream = ctx.upstream_headers
            upstream[:] = [h for h in upstream if h[0] != _GROUPS_HEADER]
        return None

    def _insufficient(self, missing: frozenset[str]) -> tuple[bytes, bytes]:
        """The problem body and challenge for a set of missing scopes (memoised)."""
        known = self._missing.get(missing)
        if known is not None:
            return known
        names = sorted(missing)
        listed = ", ".join(names)
        body = problem_body(
            INSUFFICIENT_SCOPE,
            f"The credential lacks the required scope{'s' if len(names) > 1 else ''}: {listed}.",
            missing_scopes=names,
        )
        challenge = (
            f'Bearer realm="{self._realm}", error="insufficient_scope", '
            f'scope="{" ".join(sorted(self._required))}"'
        ).encode()
        if len(self._missing) >= _MISSING_MEMO:
            self._missing.clear()
        self._missing[missing] = (body, challenge)
        return body, challenge
