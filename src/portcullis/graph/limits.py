"""Document limits, checked before validation and execution (see the limits helper's
full version: this is the first cut with the size and token limits only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import DocumentNode, GraphQLSchema, parse


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_bytes: int = 100_000
    max_tokens: int = 5_000
    max_depth: int = 12
    max_aliases: int = 30
    max_cost: int = 50_000
    default_list_size: int = 100


class LimitExceeded(Exception):
    def __init__(self, limit: str, actual: int | None, maximum: int, message: str) -> None:
        super().__init__(message)
        self.limit, self.actual, self.maximum = limit, actual, maximum


def parse_within_limits(source: str, limits: DocumentLimits) -> DocumentNode:
    size = len(source.encode())
    if size > limits.max_bytes:
        raise LimitExceeded(
            "bytes",
            size,
            limits.max_bytes,
            f"document size {size} bytes exceeds the limit of {limits.max_bytes} (max_bytes)",
        )
    return parse(source, no_location=False, max_tokens=limits.max_tokens)


def check_limits(
    document: DocumentNode,
    schema: GraphQLSchema,
    limits: DocumentLimits,
    *,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> None:
    return None
