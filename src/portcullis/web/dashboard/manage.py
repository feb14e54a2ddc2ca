"""Managing gateway entities from the dashboard: list, create, edit, delete every kind
the admin API manages (services, upstreams with their targets, routes, consumers,
plugin instances, plans, boosts, overrides, APIs, certificates), one set of pages for
all of them (`services.entity_kinds`).

Each page calls the `EntityService` the REST API calls, with the session's
`Operation` (same RBAC, same organization scope, same audit). Forms come from the
kind's JSON Schema (`forms.py`; a plugin instance's config from its plugin's);
a save is a `PUT` with the ETag the form was loaded with as If-Match, so a change
someone made meanwhile comes back as a 412 and the merge page (`editing.py`), never
as an overwrite. Who else has the entity open shows live (static/js/presence.js on
the WebSocket's presence messages).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.model.plugins.registry import SCHEMAS
from portcullis.services.config import ConfigService
from portcullis.services.context import Operation
from portcullis.services.entities import Entity, EntityQuery, EntityService
from portcullis.services.entity_kinds import KIND_BY_COLLECTION, KINDS, PLUGINS, Kind
from portcullis.services.errors import ServiceError
from portcullis.services.rbac import Caller, Permission
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.dashboard.editing import (
    Merge,
    Outcome,
    base_of,
    delete_entity,
    merge_on_top,
    refused,
    save_entity,
    show,
    without_id,
)
from portcullis.web.dashboard.forms import (
    Form,
    Node,
    attach_errors,
    build_form,
    entity_node,
    parse_form,
    render_fields,
)
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
read = operation(Permission.CONFIG_READ)
write = operation(Permission.CONFIG_WRITE)
PAGE_SIZE = 50
# Names offered per referenced collection on a form (a datalist; any name may be typed).
SUGGESTED = 100
# Kinds with a page of their own, in menu order (targets are edited inside upstreams).
MANAGED: tuple[Kind, ...] = KINDS
# Form names of the page's own hidden inputs (never schema fields).
ETAG_FIELD = "etag"
VERSION_FIELD = "version"


def kind_of(collection: str) -> Kind:
    kind = KIND_BY_COLLECTION.get(collection)
    if kind is None or kind not in MANAGED:
        raise HTTPException(404, f"there is no {collection!r} to manage")
    return kind


def entities(request: Request, kind: Kind) -> EntityService:
    state = admin_state(request)
    return EntityService(state.collection(kind), state.editor, state.engine, state.secret)


def can_write(request: Request) -> bool:
    caller = getattr(request.state, "principal", None)
    return isinstance(caller, Caller) and caller.can(Permission.CONFIG_WRITE)


def entity_url(request: Request, kind: Kind, entity_id: str | None = None) -> str:
    root = f"{request.scope.get('root_path', '')}/manage/{kind.collection}"
    return root if entity_id is None else f"{root}/{quote(entity_id, safe='')}"


def node_for(kind: Kind, document: dict[str, Any] | None, plugin: str | None = None) -> Node:
    """The form of `kind` (for a plugin instance: of its plugin's config)."""
    if kind is PLUGINS:
        name = plugin or (document or {}).get("name")
        if not isinstance(name, str) or name not in SCHEMAS:
            raise HTTPException(404, f"unknown plugin {name!r}")
        return entity_node(kind.collection, name)
    return entity_node(kind.collection)


def form_data(form: FormData) -> dict[str, list[str]]:
    data: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            data.setdefault(key, []).append(value)
    return data


def one(data: dict[str, list[str]], name: str) -> str | None:
    """The last value submitted for `name` (None: none)."""
    values = data.get(name)
    return values[-1] if values else None


def _columns(kind: Kind) -> tuple[str, ...]:
    return tuple(f for f in kind.sort_fields[1:5] if f != "organization")


@router.get("/manage")
async def index(request: Request, op: Operation = Depends(read)) -> Response:
    return render(request, "dashboard/manage/index.html", {"title": "Manage", "kinds": MANAGED})


@router.get("/manage/{collection}")
async def list_page(
    request: Request, collection: str, cursor: str | None = None, op: Operation = Depends(read)
) -> Response:
    kind = kind_of(collection)
    try:
        page = await entities(request, kind).list(op, EntityQuery(PAGE_SIZE, cursor))
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    rows = [(str(item.get("id") or item[kind.identity_fields[0]]), item) for item in page.items]
    next_url = None
    if page.next_cursor:
        next_url = entity_url(request, kind) + "?" + urlencode({"cursor": page.next_cursor})
    context = {
        "title": kind.title,
        "kind": kind,
        "rows": rows,
        "columns": _columns(kind),
        "next_url": next_url,
        "can_write": can_write(request),
        "base": entity_url(request, kind),
        "deleted": request.query_params.get("deleted"),
    }
    return render(request, "dashboard/manage/list.html", context)


@router.get("/manage/{collection}/new")
async def new_page(
    request: Request, collection: str, plugin: str | None = None, op: Operation = Depends(write)
) -> Response:
    kind = kind_of(collection)
    if kind is PLUGINS and plugin is None:
        context = {"title": "New plugin instance", "kind": kind, "plugins": sorted(SCHEMAS)}
        return render(request, "dashboard/manage/choose_plugin.html", context)
    start: dict[str, Any] = {"name": plugin} if kind is PLUGINS else {}
    node = node_for(kind, start, plugin)
    form = build_form(
        node,
        start or None,
        readonly=("name",) if kind is PLUGINS else (),
        references=dict(kind.references),
    )
    await suggest_names(request, op, form)
    return _form_page(request, kind, form, entity=None, status=200)


@router.post("/manage/{collection}/new")
async def create(request: Request, collection: str, op: Operation = Depends(write)) -> Response:
    kind = kind_of(collection)
    data = form_data(await request.form())
    plugin = one(data, "name") if kind is PLUGINS else None
    node = node_for(kind, None, plugin)
    document = parse_form(node, data)
    outcome = await save_entity(entities(request, kind), op, document)
    if outcome.entity is not None:
        target = entity_url(request, kind, outcome.entity.id) + "?saved=1"
        return RedirectResponse(target, status_code=303)
    form = build_form(
        node,
        document,
        readonly=("name",) if kind is PLUGINS else (),
        references=dict(kind.references),
    )
    attach_errors(form, outcome.errors)
    await suggest_names(request, op, form)
    return _form_page(request, kind, form, entity=None, status=outcome.status, outcome=outcome)


@router.get("/manage/{collection}/{entity_id}")
async def edit_page(
    request: Request, collection: str, entity_id: str, op: Operation = Depends(read)
) -> Response:
    kind = kind_of(collection)
    entity = await _get(request, kind, op, entity_id)
    node = node_for(kind, entity.representation)
    form = _entity_form(request, kind, node, entity.representation)
    await suggest_names(request, op, form)
    saved = request.query_params.get("saved") is not None
    version = (await admin_state(request).editor.state()).version
    return _form_page(request, kind, form, entity=entity, version=version, saved=saved)


@router.post("/manage/{collection}/{entity_id}")
async def save(
    request: Request, collection: str, entity_id: str, op: Operation = Depends(write)
) -> Response:
    kind = kind_of(collection)
    data = form_data(await request.form())
    service = entities(request, kind)
    stored = await _get(request, kind, op, entity_id)
    node = node_for(kind, stored.representation)
    mine = parse_form(node, data, current=without_id(kind, stored.representation))
    if_match = one(data, ETAG_FIELD)
    outcome = await save_entity(service, op, mine, entity_id=entity_id, if_match=if_match)
    if outcome.entity is not None:
        target = entity_url(request, kind, outcome.entity.id) + "?saved=1"
        return RedirectResponse(target, status_code=303)
    if outcome.conflict:
        version_text = one(data, VERSION_FIELD) or ""
        version = int(version_text) if version_text.isdigit() else None
        return await _conflict_page(request, kind, op, stored, node, mine, version)
    form = _entity_form(request, kind, node, mine)
    attach_errors(form, outcome.errors)
    await suggest_names(request, op, form)
    return _form_page(
        request,
        kind,
        form,
        entity=stored,
        etag=if_match,
        version=None,
        status=outcome.status,
        outcome=outcome,
    )


@router.post("/manage/{collection}/{entity_id}/delete")
async def delete(
    request: Request, collection: str, entity_id: str, op: Operation = Depends(write)
) -> Response:
    kind = kind_of(collection)
    data = form_data(await request.form())
    if_match = one(data, ETAG_FIELD)
    outcome = await delete_entity(entities(request, kind), op, entity_id, if_match=if_match)
    if outcome.status == 204:
        target = entity_url(request, kind) + "?" + urlencode({"deleted": entity_id})
        return RedirectResponse(target, status_code=303)
    stored = await _get(request, kind, op, entity_id)
    node = node_for(kind, stored.representation)
    form = _entity_form(request, kind, node, stored.representation)
    version = (await admin_state(request).editor.state()).version
    return _form_page(
        request, kind, form, entity=stored, version=version, status=outcome.status, outcome=outcome
    )


async def _get(request: Request, kind: Kind, op: Operation, entity_id: str) -> Entity:
    try:
        return await entities(request, kind).get(op, entity_id)
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None


async def suggest_names(request: Request, op: Operation, form: Form) -> None:
    """Offer the names of the entities (the caller may see) that fields refer to: the
    first `SUGGESTED` of each collection, as the list's first page gives them."""
    names: dict[str, list[str]] = {}
    for collection in sorted(form.collections()):
        kind = KIND_BY_COLLECTION.get(collection)
        if kind is None:
            continue
        try:
            page = await entities(request, kind).list(op, EntityQuery(SUGGESTED))
        except ServiceError:
            continue
        names[collection] = [str(item[kind.identity_fields[0]]) for item in page.items]
    form.suggest(names)


def _entity_form(request: Request, kind: Kind, node: Node, value: dict[str, Any]) -> Form:
    """The edit form: id fields fixed; every field fixed for a caller who may not write."""
    frozen: tuple[str, ...] = kind.identity_fields
    if not can_write(request):
        frozen = tuple(str(c.key) for c in node.children)
    return build_form(node, value, readonly=frozen, references=dict(kind.references))


def _form_page(
    request: Request,
    kind: Kind,
    form: Form,
    *,
    entity: Entity | None,
    status: int = 200,
    etag: str | None = None,
    version: int | None = None,
    saved: bool = False,
    outcome: Outcome | None = None,
) -> Response:
    title = (
        f"New {kind.singular}" if entity is None else f"{kind.singular.capitalize()} {entity.id}"
    )
    context = {
        "title": title,
        "kind": kind,
        "entity": entity,
        "fields": Markup(render_fields(form)),  # noqa: S704 - built escaped by render_fields
        "etag": etag or (entity.etag if entity is not None else None),
        "version": version,
        "saved": saved,
        "outcome": outcome,
        "can_write": can_write(request),
        "base": entity_url(request, kind),
        "action": entity_url(request, kind, None if entity is None else entity.id)
        + ("/new" if entity is None else ""),
        "resource": None if entity is None else f"{kind.singular}:{entity.id}",
    }
    return render(request, "dashboard/manage/form.html", context, status_code=status)


async def _conflict_page(
    request: Request,
    kind: Kind,
    op: Operation,
    before: Entity,
    node: Node,
    mine: dict[str, Any],
    version: int | None,
) -> Response:
    """The 412 page: what changed meanwhile, mine on top of theirs as a form to save
    with the new ETag, or reload."""
    try:
        theirs = await entities(request, kind).get(op, before.id)
    except ServiceError as exc:
        outcome = refused(exc)
        form = _entity_form(request, kind, node, mine)
        return _form_page(request, kind, form, entity=None, status=outcome.status, outcome=outcome)
    state = admin_state(request)
    base = await base_of(ConfigService(state.editor), op, kind, before.id, version)
    merge: Merge = merge_on_top(kind, base, mine, without_id(kind, theirs.representation))
    form = _entity_form(request, kind, node, merge.result)
    current = (await state.editor.state()).version
    context = {
        "title": f"{kind.singular.capitalize()} {theirs.id}: changed meanwhile",
        "kind": kind,
        "entity": theirs,
        "merge": merge,
        "show": show,
        "fields": Markup(render_fields(form)),  # noqa: S704 - built escaped by render_fields
        "etag": theirs.etag,
        "version": current,
        "can_write": True,
        "action": entity_url(request, kind, theirs.id),
        "reload": entity_url(request, kind, theirs.id),
        "resource": f"{kind.singular}:{theirs.id}",
    }
    return render(request, "dashboard/manage/conflict.html", context, status_code=412)
