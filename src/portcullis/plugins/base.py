"""The plugin contract and the per-request context passed through a plugin chain.

A plugin is built once per config snapshot from its validated config; it keeps no
per-request state on `self`. Per-request data lives on `RequestContext`, a small
`__slots__` object. Phases a plugin does not declare cost nothing: the chain only
calls the handlers of the phases each plugin declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from portcullis.asgi import Scope
from portcullis.model.plugins.base import BODY_BUFFER_LIMIT as BODY_BUFFER_LIMIT
from portcullis.model.plugins.base import PluginConfig as PluginConfig
from portcullis.plugins.credential_sources import Source

if TYPE_CHECKING:
    from portcullis.analytics.record import RequestRecord
    from portcullis.identity.consumers import ConsumerInfo
    from portcullis.model.config import Route
    from portcullis.plugins.api_operations import Located
    from portcullis.plugins.env import PluginEnv

Headers = list[tuple[bytes, bytes]]
_NO_PINS: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class PluginResponse:
    """A response produced by a plugin instead of proxying (e.g. 401, 413, 429)."""

    status: int
    body: bytes = b""
    headers: Headers = field(default_factory=list)


class ServiceView(Protocol):
    """What a plugin may read of the matched route's compiled service."""

    @property
    def name(self) -> str: ...


class RouteView(Protocol):
    """What a plugin may read of the matched route: the runtime's compiled route
    (`runtime.snapshot.CompiledRoute`) satisfies it, so the plugin layer needs no
    import of the runtime above it. The proxy's own context subclass
    (`proxy.app.ProxyContext`) narrows `route` to the compiled route."""

    @property
    def name(self) -> str: ...
    @property
    def route(self) -> Route: ...
    @property
    def service(self) -> ServiceView: ...


class RequestContext:
    """Per-request state shared by the proxy and the plugins of one request."""

    __slots__ = (
        "api",
        "api_pins",
        "api_version",
        "body_limit",
        "cache_key",
        "claims",
        "client_ip",
        "consumer",
        "content_length",
        "credential_id",
        "environment",
        "error_kind",
        "flags",
        "headers",
        "matched_length",
        "method",
        "operation",
        "path",
        "plan",
        "priority",
        "query_string",
        "request_id",
        "response_headers",
        "route",
        "sandbox",
        "scope",
        "scopes",
        "upstream_headers",
    )

    def __init__(
        self,
        scope: Scope,
        route: RouteView,
        method: str,
        path: str,
        client_ip: str,
        request_id: str,
        content_length: int | None,
        upstream_headers: Headers | None = None,
    ) -> None:
        self.scope = scope
        self.route = route
        self.method = method
        self.path = path
        self.client_ip = client_ip
        self.request_id = request_id
        self.content_length = content_length
        # The client's request headers, as received (lower-case names).
        self.headers: Headers = scope["headers"]
        # Set by an auth plugin: who is calling, with which credential and scopes.
        self.consumer: ConsumerInfo | None = None
        self.credential_id: str | None = None
        # The credential's environment (an API key's: production/staging/development);
        # None for credentials without one (JWT, OAuth tokens), treated as production.
        self.environment: str | None = None
        self.scopes: frozenset[str] = frozenset()
        # The traffic plan the credential names (an API key's plan); beats the consumer's.
        self.plan: str | None = None
        # The verified token payload when jwt-auth authenticated the request.
        self.claims: Mapping[str, Any] | None = None
        # The headers the upstream request will carry: plugins may add to and remove
        # from this list (e.g. drop a credential, add identity headers).
        self.upstream_headers: Headers = upstream_headers if upstream_headers is not None else []
        # When a plugin changes the query (e.g. removes an api key parameter): the new one.
        self.query_string: bytes | None = None
        # Extra headers for the client response (also added to plugin-produced replies).
        self.response_headers: Headers = []
        # For the request log: `analytics.record.Flag` bits a plugin sets (RATE_LIMITED,
        # AUTH_FAILED, CACHE_HIT...) and the problem slug when a plugin refused the request.
        self.flags = 0
        self.error_kind: str | None = None
        # The priority class the request runs with (critical/high/normal/low), if any.
        self.priority: str | None = None
        # A lower request-body limit for this request (bytes), enforced on streamed bodies too.
        self.body_limit: int | None = None
        # Set by response-cache on a miss: where the response is to be stored.
        self.cache_key: str | None = None
        # The API product and version the request was served as (model/apis.py), for the
        # request log and rollups; `sandbox` when a non-production key was sent to the
        # version's sandbox (another service or a mock).
        self.api: str | None = None
        self.api_version: str | None = None
        self.sandbox = False
        # API version pins of the credential (an API key's metadata `api_version:<api>`),
        # set by its auth plugin: api name -> version, beating the consumer's pins.
        self.api_pins: Mapping[str, str] = _NO_PINS
        # How many characters of `path` the route's path matcher consumed (what a route
        # with strip_path removes before the upstream; set by the proxy).
        self.matched_length = 0
        # The operation of the API version's description the request is (looked up once,
        # by `plugins.api_operations.locate`, for request-validator and sandbox mocks).
        self.operation: Located | None = None


Phase = Literal["access", "response", "request_body", "response_body", "log"]
PHASES: tuple[Phase, ...] = ("access", "response", "request_body", "response_body", "log")
ConfigT = TypeVar("ConfigT", bound=PluginConfig)


class Plugin(Generic[ConfigT]):
    """Base class of a handler: `Plugin[ItsConfig]`, with `name`, `priority`, `config_model`,
    the `phases` it runs in, and a method per phase.

    Higher `priority` runs first in the access phase (Kong's convention). `phases` is
    explicit: a class that implements a phase method it does not declare, or declares
    a phase it does not implement, is refused when it is defined. `self.config` is the
    validated `ConfigT` and `self.env` the worker's runtime services (plugins/env.py).
    """

    name: ClassVar[str]
    priority: ClassVar[int]
    config_model: type[ConfigT]
    phases: ClassVar[frozenset[Phase]] = frozenset()
    # `analytics.record.Flag` bits the request log gets when this plugin refuses a request
    # (auth plugins: AUTH_FAILED, limits: RATE_LIMITED).
    refusal_flag: ClassVar[int] = 0
    # Where an auth plugin reads its credential (header, query parameter, cookie): the
    # request inspector redacts these names on the routes the plugin serves, derived
    # when the snapshot compiles (runtime/captures.py). Set by the plugin's constructor.
    credential_sources: tuple[Source, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        implemented = {p for p in PHASES if getattr(cls, p) is not getattr(Plugin, p)}
        if implemented != cls.phases:
            raise TypeError(
                f"{cls.__qualname__}: phases {sorted(cls.phases)} must name exactly the phase "
                f"methods it implements {sorted(implemented)}"
            )

    def __init__(self, config: ConfigT, env: PluginEnv) -> None:
        self.config = config
        self.env = env

    @classmethod
    def build(cls, config: ConfigT, env: PluginEnv) -> Plugin[ConfigT]:
        """The handler for `config`: a plugin whose phases depend on its config (a
        costly phase only when asked for) returns an instance of a subclass."""
        return cls(config, env)

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        """Runs before the upstream call; returning a response short-circuits the request."""
        return None

    def response(self, ctx: RequestContext, status: int, headers: Headers) -> None:
        """Runs when the upstream response head is known; may edit `headers` in place."""
        return

    def request_body(self, ctx: RequestContext, body: bytes) -> bytes | PluginResponse | None:
        """Sees the whole request body before it goes upstream; returns a new body, None
        (unchanged), or a `PluginResponse` that answers the request instead (a refusal).

        Runs after every `access` handler, in priority order, only on routes that have
        a plugin implementing it, and only for bodies up to `BODY_BUFFER_LIMIT` (a
        larger body streams upstream untouched and this phase is skipped). The proxy
        sends the result with a Content-Length; headers go through
        `ctx.upstream_headers`.
        """
        return None

    def response_body(
        self, ctx: RequestContext, status: int, headers: Headers, body: bytes
    ) -> bytes | None:
        """Sees the whole upstream response body (after `response`); returns a new body or None.

        Only plugins that implement this make the proxy buffer a response, and only
        bodies up to `BODY_BUFFER_LIMIT`: a larger or unbounded body streams through
        untouched and this phase is skipped for it (a cache must not store it, a
        transform must not half-apply). Returning None keeps the body as it is; the
        proxy fixes Content-Length when the body changes. Runs in priority order.
        """
        return None

    def log(self, record: RequestRecord) -> None:
        """Sees the finished request's record (after the response went out, refusals and
        WebSocket handshakes included). Runs on the request's task: it must only hand the
        record on (a queue append), never wait or raise."""
        return


# A built plugin of any config type, as chains and registries hold them.
AnyPlugin = Plugin[Any]


@dataclass(frozen=True, slots=True)
class PluginChain:
    """The plugins of one route, split by phase and ordered by priority at compile time."""

    access: tuple[AnyPlugin, ...] = ()
    response: tuple[AnyPlugin, ...] = ()
    body: tuple[AnyPlugin, ...] = ()
    request_body: tuple[AnyPlugin, ...] = ()
    log: tuple[AnyPlugin, ...] = ()

    @classmethod
    def from_plugins(cls, plugins: list[AnyPlugin]) -> PluginChain:
        ordered = sorted(plugins, key=lambda p: -p.priority)
        return cls(
            access=tuple(p for p in ordered if "access" in p.phases),
            response=tuple(p for p in ordered if "response" in p.phases),
            body=tuple(p for p in ordered if "response_body" in p.phases),
            request_body=tuple(p for p in ordered if "request_body" in p.phases),
            log=tuple(p for p in ordered if "log" in p.phases),
        )


EMPTY_CHAIN = PluginChain()
