"""API versions on the data plane: which version of an API a request is served as.

Compiled from `GatewayConfig.apis` with the snapshot (see `model/apis.py` for the
entity). Every route an API names gets a `RoutePlan` and one or two built-in access
steps in its plugin chain; a route no API names gets nothing, so it pays nothing.

- `VersionFromRequest` (priority 1800: after cors and ip-restriction, before the auth
  plugins) handles what the request alone decides. On a route of one version (path
  versioning) that is the version; on a route the API's versions share it reads the
  version the request names (the selection header, else the query parameter, else
  `Accept: application/vnd.<api>.<version>+json`): an unknown one is a 400 listing
  the API's versions. Running before authentication means the version's Deprecation
  and Sunset headers are on every answer, a 401 included, and a sunset version's 410
  costs no credential lookup.
- `VersionFromConsumer` (priority 1000: right after the auth plugins, before acl,
  limits and the rest) resolves a shared-route request that named no version: the
  API key's pin (its metadata `api_version:<api>`), else the consumer's pin
  (`Consumer.api_versions`), else the API's `default_version`, else a
  400 naming the accepted ways. It then routes non-production credentials
  (`ctx.environment` staging/development) to the version's sandbox. It is only in
  the chains of routes that need it (shared routes, versions with a sandbox).

Once the version is known: `ctx.api` / `ctx.api_version` are set; the version's
precomputed `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link` headers go into
`ctx.response_headers`, which the proxy adds to upstream responses, plugin replies and
its own problems alike (the upstream's own Deprecation/Sunset give way to them:
`LifecycleHeaders`); from `sunset_at` on (or when `retired`) the request is answered
410 `version-sunset` naming the successor; inside a brownout window `share` of the
version's requests get that 410, chosen by a counter (exactly `share` of them, evenly
spread, no randomness); the version's `service`, on a shared route, serves the request
instead of the route's own (a precompiled variant of the route, so the rest of the
proxy reads `ctx.route` as usual). Answers on a shared route carry `Vary` naming the
selection header (and `Accept` with media-type selection) for caches in front of the
gateway; the response-cache plugin keys on `ctx.api_version` and `ctx.sandbox`.

Sandboxes: a request whose credential is not production gets `ctx.sandbox = True`; with
`sandbox.service` it goes to that service, with `sandbox.mock` it keeps the route's
service and the request-validator plugin answers it from the OpenAPI description.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote_to_bytes

from portcullis.model.apis import Api, ApiVersion, VersionStatus
from portcullis.model.config import Consumer, Route
from portcullis.model.plugins.base import PluginConfig
from portcullis.plugins.base import (
    AnyPlugin,
    Headers,
    Phase,
    Plugin,
    PluginResponse,
    RequestContext,
)
from portcullis.plugins.env import PluginEnv
from portcullis.problems import PROBLEM_CONTENT_TYPE, ProblemKind, problem_body

if TYPE_CHECKING:
    from portcullis.runtime.snapshot import CompiledRoute, CompiledService

VERSION_SUNSET = ProblemKind("version-sunset", "This API version is no longer served", 410)
UNKNOWN_VERSION = ProblemKind("unknown-api-version", "The API has no such version", 400)
VERSION_REQUIRED = ProblemKind("api-version-required", "The request names no API version", 400)

# Credentials of these environments are sent to a version's sandbox.
SANDBOX_ENVIRONMENTS = frozenset({"staging", "development"})
_PROBLEM = (b"content-type", PROBLEM_CONTENT_TYPE.encode())
_PPM = 1_000_000


class _NoConfig(PluginConfig):
    """The built-in steps are configured by the `apis` entity, not by a plugin config."""


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def lifecycle_headers(version: ApiVersion) -> Headers:
    """The headers every response of `version` carries, from its lifecycle fields.

    `Deprecation: @<epoch>` as soon as `deprecated_at` is set: RFC 9745 §2.1 lets the
    date lie in the future (an announced deprecation), so the header needs no clock.
    `Sunset` (an HTTP-date) likewise as soon as `sunset_at` is set (RFC 8594 §3).
    Both are whole seconds, floored, so Sunset >= Deprecation still holds.
    """
    headers: Headers = []
    if version.deprecated_at is not None:
        headers.append((b"deprecation", b"@%d" % int(version.deprecated_at.timestamp() // 1)))
    if version.sunset_at is not None:
        headers.append((b"sunset", _http_date(version.sunset_at).encode()))
    if version.deprecation_link is not None:
        headers.append((b"link", f'<{version.deprecation_link}>; rel="deprecation"'.encode()))
    if version.sunset_link is not None:
        headers.append((b"link", f'<{version.sunset_link}>; rel="sunset"'.encode()))
    return headers


# (api, version, start, end, share in parts per million): a window's identity.
WindowKey = tuple[str, str, float, float, int]
CarriedWindows = Mapping[WindowKey, "BrownoutWindow"]


class BrownoutWindow:
    """An announced window in which `share` of the version's requests are refused.

    Which ones: a credit counter in parts per million (Bresenham), so over any run of
    requests in the window exactly floor(n * share) are refused, evenly spread; no
    randomness, and a test with an injected clock knows which. The count is this
    worker's (each worker refuses its share of what it serves); a new snapshot carries
    it over from the window with the same `key` (API, version, start, end, share), so
    frequent config changes cannot keep a low share from ever refusing.
    """

    __slots__ = ("_credit", "_ppm", "body", "end", "key", "start")

    def __init__(
        self, key: WindowKey, share: float, body: bytes, carried: BrownoutWindow | None
    ) -> None:
        self.key = key
        self.start = key[2]
        self.end = key[3]
        self._ppm = round(share * _PPM)
        self._credit: int = carried._credit if carried is not None else 0
        self.body = body

    def refuses(self) -> bool:
        """Counts one request of the window; whether it is one of the refused share."""
        self._credit += self._ppm
        if self._credit >= _PPM:
            self._credit -= _PPM
            return True
        return False


class CompiledVersion:
    """One version with its answers precomputed: headers, the 410 and the brownouts."""

    __slots__ = (
        "api",
        "gone_at",
        "gone_body",
        "gone_headers",
        "headers",
        "name",
        "replaces",
        "sandbox",
        "sandbox_service",
        "service",
        "windows",
    )

    def __init__(
        self,
        api: Api,
        version: ApiVersion,
        successor_link: bytes | None,
        carried: CarriedWindows,
    ) -> None:
        self.api = api.name
        self.name = version.name
        self.headers = tuple(lifecycle_headers(version))
        # The upstream's own fields of these names give way to the version's (two
        # Deprecation or Sunset fields would make both invalid).
        self.replaces = frozenset(n for n, _ in self.headers if n != b"link")
        self.service = version.service
        self.sandbox = version.sandbox is not None
        self.sandbox_service = version.sandbox.service if version.sandbox is not None else None
        # When requests start being answered 410 (-inf: retired, always; None: never).
        self.gone_at: float | None = None
        if version.status is VersionStatus.retired:
            self.gone_at = float("-inf")
        elif version.sunset_at is not None:
            self.gone_at = version.sunset_at.timestamp()
        self.gone_headers: tuple[tuple[bytes, bytes], ...] = (_PROBLEM,)
        if successor_link is not None:
            self.gone_headers += ((b"link", successor_link),)
        announced = [
            {"start": _iso(b.start), "end": _iso(b.end), "share": b.share}
            for b in version.brownouts
        ]
        self.gone_body = (
            self._problem(api, version, None, announced) if self.gone_at is not None else b""
        )
        windows = []
        for i, b in enumerate(version.brownouts):
            key = (api.name, version.name, b.start.timestamp(), b.end.timestamp())
            full = (*key, round(b.share * _PPM))
            body = self._problem(api, version, announced[i], announced)
            windows.append(BrownoutWindow(full, b.share, body, carried.get(full)))
        self.windows = tuple(windows)

    @staticmethod
    def _problem(
        api: Api,
        version: ApiVersion,
        window: dict[str, object] | None,
        announced: list[dict[str, object]],
    ) -> bytes:
        what = f"Version {version.name!r} of API {api.name!r}"
        if window is not None:
            assert version.sunset_at is not None  # brownouts need one (model)
            detail = (
                f"{what} is in a scheduled brownout until {window['end']}: "
                f"{window['share']:.0%} of its requests are refused ahead of its sunset on "
                f"{_iso(version.sunset_at)}."
            )
        elif version.status is VersionStatus.retired:
            detail = f"{what} is retired."
        else:
            assert version.sunset_at is not None
            detail = f"{what} was sunset on {_iso(version.sunset_at)}."
        if version.successor is not None:
            detail += f" Use version {version.successor!r}."
        extensions: dict[str, Any] = {"api": api.name, "version": version.name}
        if version.successor is not None:
            extensions["successor"] = version.successor
        if version.sunset_at is not None:
            extensions["sunset"] = _iso(version.sunset_at)
        if window is not None:
            extensions["brownout"] = window
        if announced:
            extensions["brownouts"] = announced
        return problem_body(VERSION_SUNSET, detail, **extensions)

    def refusal(self, now: float) -> bytes | None:
        """The 410 body when this request is refused at `now` (sunset or brownout)."""
        gone_at = self.gone_at
        if gone_at is None:
            return None
        if now >= gone_at:
            return self.gone_body
        for window in self.windows:
            if window.start <= now < window.end and window.refuses():
                return window.body
        return None


@dataclass(slots=True)
class ApiPlan:
    """An API as requests on its shared routes choose among its versions."""

    name: str
    versions: dict[str, CompiledVersion]
    header: bytes | None
    query: bytes | None
    media_prefix: bytes | None
    default: CompiledVersion | None
    pins: dict[str, CompiledVersion]
    required_body: bytes
    # `Vary` naming the request headers that select the version (caches downstream).
    vary: tuple[tuple[bytes, bytes], ...] = ()

    def named(self, ctx: RequestContext) -> str | None:
        """The version the request names (header, then query, then media type), if any."""
        if self.header is not None:
            for name, value in ctx.headers:
                if name == self.header:
                    text = value.strip()
                    if text:
                        return text.decode("latin-1")
                    break
        if self.query is not None:
            found = _query_value(ctx.scope.get("query_string", b""), self.query)
            if found:
                return found
        if self.media_prefix is not None:
            for name, value in ctx.headers:
                if name == b"accept":
                    found = _media_version(value, self.media_prefix)
                    if found:
                        return found
        return None

    def unknown(self, name: str) -> bytes:
        listed = ", ".join(self.versions)
        return problem_body(
            UNKNOWN_VERSION,
            f"API {self.name!r} has no version {name[:64]!r}; its versions are {listed}.",
            api=self.name,
            versions=list(self.versions),
        )


def _query_value(query: bytes, key: bytes) -> str | None:
    for pair in query.split(b"&"):
        name, eq, value = pair.partition(b"=")
        if eq and unquote_to_bytes(name.replace(b"+", b" ")) == key:
            return unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace").strip()
    return None


def _media_version(accept: bytes, prefix: bytes) -> str | None:
    """`v2` from `application/vnd.demo.v2+json` among the Accept header's media ranges."""
    for member in accept.split(b","):
        media = member.split(b";", 1)[0].strip()
        if (
            len(media) > len(prefix) + 5
            and media[: len(prefix)].lower() == prefix
            and media[-5:].lower() == b"+json"
        ):
            return media[len(prefix) : -5].decode("latin-1")
    return None


@dataclass(slots=True)
class RoutePlan:
    """What one route of an API does about versions (see the module docstring)."""

    api: ApiPlan
    # The version of a path-versioned route; None on a route the versions share.
    static: CompiledVersion | None
    # The route compiled with another service: a version's, or a sandbox's (by name).
    variants: dict[str, CompiledRoute] = field(default_factory=dict)
    needs_consumer: bool = False

    def steps(self, env: PluginEnv) -> list[AnyPlugin]:
        steps: list[AnyPlugin] = [VersionFromRequest(self, env)]
        if self.needs_consumer:
            steps.append(VersionFromConsumer(self, env))
        versions = self.api.versions.values() if self.static is None else (self.static,)
        if any(v.replaces for v in versions):
            steps.append(LifecycleHeaders(self, env))
        return steps

    def bind(self, route: CompiledRoute, services: dict[str, CompiledService]) -> None:
        """Compile the route's variants once the route itself is compiled."""
        wanted: set[str] = set()
        for v in self.api.versions.values() if self.static is None else (self.static,):
            if v.service is not None and self.static is None:
                wanted.add(v.service)
            if v.sandbox_service is not None:
                wanted.add(v.sandbox_service)
        self.variants = {name: replace(route, service=services[name]) for name in sorted(wanted)}

    def serve(
        self, ctx: RequestContext, version: CompiledVersion, clock: Callable[[], float]
    ) -> PluginResponse | None:
        """The request is `version`'s: mark it, add its headers, refuse or re-route it.

        The clock is read only for versions with a sunset (or retired)."""
        ctx.api_version = version.name
        if version.headers:
            ctx.response_headers.extend(version.headers)
        if version.gone_at is not None:
            refusal = version.refusal(clock())
            if refusal is not None:
                ctx.error_kind = VERSION_SUNSET.slug
                return PluginResponse(410, refusal, list(version.gone_headers))
        if version.service is not None and self.static is None:
            ctx.route = self.variants[version.service]
        return None

    def refuse(self, ctx: RequestContext, kind: ProblemKind, body: bytes) -> PluginResponse:
        ctx.error_kind = kind.slug
        return PluginResponse(kind.status, body, [_PROBLEM])


class _VersionStep(Plugin[_NoConfig]):
    """A built-in access step of a route's version plan (not a configurable plugin)."""

    config_model = _NoConfig

    def __init__(self, plan: RoutePlan, env: PluginEnv) -> None:
        super().__init__(_NoConfig(), env)
        self.plan = plan
        self.clock = env.clock


class VersionFromRequest(_VersionStep):
    """Built-in: the version a route or the request itself names (before authentication)."""

    name: ClassVar[str] = "api-version"
    priority: ClassVar[int] = 1800
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        plan = self.plan
        ctx.api = plan.api.name
        if plan.static is not None:
            return plan.serve(ctx, plan.static, self.clock)
        ctx.response_headers.extend(plan.api.vary)
        named = plan.api.named(ctx)
        if named is None:
            return None  # VersionFromConsumer decides, once the consumer is known
        version = plan.api.versions.get(named)
        if version is None:
            return plan.refuse(ctx, UNKNOWN_VERSION, plan.api.unknown(named))
        return plan.serve(ctx, version, self.clock)


class VersionFromConsumer(_VersionStep):
    """Built-in, after the auth plugins: the consumer's pin or the default, and sandboxes."""

    name: ClassVar[str] = "api-version-consumer"
    priority: ClassVar[int] = 1000
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        plan = self.plan
        api = plan.api
        if ctx.api_version is None:
            version = None
            if ctx.api_pins:
                # The key's pin; one naming a version the API lacks is passed over (key
                # metadata is free-form, not checked against the APIs).
                version = api.versions.get(ctx.api_pins.get(api.name, ""))
            if version is None and ctx.consumer is not None:
                version = api.pins.get(ctx.consumer.username)
            if version is None:
                version = api.default
            if version is None:
                return plan.refuse(ctx, VERSION_REQUIRED, api.required_body)
            refused = plan.serve(ctx, version, self.clock)
            if refused is not None:
                return refused
        else:
            version = plan.static or api.versions[ctx.api_version]
        if version.sandbox and ctx.environment in SANDBOX_ENVIRONMENTS:
            ctx.sandbox = True
            if version.sandbox_service is not None:
                ctx.route = plan.variants[version.sandbox_service]
        return None


def _successor_link(api: Api, version: ApiVersion, routes: dict[str, Route]) -> bytes | None:
    """`Link: <path>; rel="successor-version"` (RFC 5829) to the successor's first
    route path, when the successor is path-versioned by a literal path."""
    successor = api.version(version.successor) if version.successor is not None else None
    if successor is None:
        return None
    for name in successor.routes:
        route = routes.get(name)
        for path in route.paths if route is not None else ():
            if not path.startswith("~"):
                return f'<{path.removeprefix("=")}>; rel="successor-version"'.encode()
    return None


def _accepted_ways(api: Api) -> list[str]:
    s = api.selection
    ways = []
    if s.header is not None:
        ways.append(f"the {s.header} header")
    if s.query is not None:
        ways.append(f"the {s.query!r} query parameter")
    if s.media_type:
        ways.append(f"Accept: application/vnd.{api.name}.<version>+json")
    return ways


def compile_api(
    api: Api,
    routes: dict[str, Route],
    pins: Mapping[str, str],
    carried: CarriedWindows,
) -> ApiPlan:
    """The API's versions compiled, with its consumers' `pins` (username -> version)."""
    versions = {
        v.name: CompiledVersion(api, v, _successor_link(api, v, routes), carried)
        for v in api.versions
    }
    s = api.selection
    ways = _accepted_ways(api)
    varies = [name for name in (s.header, "Accept" if s.media_type else None) if name]
    required = problem_body(
        VERSION_REQUIRED,
        f"API {api.name!r} needs a version ({', '.join(versions)}): name it with "
        + (" or ".join(ways) if ways else "a path of one version")
        + ".",
        api=api.name,
        versions=list(versions),
        accepted=ways,
    )
    return ApiPlan(
        name=api.name,
        versions=versions,
        header=s.header.lower().encode("latin-1") if s.header else None,
        query=s.query.encode() if s.query else None,
        media_prefix=f"application/vnd.{api.name.lower()}.".encode() if s.media_type else None,
        default=versions[api.default_version] if api.default_version is not None else None,
        pins={user: versions[v] for user, v in pins.items() if v in versions},
        required_body=required,
        vary=((b"vary", ", ".join(varies).encode()),) if varies else (),
    )


def route_plans(
    apis: Iterable[Api],
    routes: Iterable[Route],
    consumers: Iterable[Consumer],
    carried: CarriedWindows,
) -> dict[str, RoutePlan]:
    """The plan of every route some API names (route name -> plan); brownout counts
    carry over from `carried` (the previous snapshot's windows)."""
    by_name = {r.name: r for r in routes}
    pins: dict[str, dict[str, str]] = {}
    for c in consumers:
        for api_name, version in c.api_versions.items():
            pins.setdefault(api_name, {})[c.username] = version
    plans: dict[str, RoutePlan] = {}
    for api in apis:
        plan = compile_api(api, by_name, pins.get(api.name, {}), carried)
        for name in api.routes:
            plans[name] = RoutePlan(plan, None, needs_consumer=True)
        for v in api.versions:
            for name in v.routes:
                plans[name] = RoutePlan(
                    plan, plan.versions[v.name], needs_consumer=v.sandbox is not None
                )
    return plans


def brownout_windows(plans: Mapping[str, RoutePlan]) -> dict[WindowKey, BrownoutWindow]:
    """Every brownout window of the compiled APIs, for the next snapshot to carry over."""
    return {
        w.key: w
        for plan in plans.values()
        for version in plan.api.versions.values()
        for w in version.windows
    }


class LifecycleHeaders(_VersionStep):
    """Built-in response step: the version's Deprecation / Sunset replace the upstream's.

    Only on routes with a version that has them; the version's own header tuples are in
    the response (from `ctx.response_headers`) and recognised by identity.
    """

    name: ClassVar[str] = "api-version-headers"
    priority: ClassVar[int] = 1800
    phases: ClassVar[frozenset[Phase]] = frozenset({"response"})

    def response(self, ctx: RequestContext, status: int, headers: Headers) -> None:
        plan = self.plan
        version = plan.static
        if version is None:
            if ctx.api_version is None:
                return
            version = plan.api.versions[ctx.api_version]
        replaces = version.replaces
        if not replaces:
            return
        ours = version.headers
        headers[:] = [h for h in headers if h[0] not in replaces or any(h is mine for mine in ours)]
