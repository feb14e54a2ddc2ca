"""Small builders the areas share for their root and node fields."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import strawberry

from portcullis.graph.problems import problem_of, result_union
from portcullis.services.errors import NOT_FOUND, ServiceError

T = TypeVar("T")


def problems_as_data(resolver: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`resolver`, answering a service's refusal (`ServiceError`) with its problem object
    instead of raising it (the same GraphQL signature: strawberry reads the wrapped one)."""

    @functools.wraps(resolver)
    async def answer(*args: Any, **kwargs: Any) -> Any:
        try:
            return await resolver(*args, **kwargs)
        except ServiceError as exc:
            return problem_of(exc)

    return answer


def mutation(
    resolver: Callable[..., Awaitable[Any]], result: str, payload: type[Any], description: str
) -> Any:
    """A mutation answering with `payload` or a problem (the union `result`): whatever
    the service refuses becomes the problem's data."""
    return strawberry.mutation(
        resolver=problems_as_data(resolver),
        graphql_type=result_union(result, payload),
        description=description,
    )


async def or_none(found: Awaitable[T]) -> T | None:
    """A lookup by id: null when the service says not found (absent, or not the
    caller's: the same answer, as REST's 404)."""
    try:
        return await found
    except ServiceError as exc:
        if exc.kind is NOT_FOUND:
            return None
        raise


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
