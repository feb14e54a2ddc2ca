"""The `rate-limit` plugin's config (its handler: plugins/rate_limit.py)."""

from __future__ import annotations

import re
from typing import Self

from pydantic import Field, field_validator, model_validator

from portcullis.limits.spec import MAX_LIMIT, Algorithm, LimitSpec, period_label
from portcullis.model.plugins.base import PluginConfig
from portcullis.model.types import MAX_COST, NAME_PATTERN, FailurePolicy

_SIMPLE_KEYS = ("global", "service", "route", "consumer", "credential", "ip")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _check_key(selector: str) -> str:
    kind, sep, arg = selector.partition(":")
    if not sep:
        if selector not in _SIMPLE_KEYS:
            raise ValueError(
                f"unknown key {selector!r}: use one of {', '.join(_SIMPLE_KEYS)}, "
                "header:<name> or claim:<name>"
            )
        return selector
    if kind == "header":
        if not _HEADER_NAME.fullmatch(arg):
            raise ValueError(f"invalid header name in key {selector!r}")
        return f"header:{arg.lower()}"
    if kind == "claim":
        if not arg or len(arg) > 256:
            raise ValueError(f"invalid claim name in key {selector!r}")
        return selector
    raise ValueError(f"unknown key {selector!r}: use header:<name> or claim:<name>")


class LimitConfig(PluginConfig):
    """One limit of the policy."""

    limit: int = Field(ge=1, le=MAX_LIMIT, description="units allowed per period")
    period: float | str = Field(description="seconds, or text such as 1s, 1m, 1h, 1d, 500ms")
    algorithm: Algorithm = Algorithm.sliding_window
    burst: int | None = Field(
        default=None, ge=1, le=MAX_LIMIT, description="token_bucket/gcra capacity (default: limit)"
    )
    key: str | list[str] = Field(default="consumer", description="what each counter is per")
    cost: int | None = Field(
        default=None,
        ge=0,
        le=MAX_COST,
        description="fixed cost for this limit (else the request's)",
    )
    name: str | None = Field(
        default=None,
        max_length=64,
        pattern=NAME_PATTERN,
        description="the policy item name in headers (default: <policy>-<period>)",
    )

    @field_validator("key")
    @classmethod
    def _keys(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, str):
            return _check_key(v)
        if not v:
            raise ValueError("at least one key is required")
        keys = [_check_key(s) for s in v]
        if len(set(keys)) != len(keys):
            raise ValueError("keys must not repeat")
        return keys

    @model_validator(mode="after")
    def _valid_spec(self) -> Self:
        self.spec()  # raises ValueError with the reason
        return self

    def spec(self) -> LimitSpec:
        return LimitSpec.of(self.algorithm, self.limit, self.period, self.burst)

    def selectors(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)


class RateLimitConfig(PluginConfig):
    limits: list[LimitConfig] = Field(min_length=1, max_length=16)
    policy_name: str = Field(default="default", max_length=64, pattern=NAME_PATTERN)
    default_cost: int = Field(default=1, ge=0, le=MAX_COST)
    method_costs: dict[str, int] = Field(default_factory=dict)
    cost_header: str | None = Field(default=None, description="request header carrying the cost")
    max_cost: int = Field(default=1000, ge=1, le=MAX_COST)
    on_backend_failure: FailurePolicy = FailurePolicy.local
    headers: bool = Field(default=True, description="send RateLimit-Policy and RateLimit")

    @field_validator("method_costs")
    @classmethod
    def _methods(cls, v: dict[str, int]) -> dict[str, int]:
        out = {}
        for method, cost in v.items():
            if not _HEADER_NAME.fullmatch(method):
                raise ValueError(f"invalid method {method!r}")
            if not 0 <= cost <= MAX_COST:
                raise ValueError(f"cost for {method} must be from 0 to {MAX_COST}")
            out[method.upper()] = cost
        return out

    @field_validator("cost_header")
    @classmethod
    def _cost_header(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER_NAME.fullmatch(v):
            raise ValueError("invalid header name")
        return v.lower() if v is not None else None

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [item_name(self.policy_name, limit, len(self.limits)) for limit in self.limits]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(
                    f"two limits are named {name!r}: give them distinct `name`s "
                    "(defaults are <policy_name>-<period>)"
                )
        return self


def item_name(policy: str, limit: LimitConfig, count: int) -> str:
    """The policy item's id: the limit's `name`, the policy name alone, or <policy>-<period>."""
    if limit.name is not None:
        return limit.name
    if count == 1:
        return policy
    return f"{policy}-{period_label(limit.spec().period_us)}"
