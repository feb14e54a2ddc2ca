"""Traffic plans, calendar quotas, boost windows and emergency overrides (config models).

- A `Plan` (a tier: free, starter, professional, enterprise) bundles rate limits
  and calendar quotas; consumers and API keys name one (the key's plan wins).
  `route_overrides` replace the plan's limits and/or quotas on named routes.
- A `Quota` is a number of requests per calendar day or month in a time zone,
  counted per consumer or per credential (API key).
- A `Boost` multiplies the limits and quotas of a consumer, of the consumers with a
  tag, of a route or of everyone during a time window, given either as two instants
  or as a local date and times in a time zone.
- An `Override` sets a consumer's or a key's limits (explicit values, or a
  multiplier) until `expires_at`; it is an emergency lever and stops by itself.

Boosts and overrides take effect and end by the clock: no config change is needed
when they start or stop (the `plan-limits` plugin enforces all of this).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, Protocol, Self

from pydantic import AwareDatetime, Field, field_validator, model_validator

from portcullis.limits.calendar import local_instant, to_us, zone
from portcullis.limits.spec import MAX_LIMIT, Algorithm, LimitSpec, period_label
from portcullis.model.tenancy import location_key
from portcullis.model.types import MAX_COST, Name, StrictModel, Tag

_Date = date  # `LocalWindow.date` shadows the type inside that class
MAX_MULTIPLIER = 100.0
# Keys a plan limit may count by; every limit names `consumer` or `credential` too,
# since a plan's limits are each subscriber's own (see `PlanLimit`).
_SIMPLE_KEYS = ("consumer", "credential", "route", "service", "ip")
_HEADER_NAME_CHARS = frozenset("!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyz-")


def _check_key(selector: str) -> str:
    kind, sep, arg = selector.partition(":")
    if not sep:
        if selector not in _SIMPLE_KEYS:
            raise ValueError(
                f"unknown key {selector!r}: use {', '.join(_SIMPLE_KEYS)}, header:<name> "
                "or claim:<name>"
            )
        return selector
    if kind == "header" and arg and set(arg.lower()) <= _HEADER_NAME_CHARS:
        return f"header:{arg.lower()}"
    if kind == "claim" and 0 < len(arg) <= 256:
        return selector
    raise ValueError(f"invalid key {selector!r}: use header:<name> or claim:<name>")


def check_timezone(name: str) -> str:
    """An IANA time zone name (ValueError when zoneinfo does not know it)."""
    zone(name)
    return name


class PlanLimit(StrictModel):
    """One rate limit of a plan: the shape of a `rate-limit` plugin limit entry.

    `key` must include `consumer` or `credential` (alone or in a list such as
    `[consumer, route]`): a plan's limit is each subscriber's, not shared by all.
    """

    limit: int = Field(ge=1, le=MAX_LIMIT, description="units allowed per period")
    period: float | str = Field(description="seconds, or text such as 1s, 1m, 1h, 1d, 500ms")
    algorithm: Literal["fixed_window", "sliding_window", "token_bucket", "gcra"] = "sliding_window"
    burst: int | None = Field(
        default=None, ge=1, le=MAX_LIMIT, description="token_bucket/gcra capacity (default: limit)"
    )
    key: str | list[str] = Field(default="consumer", description="what each counter is per")
    cost: int | None = Field(
        default=None, ge=0, le=MAX_COST, description="fixed cost (else the request's)"
    )
    name: Name | None = Field(
        default=None, description="the policy item name in headers (default: <plan>-<period>)"
    )

    @field_validator("key")
    @classmethod
    def _keys(cls, v: str | list[str]) -> str | list[str]:
        keys = [_check_key(v)] if isinstance(v, str) else [_check_key(s) for s in v]
        if not keys:
            raise ValueError("at least one key is required")
        if len(set(keys)) != len(keys):
            raise ValueError("keys must not repeat")
        if "consumer" not in keys and "credential" not in keys:
            raise ValueError(
                "a plan limit counts per subscriber: include 'consumer' or 'credential'"
            )
        return keys[0] if isinstance(v, str) else keys

    @model_validator(mode="after")
    def _valid_spec(self) -> Self:
        self.spec()  # raises ValueError with the reason
        return self

    def spec(self) -> LimitSpec:
        return LimitSpec.of(Algorithm(self.algorithm), self.limit, self.period, self.burst)

    def selectors(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)

    def item_name(self, plan: str) -> str:
        """The name in headers and counters: `name`, or `<plan>-<period>`."""
        return self.name or f"{plan}-{period_label(self.spec().period_us)}"


class Quota(StrictModel):
    """At most `limit` requests (or cost units) per calendar day or month in `timezone`."""

    name: Name = Field(description="names the quota in headers, counters and the usage API")
    limit: int = Field(ge=1, le=MAX_LIMIT)
    period: Literal["day", "month"]
    timezone: str = Field(default="UTC", description="IANA time zone of the calendar")
    key: Literal["consumer", "credential"] = "consumer"
    cost: int | None = Field(
        default=None, ge=0, le=MAX_COST, description="fixed cost per request (else the request's)"
    )

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        return check_timezone(v)


def _unique_items(limits: list[PlanLimit], quotas: list[Quota], plan: str) -> None:
    names = [lim.item_name(plan) for lim in limits] + [q.name for q in quotas]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(
                f"two limits or quotas are named {name!r}: give them distinct names "
                "(a limit's default name is <plan>-<period>)"
            )


class RouteLimits(StrictModel):
    """What a plan enforces on one route instead of its own limits and/or quotas.

    Left out (null): the plan's own apply. An empty list: none on that route.
    Counters of route limits and quotas are the route's own.
    """

    limits: list[PlanLimit] | None = Field(default=None, max_length=16)
    quotas: list[Quota] | None = Field(default=None, max_length=8)


class Plan(StrictModel):
    """A tier of service: rate limits and calendar quotas, optionally per route."""

    name: Name
    description: str | None = Field(default=None, max_length=1000)
    limits: list[PlanLimit] = Field(default_factory=list, max_length=16)
    quotas: list[Quota] = Field(default_factory=list, max_length=8)
    route_overrides: dict[Name, RouteLimits] = Field(
        default_factory=dict, description="route name -> limits/quotas replacing the plan's"
    )
    # The tenant that owns this entity; admins limited to an organization see only its entities.
    organization: Name | None = None
    tags: list[Tag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> Self:
        _unique_items(self.limits, self.quotas, self.name)
        for override in self.route_overrides.values():
            _unique_items(
                self.limits if override.limits is None else override.limits,
                self.quotas if override.quotas is None else override.quotas,
                self.name,
            )
        return self

    def item_names(self) -> set[str]:
        """Every limit and quota name of the plan, route overrides included."""
        names = {lim.item_name(self.name) for lim in self.limits} | {q.name for q in self.quotas}
        for override in self.route_overrides.values():
            names |= {lim.item_name(self.name) for lim in override.limits or ()}
            names |= {q.name for q in override.quotas or ()}
        return names


class LocalWindow(StrictModel):
    """A window in local time: `date` from `start` to `end` in `timezone`.

    `end` at or before `start` means the next day (22:00 to 02:00). Daylight-saving
    changes are honoured: a wall time that does not exist that day starts or ends
    the window at the change.
    """

    date: date
    start: time
    end: time
    timezone: str = Field(description="IANA time zone, e.g. Europe/London")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        return check_timezone(v)

    @field_validator("date")
    @classmethod
    def _year(cls, v: _Date) -> _Date:
        if not 1970 <= v.year <= 9998:
            raise ValueError("the date must be from 1970 to 9998")
        return v

    @field_validator("start", "end")
    @classmethod
    def _naive(cls, v: time) -> time:
        if v.tzinfo is not None:
            raise ValueError("give a local time without an offset; the zone is `timezone`")
        return v

    def bounds_us(self) -> tuple[int, int]:
        """The window as epoch microseconds [start, end)."""
        tz = zone(self.timezone)
        end_day = self.date if self.end > self.start else self.date + timedelta(days=1)
        return local_instant(self.date, self.start, tz), local_instant(end_day, self.end, tz)


class BoostTarget(StrictModel):
    """Who a boost applies to: exactly one of a consumer, a consumer tag, a route, everyone."""

    consumer: Name | None = None
    tag: Tag | None = None
    route: Name | None = None
    everyone: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = [self.consumer is not None, self.tag is not None, self.route is not None]
        if sum(chosen) + self.everyone != 1:
            raise ValueError("set exactly one of consumer, tag, route or everyone: true")
        return self


class Boost(StrictModel):
    """A time-boxed multiplier on plan limits and quotas (see the module doc).

    The window is `starts_at`/`ends_at` (instants with an offset) or `local` (a date
    and wall times in a time zone), not both. When several boosts apply to a request
    the largest multiplier wins (they do not compound).
    """

    name: Name
    description: str | None = Field(default=None, max_length=1000)
    multiplier: float = Field(gt=1, le=MAX_MULTIPLIER)
    applies_to: Literal["all", "limits", "quotas"] = Field(
        default="all", description="boost the plan's rate limits, its quotas, or both"
    )
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    local: LocalWindow | None = None
    target: BoostTarget
    # The tenant that owns this entity; admins limited to an organization see only its entities.
    organization: Name | None = None
    tags: list[Tag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _window(self) -> Self:
        absolute = self.starts_at is not None or self.ends_at is not None
        if absolute == (self.local is not None):
            raise ValueError("give the window as starts_at and ends_at, or as local, not both")
        if absolute and (self.starts_at is None or self.ends_at is None):
            raise ValueError("starts_at and ends_at go together")
        start, end = self.window_us()
        if end <= start:
            raise ValueError("the window must end after it starts")
        return self

    def window_us(self) -> tuple[int, int]:
        """The window as epoch microseconds [start, end)."""
        if self.local is not None:
            return self.local.bounds_us()
        assert self.starts_at is not None
        assert self.ends_at is not None
        return to_us(self.starts_at), to_us(self.ends_at)


class Override(StrictModel):
    """An emergency change of one consumer's or one key's limits until `expires_at`.

    `limits` maps limit and quota names of the subject's plan to new values (0
    refuses every request until the override expires); `multiplier` scales all of
    them instead (below 1 to throttle). A key's override beats its consumer's; an
    active override replaces any boost for that subject. Expired overrides do
    nothing (they may be deleted at leisure).
    """

    name: Name
    consumer: Name | None = Field(default=None, description="the consumer's username")
    credential: str | None = Field(
        default=None, min_length=1, max_length=64, description="an API key id"
    )
    limits: dict[Name, int] | None = Field(
        default=None, description="limit or quota name -> value (0 blocks)"
    )
    multiplier: float | None = Field(default=None, gt=0, le=MAX_MULTIPLIER)
    expires_at: AwareDatetime
    reason: str = Field(min_length=1, max_length=500, description="why (kept in the audit log)")
    # The tenant that owns this entity; admins limited to an organization see only its entities.
    organization: Name | None = None
    tags: list[Tag] = Field(default_factory=list)

    @field_validator("limits")
    @classmethod
    def _values(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is not None:
            if not v:
                raise ValueError("name at least one limit or quota")
            for name, value in v.items():
                if isinstance(value, bool) or not 0 <= value <= MAX_LIMIT:
                    raise ValueError(f"{name}: a value from 0 to {MAX_LIMIT}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.consumer is None) == (self.credential is None):
            raise ValueError("set exactly one of consumer or credential")
        if (self.limits is None) == (self.multiplier is None):
            raise ValueError("set exactly one of limits or multiplier")
        return self

    @property
    def expires_us(self) -> int:
        return to_us(self.expires_at)


def expired_on_arrival(
    before: Sequence[Override], after: Sequence[Override], now: datetime
) -> list[int]:
    """Indexes of the overrides of `after` that are new, or had `expires_at` moved, and
    expire at or before `now`: stored like that they would never apply. One that
    lapsed after it was stored is not among them."""
    previous = {o.name: o.expires_at for o in before}
    return [
        i
        for i, o in enumerate(after)
        if o.expires_at <= now and previous.get(o.name) != o.expires_at
    ]


class Subscriber(Protocol):
    """What the traffic rules read of a consumer (`model.config.Consumer`)."""

    @property
    def username(self) -> str: ...
    @property
    def plan(self) -> str | None: ...


class TrafficConfig(Protocol):
    """What the traffic rules read of a gateway config (`model.config.GatewayConfig`)."""

    @property
    def plans(self) -> Sequence[Plan]: ...
    @property
    def boosts(self) -> Sequence[Boost]: ...
    @property
    def overrides(self) -> Sequence[Override]: ...
    @property
    def consumers(self) -> Sequence[Subscriber]: ...


@dataclass(frozen=True, slots=True)
class TrafficRules:
    """The plans, boosts and overrides of one config, as the data plane receives them."""

    plans: tuple[Plan, ...] = ()
    boosts: tuple[Boost, ...] = ()
    overrides: tuple[Override, ...] = ()

    @classmethod
    def of(cls, config: TrafficConfig) -> TrafficRules:
        if not (config.plans or config.boosts or config.overrides):
            return EMPTY_TRAFFIC
        return cls(tuple(config.plans), tuple(config.boosts), tuple(config.overrides))


EMPTY_TRAFFIC = TrafficRules()


def traffic_reference_errors(config: TrafficConfig) -> list[str]:
    """Cross-reference errors of plans, boosts and overrides, located like `consumers[2].plan`.

    Read defensively (`getattr`): the config loader runs this on placeholders of
    entries that failed field validation, which carry only their names.
    """
    errors: list[str] = []

    def unique(kind: str, entries: Sequence[object]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for i, entry in enumerate(entries):
            name = getattr(entry, "name", None)
            if not isinstance(name, str):
                continue
            if name in seen:
                errors.append(f"{kind}[{i}].name: duplicate name {name!r}")
            else:
                seen[name] = entry
        return seen

    plans = unique("plans", config.plans)
    unique("boosts", config.boosts)
    unique("overrides", config.overrides)
    # Whether each name resolves (plans, routes, consumers, a plugin's `default_plan`) is
    # the tenancy rule's to say (model/tenancy.py); here: the items an override names.
    consumers = {c.username: c for c in config.consumers}
    every_item = set().union(*(p.item_names() for p in plans.values() if isinstance(p, Plan)))
    for i, override in enumerate(config.overrides):
        subject = getattr(override, "consumer", None)
        values = getattr(override, "limits", None)
        if (subject is not None and subject not in consumers) or not isinstance(values, dict):
            continue
        # A consumer's override names items of the consumer's plan; a key's plan lives
        # in the store, so a key's override may name any plan's items.
        plan_name = consumers[subject].plan if subject is not None else None
        found = plans.get(plan_name) if plan_name is not None else None
        known = found.item_names() if isinstance(found, Plan) else every_item
        where = f"plan {plan_name!r}" if isinstance(found, Plan) else "any plan"
        for name in values:
            if name not in known:
                where_name = f"overrides[{i}].limits{location_key(name)}"
                errors.append(f"{where_name}: no limit or quota {name!r} in {where}")
    return errors
