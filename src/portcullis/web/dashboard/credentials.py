"""Consumers' API keys and the gateway's webhook endpoints in the dashboard.

Both live in the store, not in the config, and have their own services (`KeyService`,
`WebhookService`: the REST API's, with the session's `Operation`). Their create forms
are generated from the same request models the REST endpoints take (`KeySpec`,
`WebhookCreate`, `forms.model_node`), validated the same way (`editing.model_errors`).
A new key and a new endpoint's signing secret are shown once, in the answer to the POST
that made them (`Cache-Control: no-store`), never stored in the session or shown again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException
from markupsafe import Markup
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.identity.key_admin import DEFAULT_GRACE_SECONDS, KeySettings, KeySpec
from portcullis.identity.key_repository import KeyFilter
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError
from portcullis.services.keys import KeyService, RotateIn, etag_of_key, represent
from portcullis.services.rbac import Caller, Permission
from portcullis.services.webhooks import WebhookCreate, WebhookService
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.dashboard.editing import Outcome, model_errors, refused
from portcullis.web.dashboard.forms import (
    Form,
    attach_errors,
    build_form,
    model_node,
    parse_form,
    render_fields,
)
from portcullis.web.dashboard.manage import form_data, one
from portcullis.web.templating import render
from portcullis.webhooks.runner import destination_policy

router = APIRouter(include_in_schema=False)
M = TypeVar("M", bound=BaseModel)
PAGE_SIZE = 50
NO_STORE = {"Cache-Control": "no-store"}


def _may(request: Request, permission: Permission) -> bool:
    caller = getattr(request.state, "principal", None)
    return isinstance(caller, Caller) and caller.can(permission)


def keys_service(request: Request) -> KeyService:
    state = admin_state(request)
    return KeyService(state.engine, state.secret, state.editor)


def webhooks_service(request: Request) -> WebhookService:
    state = admin_state(request)
    return WebhookService(
        state.engine, state.secret, state.editor, destination_policy(state.settings)
    )


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _create_page(
    request: Request,
    template: str,
    title: str,
    form: Form,
    *,
    status: int = 200,
    outcome: Outcome | None = None,
    **extra: Any,
) -> Response:
    context = {
        "title": title,
        "fields": Markup(render_fields(form)),  # noqa: S704 - built escaped by render_fields
        "outcome": outcome,
        **extra,
    }
    return render(request, template, context, status_code=status)


async def _submit(
    model: type[M],
    data: dict[str, list[str]],
    create: Callable[[M], Awaitable[Response]],
    *,
    refuse: str | None = None,
) -> Response | tuple[Form, Outcome]:
    """A create form of `model` submitted: `create`'s page for a valid one the service
    accepts, else the form with the REST API's errors on its fields (`refuse`: a
    refusal of the page's own input, checked first)."""
    node = model_node(model)
    document = parse_form(node, data)
    form = build_form(node, document)
    if refuse is not None:
        return form, Outcome(None, 422, "Validation failed", refuse)
    errors = model_errors(model, document)
    if errors:
        attach_errors(form, errors)
        return form, Outcome(None, 422, "Validation failed", None, tuple(errors))
    try:
        return await create(model.model_validate(document))
    except ServiceError as exc:
        outcome = refused(exc)
        attach_errors(form, outcome.errors)
        return form, outcome


# --- API keys -------------------------------------------------------------------------


@router.get("/keys")
async def keys_page(
    request: Request,
    consumer: str | None = None,
    cursor: str | None = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    try:
        page = await keys_service(request).list_keys(
            op, KeyFilter(consumer=consumer or None), limit=PAGE_SIZE, cursor=cursor
        )
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    now = op.now()
    next_url = None
    if page.next_cursor:
        next_url = "?" + urlencode({"consumer": consumer or "", "cursor": page.next_cursor})
    context = {
        "title": "API keys",
        "keys": [represent(info, now) for info in page.items],
        "consumer": consumer or "",
        "next_url": next_url,
        "can_write": _may(request, Permission.CREDENTIALS_WRITE),
        "done": request.query_params.get("done"),
    }
    return render(request, "dashboard/credentials/keys.html", context)


@router.get("/keys/new")
async def new_key_page(
    request: Request,
    consumer: str | None = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    form = build_form(model_node(KeySpec))
    return _create_page(
        request, "dashboard/credentials/new_key.html", "New API key", form, consumer=consumer or ""
    )


@router.post("/keys/new")
async def create_key(
    request: Request, op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE))
) -> Response:
    data = form_data(await request.form())
    consumer = (one(data, "consumer") or "").strip()

    async def create(spec: KeySpec) -> Response:
        created = await keys_service(request).create(op, consumer, spec)
        context = {
            "title": "API key created",
            "key": created.key,
            "info": represent(created.info, op.now()),
        }
        return render(request, "dashboard/credentials/key_created.html", context, headers=NO_STORE)

    refuse = None if consumer else "name the consumer the key is for"
    done = await _submit(KeySpec, data, create, refuse=refuse)
    if isinstance(done, Response):
        return done
    form, outcome = done
    return _create_page(
        request,
        "dashboard/credentials/new_key.html",
        "New API key",
        form,
        status=outcome.status,
        outcome=outcome,
        consumer=consumer,
    )


@router.get("/keys/{key_id}")
async def key_page(
    request: Request,
    key_id: str,
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    try:
        info = await keys_service(request).get(op, key_id)
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    shown = represent(info, op.now())
    form = build_form(model_node(KeySettings), info.settings())
    if not _may(request, Permission.CREDENTIALS_WRITE):
        for f in form.walk():
            f.readonly = True
    return _key_page(request, shown, form, saved=request.query_params.get("saved") is not None)


@router.post("/keys/{key_id}")
async def save_key(
    request: Request,
    key_id: str,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    """The settings as the form holds them, as a merge patch with the page's ETag (a field
    left empty goes back to its default); 412 when the key changed meanwhile."""
    data = form_data(await request.form())
    node = model_node(KeySettings)
    document = parse_form(node, data)
    patch = {str(c.key): document.get(str(c.key)) for c in node.children}
    service = keys_service(request)
    try:
        await service.update(op, key_id, patch, if_match=one(data, "etag"))
    except ServiceError as exc:
        outcome = refused(exc)
        try:
            info = await service.get(op, key_id)
        except ServiceError as gone:
            raise HTTPException(gone.kind.status, gone.detail) from None
        form = build_form(node, info.settings() if outcome.conflict else document)
        attach_errors(form, outcome.errors)
        shown = represent(info, op.now())
        return _key_page(request, shown, form, outcome=outcome)
    target = f"{_root(request)}/keys/{quote(key_id, safe='')}?saved=1"
    return RedirectResponse(target, status_code=303)


def _key_page(
    request: Request,
    shown: dict[str, Any],
    form: Form,
    *,
    saved: bool = False,
    outcome: Outcome | None = None,
) -> Response:
    context = {
        "title": f"API key {shown['name']}",
        "k": shown,
        "etag": etag_of_key(shown),
        "fields": Markup(render_fields(form)),  # noqa: S704 - built escaped by render_fields
        "saved": saved,
        "outcome": outcome,
        "can_write": _may(request, Permission.CREDENTIALS_WRITE),
    }
    status = outcome.status if outcome is not None else 200
    return render(request, "dashboard/credentials/key.html", context, status_code=status)


@router.post("/keys/{key_id}/rotate")
async def rotate_key(
    request: Request,
    key_id: str,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    """A successor key, shown once; the old one works for the grace period (the REST
    rotation's `RotateIn`: hours in the form, seconds to the service)."""
    data = form_data(await request.form())
    try:
        hours = float(one(data, "grace_hours") or DEFAULT_GRACE_SECONDS / 3600)
        rotate = RotateIn(grace_seconds=round(hours * 3600))
        rotation = await keys_service(request).rotate(
            op, key_id, grace_seconds=rotate.grace_seconds
        )
    except (ValueError, ValidationError):
        raise HTTPException(422, "the grace period is a number of hours (0 to 720)") from None
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    context = {
        "title": "API key rotated",
        "key": rotation.key,
        "info": represent(rotation.new, op.now()),
        "old": represent(rotation.old, op.now()),
    }
    return render(request, "dashboard/credentials/key_created.html", context, headers=NO_STORE)


@router.post("/keys/{key_id}/{action}")
async def key_transition(
    request: Request,
    key_id: str,
    action: Literal["revoke", "suspend", "resume"],
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    """Revoke (final), suspend or resume a key, with the reason the form gives."""
    data = form_data(await request.form())
    reason = (one(data, "reason") or "").strip() or f"{action}d in the dashboard"
    try:
        await keys_service(request).transition(op, key_id, action, reason=reason)
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    return RedirectResponse(
        f"{_root(request)}/keys?" + urlencode({"done": f"{key_id} {action}d"}), status_code=303
    )


# --- webhook endpoints ----------------------------------------------------------------


@router.get("/webhooks")
async def webhooks_page(
    request: Request,
    cursor: str | None = None,
    op: Operation = Depends(operation(Permission.WEBHOOKS_READ)),
) -> Response:
    try:
        page = await webhooks_service(request).list_endpoints(op, limit=PAGE_SIZE, cursor=cursor)
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    context = {
        "title": "Webhook endpoints",
        "endpoints": page.items,
        "next_url": "?" + urlencode({"cursor": page.next_cursor}) if page.next_cursor else None,
        "can_write": _may(request, Permission.WEBHOOKS_WRITE),
        "deleted": request.query_params.get("deleted"),
    }
    return render(request, "dashboard/credentials/webhooks.html", context)


@router.get("/webhooks/new")
async def new_webhook_page(
    request: Request, op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE))
) -> Response:
    form = build_form(model_node(WebhookCreate))
    return _create_page(
        request, "dashboard/credentials/new_webhook.html", "New webhook endpoint", form
    )


@router.post("/webhooks/new")
async def create_webhook(
    request: Request, op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE))
) -> Response:
    async def create(spec: WebhookCreate) -> Response:
        endpoint, secret = await webhooks_service(request).create(op, spec)
        context = {"title": "Webhook endpoint created", "endpoint": endpoint, "secret": secret}
        return render(
            request, "dashboard/credentials/webhook_created.html", context, headers=NO_STORE
        )

    done = await _submit(WebhookCreate, form_data(await request.form()), create)
    if isinstance(done, Response):
        return done
    form, outcome = done
    return _create_page(
        request,
        "dashboard/credentials/new_webhook.html",
        "New webhook endpoint",
        form,
        status=outcome.status,
        outcome=outcome,
    )


@router.post("/webhooks/{endpoint_id}/delete")
async def delete_webhook(
    request: Request,
    endpoint_id: str,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    try:
        await webhooks_service(request).delete(op, endpoint_id)
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    return RedirectResponse(
        f"{_root(request)}/webhooks?" + urlencode({"deleted": endpoint_id}), status_code=303
    )


# After .../delete: the first route whose path matches takes the request.
@router.post("/webhooks/{endpoint_id}/{action}")
async def switch_webhook(
    request: Request,
    endpoint_id: str,
    action: Literal["enable", "disable"],
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    """Enable (failures forgotten) or disable an endpoint (its deliveries wait)."""
    try:
        await webhooks_service(request).set_enabled(op, endpoint_id, action == "enable")
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    return RedirectResponse(f"{_root(request)}/webhooks", status_code=303)
