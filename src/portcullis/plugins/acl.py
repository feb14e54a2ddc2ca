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

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from portcullis.analytics.record import Flag
from portcullis.model.types import Name
from portcullis.plugins.base import Headers, Plugin, PluginConfig, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.problems import (
    FORBIDDEN,
    INSUFFICIENT_SCOPE,
    PROBLEM_CONTENT_TYPE,
    UNAUTHORIZED,
    problem_body,
)

# RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
ScopeToken = Annotated[str, Field(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")]
_CONTENT_TYPE = (b"content-type", PROBLEM_CONTENT_TYPE.encode())
_GROUPS_HEADER = b"x-consumer-groups"
# Distinct "missing scopes" answers remembered (one per subset seen; a plain bound).
_MISSING_MEMO = 256


class AclConfig(PluginConfig):
    allow: list[Name] | None = Field(default=None, description="consumer groups allowed")
    deny: list[Name] | None = Field(default=None, description="consumer groups refused")
    required_scopes: list[ScopeToken] = Field(
        default_factory=list,
        description="scopes the credential must all carry",
    )
    hide_groups_header: bool = Field(
        default=False, description="do not send X-Consumer-Groups upstream"
    )
    realm: str = Field(
        default="portcullis",
        pattern=r'^[^"\\\x00-\x1f\x7f]{1,128}$',
        description="realm of the WWW-Authenticate challenges",
    )

    @model_validator(mode="after")
    def _one_list(self) -> AclConfig:
        if self.allow is not None and self.deny is not None:
            raise ValueError("set allow or deny, not both")
        if self.allow is None and self.deny is None and not self.required_scopes:
            raise ValueError("set allow, deny or required_scopes")
        return self


class Acl(Plugin):
    """Group and scope checks on the authenticated consumer (see the module doc)."""

    name: ClassVar[str] = "acl"
    priority: ClassVar[int] = 955
    refusal_flag = Flag.AUTH_FAILED
    config_model: ClassVar[type[PluginConfig]] = AclConfig

    def __init__(self, config: PluginConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        assert isinstance(config, AclConfig)
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
