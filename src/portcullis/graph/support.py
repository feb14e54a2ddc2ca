"""Small pieces the operational areas of the graph share (config, audit, alerts,
analytics, webhooks, data plane): an area's root fields, validating a typed input
with the service layer's own model, and running a mutation as errors-as-data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import strawberry
from pydantic import BaseModel, ValidationError

from portcullis.graph.connections import Connection, page_connection, page_size
from portcullis.graph.models import input_document
from portcullis.graph.problems import problem_of
from portcullis.services.errors import ServiceError, errors_from_pydantic, invalid
from portcullis.services.pagination import paginate, parse_sort

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class Area:
    """The root query and mutation fields one area contributes to the schema."""

    queries: dict[str, Any] = field(default_factory=dict)
    mutations: dict[str, Any] = field(default_factory=dict)


def validated(model: type[M], value: Any, **extra: Any) -> M:
    """A typed GraphQL input (or plain arguments in `extra`) validated by the service
    layer's model, exactly as REST validates its body or query: a 422 naming each
    field otherwise."""
    document = input_document(value) if value is not None else {}
    document = {**document, **{k: v for k, v in extra.items() if v is not None}}
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise invalid(errors_from_pydantic(exc.errors())) from exc


def typed(model: type[BaseModel], representation: Any) -> dict[str, Any]:
    """A JSON representation (as REST answers it) read back through its model, so that
    times are `datetime`s for the schema's DateTime fields."""
    return model.model_validate(representation).model_dump()


def returning(result: Any) -> Callable[[F], F]:
    """Give a resolver declared `-> Any` its GraphQL result type (a `result_union`)."""

    def mark(fn: F) -> F:
        fn.__annotations__ = {**fn.__annotations__, "return": result}
        return fn

    return mark


async def as_data(run: Callable[[], Awaitable[Any]]) -> Any:
    """The payload `run` returns, or the problem a refusal maps to (errors as data)."""
    try:
        return await run()
    except ServiceError as exc:
        return problem_of(exc)


def sorted_connection(
    items: Sequence[dict[str, Any]],
    identity_of: Callable[[dict[str, Any]], str],
    *,
    allowed: Sequence[str],
    default: str,
    sort: str | None,
    first: int | None,
    after: str | None,
    node_of: Callable[[Any], Any] = lambda item: item,
) -> Connection[Any]:
    """A page of an in-memory list sorted as REST sorts it (`sort` over `allowed`)."""
    keys = parse_sort(sort, allowed, default)
    page = paginate(items, identity_of, keys, limit=page_size(first), cursor=after)
    return page_connection(page, node_of)


def sort_argument(allowed: Sequence[str]) -> Any:
    """The type of a `sort` argument over `allowed` fields, as REST's `sort` parameter."""
    description = "Comma-separated fields, `-` for descending. Allowed: " + ", ".join(allowed)
    return Annotated[str | None, strawberry.argument(description=description)]


def query(resolver: Any, description: str) -> Any:
    return strawberry.field(resolver=resolver, description=description)


def mutation(resolver: Any, description: str) -> Any:
    return strawberry.mutation(resolver=resolver, description=description)
