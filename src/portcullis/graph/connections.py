"""Relay-style cursor connections (the GraphQL Cursor Connections Specification).

Every list is a `<Node>Connection` with `edges { cursor node }`, `nodes` (a
shortcut) and `pageInfo { hasNextPage endCursor }`, paged forward with `first` and
`after`, whose cursors are the service layer's keyset cursors (the same ones REST's
`next` links carry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import strawberry

from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page

N = TypeVar("N")


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None
    # Forward pagination only (REST's keyset cursors go forward); always false/null.
    has_previous_page: bool = False
    start_cursor: str | None = None


@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


@strawberry.type
class Connection(Generic[N]):
    edges: list[Edge[N]]
    page_info: PageInfo
    nodes: list[N] = strawberry.field(
        description="The nodes of the edges, for clients that need no cursor"
    )


def page_size(first: int | None) -> int:
    """`first` checked as REST checks `limit` (1..MAX_LIMIT, default DEFAULT_LIMIT)."""
    from portcullis.services.errors import invalid

    if first is None:
        return DEFAULT_LIMIT
    if not 1 <= first <= MAX_LIMIT:
        raise invalid([("#/first", f"must be between 1 and {MAX_LIMIT}")])
    return first


def connection(
    items: Sequence[Any],
    next_cursor: str | None,
    cursor_of: Callable[[Any], str] | None,
    node_of: Callable[[Any], Any] = lambda item: item,
) -> Connection[Any]:
    """A connection over one page: each edge's cursor resumes after its item (the last
    edge's is the next page's cursor when there is one)."""
    edges: list[Edge[Any]] = []
    last = len(items) - 1
    for i, item in enumerate(items):
        if i == last and next_cursor is not None:
            cursor = next_cursor
        elif cursor_of is not None:
            cursor = cursor_of(item)
        else:
            cursor = ""
        edges.append(Edge(cursor=cursor, node=node_of(item)))
    end = edges[-1].cursor if edges else None
    return Connection(
        edges=edges,
        page_info=PageInfo(has_next_page=next_cursor is not None, end_cursor=end),
        nodes=[e.node for e in edges],
    )


def page_connection(
    page: Page, node_of: Callable[[Any], Any] = lambda item: item
) -> Connection[Any]:
    return connection(page.items, page.next_cursor, page.cursor_of, node_of)
