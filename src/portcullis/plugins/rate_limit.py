"""rate-limit: several limits per request, each with its algorithm, key and cost.

Config (one plugin instance, one named policy):

    policy_name: api            # names the counters and the header items
    on_backend_failure: local   # open | closed | local, while Redis is unreachable
    cost_header: X-Cost         # optional request weight; per-method costs too
    limits:
      - {limit: 10, period: 1s, algorithm: gcra, burst: 20, key: consumer}
      - {limit: 1000, period: 1h, key: consumer}
      - {limit: 50000, period: 1d, key: [consumer, route], name: daily}

Keys: `global`, `service`, `route`, `consumer`, `credential`, `ip`,
`header:<name>`, `claim:<name>`, or a list of them (one counter per combination).
A request without the identity a key asks for (no consumer, no such header) is
counted under its client IP instead, like Kong. Counters are named by the
instance's organization, policy, limit name and key. Instances of one organization
that set the same `policy_name` share their counters (that is how one budget spans
several routes); another organization's `policy_name` is another budget, so no
tenant can spend another's. An instance without a `policy_name` counts on its own
(a limit on route A never consumes route B's).
Header and claim values are
hashed into the key (bounded size, nothing sensitive in Redis).

All the limits of a request are decided together by the worker's `LimitBackend`
(Redis: one atomic script): if any refuses, none is consumed. The plugin runs
after authentication and authorization (priority 910, below key-auth 1250,
jwt-auth 1450 and acl 955), so requests those refuse are never counted.

Cost: `default_cost` (1), or `method_costs[method]`, or the integer in
`cost_header` (clamped to 1..max_cost: a client can raise its own cost, never
dodge the limit). A limit's own `cost` overrides all of these for that limit
(e.g. a request-count limit next to a weighted one).

Response headers follow draft-ietf-httpapi-ratelimit-headers-11 (May 2026), which
defines both fields as Structured Field Lists (RFC 9651) of String items:

    RateLimit-Policy: "api-1s";q=10;w=1, "api-1h";q=1000;w=3600
    RateLimit: "api-1s";r=7;t=1, "api-1h";r=993;t=3600

`q` is the limit, `w` the period in seconds (omitted when not whole seconds),
`r` the units left after this request, `t` the seconds until the limit is fully
available again (rounded up). A refused request gets 429 with `Retry-After` (the
longest wait among the violated limits, never shorter than their `t`), a
`RateLimit` field listing only the violated limits, each with `t` its own wait,
and an RFC 9457 body of the draft's IANA type `quota-exceeded` with
`violated-policies`. When the shared backend is down and the failure policy is
`closed`, the answer is 503 of type `temporary-reduced-capacity` instead: the
client did nothing wrong. Decisions made without counters (policy `open`) carry
no `RateLimit` field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from portcullis.analytics.record import Flag
from portcullis.limits.backend import LimitBackend, LimitRequest
from portcullis.limits.spec import MICROS, Decision, period_label
from portcullis.model.plugins.rate_limit import (
    LimitConfig,
    RateLimitConfig,
    item_name,
)
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.limit_headers import ratelimit_field, refusal
from portcullis.problems import (
    QUOTA_EXCEEDED,
    TEMPORARY_REDUCED_CAPACITY,
    problem_body,
)


def counter_namespace(organization: str | None, name: str) -> str:
    """A counter name inside its organization's namespace (the operator's: unprefixed)."""
    return f"{organization}/{name}" if organization is not None else name


def _digest(value: bytes) -> str:
    return hashlib.blake2b(value, digest_size=12).hexdigest()


Selector = Callable[[RequestContext], str]


def _selector(key: str) -> Selector:
    """How to turn a request into one part of a counter key (client IP when absent)."""
    if key == "global":
        return lambda ctx: "g"
    if key == "service":
        return lambda ctx: "s=" + ctx.route.service.name
    if key == "route":
        return lambda ctx: "r=" + ctx.route.name
    if key == "ip":
        return lambda ctx: "i=" + ctx.client_ip

    if key == "consumer":

        def consumer(ctx: RequestContext) -> str:
            c = ctx.consumer
            return "c=" + c.username if c is not None else "i=" + ctx.client_ip

        return consumer
    if key == "credential":

        def credential(ctx: RequestContext) -> str:
            cid = ctx.credential_id
            return "k=" + cid if cid is not None else "i=" + ctx.client_ip

        return credential
    kind, _, arg = key.partition(":")
    if kind == "header":
        name = arg.encode("latin-1")

        def header(ctx: RequestContext) -> str:
            for n, v in ctx.headers:
                if n == name:
                    return "h=" + _digest(v)
            return "i=" + ctx.client_ip

        return header

    def claim(ctx: RequestContext) -> str:
        # Verified JWT claims, when an auth plugin publishes them on the context.
        claims = getattr(ctx, "claims", None)
        if isinstance(claims, Mapping) and arg in claims and claims[arg] is not None:
            return "j=" + _digest(str(claims[arg]).encode())
        return "i=" + ctx.client_ip

    return claim


class _Limit:
    """One configured limit, precomputed."""

    __slots__ = ("cost", "item", "name", "prefix", "selectors", "spec")

    def __init__(self, policy: str, config: LimitConfig, count: int, namespace: str) -> None:
        self.spec = config.spec()
        self.name = item_name(policy, config, count)
        self.prefix = f"{namespace}:{self.name}:"
        self.cost = config.cost
        self.selectors = config.selectors()
        self.item = f'"{self.name}"'


class RateLimit(Plugin[RateLimitConfig]):
    """Checks every configured limit for the request (see the module doc)."""

    name: ClassVar[str] = "rate-limit"
    priority: ClassVar[int] = 910
    refusal_flag = Flag.RATE_LIMITED
    config_model = RateLimitConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: RateLimitConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        # Without a worker backend: the process-wide one, so counters survive reloads.
        self.backend: LimitBackend = env.limit_backend()
        self.policy = config.policy_name
        # A named policy is a budget shared by every instance that names it; an unnamed
        # one counts per plugin instance (a route-scoped limit counts that route only).
        namespace = (
            self.policy
            if "policy_name" in config.model_fields_set or not env.instance
            else f"{self.policy}@{env.instance}"
        )
        # Policy names are each organization's own: A's `api` is not B's `api`
        # (organization names hold no "/", so no namespace reads as another's).
        self.namespace = counter_namespace(env.organization, namespace)
        self.on_failure = config.on_backend_failure
        self._limits = tuple(
            _Limit(self.policy, c, len(config.limits), self.namespace) for c in config.limits
        )
        # The distinct key shapes, each computed once per request.
        shapes = list(dict.fromkeys(lim.selectors for lim in self._limits))
        self._shapes = tuple(tuple(_selector(k) for k in shape) for shape in shapes)
        self._shape_of = tuple(shapes.index(lim.selectors) for lim in self._limits)
        # One Redis Cluster slot per decision: per partition when every limit is keyed
        # alike (spreads keys over the cluster), else per policy.
        self._slot_per_partition = len(shapes) == 1
        self._default_cost = config.default_cost
        self._method_costs = config.method_costs
        self._cost_header = config.cost_header.encode() if config.cost_header else None
        self._max_cost = config.max_cost
        self._headers = config.headers
        policy_items = []
        for lim in self._limits:
            item = f"{lim.item};q={lim.spec.limit}"
            if lim.spec.period_us % MICROS == 0:
                item += f";w={lim.spec.period_us // MICROS}"
            policy_items.append(item)
        self._policy_header = (b"ratelimit-policy", ", ".join(policy_items).encode())
        self._labels = tuple(lim.item for lim in self._limits)
        self._specs = tuple(lim.spec for lim in self._limits)
        self._bodies: dict[tuple[int, ...], bytes] = {}

    def _cost(self, ctx: RequestContext) -> int:
        cost = self._method_costs.get(ctx.method, self._default_cost)
        if self._cost_header is not None:
            for name, value in ctx.headers:
                if name == self._cost_header:
                    if value.isdigit() and len(value) <= 9:
                        cost = min(max(int(value), 1), self._max_cost)
                    break
        return cost

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        cost = self._cost(ctx)
        partitions = ["|".join(sel(ctx) for sel in shape) for shape in self._shapes]
        slot = f"{self.namespace}:{partitions[0]}" if self._slot_per_partition else self.namespace
        limits = self._limits
        requests = [
            LimitRequest(
                lim.prefix + partitions[shape],
                lim.spec,
                cost if lim.cost is None else lim.cost,
                slot,
            )
            for lim, shape in zip(limits, self._shape_of, strict=True)
        ]
        decisions = await self.backend.decide(requests, self.on_failure)
        for d in decisions:
            if not d.allowed:
                return self._refuse(decisions)
        if self._headers:
            ctx.response_headers.append(self._policy_header)
            field = ratelimit_field(self._labels, self._specs, decisions)
            if field is not None:
                ctx.response_headers.append((b"ratelimit", field))
        return None

    def _refuse(self, decisions: list[Decision]) -> PluginResponse:
        violated, counted, headers = refusal(
            self._labels,
            self._specs,
            decisions,
            self._policy_header if self._headers else None,
        )
        if not counted:
            return PluginResponse(503, self._body(violated, unavailable=True), headers)
        return PluginResponse(429, self._body(violated, unavailable=False), headers)

    def _body(self, violated: tuple[int, ...], *, unavailable: bool) -> bytes:
        cache_key = (-1, *violated) if unavailable else violated
        body = self._bodies.get(cache_key)
        if body is None:
            extensions: dict[str, Any] = {
                "violated-policies": [self._limits[i].name for i in violated]
            }
            if unavailable:
                body = problem_body(
                    TEMPORARY_REDUCED_CAPACITY,
                    "Rate limits cannot be checked right now; retry later.",
                    **extensions,
                )
            else:
                described = "; ".join(
                    f"{self._limits[i].name}: {self._limits[i].spec.limit} per "
                    f"{period_label(self._limits[i].spec.period_us)}"
                    for i in violated
                )
                body = problem_body(
                    QUOTA_EXCEEDED,
                    f"Rate limit exceeded ({described}).",
                    **extensions,
                )
            self._bodies[cache_key] = body
        return body
