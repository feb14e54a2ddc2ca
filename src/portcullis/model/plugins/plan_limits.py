"""The `plan-limits` plugin's config (its handler: plugins/plan_limits.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from portcullis.model.plugins.base import PluginConfig
from portcullis.model.tenancy import names
from portcullis.model.types import MAX_COST, NAME_PATTERN, FailurePolicy

PLAN_LIMITS_PLUGIN = "plan-limits"


class PlanLimitsConfig(PluginConfig):
    default_plan: str | None = Field(
        default=None,
        max_length=128,
        pattern=NAME_PATTERN,
        description="plan when none is named",
        json_schema_extra=names("plans"),
    )
    on_backend_failure: FailurePolicy = FailurePolicy.local
    default_cost: int = Field(default=1, ge=0, le=MAX_COST)
    cost_header: str | None = Field(default=None, description="request header carrying the cost")
    max_cost: int = Field(default=1000, ge=1, le=MAX_COST)
    headers: bool = Field(default=True, description="send RateLimit-Policy and RateLimit")

    @field_validator("cost_header")
    @classmethod
    def _cost_header(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("-", "").isalnum():
            raise ValueError("invalid header name")
        return v.lower() if v is not None else None
