"""CRUD endpoints for gateway entities, generated from their `Kind` descriptions.

Every kind gets the same conventions: keyset pagination with a `next` link,
filters on scalar fields and tags, `sort`, an ETag on every representation,
`If-Match` on PUT/PATCH/DELETE, 201 + `Location` on create, JSON Merge Patch, and
409 naming dependents on DELETE. Changes go through `ConfigEditor`, the same
validate-and-apply path as `portcullis config apply`.

Endpoint signatures are built at run time (`__signature__`) because each kind has
its own body model and filter parameters; FastAPI reads them for validation and
for the OpenAPI description.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.openapi.models import Example
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from portcullis.admin.conditional import check_if_match, etag_of, merge_patch
from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.entities import PLUGINS, TARGETS, UPSTREAMS, Kind
from portcullis.admin.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    has_tags,
    paginate,
    parse_sort,
    sort_pattern,
    split_csv,
)
from portcullis.admin.problems import (
    ALREADY_EXISTS,
    HAS_DEPENDENTS,
    NOT_FOUND,
    ApiProblem,
    errors_from_pydantic,
    pointer_for,
    problem_responses,
    validation_problem,
)
from portcullis.admin.rbac import Caller, Permission
from portcullis.admin.state import AdminState
from portcullis.model.loader import Loc

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


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class _Located:
    """An entity collection inside a config document, and where it sits in it."""

    documents: list[dict[str, Any]]
    ids: list[str]
    loc: Loc


class EntityRouter:
    """Builds the routes of one kind (optionally nested under an upstream, for targets)."""

    def __init__(self, kind: Kind, *, nested: bool = False) -> None:
        self.kind = kind
        self.nested = nested
        self.base = (
            f"/upstreams/{{upstream}}/{kind.collection}" if nested else f"/{kind.collection}"
        )
        self.tag = kind.title
        out_fields: dict[str, Any] = {}
        if kind is PLUGINS:
            out_fields["id"] = (str, Field(description="Plugin instance id: name[instance]@scope"))
        self.out_model: type[BaseModel] = (
            create_model(f"{kind.model.__name__}Out", __base__=kind.model, **out_fields)
            if out_fields
            else kind.model
        )
        self.page_model = create_model(
            f"{kind.model.__name__}Page",
            items=(list[self.out_model], ...),  # type: ignore[name-defined]
            next=(str | None, Field(None, description="URL of the next page, null on the last")),
        )
        filters: dict[str, Any] = {
            "limit": (int, Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")),
            "cursor": (str | None, Field(None, description="`next` cursor of the previous page")),
            "sort": (
                str | None,
                Field(
                    None,
                    description="Comma-separated fields, `-` for descending. Allowed: "
                    + ", ".join(kind.sort_fields),
                    examples=[f"-{kind.sort_fields[-1]},{kind.sort_fields[0]}"],
                    pattern=sort_pattern(kind.sort_fields),
                ),
            ),
            "tags": (str | None, Field(None, description="Comma-separated; items having all")),
        }
        for name in kind.filter_fields:
            filters[name] = (
                str | None,
                Field(None, description=f"Only items whose {name} is this"),
            )
        self.query_model = create_model(
            f"{kind.model.__name__}ListQuery",
            __config__=ConfigDict(extra="forbid"),
            **filters,
        )

    # ------------------------------------------------------------------ helpers

    def _path_params(self) -> list[inspect.Parameter]:
        params = []
        if self.nested:
            params.append(
                inspect.Parameter(
                    "upstream",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[str, Path(description="Upstream name")],
                )
            )
        return params

    def _id_param(self) -> inspect.Parameter:
        return inspect.Parameter(
            "entity_id",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[
                str, Path(alias="id", description=f"The {self.kind.singular}'s id")
            ],
        )

    def _locate(self, document: dict[str, Any], upstream: str | None) -> _Located:
        """The collection this router serves inside `document` (404 for an unknown upstream)."""
        if not self.nested:
            docs: list[dict[str, Any]] = document[self.kind.collection]
            return _Located(docs, self.kind.ids_of(docs), (self.kind.collection,))
        ups = document["upstreams"]
        names = UPSTREAMS.ids_of(ups)
        if upstream not in names:
            raise ApiProblem(NOT_FOUND, f"upstream {upstream!r} does not exist")
        i = names.index(upstream)
        docs = ups[i]["targets"]
        return _Located(docs, TARGETS.ids_of(docs), ("upstreams", i, "targets"))

    def _url(self, upstream: str | None, entity_id: str) -> str:
        base = "/admin/v1" + (
            f"/upstreams/{quote(upstream or '', safe='')}/{self.kind.collection}"
            if self.nested
            else f"/{self.kind.collection}"
        )
        return f"{base}/{quote(entity_id, safe='')}"

    def _identity(self, item: dict[str, Any]) -> str:
        if self.kind is PLUGINS:
            return str(item["id"])
        return str(item[self.kind.identity_fields[0]])

    def _represent(self, document: dict[str, Any], entity_id: str) -> dict[str, Any]:
        return {**document, "id": entity_id} if self.kind is PLUGINS else document

    def _respond(
        self, document: dict[str, Any], entity_id: str, status: int = 200, **headers: str
    ) -> JSONResponse:
        body = self._represent(document, entity_id)
        return JSONResponse(body, status_code=status, headers={"ETag": etag_of(body), **headers})

    def _find(self, located: _Located, entity_id: str) -> int:
        try:
            return located.ids.index(entity_id)
        except ValueError:
            raise ApiProblem(
                NOT_FOUND, f"{self.kind.singular} {entity_id!r} does not exist"
            ) from None

    def _locator(self, loc: Loc, index: int) -> Callable[[Loc], str | None]:
        prefix = (*loc, index)

        def locate(issue_loc: Loc) -> str | None:
            if issue_loc[: len(prefix)] == prefix:
                return pointer_for(issue_loc[len(prefix) :])
            return None

        return locate

    def _check_identity(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """PUT/PATCH may not change the fields that make up the id."""
        wrong = [
            (f"#/{f}", f"{f} is part of the {self.kind.singular}'s id and cannot change")
            for f in self.kind.identity_fields
            if new.get(f) != old.get(f)
        ]
        if wrong:
            raise validation_problem(wrong)

    async def _apply(
        self,
        state: AdminState,
        document: dict[str, Any],
        *,
        caller: Caller,
        facts: RequestFacts,
        action: str,
        entity_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        locate: Callable[[Loc], str | None] | None,
        status: int,
    ) -> int:
        resource = f"{self.kind.singular} {entity_id!r}"
        stored = await state.editor.apply(
            document,
            author=caller.actor,
            comment=f"admin API: {action} {resource}",
            locate=locate,
        )
        await state.audit.record(
            caller=caller,
            facts=facts,
            action=action,
            resource_type=self.kind.singular,
            resource_id=entity_id,
            before=before,
            after=after,
            config_version=stored.version,
            status=status,
        )
        return stored.version

    # ------------------------------------------------------------------ routes

    def build(self, router: APIRouter) -> None:
        kind = self.kind
        read = Depends(require(Permission.CONFIG_READ))
        write = Depends(require(Permission.CONFIG_WRITE))
        caller_r = inspect.Parameter(
            "caller", inspect.Parameter.KEYWORD_ONLY, annotation=Caller, default=read
        )
        caller_w = inspect.Parameter(
            "caller", inspect.Parameter.KEYWORD_ONLY, annotation=Caller, default=write
        )
        request_p = inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        facts_p = inspect.Parameter(
            "facts",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=RequestFacts,
            default=Depends(request_facts),
        )
        if_match = inspect.Parameter(
            "if_match",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[
                str | None,
                Header(description="ETag from a previous read; 412 when it no longer matches"),
            ],
            default=None,
        )
        example: dict[str, Example] = {
            "example": {"summary": f"A {kind.singular}", "value": kind.example}
        }
        body_p = inspect.Parameter(
            "body",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[kind.model, Body(openapi_examples=example)],
        )
        patch_p = inspect.Parameter(
            "patch",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[
                dict[str, Any],
                Body(
                    media_type=MERGE_PATCH,
                    description="JSON Merge Patch (RFC 7396): members replace, null removes",
                    openapi_examples={
                        "retag": {"summary": "Replace the tags", "value": {"tags": ["beta"]}}
                    },
                ),
            ],
        )
        query_p = inspect.Parameter(
            "query", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[self.query_model, Query()]
        )
        path = self._path_params()
        ident = self._id_param()
        what = kind.singular
        errors_read = problem_responses(400, 401, 403, 404, 422, 429)

        async def list_entities(**kw: Any) -> Response:
            request: Request = kw["request"]
            state: AdminState = request.app.state.admin
            q = kw["query"]
            keys = parse_sort(q.sort, kind.sort_fields, kind.sort_fields[0])
            current = await state.editor.state()
            located = self._locate(current.config.canonical(), kw.get("upstream"))
            wanted_tags = split_csv(q.tags)
            items = []
            for doc, entity_id in zip(located.documents, located.ids, strict=True):
                if wanted_tags and not has_tags(doc, wanted_tags):
                    continue
                if any(
                    getattr(q, f) is not None and _text(doc.get(f)) != getattr(q, f)
                    for f in kind.filter_fields
                ):
                    continue
                items.append(self._represent(doc, entity_id))
            page = paginate(items, self._identity, keys, limit=q.limit, cursor=q.cursor)
            next_url = None
            headers = {}
            if page.next_cursor is not None:
                next_url = (
                    request.url.path
                    + "?"
                    + str(request.url.include_query_params(cursor=page.next_cursor).query)
                )
                headers["Link"] = f'<{next_url}>; rel="next"'
            return JSONResponse({"items": page.items, "next": next_url}, headers=headers)

        async def get_entity(**kw: Any) -> Response:
            request: Request = kw["request"]
            state: AdminState = request.app.state.admin
            current = await state.editor.state()
            located = self._locate(current.config.canonical(), kw.get("upstream"))
            index = self._find(located, kw["entity_id"])
            return self._respond(located.documents[index], kw["entity_id"])

        async def create_entity(**kw: Any) -> Response:
            request: Request = kw["request"]
            state: AdminState = request.app.state.admin
            body: BaseModel = kw["body"]
            new = body.model_dump(mode="json")
            async with state.editor.editing() as current:
                document = current.config.canonical()
                located = self._locate(document, kw.get("upstream"))
                base_id = kind.base_id(new)
                if base_id in located.ids:
                    field = kind.identity_fields[0]
                    raise ApiProblem(
                        ALREADY_EXISTS,
                        f"{what} {base_id!r} already exists",
                        errors=[{"pointer": f"#/{field}", "detail": "already in use"}],
                    )
                located.documents.append(new)
                await self._apply(
                    state,
                    document,
                    caller=kw["caller"],
                    facts=kw["facts"],
                    action="create",
                    entity_id=base_id,
                    before=None,
                    after=new,
                    locate=self._locator(located.loc, len(located.documents) - 1),
                    status=201,
                )
            location = self._url(kw.get("upstream"), base_id)
            return self._respond(new, base_id, 201, Location=location)

        async def replace_entity(**kw: Any) -> Response:
            body: BaseModel = kw["body"]
            return await self._update(kw, lambda _old: body.model_dump(mode="json"), "replace")

        async def patch_entity(**kw: Any) -> Response:
            patch: dict[str, Any] = kw["patch"]

            def patched(old: dict[str, Any]) -> dict[str, Any]:
                merged = merge_patch(old, patch)
                try:
                    return kind.model.model_validate(merged).model_dump(mode="json")
                except ValidationError as exc:
                    raise validation_problem(errors_from_pydantic(exc.errors())) from None

            return await self._update(kw, patched, "update")

        async def delete_entity(**kw: Any) -> Response:
            request: Request = kw["request"]
            state: AdminState = request.app.state.admin
            entity_id: str = kw["entity_id"]
            async with state.editor.editing() as current:
                document = current.config.canonical()
                located = self._locate(document, kw.get("upstream"))
                index = self._find(located, entity_id)
                old = located.documents[index]
                check_if_match(kw["if_match"], etag_of(self._represent(old, entity_id)))
                if not self.nested:
                    dependents = kind.dependents(current.config, entity_id)
                    if dependents:
                        named = ", ".join(f"{d.kind[:-1]} {d.id!r}" for d in dependents)
                        raise ApiProblem(
                            HAS_DEPENDENTS,
                            f"{what} {entity_id!r} is used by {named}; change or delete them first",
                            dependents=[
                                {"kind": d.kind, "id": d.id, "field": d.field} for d in dependents
                            ],
                        )
                del located.documents[index]
                await self._apply(
                    state,
                    document,
                    caller=kw["caller"],
                    facts=kw["facts"],
                    action="delete",
                    entity_id=entity_id,
                    before=old,
                    after=None,
                    locate=None,
                    status=204,
                )
            return Response(status_code=204)

        signatures: list[tuple[Callable[..., Awaitable[Response]], list[inspect.Parameter]]] = [
            (list_entities, [request_p, *path, query_p, caller_r]),
            (get_entity, [request_p, *path, ident, caller_r]),
            (create_entity, [request_p, *path, body_p, caller_w, facts_p]),
            (replace_entity, [request_p, *path, ident, body_p, if_match, caller_w, facts_p]),
            (patch_entity, [request_p, *path, ident, patch_p, if_match, caller_w, facts_p]),
            (delete_entity, [request_p, *path, ident, if_match, caller_w, facts_p]),
        ]
        for func, params in signatures:
            func.__signature__ = inspect.Signature(params, return_annotation=Response)  # type: ignore[attr-defined]

        plural = kind.title.lower()
        router.add_api_route(
            self.base,
            list_entities,
            methods=["GET"],
            summary=f"List {plural}",
            response_model=self.page_model,
            responses={200: {"headers": LINK_HEADER}, **errors_read},
            operation_id=f"list_{kind.collection}",
            tags=[self.tag],
        )
        router.add_api_route(
            self.base,
            create_entity,
            methods=["POST"],
            status_code=201,
            summary=f"Create a {what}",
            response_model=self.out_model,
            responses={
                201: {"headers": {**LOCATION_HEADER, **ETAG_HEADER}},
                **problem_responses(400, 401, 403, 404, 409, 422, 429),
            },
            operation_id=f"create_{kind.singular}",
            tags=[self.tag],
        )
        item = self.base + "/{id}"
        router.add_api_route(
            item,
            get_entity,
            methods=["GET"],
            summary=f"Get a {what}",
            response_model=self.out_model,
            responses={200: {"headers": ETAG_HEADER}, **errors_read},
            operation_id=f"get_{kind.singular}",
            tags=[self.tag],
        )
        router.add_api_route(
            item,
            replace_entity,
            methods=["PUT"],
            summary=f"Replace a {what}",
            response_model=self.out_model,
            responses={
                200: {"headers": ETAG_HEADER},
                **problem_responses(400, 401, 403, 404, 412, 422, 429),
            },
            operation_id=f"replace_{kind.singular}",
            tags=[self.tag],
        )
        router.add_api_route(
            item,
            patch_entity,
            methods=["PATCH"],
            summary=f"Update a {what} (JSON Merge Patch)",
            response_model=self.out_model,
            responses={
                200: {"headers": ETAG_HEADER},
                **problem_responses(400, 401, 403, 404, 412, 415, 422, 429),
            },
            operation_id=f"update_{kind.singular}",
            tags=[self.tag],
        )
        router.add_api_route(
            item,
            delete_entity,
            methods=["DELETE"],
            status_code=204,
            summary=f"Delete a {what}",
            response_class=Response,
            responses=problem_responses(400, 401, 403, 404, 409, 412, 422, 429),
            operation_id=f"delete_{kind.singular}",
            tags=[self.tag],
        )

    async def _update(
        self,
        kw: dict[str, Any],
        produce: Callable[[dict[str, Any]], dict[str, Any]],
        action: str,
    ) -> Response:
        request: Request = kw["request"]
        state: AdminState = request.app.state.admin
        entity_id: str = kw["entity_id"]
        async with state.editor.editing() as current:
            document = current.config.canonical()
            located = self._locate(document, kw.get("upstream"))
            index = self._find(located, entity_id)
            old = located.documents[index]
            check_if_match(kw["if_match"], etag_of(self._represent(old, entity_id)))
            new = produce(old)
            self._check_identity(old, new)
            located.documents[index] = new
            if new != old:
                await self._apply(
                    state,
                    document,
                    caller=kw["caller"],
                    facts=kw["facts"],
                    action=action,
                    entity_id=entity_id,
                    before=old,
                    after=new,
                    locate=self._locator(located.loc, index),
                    status=200,
                )
        return self._respond(new, entity_id)


def build_entity_router() -> APIRouter:
    """Routes for services, upstreams, targets, routes, consumers and plugin instances."""
    from portcullis.admin.entities import KINDS

    router = APIRouter()
    for kind in KINDS:
        EntityRouter(kind).build(router)
    EntityRouter(TARGETS, nested=True).build(router)
    return router
