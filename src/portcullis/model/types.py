"""The shared building blocks of every config model: a leaf that imports nothing from portcullis.

Entity models (model/config.py, model/traffic.py) and plugin schemas (model/plugins/)
build on these, so a plugin schema never needs the gateway model to describe its fields.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# What an entity name may hold; also for fields that spell out their own `Field(...)`.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]*$"
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]
Tag = Annotated[str, Field(min_length=1, max_length=64)]
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# The largest cost one request may count for (rate limits, plans).
MAX_COST = 1_000_000
PriorityClass = Literal["critical", "high", "normal", "low"]
MetadataValue = str | int | float | bool | None


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def check_method(m: str) -> str:
    """An HTTP method name, upper-cased (ValueError when it is not one of `HTTP_METHODS`)."""
    up = m.upper()
    if up not in HTTP_METHODS:
        raise ValueError(f"unknown HTTP method {m!r}")
    return up


# Validated per item so that errors point at the entry, e.g. routes[3].methods[0].
Method = Annotated[str, AfterValidator(check_method)]


class FailurePolicy(StrEnum):
    """What a shared backend answers while it cannot reach its store.

    open: allow (and count nothing); closed: refuse; local: decide with this
    process's own in-memory counters (each worker then enforces the full limit on
    its own).
    """

    open = "open"
    closed = "closed"
    local = "local"
