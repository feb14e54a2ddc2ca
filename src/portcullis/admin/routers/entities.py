"""CRUD endpoints for gateway entities: one typed route factory for every kind.

Every kind gets the same conventions: keyset pagination with a `next` link,
filters on scalar fields and tags, `sort`, an ETag on every representation,
`If-Match` on PUT/PATCH/DELETE, 201 + `Location` on create, JSON Merge Patch, and
409 naming dependents on DELETE. The rules are the service's
(`portcullis.services.entities`); this module parses HTTP and shapes responses.

Each kind has its own body model and filter parameters. The endpoints are plain
functions whose parameters mypy checks; what differs per kind (the body model, the
list query model, the id's description, the upstream path parameter of targets)
comes in through small dependencies (`_body_of`, `_query_of`, ...). Annotations are
not postponed in this module (no `from __future__ import annotations`), so those
dependencies' annotations hold the kind's own models, which FastAPI validates and
documents.
"""

from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.openapi.models import Example
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from portcullis.admin.operations import admin_state, operation, respond
from portcullis.admin.pagination import page_response
from portcullis.admin.problems import problem_responses
from portcullis.services.context import Operation
from portcullis.services.entities import Entity, EntityQuery, EntityService
from portcullis.services.entity_kinds import KINDS, PLUGINS, TARGETS, Kind
from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_pattern
from portcullis.services.rbac import Permission

MERGE_PATCH = "application/merge-patch+json"
ETAG_HEADER = {
    "ETag": {"description": "Entity tag of the representation", "schema": {"type": "string"}}
}
LOCATION_HEADER = {
    "Location": {"description": "URL of the created resource", "schema": {"type": "string"}}
}
LINK_HEADER = {
    "Link": {
        "description": '`rel="next"` link when there are more items',
        "schema": {"type": "string"},
    }
}
M = TypeVar("M", bound=BaseModel)
Responses = dict[int | str, dict[str, Any]]
Q = TypeVar("Q", bound=BaseModel)

IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]
MergePatch = Annotated[
    dict[str, Any],
    Body(
        media_type=MERGE_PATCH,
        description="JSON Merge Patch (RFC 7396): members replace, null removes",
        openapi_examples={"retag": {"summary": "Replace the tags", "value": {"tags": ["beta"]}}},
    ),
]


class EntityListQuery(BaseModel):
    """The list parameters every kind has; each kind's query model adds its `sort` field
    (with its allowed fields) and one filter per filter field."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(None, description="`next` cursor of the previous page")
    sort: str | None = None
    tags: str | None = Field(None, description="Comma-separated; items having all")

    def as_query(self, kind: Kind) -> EntityQuery:
        filters = {f: str(getattr(self, f)) for f in kind.filter_fields}
        return EntityQuery(
            self.limit,
            self.cursor,
            self.sort,
            self.tags,
            {f: v for f, v in filters.items() if getattr(self, f) is not None},
        )


def _query_model(kind: Kind) -> type[EntityListQuery]:
    filters: dict[str, Any] = {
        name: (str | None, Field(None, description=f"Only items whose {name} is this"))
        for name in kind.filter_fields
    }
    return create_model(
        f"{kind.model.__name__}ListQuery",
        __base__=EntityListQuery,
        sort=(
            str | None,
            Field(
                None,
                description="Comma-separated fields, `-` for descending. Allowed: "
                + ", ".join(kind.sort_fields),
                examples=[f"-{kind.sort_fields[-1]},{kind.sort_fields[0]}"],
                pattern=sort_pattern(kind.sort_fields),
            ),
        ),
        **filters,
    )


def _body_of(model: type[M], kind: Kind) -> Callable[..., M]:
    """A dependency: the request body as `model` (validated and documented by FastAPI)."""
    example: dict[str, Example] = {
        "example": {"summary": f"A {kind.singular}", "value": kind.example}
    }

    def body(value: Annotated[model, Body(openapi_examples=example)]) -> M:  # type: ignore[valid-type]
        return value

    return body


def _query_of(model: type[Q]) -> Callable[..., Q]:
    """A dependency: the query parameters as `model` (unknown ones are a 422)."""

    def query(value: Annotated[model, Query()]) -> Q:  # type: ignore[valid-type]
        return value

    return query


def _id_of(kind: Kind) -> Callable[..., str]:
    """A dependency: the entity id from the path."""

    def entity_id(
        value: Annotated[str, Path(alias="id", description=f"The {kind.singular}'s id")],
    ) -> str:
        return value

    return entity_id


def _in_upstream(upstream: Annotated[str, Path(description="Upstream name")]) -> str | None:
    return upstream


def _top_level() -> str | None:
    return None


def _out_models(kind: Kind) -> tuple[type[BaseModel], type[BaseModel]]:
    """The response models of one entity and of a page of them."""
    out: type[BaseModel] = kind.model
    if kind is PLUGINS:
        out = create_model(
            f"{kind.model.__name__}Out",
            __base__=kind.model,
            id=(str, Field(description="Plugin instance id: name[instance]@scope")),
        )
    page = create_model(
        f"{kind.model.__name__}Page",
        items=(list[out], ...),
        next=(str | None, Field(None, description="URL of the next page, null on the last")),
    )
    return out, page


class EntityRoutes:
    """The six routes of one kind (optionally nested under an upstream, for targets)."""

    def __init__(self, kind: Kind, *, nested: bool = False) -> None:
        self.kind = kind
        self.nested = nested
        self.base = (
            f"/upstreams/{{upstream}}/{kind.collection}" if nested else f"/{kind.collection}"
        )
        self.out_model, self.page_model = _out_models(kind)
        self.query_model = _query_model(kind)

    def service(self, request: Request) -> EntityService:
        state = admin_state(request)
        collection = state.collection(self.kind, nested=self.nested)
        return EntityService(collection, state.editor, state.engine, state.secret)

    def url(self, upstream: str | None, entity_id: str) -> str:
        base = "/admin/v1" + (
            f"/upstreams/{quote(upstream or '', safe='')}/{self.kind.collection}"
            if self.nested
            else f"/{self.kind.collection}"
        )
        return f"{base}/{quote(entity_id, safe='')}"

    def build(self, router: APIRouter) -> None:
        self._build(router, _body_of(self.kind.model, self.kind))

    def _build(self, router: APIRouter, body_of: Callable[..., M]) -> None:
        kind = self.kind
        upstream_of = _in_upstream if self.nested else _top_level
        id_of = _id_of(kind)
        query_of = _query_of(self.query_model)
        read = operation(Permission.CONFIG_READ)
        write = operation(Permission.CONFIG_WRITE)

        async def list_entities(
            request: Request,
            upstream: str | None = Depends(upstream_of),
            query: EntityListQuery = Depends(query_of),
            op: Operation = Depends(read),
        ) -> Response:
            page = await self.service(request).list(op, query.as_query(kind), upstream)
            return page_response(request, page.items, page.next_cursor)

        async def create_entity(
            request: Request,
            upstream: str | None = Depends(upstream_of),
            body: M = Depends(body_of),
            op: Operation = Depends(write),
        ) -> Response:
            entity = await self.service(request).create(op, body.model_dump(mode="json"), upstream)
            return _respond(entity, 201, Location=self.url(upstream, entity.id))

        async def get_entity(
            request: Request,
            upstream: str | None = Depends(upstream_of),
            entity_id: str = Depends(id_of),
            op: Operation = Depends(read),
        ) -> Response:
            return _respond(await self.service(request).get(op, entity_id, upstream))

        async def replace_entity(
            request: Request,
            upstream: str | None = Depends(upstream_of),
            entity_id: str = Depends(id_of),
            body: M = Depends(body_of),
            if_match: IfMatch = None,
            op: Operation = Depends(write),
        ) -> Response:
            entity = await self.service(request).replace(
                op, entity_id, body.model_dump(mode="json"), if_match=if_match, upstream=upstream
            )
            return _respond(entity)

        async def patch_entity(
            request: Request,
            patch: MergePatch,
            upstream: str | None = Depends(upstream_of),
            entity_id: str = Depends(id_of),
            if_match: IfMatch = None,
            op: Operation = Depends(write),
        ) -> Response:
            entity = await self.service(request).patch(
                op, entity_id, patch, if_match=if_match, upstream=upstream
            )
            return _respond(entity)

        async def delete_entity(
            request: Request,
            upstream: str | None = Depends(upstream_of),
            entity_id: str = Depends(id_of),
            if_match: IfMatch = None,
            op: Operation = Depends(write),
        ) -> Response:
            await self.service(request).delete(op, entity_id, if_match=if_match, upstream=upstream)
            return Response(status_code=204)

        what = kind.singular
        plural = kind.title.lower()
        item = self.base + "/{id}"
        errors_read = problem_responses(400, 401, 403, 404, 422, 429)
        one_etag: dict[int | str, dict[str, Any]] = {200: {"headers": ETAG_HEADER}}
        write_errors = problem_responses(400, 401, 403, 404, 409, 412, 422, 429)
        one = {"response_model": self.out_model}
        routes: list[tuple[str, Callable[..., Any], str, int, str, str, Responses, dict[str, Any]]]
        routes = [
            (self.base, list_entities, "GET", 200, f"List {plural}", f"list_{kind.collection}",
             {200: {"headers": LINK_HEADER}, **errors_read}, {"response_model": self.page_model}),
            (self.base, create_entity, "POST", 201, f"Create a {what}", f"create_{what}",
             {201: {"headers": {**LOCATION_HEADER, **ETAG_HEADER}},
              **problem_responses(400, 401, 403, 404, 409, 422, 429)}, one),
            (item, get_entity, "GET", 200, f"Get a {what}", f"get_{what}",
             {**one_etag, **errors_read}, one),
            (item, replace_entity, "PUT", 200, f"Replace a {what}", f"replace_{what}",
             {**one_etag, **write_errors}, one),
            (item, patch_entity, "PATCH", 200, f"Update a {what} (JSON Merge Patch)",
             f"update_{what}",
             {**one_etag, **problem_responses(400, 401, 403, 404, 409, 412, 415, 422, 429)}, one),
            (item, delete_entity, "DELETE", 204, f"Delete a {what}", f"delete_{what}",
             write_errors, {"response_class": Response}),
        ]  # fmt: skip
        for path, endpoint, method, status, summary, operation_id, responses, extra in routes:
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                status_code=status,
                summary=summary,
                operation_id=operation_id,
                responses=responses,
                tags=[kind.title],
                **extra,
            )


def _respond(entity: Entity, status: int = 200, **headers: str) -> JSONResponse:
    return respond(entity.representation, status, etag=entity.etag, **headers)


def build_entity_router() -> APIRouter:
    """Routes for services, upstreams, targets, routes, consumers and plugin instances."""
    router = APIRouter()
    for kind in KINDS:
        EntityRoutes(kind).build(router)
    EntityRoutes(TARGETS, nested=True).build(router)
    return router
