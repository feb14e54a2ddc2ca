"""The portal's try-it console: choose an API version and operation, fill path, query,
headers and body, paste a key, send — through the gateway (services/portal_tryit.py,
decision 037) — and see status, headers (RateLimit first) and body.

The form posts with htmx and the answer replaces `#tryit-result` (a full page without
JavaScript). The key field is a password input the server never stores or renders
back; the static script `js/portal-tryit.js` fills it from sessionStorage when the
key page offered "use in console", and fills method and path from the chosen operation.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from portcullis.services.errors import FieldError, ServiceError
from portcullis.services.portal import Developer
from portcullis.services.portal_catalogue import PortalAccess, TryOperation
from portcullis.services.portal_tryit import METHODS, TryItIn
from portcullis.web.portal.access import client_ip, current_developer
from portcullis.web.portal.api_support import access_of_request, portal_api
from portcullis.web.templating import is_htmx, render

router = APIRouter(include_in_schema=False)
MAX_FORM_LINES = 50


async def _choices(request: Request, access: PortalAccess) -> list[dict[str, str]]:
    cards = await portal_api(request).catalogue.listing(access)
    return [
        {"api": c.name, "version": v.name, "label": f"{c.title} {v.name} ({v.status})"}
        for c in cards
        for v in c.versions
        if v.has_docs
    ]


async def _operations(
    request: Request, access: PortalAccess, api: str, version: str
) -> list[TryOperation]:
    if not api or not version:
        return []
    try:
        return await portal_api(request).catalogue.operations(access, api, version)
    except ServiceError:
        return []


def _pairs(text: str, separator: str, field: str) -> tuple[list[dict[str, str]], list[FieldError]]:
    """`name<separator>value` lines of a textarea; errors name `#/<field>/<line>`."""
    out: list[dict[str, str]] = []
    errors: list[FieldError] = []
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines[:MAX_FORM_LINES]):
        name, sep, value = line.partition(separator)
        if not sep or not name.strip():
            errors.append(
                FieldError(f"#/{field}/{i}", f"write one “name{separator} value” per line")
            )
            continue
        out.append({"name": name.strip(), "value": value.strip()})
    if len(lines) > MAX_FORM_LINES:
        errors.append(FieldError(f"#/{field}", f"at most {MAX_FORM_LINES} lines"))
    return out, errors


async def _page(
    request: Request,
    access: PortalAccess,
    form: dict[str, str],
    *,
    result: dict[str, Any] | None = None,
    errors: list[FieldError] | None = None,
    problem: str | None = None,
    status_code: int = 200,
) -> Response:
    api, version = form.get("api", ""), form.get("version", "")
    context = {
        "title": "Try it",
        "choices": await _choices(request, access),
        "operations": await _operations(request, access, api, version),
        "methods": METHODS,
        "form": form,
        "result": result,
        "errors": errors or [],
        "problem": problem,
    }
    return render(request, "portal/api/tryit.html", context, status_code=status_code)


@router.get("/try")
async def console(
    request: Request,
    api: str = Query("", max_length=128),
    version: str = Query("", max_length=64),
    op: str = Query("", max_length=200),
    who: Developer = Depends(current_developer),
) -> Response:
    access = await access_of_request(request)
    form = {"api": api, "version": version, "method": "GET", "path": "", "op": op}
    chosen = next(
        (o for o in await _operations(request, access, api, version) if o.anchor == op), None
    )
    if chosen is not None:
        form.update(method=chosen.method, path=chosen.path)
        if chosen.content_type is not None:
            form.update(headers=f"Content-Type: {chosen.content_type}", body=chosen.example or "")
    return await _page(request, access, form)


@router.post("/try")
async def send(request: Request, who: Developer = Depends(current_developer)) -> Response:
    access = await access_of_request(request)
    raw = await request.form()
    form = {k: str(v) for k, v in raw.items() if k != "key" and isinstance(v, str)}
    api, _, version = form.get("api_version", "").partition("|")
    form.setdefault("api", api)
    form.setdefault("version", version)
    query, errors = _pairs(form.get("query", ""), "=", "query")
    headers, header_errors = _pairs(form.get("headers", ""), ":", "headers")
    errors += header_errors
    key = raw.get("key")
    data = {
        "api": form["api"],
        "version": form["version"],
        "method": form.get("method", "GET"),
        "path": form.get("path", ""),
        "query": query,
        "headers": headers,
        "body": form.get("body", ""),
        "key": key if isinstance(key, str) and key.strip() else None,
    }
    result: dict[str, Any] | None = None
    problem: str | None = None
    status_code = 200
    if not errors:
        try:
            answer = await portal_api(request).tryit.send(
                access, TryItIn.parse(data), client_ip=client_ip(request), requester=who.id
            )
            result = answer.as_json()
        except ServiceError as exc:
            errors = list(exc.errors)
            problem = exc.detail or exc.kind.title
            status_code = exc.kind.status
    else:
        problem = "The request was not sent"
        status_code = 422
    if is_htmx(request):
        # htmx swaps 2xx only: the problem is the content of this answer.
        context = {"result": result, "errors": errors, "problem": problem}
        return render(request, "portal/api/_tryit_result.html", context)
    return await _page(
        request,
        access,
        form,
        result=result,
        errors=errors,
        problem=problem,
        status_code=status_code,
    )
