"""The API catalogue in the graph: a version's imported OpenAPI description, its import
(inline or from a URL) and the diff between two versions - on the service REST's
`/admin/v1/apis/{api}/versions/{version}/openapi` and `/apis/{api}/diff` call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from portcullis.catalogue.fetch import DescriptionFetcher
from portcullis.graph.context import context_of
from portcullis.graph.problems import result_union
from portcullis.graph.support import Area, as_data, mutation, query, returning
from portcullis.services.catalogue import CatalogueService
from portcullis.services.rbac import Permission
from portcullis.webhooks.runner import destination_policy

T = TypeVar("T")


@strawberry.type(description="What importing a version's OpenAPI description did.")
class ApiDescriptionImported:
    api: str
    version: str
    digest: str = strawberry.field(description="SHA-256 of the bundled document")
    changed: bool = strawberry.field(description="False: the same document was there already")
    published: str = strawberry.field(description="Where the control plane publishes it")
    openapi_source: JSON | None = strawberry.field(
        description="The URL source, when imported from one"
    )


ImportApiDescriptionResult = result_union("ImportApiDescriptionResult", ApiDescriptionImported)


async def _with_service(
    info: Info[Any, Any], work: Callable[[CatalogueService], Awaitable[T]]
) -> T:
    state = context_of(info).state
    fetcher = DescriptionFetcher(
        destination_policy(state.settings), timeout=state.settings.webhook_timeout
    )
    try:
        return await work(CatalogueService(state, fetcher))
    finally:
        await fetcher.close()


async def api_description(info: Info[Any, Any], api: str, version: str) -> JSON:
    op = await context_of(info).operation(Permission.CONFIG_READ)
    found = await _with_service(info, lambda s: s.description(op, api, version))
    return cast(JSON, found)


async def api_diff(info: Info[Any, Any], api: str, base: str, head: str) -> JSON:
    op = await context_of(info).operation(Permission.CONFIG_READ)
    return cast(JSON, await _with_service(info, lambda s: s.diff(op, api, base, head)))


@returning(ImportApiDescriptionResult)
async def import_api_description(
    info: Info[Any, Any],
    api: str,
    version: str,
    document: JSON | None = None,
    url: str | None = None,
    refresh_seconds: int | None = None,
) -> Any:
    async def run() -> Any:
        op = await context_of(info).operation(Permission.CONFIG_WRITE)
        body: Any = document
        if url is not None:
            body = {
                "url": url,
                **({} if refresh_seconds is None else {"refresh_seconds": refresh_seconds}),
            }
        done = await _with_service(info, lambda s: s.import_description(op, api, version, body))
        return ApiDescriptionImported(**done)

    return await as_data(run)


def build() -> Area:
    return Area(
        queries={
            "apiDescription": query(
                api_description,
                "A version's imported OpenAPI description, its URL source and refresh state",
            ),
            "apiDiff": query(
                api_diff, "Changes between two versions' descriptions, breaking first"
            ),
        },
        mutations={
            "importApiDescription": mutation(
                import_api_description,
                "Import a version's OpenAPI description: the document, or a url to fetch "
                "(and re-fetch every refreshSeconds)",
            )
        },
    )
