"""The portal's API catalogue: list and search the APIs a developer may see, each API's
versions with their status and deprecation notices, and a version's reference docs
rendered here from the published description (no Redoc/Swagger UI: decision 037).

Signed out, the catalogue shows the public APIs; signed in, also those of the
organizations the developer's applications belong to (services/portal_catalogue.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from portcullis.services.errors import ServiceError
from portcullis.web.portal.api_support import access_of_request, portal_api
from portcullis.web.templating import is_htmx, render

router = APIRouter(include_in_schema=False)


def not_found(request: Request, exc: ServiceError) -> Response:
    context = {"title": "Not found", "status": 404, "detail": exc.detail or exc.kind.title}
    return render(request, "error.html", context, status_code=404)


@router.get("/apis")
async def apis(request: Request, q: str = Query("", max_length=200)) -> Response:
    access = await access_of_request(request)
    cards = await portal_api(request).catalogue.listing(access, q)
    context = {"title": "APIs", "apis": cards, "q": q}
    if is_htmx(request):
        return render(request, "portal/api/_api_list.html", context)
    return render(request, "portal/api/apis.html", context)


@router.get("/apis/{api}")
async def api_page(request: Request, api: str) -> Response:
    access = await access_of_request(request)
    try:
        card = await portal_api(request).catalogue.api(access, api)
    except ServiceError as exc:
        return not_found(request, exc)
    return render(request, "portal/api/api.html", {"title": card.title, "api": card})


@router.get("/apis/{api}/{version}")
async def reference_page(request: Request, api: str, version: str) -> Response:
    access = await access_of_request(request)
    try:
        card, version_card, docs, _ = await portal_api(request).catalogue.published(
            access, api, version
        )
    except ServiceError as exc:
        return not_found(request, exc)
    return render(
        request,
        "portal/api/reference.html",
        {
            "title": f"{card.title} {version}",
            "api": card,
            "api_version": version_card,
            "docs": docs,
        },
    )
