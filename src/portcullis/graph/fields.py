"""Small builders the areas share for their root and node fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry

from portcullis.graph.problems import result_union


def mutation(resolver: Any, result: str, payload: type[Any], description: str) -> Any:
    """A mutation answering with `payload` or a problem (the union `result`)."""
    return strawberry.mutation(
        resolver=resolver, graphql_type=result_union(result, payload), description=description
    )


def etag_field(etag_of: Callable[[Any], str]) -> dict[str, tuple[Any, Any]]:
    """The `etag` node field (for `output_type`'s extras): the ETag REST sends with the
    representation the node is backed by, for a mutation's `ifMatch`."""

    def etag(self: Any) -> str:
        return etag_of(self)

    etag.__annotations__ = {"self": Any, "return": str}
    return {
        "etag": (
            str,
            strawberry.field(resolver=etag, description="ETag of this representation (ifMatch)"),
        )
    }
