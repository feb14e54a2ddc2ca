"""Pagination for the admin API: the `next` link, list responses, `limit`/`cursor`/`sort`
query parameters. Sorting and cursors themselves are services/pagination.py.

Annotations are not postponed here (no `from __future__ import annotations`): the
query parameters `list_query` declares carry values known only when it is called.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from portcullis.services.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    SortKey,
    paginate,
    parse_sort,
    sort_pattern,
)

T = TypeVar("T")


def next_link(request: Request, cursor: str | None) -> tuple[str | None, dict[str, str]]:
    """The `next` URL (this request with `cursor` replaced) and its `Link` header, if any."""
    if cursor is None:
        return None, {}
    url = request.url.path + "?" + str(request.url.include_query_params(cursor=cursor).query)
    return url, {"Link": f'<{url}>; rel="next"'}


def page_response(
    request: Request, items: list[dict[str, Any]], cursor: str | None
) -> JSONResponse:
    """A list response: `{"items", "next"}` with the `Link: rel="next"` header when paged."""
    url, headers = next_link(request, cursor)
    return JSONResponse({"items": items, "next": url}, headers=headers)


def keyset_page(
    request: Request,
    rows: Sequence[T],
    limit: int,
    *,
    key: Callable[[T], int | str],
    render: Callable[[T], dict[str, Any]],
) -> JSONResponse:
    """A page from `rows` fetched with `limit + 1` (the extra row says there is a next page);
    the cursor is the last returned row's `key` (for stores paged with `WHERE key < cursor`)."""
    cursor = str(key(rows[limit - 1])) if len(rows) > limit else None
    return page_response(request, [render(r) for r in rows[:limit]], cursor)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The `limit`, `cursor` and parsed `sort` of a list request."""

    limit: int
    cursor: str | None
    sort: tuple[SortKey, ...]

    def respond(
        self,
        request: Request,
        items: Sequence[dict[str, Any]],
        identity_of: Callable[[dict[str, Any]], str] = lambda item: str(item["id"]),
    ) -> JSONResponse:
        """The requested page of `items` (sorted, cut after the cursor) as a list response."""
        page = paginate(items, identity_of, self.sort, limit=self.limit, cursor=self.cursor)
        return page_response(request, page.items, page.next_cursor)


def list_query(allowed: Sequence[str], default: str) -> Callable[..., ListQuery]:
    """A dependency reading `limit`, `cursor` and `sort` (one of `allowed`, else 422)."""
    description = "Comma-separated fields, `-` for descending. Allowed: " + ", ".join(allowed)
    pattern = sort_pattern(allowed)

    # The annotations' metadata carries per-endpoint values (the allowed sort fields);
    # this module does not postpone annotations, so FastAPI reads them as written.
    def read(
        *,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = DEFAULT_LIMIT,
        cursor: Annotated[
            str | None, Query(description="`next` cursor of the previous page")
        ] = None,
        sort: Annotated[str | None, Query(description=description, pattern=pattern)] = None,
    ) -> ListQuery:
        return ListQuery(limit, cursor, parse_sort(sort, allowed, default))

    return read
