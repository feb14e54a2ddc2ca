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
from typing import Annotated, Any, NamedTuple
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.openapi.models import Example
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from portcullis.admin.conditional import apply_merge_patch, check_if_match, etag_of
from portcullis.admin.config_editor import ConfigState, Edit
from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.entities import (
    BOOSTS,
    CONSUMERS,
    KIND_BY_COLLECTION,
    OVERRIDES,
    PLUGINS,
    TARGETS,
    UPSTREAMS,
    Kind,
    entry_of,
)
from portcullis.admin.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    SortedIndex,
    SortKey,
    has_tags,
    page_response,
    parse_sort,
    sort_pattern,
    split_csv,
)
from portcullis.admin.problems import (
    ALREADY_EXISTS,
    FORBIDDEN,
    HAS_DEPENDENTS,
    NOT_FOUND,
    ApiProblem,
    pointer_for,
    problem_responses,
    validation_problem,
)
from portcullis.admin.rbac import Caller, Permission
from portcullis.admin.scoping import OrgScope, scope_of
from portcullis.admin.state import AdminState
from portcullis.model.config import GatewayConfig
from portcullis.model.loader import Loc

MERGE_PATCH = "application/merge-patch+json"
# Sorted views kept per router (one per sort order and upstream in use).
_MAX_INDEXES = 16
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


class _Endpoint(NamedTuple):
    """One route of a kind: its handler with the parameters FastAPI should see, and docs."""

    handler: Callable[..., Awaitable[Response]]
    params: list[inspect.Parameter]
    method: str
    path: str
    status: int
    summary: str
    operation_id: str
    responses: dict[int | str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Step:
    """What one mutation did: the entity, its state before and after (None: absent), and
    where the new state sits in its collection (for error pointers)."""

    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    index: int | None


@dataclass(frozen=True, slots=True)
class _Located:
    """An entity collection inside a config document, and where it sits in it."""

    documents: list[dict[str, Any]]
    ids: list[str]
    loc: Loc
    # Index of each id in `ids` (the first, should one repeat).
    positions: dict[str, int]


@dataclass(frozen=True, slots=True)
class _IdCache:
    """Ids (and their positions) of one kind's collection, cached on a router per version."""

    kind: Kind

    def get(
        self, router: EntityRouter, version: int, upstream: str, docs: list[dict[str, Any]]
    ) -> tuple[list[str], dict[str, int]]:
        cache = router._id_cache
        if router._id_cache_version != version:
            cache.clear()
            router._id_cache_version = version
        key = f"{self.kind.collection}:{upstream}"
        found = cache.get(key)
        if found is None:
            ids = self.kind.ids_of(docs)
            positions: dict[str, int] = {}
            for i, entity_id in enumerate(ids):
                positions.setdefault(entity_id, i)
            found = cache[key] = (ids, positions)
        return found


UPSTREAM_IDS = _IdCache(UPSTREAMS)


class EntityRouter:
    """Builds the routes of one kind (optionally nested under an upstream, for targets)."""

    def __init__(self, kind: Kind, *, nested: bool = False) -> None:
        self.kind = kind
        self.nested = nested
        self.base = (
            f"/upstreams/{{upstream}}/{kind.collection}" if nested else f"/{kind.collection}"
        )
        self.tag = kind.title
        # Sorted views of the current version's collection, by (upstream, sort keys).
        self._indexes: dict[tuple[str | None, tuple[SortKey, ...]], SortedIndex] = {}
        self._indexes_version = -1
        # Ids of the current version's collections (by upstream for targets).
        self._id_cache: dict[str, tuple[list[str], dict[str, int]]] = {}
        self._id_cache_version = -1
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

    def _locate(
        self,
        document: dict[str, Any],
        upstream: str | None,
        scope: OrgScope,
        *,
        version: int,
        writable: bool = False,
    ) -> _Located:
        """The collection this router serves inside `document`, the canonical document of
        config `version` (404 for an unknown upstream, or one outside the caller's
        organization). Ids are computed once per version.

        With `writable`, `document` is a shallow copy of a shared canonical document:
        the lists (and, for targets, the upstream entry) on the way to the collection
        are copied into it first, so changing the collection changes nothing shared.
        """
        if not self.nested:
            docs: list[dict[str, Any]] = document[self.kind.collection]
            if writable:
                docs = document[self.kind.collection] = list(docs)
            ids, positions = self._ids(version, None, docs)
            return _Located(docs, ids, (self.kind.collection,), positions)
        ups = document["upstreams"]
        _, upstream_positions = UPSTREAM_IDS.get(self, version, "", ups)
        i = upstream_positions.get(upstream) if upstream is not None else None
        if i is None or not scope.sees(ups[i]):
            raise ApiProblem(NOT_FOUND, f"upstream {upstream!r} does not exist")
        if writable:
            ups = document["upstreams"] = list(ups)
            ups[i] = {**ups[i], "targets": list(ups[i]["targets"])}
        docs = ups[i]["targets"]
        ids, positions = self._ids(version, upstream, docs)
        return _Located(docs, ids, ("upstreams", i, "targets"), positions)

    def _ids(
        self, version: int, upstream: str | None, docs: list[dict[str, Any]]
    ) -> tuple[list[str], dict[str, int]]:
        return _IdCache(self.kind).get(self, version, upstream or "", docs)

    def _sorted(
        self, current: ConfigState, upstream: str | None, scope: OrgScope, keys: tuple[SortKey, ...]
    ) -> SortedIndex:
        """The collection in `keys` order, built once per config version (and upstream)."""
        located = self._locate(current.document, upstream, scope, version=current.version)
        cache_key = (upstream, keys)
        if self._indexes_version != current.version:
            self._indexes.clear()
            self._indexes_version = current.version
        index = self._indexes.get(cache_key)
        if index is None:
            items = [
                self._represent(doc, entity_id)
                for doc, entity_id in zip(located.documents, located.ids, strict=True)
            ]
            index = SortedIndex(items, self._identity, keys)
            if len(self._indexes) >= _MAX_INDEXES:
                self._indexes.pop(next(iter(self._indexes)))
            self._indexes[cache_key] = index
        return index

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

    def _find(self, located: _Located, entity_id: str, scope: OrgScope) -> int:
        """The entity's index; 404 when missing or outside the caller's organization."""
        index = located.positions.get(entity_id)
        if index is not None and (self.nested or scope.sees(located.documents[index])):
            return index
        raise ApiProblem(NOT_FOUND, f"{self.kind.singular} {entity_id!r} does not exist")

    def _existing(
        self, located: _Located, entity_id: str, scope: OrgScope, if_match: str | None
    ) -> tuple[int, dict[str, Any]]:
        """The entity to change (index and document): 404 if invisible, 412 if If-Match fails."""
        index = self._find(located, entity_id, scope)
        old = located.documents[index]
        check_if_match(if_match, etag_of(self._represent(old, entity_id)))
        return index, old

    def _locator(self, loc: Loc, index: int) -> Callable[[Loc], str | None]:
        prefix = (*loc, index)

        def locate(issue_loc: Loc) -> str | None:
            if issue_loc[: len(prefix)] == prefix:
                return pointer_for(issue_loc[len(prefix) :])
            return None

        return locate

    def _name_taken(self, entity_id: str, scope: OrgScope) -> ApiProblem:
        """409 for a create whose name is in use.

        Entity names are one namespace for the whole gateway (routes, plugins, keys and
        the data plane refer to entities by name), so a name another organization holds
        can't be given twice. An organization-limited caller gets the same answer
        whether the holder is theirs or not, naming no organization and saying nothing
        of the holder, so the answer tells them only what any create would: the name is
        not free.
        """
        field = self.kind.identity_fields[0]
        what = self.kind.singular
        if scope.limited:
            detail = (
                f"the {what} name {entity_id!r} is not available (names are unique across "
                "the gateway, not per organization); choose another"
            )
        else:
            detail = f"{what} {entity_id!r} already exists"
        return ApiProblem(
            ALREADY_EXISTS, detail, errors=[{"pointer": f"#/{field}", "detail": "already in use"}]
        )

    def _check_identity(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """PUT/PATCH may not change the fields that make up the id."""
        wrong = [
            (f"#/{f}", f"{f} is part of the {self.kind.singular}'s id and cannot change")
            for f in self.kind.identity_fields
            if new.get(f) != old.get(f)
        ]
        if wrong:
            raise validation_problem(wrong)

    def _claim(
        self,
        scope: OrgScope,
        document: dict[str, Any],
        old: dict[str, Any] | None,
        new: dict[str, Any],
    ) -> dict[str, Any]:
        """Enforce the caller's organization on a new or changed entity (see admin/scoping.py).

        An organization-limited caller's entity belongs to their organization (filled
        in when left out, 403 for another) and may refer only to entities of it.
        """
        if not self.kind.scoped or scope.organization is None:
            return new
        org = new.get("organization")
        if org is None:
            new = {**new, "organization": scope.organization}
        elif org != scope.organization:
            raise ApiProblem(
                FORBIDDEN,
                f"you can only manage {self.kind.collection} of your organization "
                f"{scope.organization!r}, not {org!r}",
                errors=[{"pointer": "#/organization", "detail": "not your organization"}],
            )
        if self.kind is PLUGINS and new.get("service") is None and new.get("route") is None:
            raise ApiProblem(
                FORBIDDEN,
                "a global plugin applies to every organization's traffic; scope it to one of "
                f"your services or routes (organization {scope.organization!r})",
                errors=[{"pointer": "#/route", "detail": "required for your organization"}],
            )
        wrong = self._traffic_problems(scope, document, old, new)
        for field, collection in self.kind.references:
            target = new.get(field)
            if target is None or (old is not None and old.get(field) == target):
                continue
            field_name = KIND_BY_COLLECTION[collection].identity_fields[0]
            if target not in scope.visible_names(document[collection], field_name):
                wrong.append(
                    (
                        f"#/{field}",
                        f"unknown {KIND_BY_COLLECTION[collection].singular} {target!r} "
                        f"in organization {scope.organization!r}",
                    )
                )
        if wrong:
            raise validation_problem(wrong)
        return new

    def _traffic_problems(
        self,
        scope: OrgScope,
        document: dict[str, Any],
        old: dict[str, Any] | None,
        new: dict[str, Any],
    ) -> list[tuple[str, str]]:
        """An organization-limited caller's boosts, overrides and plan choices stay inside
        their organization (see admin/scoping.py): 403 for a boost of everyone or of a
        tag, (pointer, detail) problems for references to what they can't see."""
        org = scope.organization
        wrong: list[tuple[str, str]] = []
        if self.kind is BOOSTS:
            target = new.get("target") or {}
            if target.get("everyone") or target.get("tag") is not None:
                which = "everyone" if target.get("everyone") else "tag"
                raise ApiProblem(
                    FORBIDDEN,
                    "a boost of everyone or of a consumer tag raises every organization's "
                    f"limits (tags are shared); target one of your consumers or routes "
                    f"(organization {org!r})",
                    errors=[
                        {"pointer": f"#/target/{which}", "detail": "not for your organization"}
                    ],
                )
            before = (old or {}).get("target") or {}
            for name, collection, field_name in (
                ("consumer", "consumers", "username"),
                ("route", "routes", "name"),
            ):
                value = target.get(name)
                if value is None or before.get(name) == value:
                    continue
                if value not in scope.visible_names(document[collection], field_name):
                    wrong.append(
                        (f"#/target/{name}", f"unknown {name} {value!r} in organization {org!r}")
                    )
        elif self.kind is OVERRIDES:
            key_id = new.get("credential")
            changed = key_id is not None and (old is None or old.get("credential") != key_id)
            if changed and not scope.owns(scope.key_organizations.get(str(key_id))):
                wrong.append(
                    ("#/credential", f"unknown API key {key_id!r} in organization {org!r}")
                )
        elif self.kind is CONSUMERS:
            plan = new.get("plan")
            if plan is not None and (old is None or old.get("plan") != plan):
                offered = {
                    str(p["name"])
                    for p in document["plans"]
                    if p.get("organization") in (None, org)
                }
                if plan not in offered:
                    wrong.append(
                        ("#/plan", f"unknown plan {plan!r} in organization {org!r} (nor shared)")
                    )
        return wrong

    def _check_dependents(
        self, config: GatewayConfig, document: dict[str, Any], entity_id: str, scope: OrgScope
    ) -> None:
        """409 naming what refers to the entity (other organizations' entities only counted)."""
        if self.nested:
            return
        dependents = self.kind.dependents(config, entity_id)
        if not dependents:
            return
        shown = [d for d in dependents if scope.sees(entry_of(document, d.kind, d.id) or {})]
        named = ", ".join(f"{d.kind[:-1]} {d.id!r}" for d in shown)
        hidden = len(dependents) - len(shown)
        if hidden:
            named += (", " if named else "") + f"{hidden} entities of other organizations"
        raise ApiProblem(
            HAS_DEPENDENTS,
            f"{self.kind.singular} {entity_id!r} is used by {named}; change or delete them first",
            dependents=[{"kind": d.kind, "id": d.id, "field": d.field} for d in shown],
        )

    async def _change(
        self,
        kw: dict[str, Any],
        action: str,
        status: int,
        step: Callable[[ConfigState, dict[str, Any], _Located, OrgScope], _Step],
    ) -> _Step:
        """Run one mutation through `ConfigEditor.mutate`, with its audit record.

        `step` edits the config document in place and says what changed; it re-runs
        on the fresh config if another writer got in first.
        """
        request: Request = kw["request"]
        state: AdminState = request.app.state.admin
        caller: Caller = kw["caller"]
        scope = await scope_of(request, caller)
        if self.kind is OVERRIDES and scope.limited:
            scope = await _with_key_owner(state, scope, kw)

        def plan(current: ConfigState) -> Edit[_Step]:
            document = dict(current.document)
            located = self._locate(
                document, kw.get("upstream"), scope, version=current.version, writable=True
            )
            done = step(current, document, located, scope)
            if done.after == done.before:
                return Edit(None, done)
            return Edit(
                document,
                done,
                comment=f"admin API: {action} {self.kind.singular} {done.entity_id!r}",
                locate=None if done.index is None else self._locator(located.loc, done.index),
                on_write=state.audit.on_config_write(
                    caller=caller,
                    facts=kw["facts"],
                    action=action,
                    resource_type=self.kind.singular,
                    resource_id=done.entity_id,
                    before=done.before,
                    after=done.after,
                    status=status,
                    schema=self.kind.model,
                ),
            )

        return (await state.editor.mutate(plan, author=caller.actor)).result

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
            scope = await scope_of(request, kw["caller"])
            q = kw["query"]
            keys = parse_sort(q.sort, kind.sort_fields, kind.sort_fields[0])
            current = await state.editor.state()
            upstream = kw.get("upstream")
            index = self._sorted(current, upstream, scope, keys)
            wanted_tags = split_csv(q.tags)
            wanted = [(f, getattr(q, f)) for f in kind.filter_fields if getattr(q, f) is not None]

            def matches(doc: dict[str, Any]) -> bool:
                if not self.nested and not scope.sees(doc):
                    return False
                if wanted_tags and not has_tags(doc, wanted_tags):
                    return False
                return all(_text(doc.get(f)) == value for f, value in wanted)

            page = index.page(matches, limit=q.limit, cursor=q.cursor)
            return page_response(request, page.items, page.next_cursor)

        async def get_entity(**kw: Any) -> Response:
            request: Request = kw["request"]
            state: AdminState = request.app.state.admin
            scope = await scope_of(request, kw["caller"])
            current = await state.editor.state()
            located = self._locate(
                current.document, kw.get("upstream"), scope, version=current.version
            )
            index = self._find(located, kw["entity_id"], scope)
            return self._respond(located.documents[index], kw["entity_id"])

        async def create_entity(**kw: Any) -> Response:
            body: BaseModel = kw["body"]
            given = body.model_dump(mode="json")

            def step(
                current: ConfigState, document: dict[str, Any], located: _Located, scope: OrgScope
            ) -> _Step:
                new = self._claim(scope, document, None, given)
                base_id = kind.base_id(new)
                if base_id in located.positions:
                    raise self._name_taken(base_id, scope)
                located.documents.append(new)
                return _Step(base_id, None, new, len(located.documents) - 1)

            done = await self._change(kw, "create", 201, step)
            assert done.after is not None
            location = self._url(kw.get("upstream"), done.entity_id)
            return self._respond(done.after, done.entity_id, 201, Location=location)

        async def replace_entity(**kw: Any) -> Response:
            body: BaseModel = kw["body"]
            return await self._update(kw, lambda _old: body.model_dump(mode="json"), "replace")

        async def patch_entity(**kw: Any) -> Response:
            patch: dict[str, Any] = kw["patch"]

            def patched(old: dict[str, Any]) -> dict[str, Any]:
                return apply_merge_patch(kind.model, old, patch).model_dump(mode="json")

            return await self._update(kw, patched, "update")

        async def delete_entity(**kw: Any) -> Response:
            entity_id: str = kw["entity_id"]

            def step(
                current: ConfigState, document: dict[str, Any], located: _Located, scope: OrgScope
            ) -> _Step:
                index, old = self._existing(located, entity_id, scope, kw["if_match"])
                self._check_dependents(current.config, document, entity_id, scope)
                del located.documents[index]
                return _Step(entity_id, old, None, None)

            await self._change(kw, "delete", 204, step)
            return Response(status_code=204)

        item = self.base + "/{id}"
        plural = kind.title.lower()
        one_etag: dict[int | str, dict[str, Any]] = {200: {"headers": ETAG_HEADER}}
        endpoints = [
            _Endpoint(
                list_entities,
                [request_p, *path, query_p, caller_r],
                "GET",
                self.base,
                200,
                f"List {plural}",
                f"list_{kind.collection}",
                {200: {"headers": LINK_HEADER}, **errors_read},
            ),
            _Endpoint(
                create_entity,
                [request_p, *path, body_p, caller_w, facts_p],
                "POST",
                self.base,
                201,
                f"Create a {what}",
                f"create_{kind.singular}",
                {
                    201: {"headers": {**LOCATION_HEADER, **ETAG_HEADER}},
                    **problem_responses(400, 401, 403, 404, 409, 422, 429),
                },
            ),
            _Endpoint(
                get_entity,
                [request_p, *path, ident, caller_r],
                "GET",
                item,
                200,
                f"Get a {what}",
                f"get_{kind.singular}",
                {**one_etag, **errors_read},
            ),
            _Endpoint(
                replace_entity,
                [request_p, *path, ident, body_p, if_match, caller_w, facts_p],
                "PUT",
                item,
                200,
                f"Replace a {what}",
                f"replace_{kind.singular}",
                {**one_etag, **problem_responses(400, 401, 403, 404, 409, 412, 422, 429)},
            ),
            _Endpoint(
                patch_entity,
                [request_p, *path, ident, patch_p, if_match, caller_w, facts_p],
                "PATCH",
                item,
                200,
                f"Update a {what} (JSON Merge Patch)",
                f"update_{kind.singular}",
                {**one_etag, **problem_responses(400, 401, 403, 404, 409, 412, 415, 422, 429)},
            ),
            _Endpoint(
                delete_entity,
                [request_p, *path, ident, if_match, caller_w, facts_p],
                "DELETE",
                item,
                204,
                f"Delete a {what}",
                f"delete_{kind.singular}",
                problem_responses(400, 401, 403, 404, 409, 412, 422, 429),
            ),
        ]
        for func, params, method, route_path, status, summary, operation, responses in endpoints:
            func.__signature__ = inspect.Signature(params, return_annotation=Response)  # type: ignore[attr-defined]
            extra: dict[str, Any] = (
                {"response_class": Response}
                if status == 204
                else {
                    "response_model": self.page_model if func is list_entities else self.out_model
                }
            )
            router.add_api_route(
                route_path,
                func,
                methods=[method],
                status_code=status,
                summary=summary,
                responses=responses,
                operation_id=operation,
                tags=[self.tag],
                **extra,
            )

    async def _update(
        self,
        kw: dict[str, Any],
        produce: Callable[[dict[str, Any]], dict[str, Any]],
        action: str,
    ) -> Response:
        entity_id: str = kw["entity_id"]

        def step(
            current: ConfigState, document: dict[str, Any], located: _Located, scope: OrgScope
        ) -> _Step:
            index, old = self._existing(located, entity_id, scope, kw["if_match"])
            new = produce(old)
            self._check_identity(old, new)
            new = self._claim(scope, document, old, new)
            located.documents[index] = new
            return _Step(entity_id, old, new, index)

        done = await self._change(kw, action, 200, step)
        assert done.after is not None
        return self._respond(done.after, entity_id)


async def _with_key_owner(state: AdminState, scope: OrgScope, kw: dict[str, Any]) -> OrgScope:
    """The scope, knowing the organization of the API key an override names (if any)."""
    from portcullis.identity.key_repository import KeyNotFound, KeyRepository

    body = kw.get("body")
    given = body.model_dump() if isinstance(body, BaseModel) else kw.get("patch")
    key_id = given.get("credential") if isinstance(given, dict) else None
    if not isinstance(key_id, str):
        return scope
    try:
        info = await KeyRepository(state.engine, state.secret).get(key_id)
    except KeyNotFound:
        return scope
    return OrgScope(
        scope.organization,
        scope.organization_id,
        key_organizations={key_id: info.organization_id},
    )


def build_entity_router() -> APIRouter:
    """Routes for services, upstreams, targets, routes, consumers and plugin instances."""
    from portcullis.admin.entities import KINDS

    router = APIRouter()
    for kind in KINDS:
        EntityRouter(kind).build(router)
    EntityRouter(TARGETS, nested=True).build(router)
    return router
