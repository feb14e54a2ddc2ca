"""plan-limits: enforce each consumer's traffic plan — rate limits, calendar quotas,
boost windows and emergency overrides (models in model/traffic.py).

Config (the plans themselves are top-level config entities, not plugin config):

    default_plan: free          # for requests whose key and consumer name no plan
    on_backend_failure: local   # open | closed | local, while Redis is unreachable
    cost_header: X-Cost         # optional request weight (clamped to 1..max_cost)

Per request, after authentication (priority 900, below acl 955 and rate-limit 910):

1. The plan: the API key's (`ctx.plan`), else the consumer's, else `default_plan`
   (a name that matches no plan falls through to the next). No plan: nothing to do.
2. The plan's limits and quotas for the route (`route_overrides` replace them).
3. An active override of the key, else of the consumer, sets explicit values or a
   multiplier; otherwise the largest active boost multiplier for the consumer, its
   tags, the route or everyone applies (separately to limits and to quotas).
4. All limits and quotas in one `LimitBackend.decide` call: all-or-nothing, so a
   refused request consumes nothing. A quota is a calendar window (`limits/calendar.py`)
   whose counter key names the period (`2026-11`, `2026-11-23`): a new period starts
   at zero.

Everything that depends only on the config is compiled when the plugin is built
(one instance per snapshot). Boosts and overrides start and stop by the clock: the
set of active ones is recomputed only when the clock passes the next start, end or
expiry, so per request the work is a few dict lookups and one comparison. Specs for
a (plan, route, multiplier or override, period) combination are built once and
memoised.

Counters are named by item and subscriber, not by plan: `pl:<limit>:<who>` and
`pq:<quota>:<period>:<who>` (route-override items: `pl@<route>:...`); the items of an
organization's plan carry it (`pq:acme/<quota>:...`), so two organizations' items of
the same name never share a counter. A consumer who
changes plan mid-month keeps the month's usage of a quota with the same name. A boost
or override changes the limit, not the counter, so usage carries over too.

Headers and refusals are those of `rate-limit` (RateLimit-Policy, RateLimit, 429
quota-exceeded with violated-policies and Retry-After; 503 when the backend is down
and the policy is `closed`). A value of 0 in an override refuses every request of its
subject until the override expires (Retry-After says when).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from portcullis.analytics.record import Flag
from portcullis.identity.consumers import ConsumerInfo
from portcullis.limits.backend import LimitBackend, LimitRequest
from portcullis.limits.calendar import CalendarPeriod, PeriodKind, period_of
from portcullis.limits.spec import MAX_LIMIT, MICROS, Decision, LimitSpec, period_label
from portcullis.model.plugins.plan_limits import (
    PLAN_LIMITS_PLUGIN,
    PlanLimitsConfig,
)
from portcullis.model.tenancy import resolves
from portcullis.model.traffic import (
    Plan,
    PlanLimit,
    Quota,
    TrafficRules,
)
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.limit_headers import CONTENT_TYPE, ratelimit_field, refusal
from portcullis.plugins.rate_limit import Selector, _selector, counter_namespace
from portcullis.problems import (
    QUOTA_EXCEEDED,
    TEMPORARY_REDUCED_CAPACITY,
    problem_body,
)

_FOREVER = 2**62
# Distinct (multiplier or override, period) variants kept per plan and route.
_VARIANT_MEMO = 64


# ------------------------------------------------------------------ compiled config


@dataclass(frozen=True, slots=True)
class Item:
    """One limit or quota of a plan on a route (or plan-wide), precomputed."""

    name: str
    limit: int
    prefix: str  # counter key up to the period id (quotas) or the partition (limits)
    shape: int  # index of the key shape (selectors) in the entry
    cost: int | None
    # A rate limit: its spec and config; a quota: its calendar.
    spec: LimitSpec | None
    config: PlanLimit | None
    period: PeriodKind | None
    timezone: str
    # A quota's counting key (consumer or credential); "" for a limit.
    quota_key: str = ""

    @property
    def is_quota(self) -> bool:
        return self.period is not None


class Entry:
    """The items a plan enforces on one route (or everywhere), and their variants."""

    __slots__ = ("items", "route", "selectors", "variants")

    def __init__(
        self,
        plan: Plan,
        route: str | None,
        limits: list[PlanLimit],
        quotas: list[Quota],
    ):
        self.route = route
        tag = f"@{route}" if route is not None else ""
        org = plan.organization
        shapes: list[tuple[str, ...]] = []

        def shape(keys: tuple[str, ...]) -> int:
            if keys not in shapes:
                shapes.append(keys)
            return shapes.index(keys)

        items = [
            Item(
                name=(name := lim.item_name(plan.name)),
                limit=lim.limit,
                prefix=f"pl{tag}:{counter_namespace(org, name)}:",
                shape=shape(lim.selectors()),
                cost=lim.cost,
                spec=lim.spec(),
                config=lim,
                period=None,
                timezone="",
            )
            for lim in limits
        ]
        items += [
            Item(
                name=q.name,
                limit=q.limit,
                prefix=f"pq{tag}:{counter_namespace(org, q.name)}:",
                shape=shape((q.key,)),
                cost=q.cost,
                spec=None,
                config=None,
                period=q.period,
                timezone=q.timezone,
                quota_key=q.key,
            )
            for q in quotas
        ]
        self.items: tuple[Item, ...] = tuple(items)
        self.selectors: tuple[tuple[Selector, ...], ...] = tuple(
            tuple(_selector(k) for k in keys) for keys in shapes
        )
        self.variants: dict[object, Variant] = {}


class CompiledPlan:
    __slots__ = ("base", "name", "organization", "routes")

    def __init__(self, plan: Plan) -> None:
        self.name = plan.name
        self.organization = plan.organization
        self.base = Entry(plan, None, plan.limits, plan.quotas)
        self.routes: dict[str, Entry] = {
            route: Entry(
                plan,
                route,
                plan.limits if o.limits is None else o.limits,
                plan.quotas if o.quotas is None else o.quotas,
            )
            for route, o in plan.route_overrides.items()
        }

    def entry(self, route: str) -> Entry:
        return self.routes.get(route, self.base)

    def entries(self) -> Iterable[Entry]:
        yield self.base
        yield from self.routes.values()


@dataclass(frozen=True, slots=True)
class Adjustment:
    """What changes the plan's numbers for one request: a boost or an override.

    `values` (override) maps item names to explicit limits; otherwise the limits are
    scaled by `limits` and the quotas by `quotas`. `until_us`: when an override ends.
    """

    limits: float = 1.0
    quotas: float = 1.0
    values: tuple[tuple[str, int], ...] | None = None
    until_us: int = _FOREVER
    source: str = ""  # "boost:<name>" / "override:<name>", for reports


NO_ADJUSTMENT = Adjustment()
PlanSource = Literal["key", "consumer", "default"]


def _scaled(value: int, factor: float) -> int:
    return min(MAX_LIMIT, max(1, int(value * factor)))


def effective_limit(item: Item, adjustment: Adjustment) -> int:
    """The item's limit under the adjustment (0: refused outright by an override)."""
    if adjustment.values is not None:
        for name, value in adjustment.values:
            if name == item.name:
                return value
        return item.limit
    factor = adjustment.quotas if item.is_quota else adjustment.limits
    return item.limit if factor == 1.0 else _scaled(item.limit, factor)


def _limit_spec(item: Item, limit: int) -> LimitSpec:
    assert item.spec is not None
    if limit == item.limit:
        return item.spec
    burst = item.spec.burst
    if burst is not None:
        burst = min(MAX_LIMIT, max(1, burst * limit // item.limit))
    try:
        return LimitSpec(item.spec.algorithm, limit, item.spec.period_us, burst)
    except ValueError:
        # A multiplied limit too large to count exactly: keep the configured one.
        return item.spec


class Variant:
    """An entry's specs under one adjustment, valid while its quota periods last."""

    __slots__ = (
        "blocked",
        "items",
        "keys",
        "labels",
        "policy_header",
        "specs",
        "valid_from",
        "valid_until",
    )

    def __init__(
        self, entry: Entry, adjustment: Adjustment, periods: dict[tuple[str, str], CalendarPeriod]
    ) -> None:
        items, keys, specs, blocked, policy = [], [], [], [], []
        valid_from, valid_until = 0, _FOREVER
        for item in entry.items:
            limit = effective_limit(item, adjustment)
            if limit == 0:
                blocked.append(item)
                continue
            if item.period is not None:
                period = periods[item.period, item.timezone]
                spec = LimitSpec.calendar(limit, period.starts_us, period.ends_us)
                key = f"{item.prefix}{period.id}:"
                valid_from = max(valid_from, period.starts_us)
                valid_until = min(valid_until, period.ends_us)
            else:
                spec = _limit_spec(item, limit)
                key = item.prefix
            items.append(item)
            keys.append(key)
            specs.append(spec)
            text = f'"{item.name}";q={spec.limit}'
            if spec.period_us % MICROS == 0:
                text += f";w={spec.period_us // MICROS}"
            policy.append(text)
        self.items: tuple[Item, ...] = tuple(items)
        self.keys: tuple[str, ...] = tuple(keys)
        self.specs: tuple[LimitSpec, ...] = tuple(specs)
        self.blocked: tuple[Item, ...] = tuple(blocked)
        # Structured Field item names for the RateLimit fields.
        self.labels: tuple[str, ...] = tuple(f'"{item.name}"' for item in items)
        self.policy_header = (b"ratelimit-policy", ", ".join(policy).encode())
        self.valid_from = valid_from
        self.valid_until = valid_until


# ------------------------------------------------------------------ boosts and overrides


@dataclass(frozen=True, slots=True)
class _Boost:
    name: str
    organization: str | None
    starts_us: int
    ends_us: int
    limits: float
    quotas: float
    consumer: str | None
    tag: str | None
    route: str | None


@dataclass(frozen=True, slots=True)
class _Override:
    adjustment: Adjustment
    organization: str | None
    consumer: str | None
    credential: str | None


def _combine(a: tuple[float, float] | None, b: tuple[float, float]) -> tuple[float, float]:
    return b if a is None else (max(a[0], b[0]), max(a[1], b[1]))


class PlanBook:
    """Compiled plans, boosts and overrides of one config, with the clock-driven active set.

    Shared by the plugin (per request) and the usage API (per call).
    """

    def __init__(self, rules: TrafficRules) -> None:
        self.plans = {p.name: CompiledPlan(p) for p in rules.plans}
        self._boosts = []
        for b in rules.boosts:
            starts, ends = b.window_us()
            self._boosts.append(
                _Boost(
                    b.name,
                    b.organization,
                    starts,
                    ends,
                    b.multiplier if b.applies_to != "quotas" else 1.0,
                    b.multiplier if b.applies_to != "limits" else 1.0,
                    b.target.consumer,
                    b.target.tag,
                    b.target.route,
                )
            )
        self._overrides = [
            (
                o.expires_us,
                _Override(
                    Adjustment(
                        limits=o.multiplier or 1.0,
                        quotas=o.multiplier or 1.0,
                        values=tuple(o.limits.items()) if o.limits is not None else None,
                        until_us=o.expires_us,
                        source=f"override:{o.name}",
                    ),
                    o.organization,
                    o.consumer,
                    o.credential,
                ),
            )
            for o in rules.overrides
        ]
        # The active set, valid for [valid_from, valid_until).
        self.valid_from = 0
        self.valid_until = -1
        # Boosts of everyone and of a tag by organization: an organization's reach only
        # its own consumers (tags are each organization's words), the operator's (None)
        # every consumer.
        self.everyone: dict[str | None, tuple[float, float]] = {}
        self.by_consumer: dict[str, tuple[float, float]] = {}
        self.by_tag: dict[tuple[str | None, str], tuple[float, float]] = {}
        self.by_route: dict[str, tuple[float, float]] = {}
        self.override_by_consumer: dict[str, Adjustment] = {}
        # A key's override with the organization that set it: it applies only to that
        # organization's consumers (key ids are not checked against the config).
        self.override_by_credential: dict[str, tuple[str | None, Adjustment]] = {}
        self.any_active = False
        self._boost_adjustments: dict[tuple[float, float], Adjustment] = {}

    def refresh(self, now: int) -> None:
        """Recompute what is active at `now`, and until when that holds."""
        changes = [b.starts_us for b in self._boosts] + [b.ends_us for b in self._boosts]
        changes += [expires for expires, _ in self._overrides]
        self.valid_from = max((c for c in changes if c <= now), default=0)
        self.valid_until = min((c for c in changes if c > now), default=_FOREVER)
        self.everyone = {}
        self.by_consumer, self.by_tag, self.by_route = {}, {}, {}
        for b in self._boosts:
            if not b.starts_us <= now < b.ends_us:
                continue
            factors = (b.limits, b.quotas)
            if b.consumer is not None:
                self.by_consumer[b.consumer] = _combine(self.by_consumer.get(b.consumer), factors)
            elif b.tag is not None:
                tag = (b.organization, b.tag)
                self.by_tag[tag] = _combine(self.by_tag.get(tag), factors)
            elif b.route is not None:
                self.by_route[b.route] = _combine(self.by_route.get(b.route), factors)
            else:
                org = b.organization
                self.everyone[org] = _combine(self.everyone.get(org), factors)
        self.override_by_consumer, self.override_by_credential = {}, {}
        # Later entries win when several overrides of one subject are active.
        for expires, o in self._overrides:
            if now < expires:
                if o.credential is not None:
                    self.override_by_credential[o.credential] = (o.organization, o.adjustment)
                elif o.consumer is not None:
                    self.override_by_consumer[o.consumer] = o.adjustment
        self.any_active = bool(
            self.everyone
            or self.by_consumer
            or self.by_tag
            or self.by_route
            or self.override_by_consumer
            or self.override_by_credential
        )

    def adjustment(
        self, now: int, consumer: ConsumerInfo | None, credential: str | None, route: str
    ) -> Adjustment:
        """The override or boost in force for this subject and route at `now`."""
        if not self.valid_from <= now < self.valid_until:
            self.refresh(now)
        if not self.any_active:
            return NO_ADJUSTMENT
        org = consumer.organization if consumer is not None else None
        if credential is not None:
            keyed = self.override_by_credential.get(credential)
            if keyed is not None and keyed[0] in (None, org):
                return keyed[1]
        if consumer is not None:
            found = self.override_by_consumer.get(consumer.username)
            if found is not None:
                return found
        best = self.everyone.get(None)
        if consumer is not None and org is not None:
            mine = self.everyone.get(org)
            if mine is not None:
                best = _combine(best, mine)
        routed = self.by_route.get(route)
        if routed is not None:
            best = _combine(best, routed)
        if consumer is not None:
            own = self.by_consumer.get(consumer.username)
            if own is not None:
                best = _combine(best, own)
            if self.by_tag:
                for tag in consumer.tags:
                    for owner in (None, org) if org is not None else (None,):
                        tagged = self.by_tag.get((owner, tag))
                        if tagged is not None:
                            best = _combine(best, tagged)
        if best is None:
            return NO_ADJUSTMENT
        found = self._boost_adjustments.get(best)
        if found is None:
            found = Adjustment(limits=best[0], quotas=best[1], source="boost")
            self._boost_adjustments[best] = found
        return found

    def resolve(
        self, key_plan: str | None, consumer: ConsumerInfo | None, default: str | None
    ) -> tuple[CompiledPlan | None, PlanSource | None]:
        """The plan that applies and where it came from (`key`, `consumer` or `default`).

        An API key's plan is written in the store, not in the config: like every name
        (model/tenancy.py) it resolves only to a plan of the key's consumer's
        organization or to a shared one.
        """
        if key_plan is not None:
            found = self.plans.get(key_plan)
            org = consumer.organization if consumer is not None else None
            if found is not None and resolves(org, found.organization, "plans"):
                return found, "key"
        if consumer is not None and consumer.plan is not None:
            found = self.plans.get(consumer.plan)
            if found is not None:
                return found, "consumer"
        if default is not None:
            found = self.plans.get(default)
            if found is not None:
                return found, "default"
        return None, None


class Periods:
    """The current calendar period per (kind, time zone), recomputed when it ends."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[tuple[str, str], CalendarPeriod] = {}

    def at(self, entry: Entry, now: int) -> dict[tuple[str, str], CalendarPeriod]:
        current = self._current
        for item in entry.items:
            if item.period is None:
                continue
            key = (item.period, item.timezone)
            period = current.get(key)
            if period is None or not period.contains(now):
                current[key] = period_of(item.period, item.timezone, now)
        return current


def variant_of(entry: Entry, adjustment: Adjustment, periods: Periods, now: int) -> Variant:
    """The entry's specs under `adjustment` at `now` (memoised until a period ends)."""
    found = entry.variants.get(adjustment)
    if found is not None and found.valid_from <= now < found.valid_until:
        return found
    if len(entry.variants) >= _VARIANT_MEMO:
        entry.variants.clear()
    found = Variant(entry, adjustment, periods.at(entry, now))
    entry.variants[adjustment] = found
    return found


def slot_for(consumer: ConsumerInfo | None, client_ip: str) -> str:
    """The Redis Cluster hash tag of a subscriber's counters (one slot per decision)."""
    return "pl:c=" + consumer.username if consumer is not None else "pl:i=" + client_ip


# ------------------------------------------------------------------ the plugin


class PlanLimits(Plugin[PlanLimitsConfig]):
    """Enforces plans, quotas, boosts and overrides (see the module doc)."""

    name: ClassVar[str] = PLAN_LIMITS_PLUGIN
    priority: ClassVar[int] = 900
    refusal_flag = Flag.RATE_LIMITED
    config_model = PlanLimitsConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: PlanLimitsConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.backend: LimitBackend = env.limit_backend()
        self.book = PlanBook(env.traffic)
        self.periods = Periods()
        self._default = config.default_plan
        self._on_failure = config.on_backend_failure
        self._default_cost = config.default_cost
        self._cost_header = config.cost_header.encode() if config.cost_header else None
        self._max_cost = config.max_cost
        self._headers = config.headers
        self._clock = env.clock

    def _cost(self, ctx: RequestContext) -> int:
        cost = self._default_cost
        if self._cost_header is not None:
            for name, value in ctx.headers:
                if name == self._cost_header:
                    if value.isdigit() and len(value) <= 9:
                        cost = min(max(int(value), 1), self._max_cost)
                    break
        return cost

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        consumer = ctx.consumer
        plan, _ = self.book.resolve(ctx.plan, consumer, self._default)
        if plan is None:
            return None
        route = ctx.route.name
        entry = plan.entry(route)
        if not entry.items:
            return None
        now = int(self._clock() * MICROS)
        adjustment = self.book.adjustment(now, consumer, ctx.credential_id, route)
        variant = variant_of(entry, adjustment, self.periods, now)
        if variant.blocked:
            return self._blocked(variant, adjustment, now)
        if not variant.items:
            return None
        cost = self._cost(ctx)
        partitions = ["|".join(sel(ctx) for sel in shape) for shape in entry.selectors]
        slot = slot_for(consumer, ctx.client_ip)
        requests = [
            LimitRequest(
                key + partitions[item.shape], spec, cost if item.cost is None else item.cost, slot
            )
            for item, key, spec in zip(variant.items, variant.keys, variant.specs, strict=True)
        ]
        decisions = await self.backend.decide(requests, self._on_failure)
        for d in decisions:
            if not d.allowed:
                return self._refuse(variant, decisions)
        if self._headers:
            ctx.response_headers.append(variant.policy_header)
            field = ratelimit_field(variant.labels, variant.specs, decisions)
            if field is not None:
                ctx.response_headers.append((b"ratelimit", field))
        return None

    def _refuse(self, variant: Variant, decisions: list[Decision]) -> PluginResponse:
        violated, counted, headers = refusal(
            variant.labels,
            variant.specs,
            decisions,
            variant.policy_header if self._headers else None,
        )
        names = [variant.items[i].name for i in violated]
        if not counted:
            body = problem_body(
                TEMPORARY_REDUCED_CAPACITY,
                "Plan limits cannot be checked right now; retry later.",
                **_violated(names),
            )
            return PluginResponse(503, body, headers)
        described = "; ".join(
            f"{variant.items[i].name}: {variant.specs[i].limit} per {_describe(variant, i)}"
            for i in violated
        )
        body = problem_body(
            QUOTA_EXCEEDED, f"Plan limit exceeded ({described}).", **_violated(names)
        )
        return PluginResponse(429, body, headers)

    def _blocked(self, variant: Variant, adjustment: Adjustment, now: int) -> PluginResponse:
        wait = max(1, -(-(adjustment.until_us - now) // MICROS))
        names = [item.name for item in variant.blocked]
        body = problem_body(
            QUOTA_EXCEEDED,
            f"Requests are suspended by an override until it expires ({', '.join(names)}).",
            **_violated(names),
        )
        return PluginResponse(429, body, [CONTENT_TYPE, (b"retry-after", str(wait).encode())])


def _violated(names: list[str]) -> dict[str, Any]:
    return {"violated-policies": names}


def _describe(variant: Variant, index: int) -> str:
    item = variant.items[index]
    if item.period is not None:
        return f"{item.period} ({item.timezone})"
    return period_label(variant.specs[index].period_us)


def counter_request(
    item: Item, limit: int, period: CalendarPeriod | None, partition: str, slot: str
) -> LimitRequest:
    """The `LimitRequest` the plugin would send for `item` (for the usage API's peek)."""
    if period is not None:
        spec = LimitSpec.calendar(max(1, limit), period.starts_us, period.ends_us)
        return LimitRequest(f"{item.prefix}{period.id}:{partition}", spec, 0, slot)
    return LimitRequest(item.prefix + partition, _limit_spec(item, max(1, limit)), 0, slot)
