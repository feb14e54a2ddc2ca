"""Compile a `GatewayConfig` into the immutable snapshot the data plane serves from.

Everything that can be decided once per config is decided here: the router index,
each route's plugin chain, each service's pool, timeouts and rewritten base path.
A config change builds a new snapshot and swaps one reference; requests already
in flight finish on the snapshot they started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from portcullis.contract.index import ContractIndex
from portcullis.identity.consumers import ConsumerIndex
from portcullis.logship.shipper import Shipper
from portcullis.model import GatewayConfig, PluginInstance, Route, Service, Target, Upstream
from portcullis.model.diff import plugin_key
from portcullis.model.tenancy import plugin_owner
from portcullis.model.traffic import TrafficRules
from portcullis.plugins.base import EMPTY_CHAIN, AnyPlugin, PluginChain
from portcullis.plugins.env import DEFAULT_ENV, PluginEnv
from portcullis.plugins.registry import PLUGINS, build_plugin
from portcullis.plugins.sandbox_mock import SandboxMock, SandboxMockConfig
from portcullis.runtime.captures import DEFAULT_REDACTION, CaptureBoard, CaptureSlot, Redaction
from portcullis.runtime.router import Router, RouteSpec
from portcullis.runtime.versions import (
    BrownoutWindow,
    RoutePlan,
    WindowKey,
    brownout_windows,
    route_plans,
)
from portcullis.store.sealing import unseal_key
from portcullis.upstream.balancer import RetryBudget, UpstreamPool, build_pools
from portcullis.upstream.shedding import ConcurrencyLimiter, PriorityRules, Shedding, build_limiters
from portcullis.upstream.tls import OriginTls, TlsCache, TlsSettings
from portcullis.upstream.transport import TransportTimeouts


@dataclass(frozen=True, slots=True)
class CompiledService:
    """A service with everything the proxy needs per request precomputed."""

    name: str
    scheme: str
    base_path: str
    pool: UpstreamPool
    timeouts: TransportTimeouts
    total_timeout: float | None
    retry_attempts: int
    retry_statuses: frozenset[int]
    retry_budget: RetryBudget
    hash_on: str
    hash_on_header: bytes | None
    # POST/PATCH carrying an Idempotency-Key may be retried like idempotent methods.
    retry_with_idempotency_key: bool = False
    # Load shedding on the service's upstream (None: adaptive concurrency is off).
    shedding: Shedding | None = None
    # TLS to an https origin (None: the transport's default, the system store).
    tls: OriginTls | None = None


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    route: Route
    service: CompiledService
    chain: PluginChain
    strip_path: bool
    preserve_host: bool
    # The route's path pattern(s), for the request log (groups /users/1 and /users/2).
    path_template: str = ""
    # What `proxy.target.route_request` does with %2F, %5C and backslashes in the path.
    encoded_slashes: str = "reject"
    # The redirect status a plain-HTTP request gets (0: none), and the
    # Strict-Transport-Security value TLS requests' responses carry (None: none).
    https_redirect: int = 0
    hsts: bytes | None = None
    # The request inspector's flag (the worker's slot for this route name, holding the
    # active capture session or None) and what a capture redacts (runtime/captures.py).
    capture: CaptureSlot = field(default_factory=CaptureSlot)
    redaction: Redaction = DEFAULT_REDACTION


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    config: GatewayConfig
    router: Router[CompiledRoute]
    pools: dict[str, UpstreamPool] = field(default_factory=dict)
    env: PluginEnv = DEFAULT_ENV
    # The scheme active health checks use per pool (from the services that use it).
    schemes: dict[str, str] = field(default_factory=dict)
    # Adaptive concurrency limiters by upstream name (state carried across snapshots).
    limiters: dict[str, ConcurrencyLimiter] = field(default_factory=dict)
    # Retry budgets by service name (state carried across snapshots).
    budgets: dict[str, RetryBudget] = field(default_factory=dict)
    # API versions' brownout windows (their counts carried across snapshots).
    brownouts: dict[WindowKey, BrownoutWindow] = field(default_factory=dict)
    # The log shippers its log plugins feed (logship/shipper.py): a swap retires the
    # previous snapshot's shippers that this one no longer uses.
    shippers: tuple[Shipper, ...] = ()
    # Whether any route has a log plugin (the proxy then builds a record per request).
    logs: bool = False
    # The log plugins of requests that match no route (404s, bad requests): the global
    # log plugin instances the operator owns (a tenant's never sees traffic not its own).
    unrouted_log: tuple[AnyPlugin, ...] = ()
    # Origin TLS per pool, for its health checks (from the services that use it).
    origin_tls: dict[str, OriginTls] = field(default_factory=dict)
    # SSL contexts by settings (carried across snapshots while unchanged).
    tls: TlsCache = field(default_factory=TlsCache)
    # The request inspector's slots by route name (carried across snapshots: a capture
    # started before a config change goes on after it).
    captures: CaptureBoard = field(default_factory=CaptureBoard)


def implicit_upstream_name(service: Service) -> str:
    """Services given by `url` get a one-target upstream under a name users can't collide with."""
    return f"{service.name}@url"


def _implicit_upstream(service: Service) -> Upstream:
    assert service.url is not None
    parts = urlsplit(service.url)
    assert parts.hostname is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    # Built valid, then renamed: the implicit name deliberately fails the user-facing pattern.
    upstream = Upstream(
        name="implicit",
        targets=[Target(target=f"{host}:{port}")],
        adaptive_concurrency=service.adaptive_concurrency,
    )
    return upstream.model_copy(update={"name": implicit_upstream_name(service)})


def _origin_tls(service: Service, config: GatewayConfig, cache: TlsCache) -> OriginTls | None:
    """The service's origin TLS; None for http and for the defaults (the transport's own
    context: system store, SNI and verified name = the target's host)."""
    if service.scheme != "https":
        return None
    settings = origin_tls_settings(service, config)
    return None if settings.is_default else cache.get(settings)


def _service_base_path(service: Service) -> tuple[str, str]:
    if service.url is not None:
        parts = urlsplit(service.url)
        return parts.scheme, parts.path or "/"
    return service.protocol, service.path


def origin_tls_settings(service: Service, config: GatewayConfig) -> TlsSettings:
    """What the service's origin TLS is built from (its client certificate resolved)."""
    cert = key = None
    if service.client_certificate is not None:
        entry = next(c for c in config.certificates if c.name == service.client_certificate)
        # Stored keys are sealed with the deployment secret (store/sealing.py).
        cert, key = entry.cert, unseal_key(entry.key)
    return TlsSettings(
        verify=service.tls_verify,
        ca_certificates=tuple(service.ca_certificates),
        client_cert=cert,
        client_key=key,
        server_name=service.tls_server_name,
    )


def _retry_budget(service: Service, previous: Snapshot | None, workers: int) -> RetryBudget:
    """This worker's share of the service's budget, carried over while unchanged.

    The ratio applies to the requests each worker sees; the reserve of
    `min_per_second` is the gateway's, so each of `workers` gets its part. A
    fresh budget starts with a full reserve and no request history, so
    rebuilding it on every config change would let retries past the cap.
    """
    r = service.retries
    reserve = r.min_per_second / max(1, workers)
    old = previous.budgets.get(service.name) if previous is not None else None
    if old is not None and (old.ratio, old.min_per_second) == (r.budget_ratio, reserve):
        return old
    return RetryBudget(r.budget_ratio, reserve)


def _compile_service(
    service: Service,
    upstreams: dict[str, Upstream],
    pools: dict[str, UpstreamPool],
    previous: Snapshot | None,
    workers: int,
    tls: OriginTls | None,
) -> CompiledService:
    scheme, base_path = _service_base_path(service)
    pool_name = service.upstream if service.upstream else implicit_upstream_name(service)
    upstream = upstreams[pool_name]
    t = service.timeouts
    r = service.retries
    header = upstream.hash_on_header
    return CompiledService(
        name=service.name,
        scheme=scheme,
        base_path=base_path.rstrip("/"),
        pool=pools[pool_name],
        timeouts=TransportTimeouts(connect=t.connect, read=t.read, write=t.write),
        total_timeout=t.total,
        retry_attempts=r.attempts,
        retry_statuses=frozenset(r.on_statuses),
        retry_budget=_retry_budget(service, previous, workers),
        hash_on=upstream.hash_on,
        hash_on_header=header.lower().encode("latin-1") if header else None,
        retry_with_idempotency_key=r.idempotency_key,
        tls=tls,
    )


def _chains(
    config: GatewayConfig, env: PluginEnv, versions: dict[str, RoutePlan]
) -> dict[str, PluginChain]:
    """Per-route chains: a route-scoped instance beats a service-scoped one beats a global one.

    A route an API names also gets the built-in version steps (`runtime/versions.py`),
    ordered among the plugins by their priorities.

    The tenant boundary is compiled in here: an instance is built once per consumer
    view of the routes it serves (`ConsumerIndex.view` of the route's organization),
    so an auth plugin on a route of organization X can only ever find X's consumers
    (and the shared ones the route accepts); nothing about tenancy is left to decide
    per request. Its `organization` (`model.tenancy.plugin_owner`) names its counters.

    A route that serves an API version with a mock sandbox also gets the built-in
    `sandbox-mock` plugin (plugins/sandbox_mock.py), whatever the config's plugins.
    """
    by_scope: dict[tuple[str, str | None], dict[str, PluginInstance]] = {}
    for inst in config.plugins:
        if inst.enabled:
            by_scope.setdefault(inst.scope, {})[inst.name] = inst
    routes = {r.name: r.organization for r in config.routes}
    services = {s.name: s.organization for s in config.services}
    built: dict[tuple[int, str | None, bool], AnyPlugin] = {}

    def plugin(inst: PluginInstance, route: Route) -> AnyPlugin:
        key = (id(inst), route.organization, route.shared_consumers)
        if key not in built:
            built[key] = build_plugin(
                inst.name,
                inst.config,
                replace(
                    env,
                    instance=plugin_key(inst),
                    organization=plugin_owner(inst, routes, services),
                    consumers=env.consumers.view(route.organization, route.shared_consumers),
                ),
            )
        return built[key]

    mock = SandboxMock(SandboxMockConfig(), env)
    chains: dict[str, PluginChain] = {}
    for route in config.routes:
        merged: dict[str, PluginInstance] = {}
        for scope in (("global", None), ("service", route.service), ("route", route.name)):
            merged.update(by_scope.get(scope, {}))
        plugins = [plugin(i, route) for i in merged.values()]
        if (plan := versions.get(route.name)) is not None:
            plugins += plan.steps(env)
        served = env.contracts.routes.get(route.name)
        if served is not None and served.has_mock:
            plugins.append(mock)
        chains[route.name] = PluginChain.from_plugins(plugins) if plugins else EMPTY_CHAIN
    return chains


def _redactions(chains: dict[str, PluginChain]) -> dict[str, Redaction]:
    """Each route's capture redaction, from its auth plugins' credential sources; routes
    with the same auth plugin instances share one."""
    shared: dict[tuple[int, ...], Redaction] = {}
    out: dict[str, Redaction] = {}
    for name, chain in chains.items():
        auth = [p for p in chain.access if p.credential_sources]
        key = tuple(id(p) for p in auth)
        redaction = shared.get(key)
        if redaction is None:
            redaction = shared[key] = Redaction.of(auth)
        out[name] = redaction
    return out


def _unrouted_log(config: GatewayConfig, env: PluginEnv) -> tuple[AnyPlugin, ...]:
    plugins = [
        build_plugin(inst.name, inst.config, replace(env, instance=plugin_key(inst)))
        for inst in config.plugins
        if inst.enabled
        and inst.scope == ("global", None)
        and inst.organization is None
        and "log" in PLUGINS[inst.name].phases
    ]
    return PluginChain.from_plugins(plugins).log if plugins else ()


def build_snapshot(
    config: GatewayConfig,
    version: int,
    previous: Snapshot | None = None,
    env: PluginEnv | None = None,
) -> Snapshot:
    """Compile `config`; health and breaker state of unchanged targets carries over.

    `env` carries the worker's shared services (default: the previous snapshot's);
    its consumer index and traffic rules are rebuilt from this config.
    """
    base_env = env if env is not None else (previous.env if previous else DEFAULT_ENV)
    env = replace(
        base_env,
        consumers=ConsumerIndex.of(config.consumers, previous.env.consumers if previous else None),
        traffic=TrafficRules.of(config),
        contracts=ContractIndex.of(config),
    )
    upstreams = list(config.upstreams)
    upstreams += [_implicit_upstream(s) for s in config.services if s.url is not None]
    pools = build_pools(upstreams, previous.pools if previous else None)
    by_name = {u.name: u for u in upstreams}
    tls = TlsCache(previous.tls if previous is not None else None)
    services = {
        s.name: _compile_service(
            s, by_name, pools, previous, env.workers, _origin_tls(s, config, tls)
        )
        for s in config.services
    }
    tls.seal()
    limiters = build_limiters(upstreams, previous.limiters if previous else None)
    if limiters:
        rules = PriorityRules(config.routes, config.consumers)
        shedding = {name: Shedding(limiter, rules) for name, limiter in limiters.items()}
        services = {
            name: replace(svc, shedding=shedding.get(svc.pool.name))
            for name, svc in services.items()
        }
    versions = route_plans(
        config.apis, config.routes, config.consumers, previous.brownouts if previous else {}
    )
    chains = _chains(config, env, versions)
    captures = previous.captures if previous is not None else CaptureBoard()
    redactions = _redactions(chains)
    specs = [
        RouteSpec(
            route=r,
            payload=CompiledRoute(
                name=r.name,
                route=r,
                service=services[r.service],
                chain=chains[r.name],
                strip_path=r.strip_path,
                preserve_host=r.preserve_host,
                path_template="|".join(r.paths),
                encoded_slashes=r.encoded_slashes,
                https_redirect=r.https_redirect_status_code if r.https_redirect else 0,
                hsts=r.hsts.header_value() if r.hsts is not None else None,
                capture=captures.slot(r.name),
                redaction=redactions[r.name],
            ),
        )
        for r in config.routes
    ]
    for spec in specs:
        if (plan := versions.get(spec.route.name)) is not None:
            plan.bind(spec.payload, services)
    schemes = {svc.pool.name: svc.scheme for svc in services.values()}
    unrouted = _unrouted_log(config, env)
    shippers = {
        id(s): s
        for plugins in (*(chain.log for chain in chains.values()), unrouted)
        for p in plugins
        if isinstance(s := getattr(p, "shipper", None), Shipper)
    }
    origin_tls = {svc.pool.name: svc.tls for svc in services.values() if svc.tls is not None}
    return Snapshot(
        version=version,
        config=config,
        router=Router(specs),
        pools=pools,
        env=env,
        schemes=schemes,
        limiters=limiters,
        budgets={name: svc.retry_budget for name, svc in services.items()},
        brownouts=brownout_windows(versions),
        shippers=tuple(shippers.values()),
        logs=bool(unrouted) or any(chain.log for chain in chains.values()),
        unrouted_log=unrouted,
        origin_tls=origin_tls,
        tls=tls,
        captures=captures,
    )


def empty_snapshot() -> Snapshot:
    return build_snapshot(GatewayConfig(), 0)
